"""Embedding stage: media in, ``.npy`` (float32 unit rows, input order) + sidecar out.

A recording longer than the model's window is embedded over deterministic sliding
windows whose embeddings are averaged and renormalised (or kept per window). Bad inputs
are skipped with a reason and listed in the sidecar; nothing is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..data.audio import load_audio, window_starts
from ..errors import BadInputError, SkipLog

Progress = Callable[[int], None]


@dataclass
class Embeddings:
    vectors: np.ndarray  # [N, D] float32, unit rows
    rows: list[dict]  # per row: input, and window start/end for per-window rows
    skips: SkipLog = field(default_factory=SkipLog)
    meta: dict = field(default_factory=dict)

    def save(self, out: str | Path) -> Path:
        """Write ``out`` (.npy) and ``out`` with ``.parquet`` (rows) and ``.json`` (provenance + skips)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..io import atomic_write_bytes, atomic_write_json

        out = Path(out)
        import io

        buf = io.BytesIO()
        np.save(buf, self.vectors.astype(np.float32))
        atomic_write_bytes(out, buf.getvalue())
        table = pa.Table.from_pylist(self.rows) if self.rows else pa.table({"input": pa.array([], pa.string())})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(out.with_suffix(".parquet"), sink.getvalue().to_pybytes())
        atomic_write_json(out.with_suffix(".json"), {**self.meta, "n_rows": int(len(self.vectors)),
                                                     "dim": int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0,
                                                     "n_skipped": len(self.skips), "skipped": self.skips.to_list()})
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def embed_audio(
    embedder,
    inputs: Sequence[str | Path | tuple],
    *,
    hop_s: float | None = None,
    per_window: bool = False,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> Embeddings:
    """Embed audio files (or ``(path, start_s, end_s)`` segments) with any :class:`AudioEmbedder`.

    Windows are the model's own length; ``hop_s`` defaults to half a window. The last
    window is aligned to the end of the clip so no tail is lost.
    """
    n = embedder.window_samples
    sr = embedder.sample_rate
    hop = int(round(hop_s * sr)) if hop_s else n // 2
    skips = SkipLog()
    rows: list[dict] = []
    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    owners: list[tuple[int, float, float]] = []  # (row slot, start, end) per pending window
    slots: list[list[np.ndarray]] = []

    def flush():
        if not pending:
            return
        vecs = embedder.embed_windows(pending)
        for (slot, _, _), v in zip(owners, vecs):
            slots[slot].append(v)
        pending.clear()
        owners.clear()

    meta_rows: list[list[dict]] = []
    for item in inputs:
        path, start_s, end_s = (item if isinstance(item, tuple) else (item, None, None))
        try:
            wave = load_audio(path, sr, start_s=start_s, end_s=end_s)
        except BadInputError as err:
            skips.add(str(path), err.reason, err.detail)
            if progress:
                progress(1)
            continue
        slot = len(slots)
        slots.append([])
        meta_rows.append([])
        offset = start_s or 0.0
        for s in window_starts(len(wave), n, hop):
            pending.append(wave[s : s + n])
            t0, t1 = offset + s / sr, offset + min(len(wave), s + n) / sr
            owners.append((slot, t0, t1))
            meta_rows[slot].append({"input": str(path), "window_start_s": round(t0, 4), "window_end_s": round(t1, 4)})
            if len(pending) >= batch_size:
                flush()
        if progress:
            progress(1)
    flush()
    for slot, vecs in enumerate(slots):
        if per_window:
            out.extend(_unit(np.stack(vecs)))
            rows.extend(meta_rows[slot])
        else:
            out.append(_unit(np.mean(np.stack(vecs), axis=0)))
            first, last = meta_rows[slot][0], meta_rows[slot][-1]
            rows.append({"input": first["input"], "window_start_s": first["window_start_s"],
                         "window_end_s": last["window_end_s"], "n_windows": len(vecs)})
    vectors = np.stack(out).astype(np.float32) if out else np.zeros((0, embedder.dim), np.float32)
    return Embeddings(vectors, rows, skips, {"model": embedder.name, "space": embedder.space, "kind": "audio",
                                             "sample_rate": sr, "window_samples": n, "hop_samples": hop, "per_window": per_window})


def embed_images(teacher, inputs: Sequence[str | Path], *, batch_size: int = 64, progress: Progress | None = None) -> Embeddings:
    from ..data.images import load_image

    skips = SkipLog()
    rows, out, batch = [], [], []

    def flush():
        if batch:
            out.append(teacher.encode_images(batch, batch_size=len(batch)).numpy())
            batch.clear()

    for path in inputs:
        try:
            batch.append(load_image(path))
            rows.append({"input": str(path)})
        except BadInputError as err:
            skips.add(str(path), err.reason, err.detail)
        if len(batch) >= batch_size:
            flush()
        if progress:
            progress(1)
    flush()
    vectors = np.concatenate(out).astype(np.float32) if out else np.zeros((0, teacher.dim), np.float32)
    return Embeddings(vectors, rows, skips, {"model": teacher.model_id, "space": "teacher", "kind": "image"})


def embed_texts(encoder, texts: Sequence[str]) -> Embeddings:
    """``encoder`` is a Teacher (teacher text tower) or a ``(ClapModel, tokenizer)`` pair (student's own)."""
    if isinstance(encoder, tuple):
        import torch

        clap, tok = encoder
        with torch.no_grad():
            enc = tok(list(texts), padding=True, truncation=True, return_tensors="pt")
            vec = clap.get_text_features(**enc).pooler_output.float().numpy()
        name, space = getattr(clap, "name_or_path", "clap"), "clap"
    else:
        vec = encoder.encode_text(list(texts)).numpy()
        name, space = encoder.model_id, "teacher"
    return Embeddings(_unit(vec), [{"input": t} for t in texts], SkipLog(), {"model": name, "space": space, "kind": "text"})
