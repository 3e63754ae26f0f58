"""Issue 16, point 7: one search result schema for the CLI, the server, the page and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def structure(x):
    """The shape of a JSON value: dict keys and list element shapes, recursively; leaves are one mark."""
    if isinstance(x, dict):
        return {k: structure(v) for k, v in x.items()}
    if isinstance(x, list):
        return [structure(x[0])] if x else []
    return "leaf"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_open_clip_dir):
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex, records_from_source

    d = tmp_path_factory.mktemp("schema")
    rng = np.random.default_rng(0)
    for sp in ("Sayornis_nigricans", "Spinus_psaltria", "Poecile_rufescens"):
        (d / "photos" / sp).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / "photos" / sp / f"{j}.png")
    ImageIndex.build(d / "index", Teacher.load(str(tiny_open_clip_dir)), records_from_source(d / "photos"))
    t = np.arange(int(3.2 * 16000)) / 16000
    sf.write(d / "clip.wav", (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32), 16000)
    return d


def test_cli_server_and_python_give_one_structure(setup, tiny_distilled_dir, tmp_path):
    from fastapi.testclient import TestClient

    from birdbridge.retrieval.search import search_audio
    from birdbridge.serve.app import ServeSettings, create_app

    d = setup
    cache = tmp_path / "cache"
    res = subprocess.run([str(BIN), "search", str(d / "clip.wav"), "--model", str(tiny_distilled_dir), "--index",
                          str(d / "index"), "-k", "4", "--guess-species", "--cache-dir", str(cache), "--format", "json",
                          "--out", "cli.json"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    cli = json.loads((tmp_path / "cli.json").read_text())
    assert isinstance(cli, list) and len(cli) == 1
    cli = cli[0]

    app = create_app(str(tiny_distilled_dir), d / "index", ServeSettings(cache_dir=str(cache), default_k=4))
    with TestClient(app) as client:
        resp = client.post("/search", files={"audio": ("clip.wav", (d / "clip.wav").read_bytes(), "audio/wav")})
    assert resp.status_code == 200, resp.text
    server = resp.json()
    api = search_audio(str(tiny_distilled_dir), d / "index", [d / "clip.wav"], k=4, guess=True, cache_dir=cache)[0].to_dict()

    assert structure(cli) == structure(server) == structure(api)
    assert cli["schema"] == server["schema"] == "birdbridge.search/1"
    assert set(cli["hits"][0]) >= {"rank", "id", "score", "path", "name", "species_id", "scientific_name", "common_name",
                                   "author", "license", "source", "best_window", "image_url", "thumbnail_url"}
    assert set(cli["hits"][0]["best_window"]) == {"index", "start_s", "end_s"}
    # the same clip, the same answer; only what a front end cannot give differs
    assert [h["id"] for h in cli["hits"]] == [h["id"] for h in server["hits"]] == [h["id"] for h in api["hits"]]
    assert [h["score"] for h in server["hits"]] == pytest.approx([h["score"] for h in cli["hits"]], abs=1e-4)
    assert cli["windows"] == server["windows"] and cli["duration_s"] == server["duration_s"] == pytest.approx(3.2)
    assert [g["species_id"] for g in cli["species_guess"]] == [g["species_id"] for g in server["species_guess"]]
    assert all(h["path"] and Path(h["path"]).is_file() and h["image_url"] is None for h in cli["hits"])
    assert all(h["path"] is None and h["image_url"] == f"/images/{h['id']}" for h in server["hits"])
    assert server["path"] == "upload" and cli["path"].endswith("clip.wav")


def test_the_schema_document_names_every_field():
    from dataclasses import fields

    from birdbridge.retrieval.results import Detection, DetectionResult, Hit, SearchResult, Window

    doc = (Path(__file__).resolve().parents[1] / "docs" / "SEARCH_SCHEMA.md").read_text()
    for cls in (SearchResult, Hit, Window, Detection, DetectionResult):
        for f in fields(cls):
            assert f"`{f.name}`" in doc, f"docs/SEARCH_SCHEMA.md does not describe {cls.__name__}.{f.name}"
