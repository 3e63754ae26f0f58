"""The HTTP server: search, image serving, limits and error answers, and a real curl run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from birdbridge.retrieval.index import ImageIndex, records_from_collection
from birdbridge.retrieval.search import load_search_model
from birdbridge.serve.app import ServeSettings, create_app

MAX_UPLOAD = 200_000


@pytest.fixture(scope="module")
def world(demo_run):
    from birdbridge.data.synthetic import load_world

    return load_world(demo_run[0] / "world")


@pytest.fixture(scope="module")
def index_dir(demo_run, world, tmp_path_factory) -> Path:
    from birdbridge.encoders.teacher import Teacher

    root = tmp_path_factory.mktemp("serve") / "index"
    ImageIndex.build(root, Teacher.load(str(demo_run[0] / "teacher")), records_from_collection(world, ("test",)))
    return root


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return ServeSettings(max_upload_bytes=MAX_UPLOAD, max_duration_s=10.0, default_k=7,
                         cache_dir=str(tmp_path_factory.mktemp("text_cache")))


@pytest.fixture(scope="module")
def clips(demo_run, world, index_dir, settings):
    """One held-out clip for each of 6 species, each one the model gets right offline.

    Accuracy is tested in test_search.py; here the question is whether the server gives the
    same answers, so the clips are ones whose right answer is known.
    """
    from birdbridge.retrieval.search import search_audio

    by_species = defaultdict(list)
    for a in world.audio_split("test"):
        by_species[a.species_id].append(str(world.resolve(a.path)))
    chosen = []
    for sp in sorted(by_species):
        found = search_audio(str(demo_run[0] / "model"), index_dir, by_species[sp], k=1, guess=True, cache_dir=settings.cache_dir)
        right = [r.path for r in found if r.hits[0].species_id == sp and r.species_guess[0]["species_id"] == sp]
        if right:
            chosen.append((right[0], sp))
        if len(chosen) == 6:
            return chosen
    pytest.fail(f"the demo model finds fewer than 6 species from their clips: {chosen}")


@pytest.fixture(scope="module")
def client(demo_run, index_dir, settings):
    from fastapi.testclient import TestClient

    app = create_app(str(demo_run[0] / "model"), index_dir, settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _wav_bytes(wave: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _post(client, data: bytes, name="clip.wav", ctype="audio/wav", **form):
    return client.post("/search", files={"audio": (name, data, ctype)}, data=form)


def _assert_clean_error(resp, status: int, reason: str | None = None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "detail"}
    if reason:
        assert body["error"] == reason, body
    assert "Traceback" not in resp.text and 'File "' not in resp.text and ".py" not in resp.text


def test_search_returns_k_results_and_serves_their_images(client, clips):
    path, species = clips[0]
    resp = _post(client, Path(path).read_bytes(), k="5")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["hits"]) == 5 and body["k"] == 5
    assert body["hits"][0]["species_id"] == species
    assert body["windows"] and body["duration_s"] > 0
    assert body["species_guess"] and body["species_guess"][0]["species_id"] == species
    assert "/" not in body["hits"][0]["name"] and body["hits"][0]["path"] is None  # no server paths in answers
    assert body["path"] == "upload" and body["schema"] == "birdbridge.search/1"
    img = client.get(body["hits"][0]["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size[0] > 0
    thumb = client.get(body["hits"][0]["thumbnail_url"].replace("256", "16"))
    assert thumb.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) <= 16
    # k as a query parameter, and the default
    assert len(client.post("/search?k=3", files={"audio": ("a", Path(path).read_bytes())}).json()["hits"]) == 3
    assert len(_post(client, Path(path).read_bytes()).json()["hits"]) == 7


def test_server_answers_match_the_python_api(client, clips, demo_run, index_dir):
    from birdbridge.retrieval.search import search_audio

    direct = search_audio(str(demo_run[0] / "model"), index_dir, [p for p, _ in clips], k=6)
    for (path, species), ref in zip(clips, direct):
        body = _post(client, Path(path).read_bytes(), name="x", k="6").json()
        assert [h["id"] for h in body["hits"]] == [h.id for h in ref.hits]
        assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in ref.hits], abs=1e-4)
        assert body["hits"][0]["species_id"] == species


def test_images_endpoint_serves_only_indexed_ids(client, index_dir):
    n = ImageIndex.open(index_dir).count
    assert client.get("/images/0").status_code == 200
    for bad in (f"/images/{n}", "/images/-1", "/images/abc", "/images/1.5", "/images/99999999999999999999",
                "/images/..%2F..%2Findex.json", "/images/0%2F..%2F..%2Fetc%2Fpasswd", "/images/%2Fetc%2Fpasswd"):
        r = client.get(bad)
        assert r.status_code == 404, (bad, r.status_code)
        assert "root:" not in r.text and "format_version" not in r.text
    r = client.get("/images/../index.json")
    assert r.status_code == 404 and "format_version" not in r.text
    _assert_clean_error(client.get("/images/0?max_side=5"), 422)


def test_too_large_and_too_long_uploads_get_413(client, clips):
    big = _wav_bytes(np.zeros(MAX_UPLOAD, np.float32) + 0.01, 16000)  # 2 bytes per sample: twice the limit
    _assert_clean_error(_post(client, big), 413, "too_large")
    sr = 1000  # 20 s at 1 kHz: small file, long recording
    long = _wav_bytes(0.1 * np.sin(np.arange(20 * sr) * 0.3).astype(np.float32), sr)
    assert len(long) < MAX_UPLOAD
    _assert_clean_error(_post(client, long), 413, "too_long")


def test_content_is_sniffed_not_trusted(client, clips, tmp_path):
    _assert_clean_error(_post(client, b"definitely not audio " * 50, name="bird.wav", ctype="audio/wav"), 415, "not_audio")
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(png, "PNG")
    _assert_clean_error(_post(client, png.getvalue(), name="song.mp3", ctype="audio/mpeg"), 415, "not_audio")
    # real audio with a misleading name and type is accepted
    ok = _post(client, Path(clips[1][0]).read_bytes(), name="photo.jpg", ctype="image/jpeg", k="2")
    assert ok.status_code == 200 and len(ok.json()["hits"]) == 2


def test_bad_parameters_and_unusable_audio_get_422(client, clips):
    data = Path(clips[0][0]).read_bytes()
    for k in ("0", "-3", "abc", "1000", "2.5"):
        _assert_clean_error(_post(client, data, k=k), 422, "bad_k")
    _assert_clean_error(client.post("/search", data={"k": "3"}), 422, "bad_request")  # no audio field
    _assert_clean_error(_post(client, b""), 422)
    _assert_clean_error(_post(client, _wav_bytes(np.zeros(16000, np.float32), 16000)), 422, "silent")


def test_internal_errors_and_timeouts_hide_details(demo_run, index_dir, settings, clips):
    from fastapi.testclient import TestClient

    index = ImageIndex.open(index_dir)
    real = load_search_model(str(demo_run[0] / "model"), index)

    class Broken:
        name, space, sample_rate, window_samples, dim, model = real.name, real.space, real.sample_rate, real.window_samples, real.dim, real.model

        def embed_windows(self, waves):
            raise RuntimeError("secret internal detail at /srv/private/path.py")

    data = Path(clips[0][0]).read_bytes()
    with TestClient(create_app(Broken(), index, settings), raise_server_exceptions=False) as c:
        r = _post(c, data)
        _assert_clean_error(r, 500, "internal_error")
        assert "secret" not in r.text
    slow = ServeSettings(**{**settings.__dict__, "request_timeout_s": 0.001})

    class Slow(Broken):
        def embed_windows(self, waves):
            time.sleep(0.5)
            return real.embed_windows(waves)

    with TestClient(create_app(Slow(), index, slow), raise_server_exceptions=False) as c:
        _assert_clean_error(_post(c, data), 504, "timeout")


def test_health_page_and_openapi(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["images"] == 144 and h["dim"] > 0
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "MediaRecorder" in page.text
    assert "<script src" not in page.text and "<link" not in page.text
    spec = client.get("/openapi.json").json()
    assert "/search" in spec["paths"] and "/images/{image_id}" in spec["paths"]


# --------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model: Path, index: Path, cache_dir: Path, timeout_s: float = 180.0):
    """``birdbridge serve`` in a subprocess on a free port; yields the base URL once /health answers."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(cache_dir / f"server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "birdbridge.cli", "serve", "--model", str(model), "--index", str(index),
                             "--port", str(port), "--cache-dir", str(cache_dir)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {(cache_dir / f'server-{port}.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if json.loads(r.read())["status"] == "ok":
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not answer /health in time")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_real_server_with_curl(demo_run, index_dir, clips, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    path, species = clips[2]
    with running_server(demo_run[0] / "model", index_dir, tmp_path) as url:
        out = subprocess.run(["curl", "-sS", "-F", f"audio=@{path}", "-F", "k=4", f"{url}/search"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        assert len(body["hits"]) == 4 and body["hits"][0]["species_id"] == species
        bad = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F", f"audio=@{Path(__file__)}",
                              f"{url}/search"], capture_output=True, text=True, timeout=60)
        assert bad.stdout == "415"
