"""Score "bring your own" embeddings: query and gallery parquet files -> retrieval metrics.

Backs ``birdbridge score Q.parquet G.parquet [--ranks genus,family] --out R.json``. Each
file has an ``embedding`` column (list of floats) -- or is the ``.parquet`` sidecar of
``birdbridge embed-audio``/``embed-images``, whose vectors are in the ``.npy`` beside it --
a ``label`` column (the species; strings or ints; ``embed-*`` from a CSV writes it) and
optionally one column per coarser rank (``genus``, ``family``, ``order`` ...). Rows are
L2-normalised and scored by cosine similarity; unusable rows (missing/NaN/zero embedding,
missing label) are skipped and listed in the result instead of failing the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from birdbridge.errors import BadInputError, ConfigError, SkipLog
from birdbridge.metrics import chance_map, rank_retrieval_metrics

EMBEDDING_COLUMN = "embedding"
LABEL_COLUMN = "label"
# Ranks scored without --ranks when both files carry the column.
AUTO_RANKS: tuple[str, ...] = ("genus", "family", "order")


@dataclass
class _Side:
    emb: np.ndarray  # float32 [n, d], unit rows, usable rows only
    taxa: list[dict]  # per usable row: {"species": label, rank: name, ...}


def _schema_columns(p: Path, role: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not p.is_file():
        raise BadInputError("file not found", p, f"{role} parquet")
    try:
        names = list(pq.read_schema(p).names)
    except (pa.ArrowException, OSError) as e:
        raise BadInputError("not a readable parquet file", p, str(e)) from e
    if EMBEDDING_COLUMN not in names and not p.with_suffix(".npy").is_file():
        raise ConfigError(f"{role} file {p} has no {EMBEDDING_COLUMN!r} column and no {p.with_suffix('.npy').name} "
                          f"beside it (columns: {', '.join(names)})")
    if LABEL_COLUMN not in names:
        raise ConfigError(f"{role} file {p} has no {LABEL_COLUMN!r} column (columns: {', '.join(names)}); "
                          "`birdbridge embed-audio/embed-images` writes one when its inputs are a CSV with a "
                          "scientific_name or species_id column")
    return names


def _embeddings(table: Any, p: Path) -> tuple[np.ndarray, np.ndarray]:
    """[n, d] float32 (NaN rows where null) and the null mask; errors on ragged lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(EMBEDDING_COLUMN).combine_chunks()
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise BadInputError("embedding column is not a list of numbers", p, f"type {t}")
    null = col.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)[~null]
    dims = np.unique(lengths)
    if len(dims) > 1:
        raise BadInputError("embeddings of different lengths", p, f"lengths {dims[:5].tolist()}")
    d = int(dims[0]) if len(dims) else 0
    if len(dims) and d == 0:
        raise BadInputError("empty embeddings", p, "every embedding has length 0")
    try:
        # flatten() skips null lists and honours slicing; null elements become NaN.
        values = pc.cast(col.flatten(), pa.float32()).to_numpy(zero_copy_only=False)
    except pa.ArrowException as e:
        raise BadInputError("embedding column is not a list of numbers", p, str(e)) from e
    emb = np.full((len(col), d), np.nan, dtype=np.float32)
    emb[~null] = values.reshape(-1, d) if d else values.reshape(0, 0)
    return emb, null


def _load(path: str | Path, role: str, ranks: Sequence[str], skips: SkipLog) -> _Side:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    sidecar = EMBEDDING_COLUMN not in pq.read_schema(p).names  # an embed-* .parquet: the vectors are in the .npy
    try:
        table = pq.read_table(p, columns=[LABEL_COLUMN, *ranks] if sidecar else [EMBEDDING_COLUMN, LABEL_COLUMN, *ranks])
    except (pa.ArrowException, OSError) as e:
        raise BadInputError("not a readable parquet file", p, str(e)) from e
    if table.num_rows == 0:
        raise BadInputError("empty file", p, f"the {role} file has no rows")
    if sidecar:
        emb = np.load(p.with_suffix(".npy")).astype(np.float32)
        if emb.ndim != 2 or len(emb) != table.num_rows:
            raise BadInputError("embeddings do not match their rows", p.with_suffix(".npy"),
                                f"{emb.shape[0] if emb.ndim else 0} vectors for {table.num_rows} rows of {p.name}")
        null = np.zeros(len(emb), dtype=bool)
    else:
        emb, null = _embeddings(table, p)
    labels = table.column(LABEL_COLUMN).to_pylist()
    rank_values = {r: table.column(r).to_pylist() for r in ranks}
    with np.errstate(invalid="ignore", over="ignore"):
        norm = np.linalg.norm(emb.astype(np.float64), axis=1)
    nan = np.isnan(emb).any(axis=1) & ~null
    bad_label = np.array([x is None or (isinstance(x, str) and not x.strip()) for x in labels], dtype=bool)
    reasons = [
        (null, "missing embedding"),
        (nan, "nan embedding"),
        (~np.isfinite(norm) & ~null & ~nan, "non-finite embedding"),
        (norm == 0, "zero embedding"),
        (bad_label, "missing label"),
    ]
    keep = np.ones(len(emb), dtype=bool)
    for mask, reason in reasons:  # first reason wins for a row
        for i in np.flatnonzero(mask & keep):
            skips.add(f"{p}#row={i}", reason, f"{role} row")
        keep &= ~mask
    if not keep.any():
        raise BadInputError("no usable rows", p, f"all {len(emb)} {role} rows skipped")
    unit = (emb[keep] / norm[keep, None]).astype(np.float32)
    taxa = [{"species": labels[i], **{r: v[i] for r, v in rank_values.items()}} for i in np.flatnonzero(keep)]
    return _Side(unit, taxa)


def _resolve_ranks(ranks: Sequence[str] | None, q_cols: list[str], g_cols: list[str], qp: str, gp: str) -> list[str]:
    if ranks is None:
        return [r for r in AUTO_RANKS if r in q_cols and r in g_cols]
    out = []
    for r in ranks:
        r = r.strip()
        if not r or r == "species" or r in out:  # species is always scored, from `label`
            continue
        for role, cols, path in (("queries", q_cols, qp), ("gallery", g_cols, gp)):
            if r not in cols:
                raise ConfigError(
                    f"rank {r!r} was requested but the {role} file {path} has no {r!r} column "
                    f"(columns: {', '.join(cols)})"
                )
        out.append(r)
    return out


def score_files(queries: str | Path, gallery: str | Path, ranks: Sequence[str] | None = None) -> dict:
    """Retrieval metrics of query embeddings against a gallery, at species and coarser ranks.

    ``ranks=None`` scores species plus whichever of genus/family/order both files have;
    an explicit list must name columns present in both files (:class:`ConfigError`
    otherwise). Each rank's metrics are those of
    :func:`~birdbridge.metrics.retrieval_metrics` without ``per_query_ap``,
    plus ``chance_map`` (the exact expected mAP of random rankings).
    """
    skips = SkipLog()
    # Schemas first, so a missing column or a rank typo fails before any heavy reading.
    q_cols = _schema_columns(Path(queries), "queries")
    g_cols = _schema_columns(Path(gallery), "gallery")
    use = _resolve_ranks(ranks, q_cols, g_cols, str(queries), str(gallery))
    q = _load(queries, "queries", use, skips)
    g = _load(gallery, "gallery", use, skips)
    if q.emb.shape[1] != g.emb.shape[1]:
        raise BadInputError(
            "embedding dimension mismatch", gallery, f"queries have dim {q.emb.shape[1]}, gallery dim {g.emb.shape[1]}"
        )
    scores = q.emb @ g.emb.T  # cosine: rows are unit length
    all_ranks = ["species", *use]
    metrics = rank_retrieval_metrics(scores, q.taxa, g.taxa, ranks=all_ranks)
    for r, m in metrics.items():
        m.pop("per_query_ap")
        m["chance_map"] = chance_map([t.get(r) for t in q.taxa], [t.get(r) for t in g.taxa])
    return {
        "queries": str(queries),
        "gallery": str(gallery),
        "n_queries": len(q.taxa),
        "n_gallery": len(g.taxa),
        "dim": int(q.emb.shape[1]),
        "metrics": metrics,
        "skipped": skips.to_list(),
    }
