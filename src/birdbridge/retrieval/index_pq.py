"""A memory-bounded index: IVF-PQ (optionally OPQ-rotated), sized to a byte budget, built in chunks.

``faiss-flat``, ``faiss-hnsw`` and ``faiss-ivf`` keep every float32 vector in RAM: 100M photos
× 768 dims is 307 GB. ``faiss-ivfpq`` keeps ``m`` bytes of product-quantisation code per
vector instead (plus its 8-byte id), as autofaiss does. autofaiss itself pins an older numpy,
so the same recipe is written here with FAISS's factory strings:

* :func:`choose_params` -- ``nlist`` ≈ 4·√n inverted lists (at most ``sample / 39``, FAISS's
  floor of training points per list), and the largest ``m`` of FAISS's sub-quantiser counts
  (:data:`SUB_QUANTIZERS`) that divides ``d`` and keeps :func:`estimate_bytes` within the
  budget. OPQ (a learnt rotation that spreads variance evenly over the sub-vectors) when the
  training sample is large enough to fit it; an HNSW coarse quantiser above 1024 lists, so
  assigning a vector to its list costs a graph walk instead of ``nlist`` dot products. A
  budget that even ``m = 1`` cannot meet is a :class:`ConfigError` naming the minimum.
* :func:`build_pq` -- the quantisers are trained on a fixed-seed random sample of rows drawn
  across the memory-mapped sources (:func:`sample_rows`), then the vectors are added source
  by source in chunks, so peak memory is the sample plus one chunk, never the collection.
* :func:`rerank` -- PQ scores are approximate: with re-ranking on, ``k × RERANK_FACTOR``
  candidates are fetched and re-scored with their exact vectors (memory-mapped from the
  parts or shards the index records), and the best ``k`` returned.

An index grows by ``--add`` without retraining: new vectors are encoded with the trained
quantisers (:func:`add_chunks`), so they should come from the same distribution.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import ConfigError

# FAISS's sub-quantiser counts (bytes per code at 8 bits), the set its GPU IVF-PQ accepts too
SUB_QUANTIZERS = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
DEFAULT_MAX_MEMORY = "4GB"
RERANK_FACTOR = 10  # candidates fetched per result kept when re-ranking (k=10 -> 100 exact re-scores)
PQ_NPROBE = 64  # lists scanned per query
HNSW_QUANTIZER_ABOVE = 1024  # lists above which the coarse quantiser is an HNSW graph
HNSW_QUANTIZER_EF = 128
OPQ_MIN_TRAIN = 10_000  # rows a sample needs before an OPQ rotation is fitted
OPQ_NITER = 10
OPQ_MAX_TRAIN = 32_768
TRAIN_MIN = 100_000  # a sample holds at least this many rows (or all of them) ...
TRAIN_MAX = 200_000  # ... and at most this many: bounds training time (k-means cost ~ sample × nlist × d)
CHUNK = 65_536  # rows added per call
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(text: str | int | float) -> int:
    """Bytes in ``"4GB"``, ``"512MB"``, ``"1.5G"``, ``"2GiB"`` or a plain number (binary units: 1 GB = 2³⁰ bytes)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
        if not m:
            raise ConfigError(f"memory budget {text!r} is not a size like 4GB, 512MB or 1.5G")
        value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value <= 0:
        raise ConfigError(f"memory budget must be positive, not {text!r}")
    return int(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@dataclass(frozen=True)
class PQParams:
    """One IVF-PQ configuration: what :func:`choose_params` picked and why it fits."""

    d: int
    nlist: int
    m: int
    nbits: int
    opq: bool
    hnsw_quantizer: bool
    train_n: int
    estimate_bytes: int

    @property
    def factory(self) -> str:
        pre = f"OPQ{self.m}_{self.d}," if self.opq else ""
        quant = f"IVF{self.nlist}" + ("_HNSW32" if self.hnsw_quantizer else "")
        return f"{pre}{quant},PQ{self.m}x{self.nbits}"

    def to_dict(self) -> dict:
        return {**asdict(self), "factory": self.factory}


def estimate_bytes(n: int, d: int, nlist: int, m: int, nbits: int = 8, opq: bool = False, hnsw: bool = False) -> int:
    """Resident bytes of an IVF-PQ index: codes, ids, coarse centroids, PQ codebooks, OPQ matrix, HNSW links."""
    codes = n * math.ceil(m * nbits / 8) + 8 * n
    centroids = nlist * d * 4 + (nlist * 32 * 2 * 4 if hnsw else 0)
    return codes + centroids + (2**nbits) * d * 4 + (d * d * 4 if opq else 0)


def train_size(n: int) -> int:
    nlist = max(1, int(4 * math.sqrt(max(n, 1))))
    return min(n, min(TRAIN_MAX, max(39 * nlist, TRAIN_MIN)))


def choose_params(n: int, d: int, budget: int | str, *, train_n: int | None = None) -> PQParams:
    """The largest code that fits ``budget`` for ``n`` ``d``-dimensional vectors (see the module docstring)."""
    budget = parse_memory(budget)
    if n < 1 or d < 1:
        raise ConfigError(f"an IVF-PQ index needs vectors to train on (got {n} of dimension {d})")
    train_n = min(n, train_n or train_size(n))
    nlist = max(1, min(int(4 * math.sqrt(n)), train_n // 39))
    nbits = max(1, min(8, int(math.log2(max(train_n, 2)))))  # fewer than 256 rows cannot train 256 centroids
    opq = train_n >= OPQ_MIN_TRAIN
    hnsw = nlist > HNSW_QUANTIZER_ABOVE
    fits = [m for m in SUB_QUANTIZERS if d % m == 0 and m <= d]
    for m in sorted(fits, reverse=True):
        for rotate in ((True, False) if opq else (False,)):  # an OPQ matrix (d² floats) only where it fits too
            est = estimate_bytes(n, d, nlist, m, nbits, rotate, hnsw)
            if est <= budget:
                return PQParams(d, nlist, m, nbits, rotate, hnsw, train_n, est)
    least = estimate_bytes(n, d, nlist, 1, nbits, False, hnsw)
    raise ConfigError(f"--max-index-memory {human_bytes(budget)} cannot hold {n} vectors of {d} dims: the smallest "
                      f"IVF-PQ code (1 byte + an 8-byte id per vector) needs at least {human_bytes(least)}")


# --------------------------------------------------------------------------- building


def _offsets(sources: Sequence[np.ndarray]) -> np.ndarray:
    return np.cumsum([0] + [len(s) for s in sources])


def sample_rows(sources: Sequence[np.ndarray], size: int, seed: int = 0) -> np.ndarray:
    """``size`` rows drawn uniformly without replacement across ``sources`` (memory-mapped arrays), as float32."""
    off = _offsets(sources)
    n = int(off[-1])
    size = min(size, n)
    pick = np.sort(np.random.default_rng(seed).choice(n, size, replace=False)) if size < n else np.arange(n)
    out = np.empty((size, sources[0].shape[1] if sources else 0), np.float32)
    src = np.searchsorted(off, pick, side="right") - 1
    at = 0
    for s in np.unique(src):
        rows = pick[src == s] - off[s]
        out[at : at + len(rows)] = sources[s][rows]  # sorted row numbers: one pass through the file
        at += len(rows)
    return out


def new_index(params: PQParams):
    import faiss

    index = faiss.index_factory(params.d, params.factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.spherical = True  # unit-norm centroids: cells are cones of cosine similarity
    # Training cost bounds (k-means is the build's CPU cost before the adds): 10 iterations, and
    # at most 64 sample points per PQ centroid / 32k rows for the OPQ rotation.
    ivf.cp.niter = 10
    pq = faiss.downcast_index(ivf).pq
    pq.cp.niter, pq.cp.max_points_per_centroid = 10, 64
    if params.opq:
        opq = faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0))
        opq.niter, opq.max_train_points = OPQ_NITER, OPQ_MAX_TRAIN
    return index


def tune(index) -> None:
    """Search-time settings (not all serialised): lists probed, and the HNSW quantiser's breadth."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = min(PQ_NPROBE, ivf.nlist)
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(HNSW_QUANTIZER_EF, ivf.nprobe)


def add_chunks(index, sources: Iterable[np.ndarray], chunk: int = CHUNK, progress: Callable[[int], None] | None = None) -> None:
    """Encode and append each source's rows, ``chunk`` at a time (the trained quantisers are kept)."""
    for src in sources:
        for s in range(0, len(src), chunk):
            block = np.ascontiguousarray(src[s : s + chunk], dtype=np.float32)
            index.add(block)
            if progress:
                progress(len(block))


def build_pq(sources: Sequence[np.ndarray], budget: int | str = DEFAULT_MAX_MEMORY, *, seed: int = 0,
             chunk: int = CHUNK, progress: Callable[[int], None] | None = None, train_n: int | None = None):
    """``(faiss index, params)`` over the rows of ``sources`` (memory-mapped arrays, in id order)."""
    n = int(_offsets(sources)[-1])
    d = int(sources[0].shape[1]) if sources else 0
    params = choose_params(n, d, budget, train_n=train_n)
    index = new_index(params)
    index.train(sample_rows(sources, params.train_n, seed))
    add_chunks(index, sources, chunk, progress)
    tune(index)
    return index, params


def describe(index) -> dict:
    """What a built IVF-PQ index is (lists, code bytes, bits, lists probed, OPQ), as the manifest records it."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    pq = faiss.downcast_index(ivf).pq
    return {"nlist": int(ivf.nlist), "m": int(pq.M), "nbits": int(pq.nbits), "nprobe": int(ivf.nprobe),
            "opq": isinstance(faiss.downcast_index(index), faiss.IndexPreTransform)}


# --------------------------------------------------------------------------- searching


def rerank(approx_search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
           exact_vectors: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, k: int,
           factor: int = RERANK_FACTOR) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``k × factor`` approximate candidates, re-scored exactly: ``(scores [Q, k], ids [Q, k])``."""
    _, cand = approx_search(queries, k * factor)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    for q, row in enumerate(cand):
        c = row[row >= 0]
        if not len(c):
            continue
        exact = exact_vectors(c) @ queries[q]
        order = np.lexsort((c, -exact))[:k]  # ties by id: deterministic
        scores[q, : len(order)] = exact[order]
        ids[q, : len(order)] = c[order]
    return scores, ids
