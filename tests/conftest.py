"""Shared fixtures: tiny replicas of the real architectures, and one demo run per session.

Nothing here downloads anything: models are built and saved at test time and loaded
back through the same code paths real checkpoints use.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the stand-in cache (distill/standin_cache.py) of this session only: tests neither read a
# user's ~/.cache nor leave entries there, and the first demo of a session trains for real
_STANDINS = tempfile.mkdtemp(prefix="birdbridge-test-standins-")
os.environ.setdefault("BIRDBRIDGE_STANDIN_CACHE", _STANDINS)
atexit.register(shutil.rmtree, _STANDINS, True)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def phoebe(shared_data) -> Path:
    p = shared_data / "phoebe"
    if not (p / "recordings.csv").is_file():
        pytest.skip(f"phoebe recordings not found at {p}")
    return p


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory) -> Path:
    """A random-init tiny ``ClapModel`` + processor saved with ``save_pretrained``."""
    from birdbridge.encoders import tiny

    d = tmp_path_factory.mktemp("tiny_clap")
    corpus = ["the song of a Red Barred Warbler", "a recording of Setophaga coronata", "bird calling"]
    model, proc = tiny.build_tiny_clap(corpus, d / "tok", seed=0)
    return tiny.save_clap(model.eval(), proc, d / "clap")


@pytest.fixture(scope="session")
def tiny_clap_dropout_dir(tmp_path_factory) -> Path:
    """The tiny CLAP with hidden and attention dropout 0.2 (HTSAT's BatchNorm is always there)."""
    from birdbridge.encoders import tiny

    d = tmp_path_factory.mktemp("tiny_clap_dropout")
    corpus = ["the song of a Red Barred Warbler", "a recording of Setophaga coronata", "bird calling"]
    model, proc = tiny.build_tiny_clap(corpus, d / "tok", seed=0, dropout=0.2)
    return tiny.save_clap(model.eval(), proc, d / "clap")


@pytest.fixture(scope="session")
def tiny_open_clip_dir(tmp_path_factory) -> Path:
    """A random-init tiny open_clip ViT CLIP in the ``local-dir:`` layout."""
    from birdbridge.encoders import tiny

    model, cfg = tiny.build_tiny_open_clip(seed=0)
    return tiny.save_open_clip(model.eval(), cfg, tmp_path_factory.mktemp("tiny_open_clip"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The full offline demo (world, teacher, student, distillation, evaluation), run once.

    Returns ``(out_dir, results)``; tests reuse its trained models and files.
    """
    from rich.console import Console

    from birdbridge.demo.run import run_demo

    out = tmp_path_factory.mktemp("demo")
    results = run_demo(out, seed=0, console=Console(quiet=True))
    return out, results


@pytest.fixture(scope="session")
def tiny_distilled_dir(tmp_path_factory, tiny_clap_dir, tiny_open_clip_dir) -> Path:
    """A random-weight distilled checkpoint in the tiny teacher's space (search, detect).

    Its answers mean nothing; it has the real checkpoint's layout and metadata (teacher id,
    prompt recipe), so every verb that takes ``--model`` runs on it in seconds.
    """
    from birdbridge.encoders.clap import load_clap
    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent, DistilledModel
    from birdbridge.encoders.teacher import Teacher

    clap, fe = load_clap(str(tiny_clap_dir))
    dim = Teacher.load(str(tiny_open_clip_dir)).dim
    meta = {"student_id": str(tiny_clap_dir), "teacher_id": str(tiny_open_clip_dir),
            "prompt_recipe": {"prompt_type": "taxonomic", "template_set": "single"}}
    model = DistilledModel.from_student(AudioStudent.from_clap(clap, fe, HeadSpec(kind="linear", out_dim=dim)), meta)
    return model.eval().save_pretrained(tmp_path_factory.mktemp("tiny_distilled") / "model")
