"""A deployment's combined table, rebuilt from its per-recording tables (:mod:`.deployment`).

Rebuilt whole at the end of every run from the tables the journal lists, streamed into an
atomic file: a re-run after a kill never doubles or drops a row, and however many
recordings a deployment has, only one table is in memory at a time.

- CSV, Kaleidoscope: one header, then every table's rows in input order (each row already
  names its recording);
- Raven: selections renumbered 1..N and run on in time across the recordings, as Raven
  shows a file sequence (``Begin Time (s)`` = the recordings before it + ``File Offset (s)``);
  ``Begin Path`` / ``File Offset (s)`` say where in which file a selection is;
- JSON: one list of every recording's result; Parquet: the row groups of every table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..io import atomic_file


def combine_tables(fmt: str, items: Sequence[tuple[Path, str, float]], target: Path) -> Path:
    """``items``: ``(table, recording path, recording duration in s)`` in order. Returns ``target``."""
    if fmt in ("csv", "kaleidoscope"):
        _concat_lines(items, target)
    elif fmt == "raven":
        _raven(items, target)
    elif fmt == "json":
        _json(items, target)
    elif fmt == "parquet":
        _parquet(items, target)
    else:
        raise ValueError(f"no combined table for {fmt!r}")
    return target


def _concat_lines(items, target: Path) -> None:
    with atomic_file(target) as out:
        header_done = False
        for table, _, _ in items:
            with open(table, "rb") as fh:
                header = fh.readline()
                if not header_done:
                    out.write(header)
                    header_done = True
                for line in fh:
                    out.write(line if line.endswith(b"\n") else line + b"\n")


def _raven(items, target: Path) -> None:
    from .tables import RAVEN_COLUMNS

    with atomic_file(target) as out:
        out.write(("\t".join(RAVEN_COLUMNS) + "\n").encode())
        selection, offset = 0, 0.0
        for table, _, duration in items:
            with open(table, encoding="utf-8") as fh:
                header = fh.readline().rstrip("\n").split("\t")
                for line in fh:
                    cells = dict(zip(header, line.rstrip("\n").split("\t")))
                    selection += 1
                    begin, end = float(cells["Begin Time (s)"]), float(cells["End Time (s)"])
                    cells["Selection"] = str(selection)
                    cells["Begin Time (s)"] = f"{offset + begin:.3f}"
                    cells["End Time (s)"] = f"{offset + end:.3f}"
                    out.write(("\t".join(cells.get(c, "") for c in RAVEN_COLUMNS) + "\n").encode())
            offset += float(duration or 0.0)


def _json(items, target: Path) -> None:
    with atomic_file(target) as out:
        out.write(b"[")
        first = True
        for table, _, _ in items:
            for result in json.loads(Path(table).read_text(encoding="utf-8")):
                out.write((("\n" if first else ",\n") + json.dumps(result, indent=2)).encode())
                first = False
        out.write(b"\n]\n")


def _parquet(items, target: Path) -> None:
    import pyarrow.parquet as pq

    with atomic_file(target) as out:
        writer = None
        for table, _, _ in items:
            t = pq.read_table(table)
            if writer is None:
                writer = pq.ParquetWriter(out, t.schema)
            writer.write_table(t)
        if writer is not None:
            writer.close()


__all__ = ["combine_tables"]
