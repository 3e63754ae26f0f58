"""A memory-bounded IVF-PQ index over N x 768 unit vectors (default 10M), built from parts on disk.

The gallery is clip-retrieval's parts layout (:mod:`birdbridge.embedding_parts`), written
in chunks of ``--part-size`` rows, never held in RAM: vectors scattered around ``N / 100``
random "species" centroids (100 per species, cosine ~0.7 to their centroid; the shape of
``bench_search``'s clustered gallery, scaled), queries around random centroids, looser
(cosine ~0.6). At 10M the parts are 30.7 GB of float32 on disk: put ``--dir`` outside the
repository (default ``/tmp/birdbridge-bench-pq``) and delete it after (``--cleanup``).

Steps, each timed apart:

1. generate the parts (resumable: finished parts are kept);
2. build ``birdbridge index PARTS_DIR --kind faiss-ivfpq --max-index-memory 4GB``
   (the library call it makes) in a *subprocess*, so its peak memory is the build's alone --
   the generator's arrays do not count (peak anonymous memory; see :func:`_build_child`);
3. ground truth: exact inner-product top-10 of ``--queries`` queries, streamed part by part;
4. search the index one query at a time, without and with re-ranking (``k × 10``
   candidates re-scored against the exact vectors, memory-mapped from the parts):
   ms/query and recall@10.

    python -m benchmarks.bench_search_pq --n 10000000 --dir /tmp/pq10m [--cleanup]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 768
PER_SPECIES = 100
RESULTS = Path(__file__).with_name("results.json")


def _unit_rows(a: np.ndarray) -> np.ndarray:
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    return a


def centroids(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return _unit_rows(np.random.default_rng(seed).standard_normal((max(1, n // PER_SPECIES), dim), dtype=np.float32))


def generate(root: Path, n: int, dim: int = DIM, part_size: int = 100_000, seed: int = 0, spread: float = 1.0) -> float:
    """Write the gallery as parts (a part already complete is kept); returns seconds spent."""
    from birdbridge.embedding_parts import EmbeddingParts

    t0 = time.perf_counter()
    parts = EmbeddingParts(root)
    done = set(parts.complete_parts())
    cents = centroids(n, dim, seed)
    for i, s in enumerate(range(0, n, part_size)):
        if i in done:
            continue
        e = min(n, s + part_size)
        rng = np.random.default_rng([seed, i])  # per part: a resumed run writes the same rows
        noise = _unit_rows(rng.standard_normal((e - s, dim), dtype=np.float32))
        x = _unit_rows(cents[np.arange(s, e) % len(cents)] + spread * noise)
        parts.write_part(i, x, [{"input": f"synthetic/{j:09d}.jpg"} for j in range(s, e)])
        del x, noise
    parts.finish({"model": "synthetic", "space": "teacher", "kind": "image", "generator": "bench_search_pq",
                  "seed": seed, "spread": spread})
    return time.perf_counter() - t0


def queries(n: int, n_queries: int, dim: int = DIM, seed: int = 1, spread: float = 1.3) -> np.ndarray:
    cents = centroids(n, dim)
    rng = np.random.default_rng(seed)
    noise = _unit_rows(rng.standard_normal((n_queries, dim), dtype=np.float32))
    return _unit_rows(cents[rng.integers(len(cents), size=n_queries)] + spread * noise)


def exact_topk(root: Path, q: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k ids, streamed over the parts (one part in memory at a time)."""
    from birdbridge.embedding_parts import EmbeddingParts

    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    off = 0
    for _, v in EmbeddingParts(root).iter_vectors():
        scores = q @ np.asarray(v).T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], 1)
        best_i = np.concatenate([best_i, part + off], 1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
        off += len(v)
    return best_i


def _rss_anon_kb() -> int:
    """Anonymous resident memory (Linux): what the build holds, without the pages of memory-mapped parts."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def _build_child(parts_dir: str, out: str, budget: str) -> None:
    """Runs in the subprocess: the build, then its own peak memory and time as one JSON line.

    Two peaks: ``ru_maxrss`` counts the file-backed pages of the memory-mapped parts the build
    reads (clean page cache the kernel drops under pressure: at 10M it reached ~15 GB on a
    24 GB machine), so the budget's figure is the peak of anonymous memory, sampled every 0.2 s.
    """
    import threading

    from birdbridge.retrieval.index import ImageIndex

    peak, done = [_rss_anon_kb()], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _rss_anon_kb())

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    idx = ImageIndex.build_from_parts(out, parts_dir, kind="faiss-ivfpq", max_memory=budget)
    seconds = time.perf_counter() - t0
    done.set()
    peak[0] = max(peak[0], _rss_anon_kb())
    print(json.dumps({"build_s": seconds, "peak_anon_mb": peak[0] / 1024,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "count": idx.count, "params": idx.manifest.get("pq")}), flush=True)


def run(n: int = 10_000_000, root: Path = Path("/tmp/birdbridge-bench-pq"), n_queries: int = 200, k: int = 10,
        budget: str = "4GB", part_size: int = 100_000, cleanup: bool = False) -> dict:
    from birdbridge.retrieval.index import ImageIndex

    root = Path(root)
    parts_dir, out = root / "parts", root / "index"
    gen_s = generate(parts_dir, n, part_size=part_size)
    print(f"[pq] generated {n} vectors in {gen_s:.0f} s", flush=True)
    if out.exists():
        shutil.rmtree(out)
    child = subprocess.run([sys.executable, "-m", "benchmarks.bench_search_pq", "--build-child", str(parts_dir), str(out), budget],
                           capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if child.returncode:
        raise RuntimeError(f"build failed: {child.stderr[-2000:]}")
    built = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"[pq] built in {built['build_s']:.0f} s, peak anonymous memory {built['peak_anon_mb']:.0f} MB "
          f"(RSS with mapped parts {built['peak_rss_mb']:.0f} MB): {built['params']}", flush=True)
    q = queries(n, n_queries)
    t0 = time.perf_counter()
    truth = exact_topk(parts_dir, q, k)
    gt_s = time.perf_counter() - t0
    idx = ImageIndex.open(out)
    index_bytes = (out / idx.manifest["faiss_file"]).stat().st_size
    res = {"search_pq_n": n, "search_pq_dim": DIM, "search_pq_queries": n_queries, "search_pq_index_bytes": index_bytes,
           "search_pq_float32_bytes": n * DIM * 4, "search_pq_index_over_float32": round(index_bytes / (n * DIM * 4), 4),
           "search_pq_build_s": round(built["build_s"], 1), "search_pq_build_peak_rss_mb": round(built["peak_anon_mb"], 1),
           "search_pq_build_peak_rss_incl_mmap_mb": round(built["peak_rss_mb"], 1),
           "search_pq_generate_s": round(gen_s, 1), "search_pq_exact_s": round(gt_s, 1), "search_pq_params": built["params"]}
    for rerank in (False, True):
        idx.search(q[:5], k, rerank=rerank)  # warm: first touches of the memory-mapped parts
        t0 = time.perf_counter()
        found = np.concatenate([idx.search(q[i : i + 1], k, rerank=rerank)[1] for i in range(len(q))])
        ms = (time.perf_counter() - t0) * 1000 / len(q)
        recall = float(np.mean([len(set(found[i]) & set(truth[i])) / k for i in range(len(q))]))
        tag = "_rerank" if rerank else ""
        res[f"search_pq_ms_per_query{tag}"] = round(ms, 3)
        res[f"search_pq_recall_at_10{tag}"] = round(recall, 4)
        print(f"[pq] rerank={rerank}: {ms:.2f} ms/query, recall@10 {recall:.3f}", flush=True)
    if cleanup:
        shutil.rmtree(root, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/birdbridge-bench-pq"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--budget", default="4GB")
    ap.add_argument("--part-size", type=int, default=100_000)
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--cleanup", action="store_true", help="delete --dir afterwards")
    ap.add_argument("--write", action="store_true", help="merge the numbers into benchmarks/results.json")
    ap.add_argument("--build-child", nargs=3, metavar=("PARTS", "OUT", "BUDGET"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build_child:
        _build_child(*args.build_child)
        return {}
    if args.generate_only:
        print(f"generated in {generate(args.dir / 'parts', args.n, part_size=args.part_size):.0f} s")
        return {}
    res = run(args.n, args.dir, args.queries, budget=args.budget, part_size=args.part_size, cleanup=args.cleanup)
    print(json.dumps(res, indent=2))
    if args.write:
        merged = {**json.loads(RESULTS.read_text()), **res} if RESULTS.is_file() else res
        RESULTS.write_text(json.dumps(merged, indent=2, default=str) + "\n")
    return res


if __name__ == "__main__":
    main()
