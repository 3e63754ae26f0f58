"""Soundscape evaluation at the real size (issue 20, item 5): windows decoded once for every
space, in worker processes, rows streamed to disk and scored from there.

Every test builds its own small soundscape set (noise and tones at the tiny CLAP's 16 kHz,
a digitally silent stretch, a clipped last window) and compares the streamed path with the
in-memory one the evaluation used before: ``embed_audio`` per space, each window decoded
alone, then :func:`protocols.zero_shot_soundscape` on the whole matrix.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from birdbridge.data import stream
from birdbridge.data.audio import load_audio
from birdbridge.data.soundscapes import segment_grid
from birdbridge.errors import BadInputError
from birdbridge.evaluate import protocols
from birdbridge.evaluate.windows import RowFile, SoundscapeWindows, score_from_disk

SR = 16000  # the tiny CLAP's rate, as the synthetic world's


def _soundscapes(folder, n_files=3, duration_s=7.3, seed=0):
    """WAV files of noise with tones; file 0 has a silent second. Returns (inputs, targets, n_classes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    for k in range(n_files):
        t = np.arange(int(duration_s * SR)) / SR
        x = 0.02 * rng.standard_normal(len(t))
        for s in range(0, int(duration_s)):
            x[s * SR : (s + 1) * SR] += 0.3 * np.sin(2 * np.pi * (800 + 400 * ((s + k) % 5)) * t[: SR] )
        if k == 0:
            x[2 * SR : 3 * SR] = 0.0
        path = folder / f"sc_{k}.wav"
        sf.write(path, x.astype(np.float32), SR, subtype="FLOAT")
        inputs += [(str(path), a, b) for a, b in segment_grid(len(t) / SR, 1.0, 1.0)]
    targets = np.zeros((len(inputs), 5), np.uint8)
    for i, (_, a, _) in enumerate(inputs):
        targets[i, int(a) % 5] = 1
    targets[::4] = 0  # some no-call windows
    return inputs, targets


def _in_memory(embedder, inputs, targets, text, fn=None):
    """The evaluation's way before: every window embedded (and decoded) alone, scored in memory."""
    from birdbridge.retrieval.embed import embed_audio

    emb = embed_audio(embedder, inputs, batch_size=64)
    keys = [(r["input"], r["window_start_s"]) for r in emb.rows]
    vec = np.zeros((len(inputs), emb.vectors.shape[1]), np.float32)
    ok = np.zeros(len(inputs), bool)
    for row, key in zip(emb.vectors, keys):
        i = next(i for i, (p, a, _) in enumerate(inputs) if (p, round(a, 4)) == key)
        vec[i], ok[i] = row, True
    if fn is not None:
        vec = fn(vec)
    return protocols.zero_shot_soundscape(vec[ok], targets[ok], text), emb.skips


@pytest.fixture(scope="module")
def embedders(tiny_clap_dir, tiny_distilled_dir):
    from birdbridge.encoders.factory import load_audio_embedder

    return {"clap": load_audio_embedder(str(tiny_clap_dir)), "distilled": load_audio_embedder(str(tiny_distilled_dir))}


def _texts(dim, n=5, seed=1):
    t = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def test_iter_segments_equals_load_audio_and_reports_bad_segments(tmp_path):
    inputs, _ = _soundscapes(tmp_path, n_files=1)
    path = inputs[0][0]
    segs = [(a, b) for _, a, b in inputs] + [(0.5, 1.7), (9.0, 10.0)]  # overlapping, past the end
    got = {j: (w, bad) for j, w, bad in stream.iter_segments(path, SR, segs)}
    assert sorted(got) == list(range(len(segs)))
    for j, (a, b) in enumerate(segs):
        try:
            want = load_audio(path, SR, start_s=a, end_s=b)
        except BadInputError as err:
            assert got[j][0] is None and got[j][1][0] == err.reason  # silent second, empty segment
            continue
        assert np.array_equal(got[j][0], want)  # the same frames, sample for sample
    assert got[2][1][0] == "silent" and got[len(segs) - 1][1][0] == "empty"


def test_streamed_path_equals_in_memory_for_model_and_derived_spaces(tmp_path, embedders):
    inputs, targets = _soundscapes(tmp_path / "audio")
    bad = tmp_path / "audio" / "broken.wav"
    bad.write_text("not audio at all\n")
    inputs += [(str(bad), 0.0, 1.0), (str(bad), 1.0, 2.0)]
    targets = np.concatenate([targets, np.eye(5, dtype=np.uint8)[[1, 2]]])
    clap, dist = embedders["clap"], embedders["distilled"]
    mapping = np.random.default_rng(2).standard_normal((clap.dim, dist.dim))

    def derived(v):  # a row-wise function of CLAP's rows, like the text mapping
        out = (np.asarray(v, np.float64) @ mapping).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    t_clap, t_dist = _texts(clap.dim), _texts(dist.dim)
    want = {"clap": _in_memory(clap, inputs, targets, t_clap), "distilled": _in_memory(dist, inputs, targets, t_dist),
            "mapped": _in_memory(clap, inputs, targets, t_dist, derived)}
    win = SoundscapeWindows(inputs, targets, log=lambda m: None)
    win.add_model("clap", clap)
    win.add_model("distilled", dist)
    win.add_derived("mapped", "clap", derived)
    res = {k: {} for k in want}
    for k, t in (("clap", t_clap), ("distilled", t_dist), ("mapped", t_dist)):
        win.request(k, t, res[k])
        assert res[k]["zero_shot_soundscape"] == {"pending": True}
    stats = win.run(tmp_path / "work", workers=0)
    for k, (metrics, skips) in want.items():
        assert res[k]["zero_shot_soundscape"] == pytest.approx(metrics, abs=1e-9), k
        assert metrics["n_windows"] == len(inputs) - 3  # the silent second and the broken file's two windows
    # the same windows skipped, for the same reasons, as the in-memory path skipped them
    assert win.skips.counts() == want["clap"][1].counts() == {"silent": 1, "unreadable": 2}
    assert stats["decode_passes"] == 1 and stats["model_spaces"] == ["clap", "distilled"]
    assert not list((tmp_path / "work").iterdir())  # the rows on disk are removed after scoring


def test_each_file_decoded_once_for_every_space_also_in_workers(tmp_path, embedders, monkeypatch):
    inputs, targets = _soundscapes(tmp_path / "audio")
    opened = []

    class Counting(stream.AudioFile):
        def __init__(self, path, **kw):
            opened.append(str(path))
            super().__init__(path, **kw)

    monkeypatch.setattr(stream, "AudioFile", Counting)
    results = {}
    for workers in (0, 1):
        win = SoundscapeWindows(inputs, targets, log=lambda m: None)
        for name in ("clap", "random_projection", "distilled", "distilled[common]"):
            win.add_model(name, embedders["clap" if name == "clap" else "distilled"])
        win.add_derived("zero_shot_combination", "clap", lambda v: v)
        res = {n: {} for n in ("clap", "random_projection", "distilled", "distilled[common]", "zero_shot_combination")}
        for n, r in res.items():
            win.request(n, _texts(embedders["clap" if n in ("clap", "zero_shot_combination") else "distilled"].dim), r)
        win.run(tmp_path / "work", workers=workers)
        results[workers] = res
        if workers == 0:  # counted in this process; a worker's opens are its own
            assert sorted(opened) == sorted({p for p, _, _ in inputs})  # 3 files, 5 spaces: 3 opens
    assert results[0] == results[1]  # decoding in a worker process changes nothing


def test_score_from_disk_in_class_blocks_equals_whole_matrix(tmp_path):
    rng = np.random.default_rng(0)
    n, d, c = 300, 16, 11
    vec = rng.standard_normal((n, d)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    targets = (rng.random((n, c)) < 0.1).astype(np.uint8)
    targets[:, 3] = 0  # a class without positives
    ok = rng.random(n) > 0.1
    text = _texts(d, c)
    rows = RowFile(tmp_path / "rows.f32", n, d)
    rows.write(vec, np.arange(n))
    want = protocols.zero_shot_soundscape(vec[ok], targets[ok], text)
    for cells in (n * c, n * 4, 1):  # all classes at once, 4 at a time, one at a time
        got = score_from_disk(rows, ok, targets, text, max_cells=cells)
        assert got == pytest.approx(want, abs=1e-12)
    rows.close()


class _FakeEmbedder:
    """Fast wide rows, so the memory rows would need dominates everything else."""

    sample_rate, window_samples, dim = SR, SR, 8192

    def embed_windows(self, waves):
        seeds = [int(abs(float(w[:64].sum())) * 1e6) % 2**32 for w in waves]
        return np.stack([np.random.default_rng(s).standard_normal(self.dim).astype(np.float32) for s in seeds])


def _peak_bytes(tmp_path, n_files):
    inputs, targets = _soundscapes(tmp_path / f"a{n_files}", n_files=n_files, duration_s=20.0)
    win = SoundscapeWindows(inputs, targets, log=lambda m: None)
    win.add_model("wide", _FakeEmbedder())
    res: dict = {}
    win.request("wide", _texts(_FakeEmbedder.dim), res)
    tracemalloc.start()
    win.run(tmp_path / "work", workers=0, batch=8)  # both sizes fill whole batches
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert res["zero_shot_soundscape"]["n_windows"] == len(inputs) - (1 if n_files else 0)
    return len(inputs), peak


def test_window_rows_live_on_disk_so_memory_does_not_grow_with_windows(tmp_path, monkeypatch):
    from birdbridge.evaluate import windows

    monkeypatch.setattr(windows, "CHUNK_BYTES", 1 << 18)  # rows come back from disk 8 at a time
    n1, peak1 = _peak_bytes(tmp_path, 2)
    n4, peak4 = _peak_bytes(tmp_path, 8)
    rows_growth = (n4 - n1) * _FakeEmbedder.dim * 4  # what holding the rows in memory would add: 3.75 MiB
    assert n4 == 4 * n1
    assert peak4 - peak1 < 0.1 * rows_growth, (peak1, peak4, rows_growth)
