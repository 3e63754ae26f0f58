"""`birdbridge data download` against a real local HTTP server with Range support.

The archives are the real layouts made small (tests/dataset_mirror.py); the server is a
real socket server, so resume, refusal and offline behaviour are what a user meets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dataset_mirror import SPECIES, RangeServer, build_inat, build_ssw60, build_taxonomy, checksums

BIN = Path(sys.executable).with_name("birdbridge")
SR = 22050


def _tone(k: int, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (800 + 200 * k) * t)).astype(np.float32)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    m = tmp_path_factory.mktemp("mirror")
    noise = np.random.default_rng(0).standard_normal(SR * 8).astype(np.float32) * 0.1  # incompressible: a big archive
    clips = {"train": {sci: [_tone(k), noise] for k, (sci, *_) in enumerate(SPECIES[:2])}}
    build_inat(m, clips)
    build_ssw60(m, {"test": {SPECIES[0][0]: [_tone(0)]}}, {})
    build_taxonomy(m)
    (m / "checksums.md5").write_text(checksums(m))
    return m


def _run(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "data", "download", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "COLUMNS": "80"})


def _error_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in res.stderr, res.stderr
    err = [ln for ln in lines if ln.startswith("error:")]
    assert len(err) == 1, res.stderr
    return err[0]


def test_interrupted_download_resumes_with_a_range_request(tmp_path, mirror):
    root = tmp_path / "data"
    with RangeServer(mirror) as srv:
        size = (mirror / "inat_sounds" / "train.tar.gz").stat().st_size
        srv.break_after["inat_sounds/train.tar.gz"] = size // 2
        first = _run("inat_sounds", "--root", root, "--split", "train", "--mirror", srv.url,
                     "--checksums", mirror / "checksums.md5", cwd=tmp_path)
        assert first.returncode == 2
        assert "run the command again to resume" in _error_line(first)
        part = root / ".downloads" / "inat_sounds" / "train.tar.gz.part"
        assert part.is_file() and 0 < part.stat().st_size < size
        assert not (root / "inat_sounds" / "train").exists()  # nothing half-made looks complete
        had = part.stat().st_size

        second = _run("inat_sounds", "--root", root, "--split", "train", "--mirror", srv.url,
                      "--checksums", mirror / "checksums.md5", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        gets = [r for r in srv.log if r[0] == "GET" and r[1] == "inat_sounds/train.tar.gz"]
        assert gets[-1][2] == f"bytes={had}-", gets  # asked only for the rest
    assert "resumed" in second.stderr
    wavs = sorted((root / "inat_sounds" / "train").rglob("*.wav"))
    assert len(wavs) == 4
    doc = json.loads((root / "inat_sounds" / "train.json").read_text())
    assert {a["file_name"] for a in doc["audio"]} == {w.relative_to(root / "inat_sounds").as_posix() for w in wavs}
    assert not part.exists() and not (root / ".downloads" / "inat_sounds" / "train.tar.gz").exists()  # archive removed

    from birdbridge.data.loaders import load_collection

    coll = load_collection("inat_sounds", root / "inat_sounds" / "train.json")
    assert len(coll.audio) == 4 and all(coll.resolve(a.path).is_file() for a in coll.audio)

    with RangeServer(mirror) as srv:  # idempotent: a re-run asks the server for nothing
        again = _run("inat_sounds", "--root", root, "--split", "train", "--mirror", srv.url,
                     "--checksums", mirror / "checksums.md5", cwd=tmp_path)
        assert again.returncode == 0 and srv.log == [], (again.stderr, srv.log)
    # one status line per item (the closing outputs list notes "(present)" too)
    assert [ln.split()[0] for ln in again.stderr.splitlines() if ln.strip()].count("present") == 2, again.stderr


def test_bad_checksum_is_refused_and_the_download_deleted(tmp_path, mirror):
    bad = tmp_path / "bad.md5"
    bad.write_text(checksums(mirror).replace(
        checksums(mirror).split("  ssw60/ssw60.tar.gz")[0].split("\n")[-1], "0" * 32))
    root = tmp_path / "data"
    with RangeServer(mirror) as srv:
        res = _run("ssw60", "--root", root, "--mirror", srv.url, "--checksums", bad, cwd=tmp_path)
    assert res.returncode == 2
    line = _error_line(res)
    assert "ssw60.tar.gz" in line and "is not the expected " + "0" * 32 in line
    assert not (root / "ssw60").exists()
    assert not list((root / ".downloads").rglob("ssw60.tar.gz*"))


def test_without_a_checksums_file_the_published_checksum_rejects_a_mirror_copy(tmp_path, mirror):
    # the mirror's ssw60.tar.gz is not the real release, so the README's md5 must refuse it
    with RangeServer(mirror) as srv:
        res = _run("ssw60", "--root", tmp_path / "data", "--mirror", srv.url, cwd=tmp_path)
    assert res.returncode == 2 and "e0526d53c7f7b2e3167b2b43bb2690ed" in _error_line(res)


def test_offline_fails_at_once_naming_the_url(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    res = _run("all", "--root", tmp_path / "data", "--mirror", f"http://127.0.0.1:{port}", cwd=tmp_path)
    took = time.monotonic() - t0
    assert res.returncode == 2
    line = _error_line(res)
    assert f"http://127.0.0.1:{port}/inat_sounds/" in line and "cannot reach" in line, line
    assert took < 20, took  # fails at once (CLI start-up included), no retry loop
    assert not any((tmp_path / "data").glob("*/*")), "nothing written before the failure"


def test_too_little_disk_is_refused_before_downloading(tmp_path, mirror):
    with RangeServer(mirror) as srv:
        srv.head_size["ssw60/ssw60.tar.gz"] = 10**16  # the server says 10 PB
        res = _run("ssw60", "--root", tmp_path / "data", "--mirror", srv.url, "--checksums", mirror / "checksums.md5",
                   cwd=tmp_path)
        assert not [r for r in srv.log if r[0] == "GET"]
    assert res.returncode == 2 and "free space needed" in _error_line(res)


def test_taxonomy_without_published_checksum_is_recorded_then_checked(tmp_path, mirror):
    root = tmp_path / "data"
    with RangeServer(mirror) as srv:
        res = _run("ebird_taxonomy", "--root", root, "--mirror", srv.url, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "sha256 recorded" in res.stderr
        csv_path = root / "ebird" / "eBird_taxonomy_v2024.csv"
        assert csv_path.read_bytes() == (mirror / "ebird_taxonomy" / "eBird_taxonomy_v2024.csv").read_bytes()
        from birdbridge.data.soundscapes import load_taxonomy

        assert load_taxonomy(csv_path)["blkpho"].scientific_name == "Sayornis nigricans"
        assert _run("ebird_taxonomy", "--root", root, "--mirror", srv.url, cwd=tmp_path).returncode == 0
        csv_path.write_bytes(csv_path.read_bytes() + b"999,species,xxx,,X,Xus xus,A,B,,\n")
        res = _run("ebird_taxonomy", "--root", root, "--mirror", srv.url, cwd=tmp_path)
    assert res.returncode == 2 and "changed since it was downloaded" in _error_line(res)


def test_a_killed_extraction_leaves_nothing_complete_and_is_cleaned_up(tmp_path, mirror):
    from birdbridge.data.fetch import extract

    archive = mirror / "ssw60" / "ssw60.tar.gz"
    target = tmp_path / "data" / "ssw60"
    target.parent.mkdir(parents=True)
    seen = []

    def dies(n):  # the process "dies" after the first block of the archive
        seen.append(n)
        if len(seen) > 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(archive, "ssw60", target, dies)
    assert not target.exists() and not list(target.parent.iterdir())
    # a SIGKILL leaves the temporary directory behind: the next run removes it and finishes
    debris = target.parent / ".ssw60.extract-abc123"
    (debris / "ssw60").mkdir(parents=True)
    (debris / "ssw60" / "taxa.csv").write_text("half")
    with RangeServer(mirror) as srv:
        res = _run("ssw60", "--root", tmp_path / "data", "--mirror", srv.url, "--checksums", mirror / "checksums.md5",
                   cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not debris.exists() and (target / "taxa.csv").read_text().startswith("label,")
    from birdbridge.data.ssw60 import load_ssw60

    assert len(load_ssw60(target).audio) == 1


def test_checksums_file_and_kind_errors_are_one_line(tmp_path):
    bad = tmp_path / "sums.txt"
    bad.write_text("nothex  ssw60/ssw60.tar.gz\n")
    res = _run("ssw60", "--root", tmp_path / "d", "--checksums", bad, cwd=tmp_path)
    assert res.returncode == 2 and "sums.txt:1" in _error_line(res)
    res = _run("birdclef", "--root", tmp_path / "d", cwd=tmp_path)
    assert res.returncode == 2 and "unknown dataset 'birdclef'" in _error_line(res)
