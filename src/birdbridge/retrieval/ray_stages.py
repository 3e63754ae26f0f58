"""What runs on Ray's workers for :mod:`.ray_engine`: the CPU decode tasks and the model actors.

A decode task turns one input row (``part``, ``pos``, ``path``) into bytes the object store
carries cheaply (float32 windows, their lengths and times; a photo's RGB pixels), or into the
:class:`~birdbridge.errors.BadInputError` reason and detail the local engine would record. A
model actor loads its model once, with the local engine's loader, and turns a batch of decoded
rows into one ``vec`` (float32 unit rows, as bytes) per row, computed as the local engine does.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError


# ---------------------------------------------------------------------------------- decode (CPU tasks)
def _row(row: dict) -> dict:
    return {"part": row["part"], "pos": row["pos"], "path": row["path"], "reason": "", "detail": "",
            "data": b"", "lens": b"", "t0": b"", "t1": b""}


def _windows_row(row: dict, windows) -> dict:
    """``(start_s, end_s, window)`` of one recording packed as bytes; a file that fails, even
    mid-stream, loses every window and carries its reason instead (as the local engine drops it)."""
    out = _row(row)
    try:
        wins = list(windows)
    except BadInputError as err:
        out.update(reason=err.reason, detail=err.detail or "")
        return out
    if wins:
        out["data"] = np.concatenate([np.asarray(w, np.float32) for _, _, w in wins]).tobytes()
    out["lens"] = np.array([len(w) for _, _, w in wins], np.int64).tobytes()
    out["t0"] = np.array([t0 for t0, _, _ in wins], np.float64).tobytes()
    out["t1"] = np.array([t1 for _, t1, _ in wins], np.float64).tobytes()
    return out


def decode_audio(row: dict, sr: int, n: int, hop: int) -> dict:
    """``embed-audio``'s windows of one recording (:func:`~birdbridge.retrieval.embed.recording_windows`)."""
    from .embed import recording_windows

    return _windows_row(row, recording_windows(row["path"], sr, n, hop))


def decode_spans(row: dict, span_args: dict) -> dict:
    """``detect``'s windows of one recording (:func:`~birdbridge.data.stream.iter_spans`, as ``detect`` cuts them)."""
    from ..data.stream import iter_spans

    return _windows_row(row, iter_spans(row["path"], **span_args))


def decode_image(row: dict) -> dict:
    """One photo decoded as ``load_image`` decodes it (upright RGB, the size checks), as raw pixels."""
    from ..data.images import load_image

    out = _row(row)
    try:
        img = np.asarray(load_image(row["path"]), np.uint8)
    except BadInputError as err:
        out.update(reason=err.reason, detail=err.detail or "")
        return out
    out["data"] = img.tobytes()
    out["lens"] = np.array(img.shape, np.int64).tobytes()
    return out


# ---------------------------------------------------------------------------------- model actors
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _device(gpus: float) -> str:
    return "cuda" if gpus > 0 else "cpu"


class AudioModelActor:
    """One audio embedder per actor (the local engine's loader); a batch of decoded files in, vectors out."""

    def __init__(self, model_id: str, gpus: float, per_window: bool, batch_size: int, **_):
        from ..encoders.factory import load_audio_embedder

        self.model = load_audio_embedder(model_id, device=_device(gpus))
        self.per_window, self.batch_size = per_window, batch_size

    def __call__(self, batch: dict) -> dict:
        windows, owner = [], []
        for r, (data, lens, reason) in enumerate(zip(batch["data"], batch["lens"], batch["reason"])):
            if reason or not len(lens):
                continue
            flat, sizes = np.frombuffer(data, np.float32), np.frombuffer(lens, np.int64)
            for w in np.split(flat, np.cumsum(sizes)[:-1]):
                windows.append(w)
                owner.append(r)
        vecs = [self.model.embed_windows(windows[s : s + self.batch_size]) for s in range(0, len(windows), self.batch_size)]
        allv = np.concatenate(vecs) if vecs else np.zeros((0, self.model.dim), np.float32)
        owner_arr = np.array(owner, np.int64)
        out = []
        for r in range(len(batch["path"])):
            mine = np.asarray(allv[owner_arr == r], np.float32)
            if not len(mine):
                out.append(b"")
            else:
                out.append((_unit(mine) if self.per_window else _unit(np.mean(mine, axis=0))[None]).tobytes())
        return _result(batch, out)


class ImageModelActor:
    """One teacher per actor (the local engine's loader); a batch of decoded photos in, vectors out."""

    def __init__(self, model_id: str, gpus: float, per_window: bool, batch_size: int, **_):
        from ..encoders.teacher import Teacher

        self.model = Teacher.load(model_id, device=_device(gpus))
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        imgs, owner = [], []
        for r, (data, lens, reason) in enumerate(zip(batch["data"], batch["lens"], batch["reason"])):
            if not reason:
                shape = tuple(np.frombuffer(lens, np.int64))
                imgs.append(Image.fromarray(np.frombuffer(data, np.uint8).reshape(shape)))
                owner.append(r)
        vecs = self.model.encode_images(imgs, batch_size=self.batch_size).numpy() if imgs else None
        out = [b""] * len(batch["path"])
        for j, r in enumerate(owner):
            out[r] = np.asarray(vecs[j : j + 1], np.float32).tobytes()
        return _result(batch, out)


class WindowModelActor:
    """One detection model per actor (``detect``'s loader, runtime and precision); each of ``detect``'s
    windows the renormalised mean of the model windows inside it (:func:`~.search.iter_window_vectors`)."""

    def __init__(self, model_id: str, gpus: float, per_window: bool, batch_size: int, runtime: str = "torch",
                 precision: str = "fp32", **_):
        from .detect import load_detect_model

        self.model = load_detect_model(model_id, _device(gpus), runtime=runtime, precision=precision)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        from .search import iter_window_vectors

        segments, owner = [], []
        for r, (data, lens, reason, t0, t1) in enumerate(zip(batch["data"], batch["lens"], batch["reason"],
                                                             batch["t0"], batch["t1"])):
            if reason or not len(lens):
                continue
            sizes = np.frombuffer(lens, np.int64)
            waves = np.split(np.frombuffer(data, np.float32), np.cumsum(sizes)[:-1])
            for a, b, w in zip(np.frombuffer(t0, np.float64), np.frombuffer(t1, np.float64), waves):
                segments.append((float(a), float(b), w))
                owner.append(r)
        got: list[list] = [[] for _ in batch["path"]]
        for (window, vec), r in zip(iter_window_vectors(self.model, segments, self.batch_size), owner):
            got[r].append((window.start_s, window.end_s, vec))
        vecs = [np.stack([v for _, _, v in g]).astype(np.float32).tobytes() if g else b"" for g in got]
        res = _result(batch, vecs)
        res["t0"] = np.array([np.array([a for a, _, _ in g], np.float64).tobytes() for g in got], dtype=object)
        res["t1"] = np.array([np.array([b for _, b, _ in g], np.float64).tobytes() for g in got], dtype=object)
        return res


def _result(batch: dict, vectors: list[bytes]) -> dict:
    keep = ("part", "pos", "path", "reason", "detail", "t0", "t1")
    return {**{k: batch[k] for k in keep}, "vec": np.array(vectors, dtype=object)}
