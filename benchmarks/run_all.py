"""The CPU benchmark suite: ``make bench`` -> ``benchmarks/results.json`` + ``docs/PERFORMANCE.md``.

Runs each benchmark once, in order of cost, inside one time budget (default 15 min):
a benchmark that would start after the budget is spent is recorded as skipped rather than
run. Ratios are always measured within one run, never against numbers from elsewhere.

    python -m benchmarks.run_all [--budget-s 900] [--only step,search] [--search-n 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
import traceback
from pathlib import Path

import torch

from .targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
REPORT = ROOT / "docs" / "PERFORMANCE.md"


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import faiss

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "faiss": faiss.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "load_avg_start": list(os.getloadavg()), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def _benches(args) -> list[tuple[str, callable]]:
    from . import (bench_cli, bench_decode, bench_detect, bench_frontend, bench_loader, bench_memory, bench_models, bench_search,
                   bench_search_pq, bench_soundscape, bench_step)

    return [
        ("cli", lambda: bench_cli.run(repeats=3, baseline_src=args.cli_baseline_src)),
        ("frontend", lambda: bench_frontend.run()),
        ("search", lambda: bench_search.run(n=args.search_n)),
        ("search_pq", lambda: bench_search_pq.run(n=args.search_pq_n, root=args.search_pq_dir, cleanup=True)),
        ("step", lambda: bench_step.run(batch=args.step_batch, steps=args.step_steps)),
        ("decode", lambda: {"decode": bench_decode.main(None, repeats=2)}),
        ("loader", lambda: bench_loader.run(n=args.loader_n, seconds=args.loader_seconds, repeats=3)),
        ("models", lambda: bench_models.run()),
        ("memory", lambda: bench_memory.run(budget_s=max(60.0, args.budget_s / 6))),
        ("detect", lambda: bench_detect.run(minutes=args.detect_minutes)),
        ("soundscape", lambda: bench_soundscape.run(minutes=args.soundscape_minutes)),
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget-s", type=float, default=900.0)
    ap.add_argument("--only", default="",
                    help="comma-separated subset: cli,frontend,decode,loader,step,search,search_pq,models,memory,detect,soundscape")
    ap.add_argument("--search-n", type=int, default=1_000_000)
    ap.add_argument("--search-pq-n", type=int, default=1_000_000,
                    help="vectors for the IVF-PQ benchmark (issue 23 asks 10000000: 30.7 GB of parts on disk, hours on 2 cores)")
    ap.add_argument("--search-pq-dir", type=Path, default=Path("/tmp/birdbridge-bench-pq"),
                    help="where its parts are written (3.1 GB a million vectors; deleted after)")
    ap.add_argument("--step-batch", type=int, default=4)
    ap.add_argument("--step-steps", type=int, default=3)
    ap.add_argument("--loader-n", type=int, default=96, help="iNatSounds-like recordings for the loader benchmark")
    ap.add_argument("--loader-seconds", type=float, default=10.0, help="seconds each loader runs per repeat")
    ap.add_argument("--detect-minutes", type=float, default=60.0, help="audio for detect vs BirdNET (issue 22: one hour)")
    ap.add_argument("--cli-baseline-src", default=None, help="time the CLI's first errors with this src folder too "
                    "(an older version: the before beside the after)")
    ap.add_argument("--soundscape-minutes", type=float, default=10.0,
                    help="audio for the soundscape evaluation pass (issue 20: windows/s per core, real-size student)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report", type=Path, default=REPORT)
    args = ap.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    t_start = time.perf_counter()
    results: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "budget_s": args.budget_s, "bench_seconds": {}, "skipped": {}, "errors": {}}
    if only and args.out.is_file():  # a partial rerun updates the last full run's numbers
        previous = json.loads(args.out.read_text())
        results = {**previous, "updated": {**previous.get("updated", {}), **{n: results["date"] for n in only}},
                   "skipped": {}, "errors": {k: v for k, v in previous.get("errors", {}).items() if k not in only}}
    for name, fn in _benches(args):
        if only and name not in only:
            continue
        if time.perf_counter() - t_start > args.budget_s:
            results["skipped"][name] = "time budget spent before it could start"
            continue
        t0 = time.perf_counter()
        try:
            results.update(fn())
        except Exception as err:  # noqa: BLE001 - one broken benchmark must not lose the others' numbers
            results["errors"][name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        results["bench_seconds"][name] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {results['bench_seconds'][name]:.0f} s (total {time.perf_counter() - t_start:.0f} s)", flush=True)
    results["machine"]["load_avg_end"] = list(os.getloadavg())
    if not only:
        results["total_s"] = round(time.perf_counter() - t_start, 1)
    results["targets"] = {k: {"target": f"{op} {thr}", "value": results.get(k), "met": _met(results.get(k), op, thr)}
                          for k, (op, thr, _) in TARGETS.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    from .report import write_report

    write_report(results, args.report)
    print(f"wrote {args.out} and {args.report} in {results['total_s']:.0f} s")
    return results


def _met(value, op: str, thr: float) -> bool | None:
    if value is None:
        return None
    return value >= thr if op == ">=" else value <= thr


if __name__ == "__main__":
    main()
