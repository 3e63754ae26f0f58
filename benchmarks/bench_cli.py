"""Time to first error: how long each verb takes to answer a typical input mistake (issue 25).

Each verb runs as the installed console script, from a scratch directory (not the repo), with
one newcomer's mistake: a config with an unknown key for ``train``/``eval``, a missing
recording/photo/folder for the media verbs, a missing index for ``serve``, a CUDA device on
a machine the cheap device check can rule out (``CUDA_VISIBLE_DEVICES=""``). Every case must
exit 2 with one ``error:`` line; its wall time (process start to exit) is the median of
``repeats`` runs, interleaved across verbs so a burst of load hits them alike. ``birdbridge
--help`` is timed the same way: the floor (Python, Typer, rich) an answer cannot beat.

``baseline_src`` (a ``src`` folder of another version, e.g. ``git archive eabd941 src | tar -x -C
/tmp/base``) times the same cases with that code first on ``PYTHONPATH``, interleaved with this
one's runs: ``cli_first_error_baseline_s``, the before beside the after on the same load.

    python -m benchmarks.bench_cli [--repeats 3] [--baseline-src /tmp/base/src]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = str(Path(sys.executable).with_name("birdbridge"))


def _cases(d: Path) -> dict[str, list[str]]:
    (d / "bad.yaml").write_text("data: {kind: folder, path: .}\ntrain: {batch_sise: 8}\n")
    (d / "eval.yaml").write_text("synthetic: {}\nmethods: [distiled]\n")
    (d / "model").mkdir(exist_ok=True)
    (d / "idx").mkdir(exist_ok=True)
    (d / "idx" / "index.json").write_text("{}")
    (d / "rec.wav").write_bytes(b"")
    return {
        "train": ["train", "bad.yaml", "--out", "run"],
        "eval": ["eval", "eval.yaml", "--out", "table"],
        "search": ["search", "--model", "model", "--index", "idx", "missing.wav"],
        "search --device cuda": ["search", "--model", "model", "--index", "idx", "rec.wav", "--device", "cuda"],
        "detect": ["detect", "--model", "model", "--index", "idx", "missing.wav"],
        "embed-audio": ["embed-audio", "--model", "model", "--out", "a.npy", "missing.wav"],
        "embed-images": ["embed-images", "--teacher", "model", "--out", "i.npy", "missing.jpg"],
        "embed-text": ["embed-text", "--teacher", "teachr", "--out", "t.npy", "Sayornis nigricans"],
        "index": ["index", "missing-photos", "--teacher", "model", "--out", "new-idx"],
        "serve": ["serve", "--model", "model", "--index", "missing-idx"],
        "inspect": ["inspect", "folder", "missing-folder"],
        "data prepare": ["data", "prepare", "folder", "missing-folder", "--out", "shards"],
        "score": ["score", "missing-q.parquet", "missing-g.parquet"],
    }


def _time(args: list[str], cwd: Path, env: dict) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    res = subprocess.run([BIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t0, res.returncode, res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""


def run(repeats: int = 3, baseline_src: str | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "200"}
    base_env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(baseline_src), env.get("PYTHONPATH", "")) if p)}
    base_times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cases = _cases(d)
        times: dict[str, list[float]] = {v: [] for v in cases}
        helps, errors = [], {}
        for _ in range(repeats):
            helps.append(_time(["--help"], d, env)[0])
            for verb, args in cases.items():
                s, rc, line = _time(args, d, env)
                times[verb].append(s)
                if baseline_src:
                    base_times.setdefault(verb, []).append(_time(args, d, base_env)[0])
                if rc != 2 or not line.startswith("error:"):
                    errors[verb] = f"rc {rc}: {line[:300]}"
        first_lines = {v: _time(a, d, env)[2][:200] for v, a in cases.items()}
    first = {v: round(statistics.median(t), 3) for v, t in times.items()}
    help_s = round(statistics.median(helps), 3)
    return {
        "cli_first_error_s": first,
        "cli_help_s": help_s,
        "cli_first_error_max_s": max(first.values()),
        "cli_first_error_over_help": round(max(first.values()) / help_s, 2),
        "cli_first_error_repeats": repeats,
        "cli_first_error_lines": first_lines,
        "cli_first_error_not_an_error": errors,  # a verb that did not answer rc 2 + one error line
        "cli_load_avg": list(os.getloadavg()),
        **({"cli_first_error_baseline_s": {v: round(statistics.median(t), 3) for v, t in base_times.items()},
            "cli_first_error_baseline": str(baseline_src)} if baseline_src else {}),
    }


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-src", default=None)
    a = ap.parse_args()
    print(json.dumps(run(a.repeats, a.baseline_src), indent=2))
