"""The ``birdbridge`` command line, one module per verb group; each verb is a thin wrapper over the Python API.

``_app`` holds the Typer app and the shared rules (progress, exit status); ``data``,
``embed``, ``retrieval``, ``detect`` and ``run`` register their verbs on it.
"""

import os

# Before anything imports torch: OpenMP threads sleep when idle instead of spinning. On a
# CPU shared with other work, spinning libgomp threads collapse two-thread inference (detect).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._app import app, console, main
from . import data, embed, retrieval, detect, run  # noqa: E402,F401 - registers the verbs (in --help order)
from .data import download_cmd, inspect_cmd, prepare_cmd
from .detect import detect_cmd
from .embed import embed_audio_cmd, embed_images_cmd, embed_text_cmd, models_cmd
from .retrieval import index_cmd, search_cmd, serve_cmd
from .run import demo, eval_cmd, score_cmd, train_cmd

__all__ = ["app", "console", "main", "demo", "detect_cmd", "inspect_cmd", "download_cmd", "prepare_cmd", "embed_audio_cmd",
           "embed_images_cmd", "embed_text_cmd",
           "models_cmd", "index_cmd", "search_cmd", "serve_cmd", "eval_cmd", "score_cmd", "train_cmd"]
