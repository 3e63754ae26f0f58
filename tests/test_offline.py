"""Offline, an uncached hub id fails at once and says how to get out; nothing falls back silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from birdbridge.errors import ModelNotAvailableError


@pytest.fixture
def empty_hf_home(tmp_path, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 and an empty HF_HOME, for this process and any child."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    # huggingface_hub read these at import time; patch the module values too.
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def _assert_ways_out(message: str, model_id: str, repo: str, home: Path) -> None:
    assert model_id in message
    assert str(home / "hub") in message  # the cache directory looked in
    assert f"hf download {repo}" in message
    assert "local directory" in message


def _load_clap(mid):
    from birdbridge.encoders.clap import load_clap

    return load_clap(mid)


def _load_embedder(mid):
    from birdbridge.encoders.factory import load_audio_embedder

    return load_audio_embedder(mid)


def _load_teacher(mid):
    from birdbridge.encoders.teacher import Teacher

    return Teacher.load(mid)


def _load_checkpoint(mid):
    from birdbridge.encoders.student import DistilledModel

    return DistilledModel.from_pretrained(mid)


@pytest.mark.parametrize(
    ("loader", "model_id", "repo"),
    [
        (_load_clap, "davidrrobinson/BioLingual", "davidrrobinson/BioLingual"),
        (_load_embedder, "davidrrobinson/BioLingual", "davidrrobinson/BioLingual"),
        (_load_teacher, "hf-hub:imageomics/bioclip-2", "imageomics/bioclip-2"),
        (_load_checkpoint, "birdbridge-org/distilled-biolingual-bioclip2", "birdbridge-org/distilled-biolingual-bioclip2"),
        (_load_embedder, "birdbridge-org/distilled-biolingual-bioclip2", "birdbridge-org/distilled-biolingual-bioclip2"),
    ],
)
def test_uncached_hub_id_fails_fast_with_ways_out(empty_hf_home, loader, model_id, repo):
    import open_clip  # noqa: F401 - import time is not what "at once" is about
    from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel  # noqa: F401

    t0 = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as info:
        loader(model_id)
    assert time.perf_counter() - t0 < 5.0  # "at once": no download attempts or retries
    _assert_ways_out(str(info.value), model_id, repo, empty_hf_home)
    assert "HF_HUB_OFFLINE" in str(info.value)


def test_models_lists_known_ids_and_cache_state(empty_hf_home):
    from birdbridge.cli import app
    from birdbridge.encoders.registry import birdnet_status

    # Fake one cached snapshot (the layout huggingface_hub writes) to see the "cached" side.
    snap = empty_hf_home / "hub" / "models--davidrrobinson--BioLingual"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    files = snap / "snapshots" / "abc123"
    files.mkdir(parents=True)
    (files / "config.json").write_text("{}")
    (files / "model.safetensors").write_bytes(b"x")

    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    assert {"davidrrobinson/BioLingual", "laion/clap-htsat-unfused", "birdnet",
            "hf-hub:imageomics/bioclip-2", "hf-hub:imageomics/bioclip"} <= set(rows)
    assert rows["davidrrobinson/BioLingual"]["cached"] is True
    assert rows["hf-hub:imageomics/bioclip-2"]["cached"] is False
    assert "hf download imageomics/bioclip-2" in rows["hf-hub:imageomics/bioclip-2"]["detail"]
    assert rows["birdnet"]["cached"] is birdnet_status()[0]
    assert rows["hf-hub:imageomics/bioclip-2"]["role"] == "teacher" and rows["birdnet"]["space"] == "birdnet"

    (files / "model.safetensors").unlink()  # config without weights is not "cached"
    rows = {r["id"]: r for r in json.loads(CliRunner().invoke(app, ["models", "--json"]).stdout)}
    assert rows["davidrrobinson/BioLingual"]["cached"] is False


def test_cli_offline_error_is_one_line_without_traceback(empty_hf_home, tmp_path):
    """The real entry point in a fresh process (huggingface_hub reads the env at import)."""
    exe = Path(sys.executable).with_name("birdbridge")
    env = {**os.environ, "HF_HOME": str(empty_hf_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(exe), "embed-text", "a bird", "--teacher", "hf-hub:imageomics/bioclip-2", "--out", str(tmp_path / "t.npy")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    _assert_ways_out(" ".join(proc.stderr.split()), "hf-hub:imageomics/bioclip-2", "imageomics/bioclip-2", empty_hf_home)
    assert not (tmp_path / "t.npy").exists()
