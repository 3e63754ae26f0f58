"""The server under hostile input: size/duration limits, sniffing, no file access outside the
index, timeouts, no stack traces, and a bounded schemathesis run that finds no 5xx.

Uses tiny random-weight models (a distilled head on the tiny CLAP, the tiny open_clip
teacher): what is tested is the HTTP layer, not retrieval quality (test_serve.py does that).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from badcorpus import AUDIO_EXPECTED, _photo, tone, write_bad_audio, write_long_sparse_wav

MAX_UPLOAD = 1_000_000  # above the 192 kHz clip of the corpus (576 kB)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_clap_dir, tiny_open_clip_dir):
    """(model dir, index dir) with a few indexed photos and a secret file beside the index."""
    from birdbridge.encoders.clap import load_clap
    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent, DistilledModel
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex, ImageRecord

    d = tmp_path_factory.mktemp("hardening")
    teacher = Teacher.load(str(tiny_open_clip_dir))
    clap, fe = load_clap(str(tiny_clap_dir))
    meta = {"student_id": str(tiny_clap_dir), "teacher_id": str(tiny_open_clip_dir),
            "prompt_recipe": {"prompt_type": "taxonomic", "template_set": "single"}}
    DistilledModel.from_student(AudioStudent.from_clap(clap, fe, HeadSpec(kind="linear", out_dim=teacher.dim)),
                                meta).eval().save_pretrained(d / "model")
    (d / "photos").mkdir()
    records = []
    for i in range(5):
        p = d / "photos" / f"bird{i}.jpg"
        Image.fromarray(_photo(40, seed=i)).save(p)
        records.append(ImageRecord(str(p), species_id=f"sp{i % 2}", scientific_name=f"Avis species{i % 2}"))
    ImageIndex.build(d / "index", teacher, records)
    (d / "secret.txt").write_text("top secret\n")
    return d / "model", d / "index", d


def _client(served, **overrides):
    from fastapi.testclient import TestClient

    from birdbridge.serve.app import ServeSettings, create_app

    settings = ServeSettings(max_upload_bytes=MAX_UPLOAD, max_duration_s=10.0, guess_species=False, **overrides)
    return TestClient(create_app(str(served[0]), served[1], settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(served):
    with _client(served) as c:
        yield c


def _clean_error(resp, statuses: set[int], reason: str | None = None) -> dict:
    assert resp.status_code in statuses, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert set(body) == {"error", "detail"}, body
    if reason:
        assert body["error"] == reason, body
    for leak in ("Traceback", 'File "', ".py", "/tmp/", str(Path.home())):
        assert leak not in resp.text, (leak, resp.text)
    return body


def _wav(wave: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_every_bad_upload_gets_a_clean_4xx(client, tmp_path):
    files = write_bad_audio(tmp_path / "corpus")
    statuses = {}
    for name, path in files.items():
        if path.is_dir():
            continue
        resp = client.post("/search", files={"audio": (name, path.read_bytes(), "audio/wav")})
        statuses[name] = resp.status_code
        if AUDIO_EXPECTED[name] is None:
            assert resp.status_code == 200, (name, resp.text[:300])
            assert resp.json()["hits"], name
        else:
            _clean_error(resp, {413, 415, 422})
    assert statuses["random_bytes.wav"] == statuses["text_file.wav"] == 415
    assert statuses["zero_bytes.wav"] == 422 and statuses["nan.wav"] == 422


def test_content_is_sniffed_not_the_filename_or_type(client):
    good = _wav(tone(16000, 1.0), 16000)
    # audio disguised as a picture is still audio ...
    assert client.post("/search", files={"audio": ("photo.jpg", good, "image/jpeg")}).status_code == 200
    # ... and a picture named like audio is refused by content
    buf = io.BytesIO()
    Image.fromarray(_photo(32)).save(buf, "PNG")
    _clean_error(client.post("/search", files={"audio": ("song.wav", buf.getvalue(), "audio/wav")}), {415}, "not_audio")
    # a filename trying to walk the server's disk is only a name: it is never used as a path
    resp = client.post("/search", files={"audio": ("../../../../etc/passwd", good, "audio/wav")})
    assert resp.status_code == 200 and "passwd" not in resp.text


def test_size_and_duration_limits(client, served, tmp_path):
    # declared too large: refused from the header, before the body is read
    big = b"\0" * (MAX_UPLOAD + 70_000)
    _clean_error(client.post("/search", files={"audio": ("a.wav", big, "audio/wav")}), {413}, "too_large")
    # streamed without a length (chunked): refused once the limit is crossed
    def chunks():  # a well-formed multipart upload that just never ends soon enough
        yield (b'--zz\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
               b"Content-Type: audio/wav\r\n\r\n")
        for _ in range(MAX_UPLOAD // 16384 + 10):
            yield b"x" * 16384
    resp = client.post("/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    _clean_error(resp, {413}, "too_large")
    # a small file holding a long recording: 20 s of 8 kHz 8-bit audio is 160 kB
    long_small = write_long_sparse_wav(tmp_path / "long.wav", hours=20 / 3600, chirp_every_s=5.0)
    assert long_small.stat().st_size < MAX_UPLOAD
    _clean_error(client.post("/search", files={"audio": ("x.wav", long_small.read_bytes(), "audio/wav")}), {413}, "too_long")


@pytest.mark.parametrize("url", [
    "/images/..%2F..%2Fsecret.txt", "/images/../secret.txt", "/images/%2e%2e/secret.txt", "/images/-1",
    "/images/5", "/images/99999999999999", "/images/1e0", "/images/0x1", "/images/%00", "/images/ 1",
    "/images/1/../../secret.txt", "/images//etc/passwd", "/index.json", "/shards/shard-00000.npy", "/secret.txt",
    "/static/../../secret.txt", "/images/1?max_side=100000", "/images/1?max_side=-5", "/images/1?max_side=abc",
])
def test_no_file_outside_the_index_is_served(client, url):
    resp = client.get(url)
    assert resp.status_code in (404, 405, 422), (url, resp.status_code)
    assert b"top secret" not in resp.content and b"format_version" not in resp.content
    _clean_error(resp, {404, 405, 422})


def test_indexed_images_are_served_and_only_those(client):
    ok = client.get("/images/0")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
    thumb = client.get("/images/4?max_side=16")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size[0] <= 16


def test_request_timeout_gives_504(served):
    with _client(served, request_timeout_s=0.001) as slow:
        slow.post("/search", files={"audio": ("a.wav", _wav(tone(16000, 1.0), 16000), "audio/wav")})  # warm-up
        t0 = time.time()
        resp = slow.post("/search", files={"audio": ("a.wav", _wav(tone(16000, 8.0), 16000), "audio/wav")})
    _clean_error(resp, {504}, "timeout")
    assert time.time() - t0 < 30


def test_bad_parameters_are_422_not_500(client):
    good = _wav(tone(16000, 1.0), 16000)
    for k in ("0", "-1", "abc", "1.5", "1000000", "9" * 40, "1; DROP TABLE"):
        _clean_error(client.post("/search", files={"audio": ("a.wav", good, "audio/wav")}, data={"k": k}), {422})
    _clean_error(client.post("/search"), {422})
    _clean_error(client.post("/search", data={"audio": "not a file"}), {422})
    _clean_error(client.post("/search", content=b"garbage", headers={"content-type": "multipart/form-data"}), {400, 422})


def test_schemathesis_finds_no_server_error(served):
    """A bounded property-based run over every operation in the app's OpenAPI schema."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    from birdbridge.serve.app import ServeSettings, create_app

    app = create_app(str(served[0]), served[1], ServeSettings(max_upload_bytes=MAX_UPLOAD, max_duration_s=10.0,
                                                              guess_species=False, request_timeout_s=20.0))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    from collections import Counter

    failures, calls, seen = [], 0, Counter()
    t0 = time.time()
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=60, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            nonlocal calls
            resp = case.call()
            calls += 1
            seen[(operation.label, resp.status_code)] += 1
            if resp.status_code >= 500 or b"Traceback" in resp.content:
                failures.append((operation.label, resp.status_code, resp.content[:200]))

        check()
    print(f"schemathesis: {calls} calls over {len(list(schema.get_all_operations()))} operations "
          f"in {time.time() - t0:.1f} s: {dict(seen)}")
    assert calls >= 60 and seen[("POST /search", 422)] + seen[("POST /search", 415)] > 0
    assert not failures, failures[:5]
    assert time.time() - t0 < 90
