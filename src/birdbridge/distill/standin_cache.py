"""A cache of the pretrained stand-ins, shared by every run that would train the same ones.

Pretraining the stand-in teacher and student (:mod:`.standins`) is most of ``birdbridge demo``'s
time and is the same work on every run with the same seed: the same world, steps and code give
the same weights bit for bit (the builders seed their own generators). So a finished model
folder is kept under ``~/.cache/birdbridge/standins/<key>/`` (``BIRDBRIDGE_STANDIN_CACHE``
moves it; ``off`` turns it off), beside the text-embedding and ONNX caches, and a later run
copies it instead of training.

The key is everything the weights depend on: what is trained (teacher or student) and its
arguments (steps, seed, learning rate, the species whose names the captions say), the training
files' bytes and the species' names, the source of the code that trains (this package's
pretraining, tiny-model, synthetic-world, loss and mel front-end modules) and the versions of
torch, transformers, open_clip and tokenizers. A change in any of them is a miss, never a stale
hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

CACHE_ENV = "BIRDBRIDGE_STANDIN_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/birdbridge/standins"
FORMAT = 1  # bump when what a cache entry holds changes
DONE = ".complete"  # written last: a folder without it is an interrupted fill, never used
# the modules whose code decides the stand-ins' weights (relative to the package root)
_CODE = ("distill/standins.py", "distill/loss.py", "encoders/tiny.py", "encoders/frontend.py",
         "encoders/clap_features.py", "data/synthetic.py", "data/audio.py", "data/audio_file.py", "taxonomy.py")
_LIBRARIES = ("torch", "transformers", "open_clip_torch", "tokenizers", "numpy")


def cache_root() -> Path | None:
    """The cache folder, or None when ``BIRDBRIDGE_STANDIN_CACHE`` is ``off`` (or ``0``)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("off", "0", "no", "false"):
        return None
    return Path(value or DEFAULT_CACHE_DIR).expanduser()


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_digest() -> str:
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in _CODE:
        h.update(rel.encode() + b"\0" + (package / rel).read_bytes())
    return h.hexdigest()


def files_digest(paths: Iterable[str | Path]) -> str:
    """The training files' contents, in the order given (their names do not matter)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def cache_key(kind: str, args: dict) -> str:
    """The entry name of one stand-in: ``kind``, its ``args`` (JSON-able), the code and the libraries."""
    blob = json.dumps({"format": FORMAT, "kind": kind, "args": args, "code": code_digest(), "versions": _versions()},
                      sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


def cached_build(kind: str, args: dict, out_dir: str | Path, build: Callable[[Path], Path]) -> tuple[Path, bool]:
    """``out_dir`` filled with the model ``build(folder)`` trains, from the cache when it holds it.

    Returns ``(out_dir, hit)``. On a miss ``build`` trains into a folder inside the cache, which
    is kept (marked complete last) and then copied to ``out_dir``: a hit and a miss give the
    same files. Without a cache ``build(out_dir)`` runs as it always did."""
    out_dir = Path(out_dir)
    root = cache_root()
    if root is None:
        return build(out_dir), False
    entry = root / cache_key(kind, args)
    hit = (entry / DONE).is_file()
    if not hit:
        from ..io import atomic_dir

        with atomic_dir(entry) as tmp:
            # a scratch folder beside the model (the student's tokenizer work dir) stays out of the entry
            build(tmp / "model")
            (tmp / DONE).write_text(json.dumps({"kind": kind, "args": args}, sort_keys=True, default=str))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(entry / "model", out_dir)
    return out_dir, hit


__all__ = ["CACHE_ENV", "DEFAULT_CACHE_DIR", "cache_root", "cache_key", "cached_build", "code_digest", "files_digest"]
