"""Soundscape windows at the real size: decoded once for every space, scored from disk.

Sapsucker Woods alone is 285 h, about 205k five-second windows, and an evaluation scores
them in many spaces (CLAP's own, the random projection, the distilled model, every
prompt-type arm, the candidates; the text mapping and the zero-shot combination are
functions of CLAP's rows). Embedding them space by space, each window decoded alone and every
space's ``[N, D]`` rows held in memory, decodes the audio once per space per window and
needs gigabytes per space. Here instead:

* the evaluation only *registers* spaces (:meth:`SoundscapeWindows.add_model` for an
  embedder, :meth:`~SoundscapeWindows.add_derived` for a row-wise function of another
  space) and *requests* their scores (:meth:`~SoundscapeWindows.request`, which leaves a
  ``{"pending": true}`` in the result it will fill); models trained later in the run (the
  ablation arms) are registered as they come;
* :meth:`~SoundscapeWindows.run` then decodes every file ONCE (per sample rate the
  models want: one, normally), in worker processes
  (:func:`~birdbridge.data.prefetch.prefetch` over
  :func:`~birdbridge.data.stream.iter_segments`: a file's segments from one streamed pass,
  files handed back in order), hands each batch of windows to every requested model, and
  streams each space's unit rows into a float32 file on disk (rows at their window's index,
  written with plain file writes, so they never sit in memory: not even as memory-mapped
  pages, which count as resident);
* each request is scored from its file in blocks (:func:`score_from_disk`): a block of
  classes at a time, the similarity columns built row chunk by row chunk, per-class AP and
  AUROC column-wise (:func:`~birdbridge.metrics.class_aps`,
  :func:`~birdbridge.metrics.class_aurocs`), top-1 as a running argmax -- the
  numbers of :func:`~birdbridge.evaluate.protocols.zero_shot_soundscape` on the whole
  matrix, in memory bounded by the block size, not by the number of windows.

A file that cannot be decoded skips all its windows (reason counted per window in
``skips``); a window that is empty, too short or digitally silent skips alone, as
:func:`~birdbridge.data.audio.load_audio` would have skipped it.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..data.audio import window_starts
from ..errors import BadInputError, SkipLog
from ..metrics import class_aps, class_aurocs

BATCH = 64  # windows per model call, as embed_audio batched them
CHUNK_BYTES = 32 << 20  # rows read from disk at a time: 32 MiB of them
SCORE_CELLS = 1 << 25  # similarity cells of one class block (128 MiB float32)


def decode_workers(device: str) -> int:
    """Decoding processes beside the models: on a GPU the card outruns one core's decoding
    (and every space shares the decoded windows), on the CPU the rule detect uses."""
    import torch

    from ..data.prefetch import default_workers

    if str(device).startswith("cuda"):
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        return max(1, min(4, cores - 1))
    return default_workers(torch.get_num_threads())


class RowFile:
    """``[n, dim]`` float32 rows in a file, written and read by row index with plain file I/O."""

    def __init__(self, path: Path, n: int, dim: int):
        self.path, self.n, self.dim = Path(path), int(n), int(dim)
        with open(self.path, "wb") as fh:
            fh.truncate(self.n * self.dim * 4)  # sparse: disk is used as rows arrive
        self._fh = open(self.path, "r+b")

    def write(self, rows: np.ndarray, index: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, np.float32)
        for r, i in zip(rows, np.asarray(index)):
            self._fh.seek(int(i) * self.dim * 4)
            self._fh.write(r.tobytes())

    def read(self, lo: int, hi: int) -> np.ndarray:
        self._fh.flush()
        return np.fromfile(self.path, np.float32, count=(hi - lo) * self.dim, offset=lo * self.dim * 4).reshape(-1, self.dim)

    def chunks(self) -> Iterator[tuple[int, int, np.ndarray]]:
        chunk = max(1, CHUNK_BYTES // (4 * max(1, self.dim)))
        for lo in range(0, self.n, chunk):
            hi = min(self.n, lo + chunk)
            yield lo, hi, self.read(lo, hi)

    def close(self) -> None:
        self._fh.close()


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def score_from_disk(rows: RowFile, ok: np.ndarray, targets: np.ndarray, text_emb: np.ndarray,
                    max_cells: int = SCORE_CELLS) -> dict:
    """:func:`~birdbridge.evaluate.protocols.zero_shot_soundscape` of the ``ok`` rows of ``rows``.

    Classes are scored ``max_cells // n`` at a time: cosine similarity of every kept window
    with that block's texts, assembled chunk by chunk from disk, then per-class AP / AUROC
    on those columns and the running top-1 over all classes."""
    keep = np.asarray(ok, bool)
    t = np.asarray(targets)[keep] > 0
    n, c = t.shape
    out: dict = {"n_windows": int(n), "n_no_call_windows": int((~t.any(axis=1)).sum()),
                 "n_species_present": int(t.any(axis=0).sum())}
    if not n:
        return {**out, "cmap": float("nan"), "macro_auroc": float("nan"), "top1_any_positive": float("nan")}
    text = _unit(text_emb)
    if text.shape[1] != rows.dim:
        raise ValueError(f"embedding dims differ: windows {rows.dim}, texts {text.shape[1]}")
    step = max(1, min(c, max_cells // n))
    ap, auc = np.full(c, np.nan), np.full(c, np.nan)
    best, arg = np.full(n, -np.inf, np.float32), np.zeros(n, np.int64)
    for c0 in range(0, c, step):
        c1 = min(c, c0 + step)
        s = np.empty((n, c1 - c0), np.float32)
        j = 0
        for lo, hi, block in rows.chunks():
            b = block[keep[lo:hi]]
            s[j : j + len(b)] = _unit(b) @ text[c0:c1].T
            j += len(b)
        ap[c0:c1], auc[c0:c1] = class_aps(s, t[:, c0:c1]), class_aurocs(s, t[:, c0:c1])
        m, a = s.max(axis=1), s.argmax(axis=1)  # first on ties, and earlier blocks win ties
        better = m > best
        best[better], arg[better] = m[better], a[better] + c0
    present = t.any(axis=0)
    has = t.any(axis=1)
    good = ~np.isnan(auc)
    prevalence = t.sum(axis=0)[present] / n
    return {**out, "cmap": float(ap[present].mean()) if present.any() else float("nan"),
            "macro_auroc": float(auc[good].mean()) if good.any() else float("nan"),
            "top1_any_positive": float(t[np.arange(n), arg][has].mean()) if has.any() else float("nan"),
            "chance_cmap": float(prevalence.mean()) if len(prevalence) else float("nan")}


@dataclass
class _Request:
    name: str
    text: np.ndarray
    into: dict  # the score() result whose "zero_shot_soundscape" this fills


class SoundscapeWindows:
    """The soundscape windows of one evaluation: spaces registered, scores requested, one pass.

    ``inputs[i] = (path, start_s, end_s)`` and ``targets[i]`` its 0/1 row (the label space's
    columns)."""

    def __init__(self, inputs: list[tuple[str, float, float]], targets: np.ndarray, log=print):
        self.inputs, self.targets, self.log = list(inputs), np.asarray(targets), log
        self.models: dict = {}  # space name -> embedder (embed_windows, sample_rate, window_samples, dim)
        self.derived: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {}
        self.requests: list[_Request] = []
        self.skips = SkipLog()
        self.stats: dict = {}

    def __len__(self) -> int:
        return len(self.inputs)

    def add_model(self, name: str, embedder) -> None:
        self.models[name] = embedder

    def add_derived(self, name: str, source: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        """A space whose rows are ``fn(rows of source)``, row by row (text mapping, zero-shot combination)."""
        self.derived[name] = (source, fn)

    def has(self, name: str) -> bool:
        return name in self.models or name in self.derived

    def request(self, name: str, text: np.ndarray, into: dict) -> None:
        """Score space ``name`` against ``text`` (a row per label-space column) into ``into["zero_shot_soundscape"]`` at :meth:`run`."""
        if not self.has(name):
            raise KeyError(f"no soundscape space {name!r}")
        into["zero_shot_soundscape"] = {"pending": True}
        self.requests.append(_Request(name, np.asarray(text, np.float32), into))

    # ------------------------------------------------------------------ the pass
    def run(self, work_dir: str | Path, workers: int = 0, batch: int = BATCH) -> dict:
        """Decode once, embed every requested space, score every request; fills the pending results."""
        names = list(dict.fromkeys(r.name for r in self.requests))
        if not names:
            return self.stats
        if not len(self):  # nothing to decode: every request gets the empty set's numbers
            for r in self.requests:
                r.into["zero_shot_soundscape"] = score_from_disk(None, np.zeros(0, bool), self.targets, r.text)
            self.requests.clear()
            return self.stats
        models = [n for n in dict.fromkeys([*(m for m in names if m in self.models),
                                            *(self.derived[m][0] for m in names if m in self.derived)])]
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="soundscape-windows-") as tmp:
            files: dict[str, RowFile] = {}
            oks: dict[str, np.ndarray] = {}
            by_rate: dict[int, list[str]] = {}
            for m in models:
                by_rate.setdefault(int(self.models[m].sample_rate), []).append(m)
            for sr, group in by_rate.items():
                for m in group:
                    files[m] = RowFile(Path(tmp) / f"{len(files)}.f32", len(self), self.models[m].dim)
                oks.update(dict.fromkeys(group, self._pass(sr, {m: self.models[m] for m in group}, files, workers, batch,
                                                           record_skips=sr == next(iter(by_rate)))))
            t_embed = time.time() - t0
            for m in (m for m in names if m in self.derived):
                src, fn = self.derived[m]
                first = fn(files[src].read(0, min(1, len(self))))
                files[m] = RowFile(Path(tmp) / f"{len(files)}.f32", len(self), first.shape[1])
                for lo, hi, block in files[src].chunks():
                    files[m].write(fn(block), np.arange(lo, hi))
                oks[m] = oks[src]
            done: dict[tuple, dict] = {}
            for r in self.requests:
                key = (r.name, r.text.shape, r.text.tobytes())
                if key not in done:
                    done[key] = score_from_disk(files[r.name], oks[r.name], self.targets, r.text)
                r.into["zero_shot_soundscape"] = dict(done[key])
            for f in files.values():
                f.close()
        self.stats = {"n_windows": len(self), "n_files": len({p for p, _, _ in self.inputs}), "decode_passes": len(by_rate),
                      "model_spaces": models, "derived_spaces": [m for m in names if m in self.derived],
                      "decode_workers": int(workers), "embed_s": round(t_embed, 2),
                      "score_s": round(time.time() - t0 - t_embed, 2)}
        self.requests.clear()
        return self.stats

    def _pass(self, sr: int, models: dict, files: dict[str, RowFile], workers: int, batch: int,
              record_skips: bool) -> np.ndarray:
        """One decoding pass at ``sr`` feeding every model in ``models``; returns the ok mask."""
        from ..data.prefetch import prefetch
        from ..data.stream import iter_segments

        by_file: dict[str, list[int]] = {}
        for i, (p, _, _) in enumerate(self.inputs):
            by_file.setdefault(str(p), []).append(i)
        paths = list(by_file)
        jobs = [(p, {"sr": sr, "segments": [(self.inputs[i][1], self.inputs[i][2]) for i in by_file[p]]}) for p in paths]
        ok = np.zeros(len(self), bool)
        pending: list[tuple[int, np.ndarray]] = []
        done, t_log = 0, time.time()

        def flush():
            if not pending:
                return
            index = np.array([i for i, _ in pending])
            for name, emb in models.items():
                files[name].write(_embed_segments(emb, [w for _, w in pending]), index)
            ok[index] = True
            pending.clear()

        def skip(i: int, reason: str, detail: str):
            if record_skips:
                p, a, _ = self.inputs[i]
                self.skips.add(f"{p}@{a:g}", reason, detail)

        self.log(f"soundscape windows: {len(self)} windows of {len(paths)} files, decoded once at {sr} Hz "
                 f"({workers} decoding workers) for {len(models)} model(s): {', '.join(models)}")
        for k, segs in prefetch(jobs, iter_segments, workers):
            rows = by_file[paths[k]]
            skipped: set[int] = set()
            try:
                for j, wave, bad in segs:
                    if bad is not None:
                        skip(rows[j], *bad)
                        skipped.add(rows[j])
                        continue
                    pending.append((rows[j], wave))
                    if len(pending) >= batch:
                        flush()
            except BadInputError as err:
                # a file can fail mid-stream: none of its windows count, embedded or still queued
                lost = set(rows)
                pending[:] = [(i, w) for i, w in pending if i not in lost]
                ok[rows] = False
                for i in rows:
                    if i not in skipped:
                        skip(i, err.reason, err.detail)
            done += len(rows)
            if time.time() - t_log > 60:
                self.log(f"soundscape windows: {done} of {len(self)} decoded and embedded")
                t_log = time.time()
        flush()
        return ok

    def describe(self) -> dict:
        return {"n_windows": len(self), "spaces": sorted(self.models) + sorted(self.derived), **self.stats}


def _embed_segments(embedder, waves: list[np.ndarray]) -> np.ndarray:
    """One unit row per segment, as :func:`~birdbridge.retrieval.embed.embed_audio` makes it:
    the segment's model windows (hop half a window) embedded, averaged and renormalised."""
    n = int(embedder.window_samples)
    owners, windows = [], []
    for k, w in enumerate(waves):
        for s in window_starts(len(w), n, n // 2):
            windows.append(w[s : s + n])
            owners.append(k)
    vecs = np.asarray(embedder.embed_windows(windows), np.float32)
    groups: list[list[np.ndarray]] = [[] for _ in waves]
    for k, v in zip(owners, vecs):
        groups[k].append(v)
    # row by row with embed_audio's arithmetic, so a window's row is the one it always was
    return np.stack([_unit_row(np.mean(np.stack(g), axis=0)) for g in groups]).astype(np.float32)


def _unit_row(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)
