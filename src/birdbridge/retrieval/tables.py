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
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

FORMATS = ("csv", "raven", "audacity", "json")
CSV_COLUMNS = ("recording", "start_s", "end_s", "rank", "species_id", "scientific_name", "common_name", "score", "image")
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Begin Path", "Begin File", "File Offset (s)", "Species", "Common Name", "Species ID", "Rank", "Score",
                 "Image")


def _label(d) -> str:
    return d.scientific_name or d.species_id or (Path(d.image).name if d.image else "unknown")


def csv_text(results: Sequence) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in results:
        for d in r.detections:
            w.writerow([r.path, f"{d.start_s:.3f}", f"{d.end_s:.3f}", d.rank, d.species_id, d.scientific_name,
                        d.common_name, f"{d.score:.4f}", d.image or ""])
    return buf.getvalue()


def _tsv(value) -> str:
    return " ".join(str(value).split("\t")).replace("\n", " ").replace("\r", " ")  # a tab or newline would split a cell


def raven_text(results: Sequence, high_freq_hz: float) -> str:
    lines = ["\t".join(RAVEN_COLUMNS)]
    selection, offset = 0, 0.0
    for r in results:
        for d in r.detections:
            selection += 1
            cells = [selection, "Spectrogram 1", 1, f"{offset + d.start_s:.3f}", f"{offset + d.end_s:.3f}", "0.0",
                     f"{high_freq_hz:.1f}", r.path, Path(r.path).name, f"{d.start_s:.3f}", _label(d), d.common_name,
                     d.species_id, d.rank, f"{d.score:.4f}", d.image or ""]
            lines.append("\t".join(_tsv(c) for c in cells))
        if r.ok:
            offset += r.duration_s
    return "\n".join(lines) + "\n"


def audacity_text(result) -> str:
    out = []
    for d in result.detections:
        name = f"{d.common_name} ({_label(d)})" if d.common_name else _label(d)
        out.append(f"{d.start_s:.3f}\t{d.end_s:.3f}\t{_tsv(name)} {d.score:.3f}")
    return "".join(line + "\n" for line in out)


def json_text(results: Sequence) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2) + "\n"


def render(results: Sequence, fmt: str, *, high_freq_hz: float = 0.0) -> str:
    """One format's text for ``results`` (Audacity: one recording only)."""
    check_format(fmt)
    if fmt == "csv":
        return csv_text(results)
    if fmt == "raven":
        return raven_text(results, high_freq_hz)
    if fmt == "json":
        return json_text(results)
    if len(results) != 1:
        from ..errors import ConfigError

        raise ConfigError("Audacity labels are one file per recording: give --out DIR for several recordings")
    return audacity_text(results[0])


def write(results: Sequence, fmt: str, out: str | Path, *, high_freq_hz: float = 0.0) -> list[Path]:
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
    atomic_write_text(out, render(results, fmt, high_freq_hz=high_freq_hz))
    return [out]


def check_format(fmt: str, allowed: Sequence[str] = FORMATS) -> None:
    if fmt not in allowed:
        from ..errors import ConfigError

        raise ConfigError(f"--format must be one of {', '.join(allowed)}, not {fmt!r}")


__all__ = ["FORMATS", "CSV_COLUMNS", "RAVEN_COLUMNS", "csv_text", "raven_text", "audacity_text", "json_text", "render",
           "write", "check_format"]
