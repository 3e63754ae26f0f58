"""Per-window tables in the formats field tools read: CSV, Raven selection tables, Audacity labels, JSON.

The rows are :class:`~birdbridge.retrieval.results.Detection` of a list of results (a
:class:`~birdbridge.retrieval.results.DetectionResult` from ``detect`` or a
:class:`~birdbridge.retrieval.results.SearchResult` from ``search``); every writer lives
here, so ``detect`` and ``search`` write the same files.

Raven selection table (Raven Pro's "Selection Table" text export, which Raven opens with
*File > Open Selection Table*): tab-separated, a header line, one selection per row,
columns ``Selection, View, Channel, Begin Time (s), End Time (s), Low Freq (Hz),
High Freq (Hz)`` and then ours. With several recordings in one table the times run on
across the files in the order given, as Raven shows a file sequence, and ``Begin Path`` /
``File Offset (s)`` say where in which file a selection is (BirdNET-Analyzer's combined
table does the same).

Audacity labels (*File > Import > Labels*): ``start<TAB>end<TAB>label`` per line, no
header, one file per recording.

Kaleidoscope (Wildlife Acoustics' results CSV, as BirdNET-Analyzer writes it for Kaleidoscope
to open): ``INDIR, FOLDER, IN FILE, OFFSET, DURATION, scientific_name, common_name,
confidence`` (``INDIR`` the folder above the recording's folder, ``FOLDER`` that folder's
name), then ours. Parquet: one typed row per detection (the CSV's columns, numbers as
numbers). CSV and Kaleidoscope rows carry ``start_time``: the window's clock time when the
file name is an AudioMoth or SM4 timestamp (:mod:`birdbridge.data.recorder_time`), else empty.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

FORMATS = ("csv", "raven", "audacity", "json", "kaleidoscope", "parquet")
TEXT_FORMATS = ("csv", "raven", "audacity", "json", "kaleidoscope")
CSV_COLUMNS = ("recording", "start_s", "end_s", "rank", "species_id", "scientific_name", "common_name", "score",
               "confidence", "image", "start_time")
# Kaleidoscope's `confidence` is ours (BirdNET-Analyzer puts its own confidence there); the cosine follows as `score`
KALEIDOSCOPE_COLUMNS = ("INDIR", "FOLDER", "IN FILE", "OFFSET", "DURATION", "scientific_name", "common_name",
                        "confidence", "score", "rank", "species_id", "start_time")
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Begin Path", "Begin File", "File Offset (s)", "Species", "Common Name", "Species ID", "Rank", "Score",
                 "Confidence", "Image")


def _conf(d) -> str:
    return "" if d.confidence is None else f"{d.confidence:.4f}"


def model_band(model) -> tuple[float, float]:
    """The band a model hears, ``(low, high)`` Hz: its mel filter bank's range (the feature extractor's
    ``frequency_min`` / ``frequency_max``), else 0 to Nyquist. Raven selections span it."""
    sr = float(getattr(model, "sample_rate", 0) or 0)
    fe = getattr(getattr(model, "model", None), "feature_extractor", None)
    lo, hi = getattr(fe, "frequency_min", None), getattr(fe, "frequency_max", None)
    lo = float(lo) if isinstance(lo, (int, float)) and lo >= 0 else 0.0
    hi = float(hi) if isinstance(hi, (int, float)) and hi > lo else sr / 2
    return lo, min(hi, sr / 2) if sr else hi


def _label(d) -> str:
    return d.scientific_name or d.species_id or (Path(d.image).name if d.image else "unknown")


def _clock(path: str):
    from ..data.recorder_time import recording_start

    return recording_start(path)


def csv_text(results: Sequence) -> str:
    from ..data.recorder_time import absolute_time

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in results:
        start = _clock(r.path)
        for d in r.detections:
            w.writerow([r.path, f"{d.start_s:.3f}", f"{d.end_s:.3f}", d.rank, d.species_id, d.scientific_name,
                        d.common_name, f"{d.score:.4f}", _conf(d), d.image or "", absolute_time(start, d.start_s)])
    return buf.getvalue()


def kaleidoscope_text(results: Sequence) -> str:
    from ..data.recorder_time import absolute_time

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(KALEIDOSCOPE_COLUMNS)
    for r in results:
        p = Path(r.path)
        start = _clock(r.path)
        for d in r.detections:
            w.writerow([str(p.parent.parent), p.parent.name, p.name, f"{d.start_s:.3f}", f"{d.end_s - d.start_s:.3f}",
                        d.scientific_name, d.common_name, _conf(d), f"{d.score:.4f}", d.rank, d.species_id,
                        absolute_time(start, d.start_s)])
    return buf.getvalue()


def parquet_bytes(results: Sequence) -> bytes:
    """One typed row per detection: the CSV's columns (``start_time`` a timestamp, null when unknown)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list] = {c: [] for c in CSV_COLUMNS}
    for r in results:
        start = _clock(r.path)
        for d in r.detections:
            for c, v in zip(CSV_COLUMNS, (r.path, d.start_s, d.end_s, d.rank, d.species_id, d.scientific_name,
                                          d.common_name, d.score, d.confidence, d.image,
                                          None if start is None else start + _seconds(d.start_s))):
                cols[c].append(v)
    types = {"start_s": pa.float64(), "end_s": pa.float64(), "rank": pa.int32(), "score": pa.float32(), "confidence": pa.float32(),
             "start_time": pa.timestamp("ms")}
    table = pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in cols.items()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _seconds(s: float):
    from datetime import timedelta

    return timedelta(seconds=s)


def _tsv(value) -> str:
    return " ".join(str(value).split("\t")).replace("\n", " ").replace("\r", " ")  # a tab or newline would split a cell


def raven_text(results: Sequence, high_freq_hz: float, low_freq_hz: float = 0.0) -> str:
    lines = ["\t".join(RAVEN_COLUMNS)]
    selection, offset = 0, 0.0
    for r in results:
        for d in r.detections:
            selection += 1
            cells = [selection, "Spectrogram 1", 1, f"{offset + d.start_s:.3f}", f"{offset + d.end_s:.3f}", f"{low_freq_hz:.1f}",
                     f"{high_freq_hz:.1f}", r.path, Path(r.path).name, f"{d.start_s:.3f}", _label(d), d.common_name,
                     d.species_id, d.rank, f"{d.score:.4f}", _conf(d), d.image or ""]
            lines.append("\t".join(_tsv(c) for c in cells))
        if r.ok:
            offset += r.duration_s
    return "\n".join(lines) + "\n"


def audacity_text(result) -> str:
    out = []
    for d in result.detections:
        name = f"{d.common_name} ({_label(d)})" if d.common_name else _label(d)
        # the label ends with the confidence a listener can read (the cosine when there is none)
        out.append(f"{d.start_s:.3f}\t{d.end_s:.3f}\t{_tsv(name)} "
                   + (f"{d.score:.3f}" if d.confidence is None else f"{d.confidence:.3f} (score {d.score:.3f})"))
    return "".join(line + "\n" for line in out)


def json_text(results: Sequence) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2) + "\n"


def render(results: Sequence, fmt: str, *, high_freq_hz: float = 0.0, low_freq_hz: float = 0.0) -> str:
    """One format's text for ``results`` (Audacity: one recording only)."""
    check_format(fmt)
    if fmt == "csv":
        return csv_text(results)
    if fmt == "raven":
        return raven_text(results, high_freq_hz, low_freq_hz)
    if fmt == "json":
        return json_text(results)
    if fmt == "kaleidoscope":
        return kaleidoscope_text(results)
    if fmt == "parquet":
        from ..errors import ConfigError

        raise ConfigError("parquet is a binary format: give --out FILE.parquet or --out DIR")
    if len(results) != 1:
        from ..errors import ConfigError

        raise ConfigError("Audacity labels are one file per recording: give --out DIR for several recordings")
    return audacity_text(results[0])


def write(results: Sequence, fmt: str, out: str | Path, *, high_freq_hz: float = 0.0, low_freq_hz: float = 0.0) -> list[Path]:
    """Write ``results`` as ``fmt`` to ``out`` (atomically); Audacity labels of several recordings go to
    ``out/<recording>.txt``, one file each. Returns the files written."""
    from ..io import atomic_write_text

    out = Path(out)
    if fmt == "audacity" and (len(results) > 1 or out.is_dir()):
        written, used = [], set()
        for r in results:
            if not r.ok:
                continue
            stem = Path(r.path).stem
            name = stem if stem not in used else f"{stem}-{len(used)}"
            used.add(name)
            atomic_write_text(out / f"{name}.txt", audacity_text(r))
            written.append(out / f"{name}.txt")
        return written
    if fmt == "parquet":
        from ..io import atomic_write_bytes

        atomic_write_bytes(out, parquet_bytes(results))
    else:
        atomic_write_text(out, render(results, fmt, high_freq_hz=high_freq_hz, low_freq_hz=low_freq_hz))
    return [out]


def check_format(fmt: str, allowed: Sequence[str] = FORMATS) -> None:
    if fmt not in allowed:
        from ..errors import ConfigError

        raise ConfigError(f"--format must be one of {', '.join(allowed)}, not {fmt!r}")


__all__ = ["FORMATS", "TEXT_FORMATS", "CSV_COLUMNS", "RAVEN_COLUMNS", "KALEIDOSCOPE_COLUMNS", "csv_text",
           "kaleidoscope_text", "parquet_bytes", "model_band", "raven_text", "audacity_text", "json_text", "render",
           "write", "check_format"]
