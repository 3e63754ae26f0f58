"""Atomic outputs: a writer SIGKILLed at seeded random moments leaves whole, loadable outputs.

Writers run in subprocesses (a kill must be a real kill, not an exception the writer could
clean up after) and are killed after seeded delays; the readers then check what is on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from badcorpus import write_bad_images

PY = sys.executable
BIN = Path(sys.executable).with_name("birdbridge")
KILL_SEEDS = range(5)


def _start(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([PY, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)


def _kill_after_first_line(proc: subprocess.Popen, delay_s: float) -> None:
    """Wait until the writer reports its first commit, then SIGKILL it ``delay_s`` later."""
    line = proc.stdout.readline()
    assert line.strip(), "the writer died before its first commit"
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


# --------------------------------------------------------------------------- .npy/.parquet/.json

EMBEDDINGS_WRITER = """
import sys
import numpy as np
from birdbridge.errors import SkipLog
from birdbridge.embeddings import Embeddings
out, i = sys.argv[1], 0
while True:
    i += 1
    n = 1 + (i * 7919) % 300  # sizes vary, so a torn file could not pass as a whole one
    vec = np.full((n, 64), i, np.float32)
    Embeddings(vec, [{"input": f"v{i}-{k}"} for k in range(n)], SkipLog(), {"version": i}).save(out)
    print(i, flush=True)
"""


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_embedding_files_are_whole_after_a_kill(tmp_path, seed):
    out = tmp_path / "emb.npy"
    proc = _start(EMBEDDINGS_WRITER, str(out))
    _kill_after_first_line(proc, float(np.random.default_rng(seed).uniform(0.0, 0.6)))
    vec = np.load(out)
    assert vec.ndim == 2 and len(vec) and (vec == vec[0, 0]).all(), "the .npy holds one whole version"
    rows = pq.read_table(out.with_suffix(".parquet")).to_pylist()
    versions = {r["input"].split("-")[0] for r in rows}
    assert len(versions) == 1, "the .parquet holds one whole version"
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["n_rows"] >= 1 and side["version"] >= 1
    # Each file is replaced atomically, but the three are three renames: a kill between two
    # can leave neighbouring versions side by side (documented in docs/RELIABILITY.md). The
    # sidecar is written last and records n_rows, so such a pair is detectable, never torn.
    v_npy, v_pq, v_json = int(vec[0, 0]), int(versions.pop()[1:]), side["version"]
    assert v_json <= v_pq <= v_npy <= v_json + 1
    if v_npy == v_json:
        assert side["n_rows"] == len(vec) == len(rows)


# --------------------------------------------------------------------------- checkpoint dirs

DIR_WRITER = """
import json, sys
from pathlib import Path
from birdbridge.io import atomic_dir
target, i = Path(sys.argv[1]), 0
while True:
    i += 1
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(bytes([i % 256]) * (1000 + 997 * (i % 40)))
        (tmp / "config.json").write_text(json.dumps({"version": i, "size": 1000 + 997 * (i % 40)}))
    print(i, flush=True)
"""


def _check_dir(target: Path) -> int:
    cfg = json.loads((target / "config.json").read_text())
    data = (target / "weights.bin").read_bytes()
    assert len(data) == cfg["size"] and set(data) == {cfg["version"] % 256}, "config and weights from one version"
    return cfg["version"]


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_atomic_dir_is_whole_after_a_kill(tmp_path, seed):
    from birdbridge.io import recover_dir

    target = tmp_path / "model"
    proc = _start(DIR_WRITER, str(target))
    _kill_after_first_line(proc, float(np.random.default_rng(100 + seed).uniform(0.0, 0.4)))
    recover_dir(target)  # what a reader (DistilledModel.from_pretrained) and the next writer do
    assert _check_dir(target) >= 1


def test_kill_between_the_two_renames_is_recovered(tmp_path):
    """The one moment atomic_dir has no ``target``: the old dir renamed aside, the new not yet in."""
    target = tmp_path / "model"
    script = """
    import json, os, sys
    from pathlib import Path
    from birdbridge import io
    target = Path(sys.argv[1])
    with io.atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"\\x01" * 1997)
        (tmp / "config.json").write_text(json.dumps({"version": 1, "size": 1997}))
    real = os.replace
    def dying_replace(src, dst):
        real(src, dst)
        if ".old-" in str(dst):
            os.kill(os.getpid(), 9)  # killed right after the old dir went aside
    io.os.replace = dying_replace
    with io.atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"\\x02" * 2994)
        (tmp / "config.json").write_text(json.dumps({"version": 2, "size": 2994}))
    """
    proc = _start(script, str(target))
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and list(tmp_path.glob(".model.old-*")), "the window this test is about"
    from birdbridge.io import recover_dir

    assert recover_dir(target)
    assert _check_dir(target) == 1, "the previous version is back, whole"


def test_distilled_checkpoint_reader_recovers_an_aside_checkpoint(tmp_path, tiny_clap_dir):
    from birdbridge.encoders.clap import load_clap
    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent, DistilledModel

    clap, fe = load_clap(str(tiny_clap_dir))
    model = DistilledModel.from_student(AudioStudent.from_clap(clap, fe, HeadSpec(kind="linear", out_dim=8)), {}).eval()
    target = model.save_pretrained(tmp_path / "model")
    os.replace(target, tmp_path / ".model.old-12345")  # as a kill between atomic_dir's renames leaves it
    import torch

    loaded = DistilledModel.from_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "config.json").is_file() and not list(tmp_path.glob(".model.old-*"))
    wave = [0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        assert torch.equal(loaded(wave), model(wave)), "the recovered checkpoint is the saved one"


def test_the_umask_is_read_without_setting_it_and_shared_modes_follow_it(tmp_path, monkeypatch):
    """No /proc (macOS): the umask is read off a probe folder's mode, never by setting it."""
    import birdbridge.io as bio

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise OSError("no /proc here")
        return open(path, *args, **kwargs)

    old = os.umask(0o027)
    try:
        assert bio.current_umask() == 0o027
        monkeypatch.setattr(bio, "open", no_proc, raising=False)
        assert bio.current_umask() == 0o027
        f, d = tmp_path / "f", tmp_path / "d"
        f.write_bytes(b"x")
        f.chmod(0o600)
        d.mkdir(0o700)
        bio.share(f)
        bio.share(d)
        assert (f.stat().st_mode & 0o777, d.stat().st_mode & 0o777) == (0o640, 0o750)
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- index --add


@pytest.fixture(scope="module")
def base_index(tmp_path_factory, tiny_open_clip_dir):
    """A complete index of 6 photos, and 30 more photos (2 of them bad) to --add."""
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex
    from PIL import Image

    from badcorpus import _photo

    d = tmp_path_factory.mktemp("atomic_index")
    first, more = d / "first", d / "more"
    first.mkdir()
    more.mkdir()
    for i in range(6):
        Image.fromarray(_photo(40, seed=i)).save(first / f"p{i:02d}.png")
    for i in range(28):
        Image.fromarray(_photo(40, seed=100 + i)).save(more / f"q{i:02d}.png")
    bad = write_bad_images(d / "bad")
    for name in ("truncated.jpg", "text_file.jpg"):
        (more / name).write_bytes(bad[name].read_bytes())
    ImageIndex.build(d / "index", Teacher.load(str(tiny_open_clip_dir)), [str(p) for p in sorted(first.iterdir())])
    return d


def _assert_index_consistent(root: Path) -> int:
    import faiss

    from birdbridge.retrieval.index import ImageIndex

    index = ImageIndex.open(root)  # raises if manifest and shards disagree
    m = index.manifest
    rows = index.metadata(range(index.count))
    assert len(rows) == index.count == sum(s["count"] for s in m["shards"])
    assert [r["id"] for r in rows] == list(range(index.count)), "ids are row numbers"
    assert len({r["path"] for r in rows}) == index.count, "no image indexed twice"
    vecs = index.vectors_for(range(index.count))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    if m["state"] == "complete" and m["faiss_file"]:
        assert faiss.read_index(str(root / m["faiss_file"])).ntotal == index.count
    assert index.search(vecs[-1:], 1)[1][0, 0] == index.count - 1
    return index.count


def test_index_add_killed_at_random_moments_stays_consistent(base_index, tiny_open_clip_dir, tmp_path):
    import shutil

    cmd = [str(BIN), "index", str(base_index / "more"), "--teacher", str(tiny_open_clip_dir), "--add",
           "--shard-size", "2", "--batch-size", "2", "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # one uninterrupted --add: what every killed-and-resumed run must end up with
    full = tmp_path / "full"
    shutil.copytree(base_index / "index", full)
    t0 = time.time()
    done = subprocess.run(cmd + ["--out", str(full)], env=env, capture_output=True, text=True, timeout=300)
    duration = time.time() - t0
    assert done.returncode == 0, done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    expected = _assert_index_consistent(full)
    assert expected == 6 + 28

    counts = []
    for seed in range(3):
        root = tmp_path / f"kill{seed}"
        shutil.copytree(base_index / "index", root)
        before = (root / "index.json").stat().st_mtime_ns
        proc = subprocess.Popen(cmd + ["--out", str(root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill while it writes: a seeded moment after its first commit (shards of 2 commit often)
        while proc.poll() is None and (root / "index.json").stat().st_mtime_ns == before:
            time.sleep(0.005)
        time.sleep(float(np.random.default_rng(seed).uniform(0.0, 0.8)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        n = _assert_index_consistent(root)
        assert 6 <= n <= expected
        counts.append(n)
        # a re-run finishes the job: nothing lost, nothing indexed twice, skips listed
        again = subprocess.run(cmd + ["--out", str(root)], env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-1500:]
        assert _assert_index_consistent(root) == expected
        m = json.loads((root / "index.json").read_text())
        assert m["state"] == "complete" and m["skip_counts"] == {"truncated": 1, "unreadable": 1}
    print(f"uninterrupted --add {duration:.1f} s; images committed at the kills: {counts}")
