"""`birdbridge index` over several ranks writes the index one process would, file for file.

Two real ``birdbridge index`` processes (RANK/WORLD_SIZE as torchrun sets them) build an
index of a few small photos, two of them broken, and then ``--add`` more; the result is
compared with a one-process build of the same inputs: same files, same bytes (shards,
metadata, FAISS), same manifest apart from its timestamps. As in ``test_sharding.py``,
``--batch-size 1`` makes the vectors bit-exact however the records fall into batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from birdbridge.retrieval.index import ImageIndex, records_from_source

SHARD, BATCH = 2, 1


def _photos(d: Path, names: list[str], seed: int) -> Path:
    from PIL import Image

    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in names:
        if "bad" in name:
            (d / name).write_bytes(b"this is text, not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / name)
    return d


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """9 photos (chunks of 2: a bad one in rank 0's and in rank 1's block, a last round of one
    record, so rank 1's part is empty), and 5 more to --add (one bad)."""
    d = tmp_path_factory.mktemp("index_shard_photos")
    first = _photos(d / "first", ["p0.png", "p1_bad.jpg", "p2.png", "p3.png", "p4.png", "p5.png", "p6.png",
                                  "p7_bad.png", "p8.png"], seed=0)
    more = _photos(d / "more", ["q0.png", "q1.png", "q2_bad.jpg", "q3.png", "q4.png"], seed=1)
    return first, more


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_open_clip_dir, photos) -> tuple[Path, Path]:
    """One-process builds: the first folder, and a copy with the second folder --add-ed."""
    import shutil

    from birdbridge.encoders.teacher import Teacher

    d = tmp_path_factory.mktemp("index_shard_ref")
    teacher = Teacher.load(str(tiny_open_clip_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ImageIndex.build(d / "first", teacher, records_from_source(photos[0]), shard_size=SHARD, batch_size=BATCH)
        shutil.copytree(d / "first", d / "added")
        ImageIndex.build(d / "added", teacher, records_from_source(photos[1]), add=True, shard_size=SHARD, batch_size=BATCH)
    finally:
        torch.set_num_threads(threads)
    return d / "first", d / "added"


def _index_cli(source: Path, out: Path, teacher: Path, world: int, *extra: str, env: dict | None = None) -> list[str]:
    procs = []
    for r in range(world):
        e = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
        e.update({"RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r), "OMP_NUM_THREADS": "1", **(env or {})})
        procs.append(subprocess.Popen([sys.executable, "-m", "birdbridge.cli", "index", str(source), "--teacher", str(teacher),
                                       "--out", str(out), "--device", "cpu", "--shard-size", str(SHARD),
                                       "--batch-size", str(BATCH), *extra],
                                      env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("sharded `birdbridge index` hung")
    assert [p.returncode for p in procs] == [0] * world, "\n".join(x[-2000:] for x in logs)
    return [" ".join(x.split()) for x in logs]  # rich wraps long lines


def _assert_same_index(got: Path, want: Path) -> None:
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert files(got) == files(want), "same files (and no parts or markers left over)"
    for rel in files(want):
        if rel not in ("index.json", ".lock"):
            assert (got / rel).read_bytes() == (want / rel).read_bytes(), f"{rel} differs"
    stamps = ("created", "updated")
    m_got, m_want = (json.loads((r / "index.json").read_text()) for r in (got, want))
    assert {k: v for k, v in m_got.items() if k not in stamps} == {k: v for k, v in m_want.items() if k not in stamps}

    a, b = ImageIndex.open(got), ImageIndex.open(want)
    assert a.count == b.count > 0
    assert np.array_equal(a.vectors_for(range(a.count)), b.vectors_for(range(b.count)))  # bit for bit
    assert a.metadata(range(a.count)) == b.metadata(range(b.count))
    assert a.manifest["skipped"] == b.manifest["skipped"]
    q = b.vectors_for(range(b.count))
    for x, y in zip(a.search(q, 4), b.search(q, 4)):
        assert np.array_equal(x, y)


def test_index_cli_sharded_equals_one_process_build_and_add(tmp_path, tiny_open_clip_dir, photos, reference):
    first, more = photos
    out = tmp_path / "idx"
    # the first build waits through a gloo group, the --add through marker files
    gloo = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(30500 + os.getpid() % 1000)}
    logs = _index_cli(first, out, tiny_open_clip_dir, 2, env=gloo)
    assert "index " in logs[0] and "(7 new)" in logs[0] and "2 skipped" in logs[0]
    assert "rank 0 writes the index" in logs[1]
    _assert_same_index(out, reference[0])
    skipped = [Path(s["input"]).name for s in json.loads((out / "index.json").read_text())["skipped"]]
    assert skipped == ["p1_bad.jpg", "p7_bad.png"], "skips of both ranks, in record order"

    logs = _index_cli(more, out, tiny_open_clip_dir, 2, "--add")
    assert "(4 new)" in logs[0] and "3 skipped" in logs[0]
    _assert_same_index(out, reference[1])


class _FailingTeacher:
    def __init__(self, teacher):
        self.model_id, self.dim = teacher.model_id, teacher.dim

    def encode_images(self, images, batch_size=64):
        raise RuntimeError("simulated GPU failure")


def test_failing_rank_fails_the_job_and_keeps_the_previous_index(tmp_path, tiny_open_clip_dir, photos, reference,
                                                               monkeypatch):
    """Ranks run one after the other in this process (file barriers need no overlap)."""
    import shutil

    from birdbridge.distributed import ShardError
    from birdbridge.encoders.teacher import Teacher

    for v in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    root = tmp_path / "idx"
    shutil.copytree(reference[0], root)
    before = (root / "index.json").read_bytes()
    teacher = Teacher.load(str(tiny_open_clip_dir))
    records = records_from_source(photos[1])
    kw = dict(add=True, shard_size=SHARD, batch_size=BATCH, world=2, timeout_s=30)

    with pytest.raises(RuntimeError, match="simulated GPU failure"):
        ImageIndex.build(root, _FailingTeacher(teacher), records, rank=1, **kw)
    with pytest.raises(ShardError, match="rank 1 failed: RuntimeError: simulated GPU failure"):
        ImageIndex.build(root, teacher, records, rank=0, **kw)
    assert (root / "index.json").read_bytes() == before, "nothing of the failed round was committed"
    assert ImageIndex.open(root).count == 7

    # the retry (same job: the failed marker of the first try must not count) completes it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert ImageIndex.build(root, teacher, records, rank=1, **kw) is None
        ImageIndex.build(root, teacher, records, rank=0, **kw)
    finally:
        torch.set_num_threads(threads)
    _assert_same_index(root, reference[1])
