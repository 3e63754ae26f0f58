"""Embedding stage: media in, ``.npy`` (float32 unit rows, input order) + sidecar out.

A recording longer than the model's window is embedded over deterministic sliding
windows whose embeddings are averaged and renormalised (or kept per window). Bad inputs
are skipped with a reason and listed in the sidecar; nothing is silently dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..data.audio import load_audio, window_starts
from ..embeddings import Embeddings
from ..errors import BadInputError, SkipLog

Progress = Callable[[int], None]

_PATH_COLUMNS = ("path", "file", "filepath", "file_path", "filename", "file_name", "audio", "audio_path",
                 "recording", "image", "image_path")


def expand_inputs(args: Iterable[str | Path], kind: str = "audio", problems: list | None = None) -> list[str]:
    """Command-line inputs -> file paths, in the order given (see :func:`expand_labelled_inputs`)."""
    return expand_labelled_inputs(args, kind, problems)[0]


def expand_labelled_inputs(args: Iterable[str | Path], kind: str = "audio",
                           problems: list | None = None) -> tuple[list[str], list[dict]]:
    """Command-line inputs -> file paths in the order given, and each path's labels.

    A directory gives its media files (``kind`` audio or images, by extension) recursively
    in sorted order, hidden files and folders left out; ``@list.txt`` gives one path per
    line (``#`` comments allowed); a ``.csv`` gives its ``path`` (or ``file``, ``filename``,
    ...) column. Relative paths in a list or CSV are taken relative to that file.

    Labels: a CSV row's other columns (species, split, recordist, ...; header names
    normalised as everywhere) plus ``label``, the row's species id as the CSV loaders and
    ``birdbridge score`` read it (``species_id``, else the scientific name); ``{}`` for a
    file from a folder, a list or the command line. The embedding sidecars keep them.

    What the user typed must exist: a missing argument is a :class:`ConfigError` at once,
    before any model loads or output is written (it is a typo, not a bad file). A file a
    list or CSV names may be missing -- it is reported as a skip by the embedding step, as
    a dataset's missing files are -- unless none of the listed files exists.

    ``problems``: a list that collects every wrong argument's error (all of them, not only the
    first) instead of raising, so a verb reports them at once with its other wrong inputs.
    """
    from ..errors import ConfigError

    out: list[str] = []
    labels: list[dict] = []
    n_before = len(problems) if problems is not None else 0
    for arg in map(str, args):
        try:
            found, found_labels = _expand_one(arg, kind)
        except ConfigError as err:
            if problems is None:
                raise
            problems.append(err)
            continue
        out.extend(found)
        labels.extend(found_labels)
    if problems is None:
        require_some_present(out, kind)
    elif len(problems) == n_before:  # "none exists" only when every argument itself was right
        try:
            require_some_present(out, kind)
        except ConfigError as err:
            problems.append(err)
    return out, labels


def _expand_one(arg: str, kind: str) -> tuple[list[str], list[dict]]:
    """One command-line input's files and their labels (see :func:`expand_labelled_inputs`)."""
    from ..data.generic import AUDIO_EXTS, IMAGE_EXTS, read_csv_rows
    from ..errors import ConfigError

    exts = AUDIO_EXTS if kind == "audio" else IMAGE_EXTS
    if arg.startswith("@"):
        listing = Path(arg[1:])
        if not listing.is_file():
            raise ConfigError(f"input list {listing} not found")
        lines = [ln.strip() for ln in listing.read_text(encoding="utf-8-sig").splitlines()]
        found = [str(listing.parent / ln) for ln in lines if ln and not ln.startswith("#")]
        return found, [{} for _ in found]
    if Path(arg).is_dir():
        root = Path(arg)
        found = sorted(str(f) for f in root.rglob("*") if f.is_file() and f.suffix.lower() in exts
                       and not any(part.startswith(".") for part in f.relative_to(root).parts))
        if not found:
            raise ConfigError(f"folder {arg} holds no {kind} files ({', '.join(sorted(exts))})")
        return found, [{} for _ in found]
    if arg.lower().endswith(".csv") and Path(arg).is_file():
        rows = read_csv_rows(arg)
        col = next((c for c in _PATH_COLUMNS if rows and c in rows[0]), None)
        if col is None:
            raise ConfigError(f"{arg}: no file column (expected one of {', '.join(_PATH_COLUMNS)})")
        kept = [r for r in rows if r.get(col)]
        return [str(Path(arg).parent / r[col]) for r in kept], [_row_labels(r, col) for r in kept]
    if not Path(arg).exists():
        raise ConfigError(f"no such file: {arg}{_near_miss(arg)}")
    return [arg], [{}]


# the columns an embedding row has already; a CSV column of the same name is kept as csv_<name>
_ROW_KEYS = ("input", "window_start_s", "window_end_s", "n_windows")


def _row_labels(row: dict, path_col: str) -> dict:
    from ..data.generic import clean_name

    out = {(f"csv_{k}" if k in _ROW_KEYS else k): v for k, v in row.items() if k != path_col}
    if "label" not in out and (row.get("species_id") or clean_name(row.get("scientific_name", ""))):
        out["label"] = row.get("species_id") or clean_name(row["scientific_name"])  # as load_csv names species
    return out


def require_some_present(paths: Sequence[str | Path], kind: str) -> None:
    """A :class:`ConfigError` when none of ``paths`` exists (a wrong folder, not bad files)."""
    import os

    from ..errors import ConfigError

    if paths and not any(os.path.exists(p) for p in paths):
        first = str(paths[0])
        where = "" if os.path.isabs(first) else f" (relative paths are read from {os.getcwd()})"
        raise ConfigError(f"none of the {len(paths)} {kind} files listed exists, e.g. {first}{where}")


def _near_miss(arg: str) -> str:
    """``" (did you mean rec/r01.wav?)"`` from the sibling names closest to a mistyped one."""
    import difflib
    import os

    p = Path(arg)
    folder = p.parent if str(p.parent) else Path(".")
    try:
        names = os.listdir(folder)
    except OSError:
        return f" (no folder {folder} either)" if str(p.parent) not in ("", ".") else ""
    close = difflib.get_close_matches(p.name, names, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(str(folder / c) if str(p.parent) not in ('', '.') else c for c in close)}?)" if close else ""


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def embed_audio(
    embedder,
    inputs: Sequence[str | Path | tuple],
    *,
    hop_s: float | None = None,
    per_window: bool = False,
    batch_size: int = 32,
    labels: Sequence[dict] | None = None,
    progress: Progress | None = None,
) -> Embeddings:
    """Embed audio files (or ``(path, start_s, end_s)`` segments) with any :class:`AudioEmbedder`.

    Windows are the model's own length; ``hop_s`` defaults to half a window. The last
    window is aligned to the end of the clip so no tail is lost. ``labels`` (one dict per
    input, e.g. from :func:`expand_labelled_inputs`) are copied into that input's rows.
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
        slot = len(slots)
        slots.append([])
        meta_rows.append([])
        try:
            for t0, t1, window in recording_windows(path, sr, n, hop, start_s, end_s):
                pending.append(window)
                owners.append((slot, t0, t1))
                meta_rows[slot].append({"input": str(path), "window_start_s": round(t0, 4), "window_end_s": round(t1, 4),
                                        **(labels[slot] if labels else {})})
                if len(pending) >= batch_size:
                    flush()
        except BadInputError as err:
            # a long file can fail mid-stream: drop every window of it, queued or embedded
            keep = [i for i, o in enumerate(owners) if o[0] != slot]
            pending[:] = [pending[i] for i in keep]
            owners[:] = [owners[i] for i in keep]
            slots[slot], meta_rows[slot] = None, None
            skips.add(str(path), err.reason, err.detail)
        if progress:
            progress(1)
    flush()
    for slot, vecs in enumerate(slots):
        if vecs is None:  # skipped
            continue
        if per_window:
            out.extend(_unit(np.stack(vecs)))
            rows.extend(meta_rows[slot])
        else:
            out.append(_unit(np.mean(np.stack(vecs), axis=0)))
            first, last = meta_rows[slot][0], meta_rows[slot][-1]
            rows.append({"input": first["input"], "window_start_s": first["window_start_s"],
                         "window_end_s": last["window_end_s"], "n_windows": len(vecs), **(labels[slot] if labels else {})})
    vectors = np.stack(out).astype(np.float32) if out else np.zeros((0, embedder.dim), np.float32)
    return Embeddings(vectors, rows, skips, {"model": embedder.name, "space": embedder.space, "kind": "audio",
                                             **getattr(embedder, "provenance", {}),
                                             "sample_rate": sr, "window_samples": n, "hop_samples": hop, "per_window": per_window})


# Longer recordings (soundscapes run for hours) are decoded block by block: memory stays
# bounded (a 2-hour file decoded at once took 1.9 GB; streamed it is a few 20 s blocks).
STREAM_ABOVE_S = 600.0


def recording_windows(path, sr: int, n: int, hop: int, start_s=None, end_s=None):
    """``(start_s, end_s, window)`` of the recording, or a :class:`BadInputError`.

    Short recordings are decoded whole and cut by :func:`window_starts` (the last window
    aligned to the end). Recordings over :data:`STREAM_ABOVE_S` are streamed with
    :func:`~birdbridge.data.stream.iter_windows`: same windows, except that the last one is
    the padded tail instead of end-aligned (the length is not known before the end), and
    the silence check runs over the whole stream.
    """
    from ..data.audio import SILENCE_PEAK, audio_info
    from ..data.stream import iter_windows

    offset = start_s or 0.0
    info = audio_info(path)
    length_s = (min(end_s, info["duration_s"]) if end_s is not None else info["duration_s"]) - offset
    if length_s <= STREAM_ABOVE_S:
        wave = load_audio(path, sr, start_s=start_s, end_s=end_s)
        for s in window_starts(len(wave), n, hop):
            yield offset + s / sr, offset + min(len(wave), s + n) / sr, wave[s : s + n]
        return
    peak = 0.0
    for t0, window in iter_windows(path, sr, n / sr, hop / sr, start_s=start_s, end_s=end_s):
        peak = max(peak, float(np.max(np.abs(window))))
        yield t0, min(t0 + n / sr, offset + length_s), window
    if peak < SILENCE_PEAK:
        raise BadInputError("silent", path, f"peak below {SILENCE_PEAK:g}")


def embed_images(teacher, inputs: Sequence[str | Path], *, batch_size: int = 64, labels: Sequence[dict] | None = None,
                 progress: Progress | None = None) -> Embeddings:
    """Embed photos with the teacher's image tower; ``labels`` as for :func:`embed_audio`."""
    from ..data.images import load_image

    skips = SkipLog()
    rows, out, batch = [], [], []

    def flush():
        if batch:
            out.append(teacher.encode_images(batch, batch_size=len(batch)).numpy())
            batch.clear()

    for i, path in enumerate(inputs):
        try:
            batch.append(load_image(path))
            rows.append({"input": str(path), **(labels[i] if labels else {})})
        except BadInputError as err:
            skips.add(str(path), err.reason, err.detail)
        if len(batch) >= batch_size:
            flush()
        if progress:
            progress(1)
    flush()
    vectors = np.concatenate(out).astype(np.float32) if out else np.zeros((0, teacher.dim), np.float32)
    return Embeddings(vectors, rows, skips, {"model": teacher.model_id, "space": "teacher", "kind": "image"})


def embed_texts(encoder, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False) -> Embeddings:
    """Embed texts with any text encoder (:mod:`birdbridge.encoders.text`): the teacher's text
    tower (:class:`~birdbridge.encoders.teacher.Teacher`) or a CLAP's own
    (:class:`~birdbridge.encoders.text.ClapTextEncoder`), on the encoder's device, ``batch_size``
    texts per forward pass (default :data:`~birdbridge.encoders.text.TEXT_BATCH`); ``progress``
    shows a bar on stderr."""
    from ..encoders.text import TEXT_BATCH

    texts = list(texts)
    vec = encoder.encode_text(texts, batch_size=batch_size or TEXT_BATCH, progress=progress).numpy()
    return Embeddings(vec, [{"input": t} for t in texts], SkipLog(), {"model": encoder.model_id, "space": encoder.space,
                                                                      "kind": "text"})
