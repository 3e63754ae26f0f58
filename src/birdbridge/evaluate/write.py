"""The one writer of the evaluation's files.

A single evaluation (:func:`~birdbridge.evaluate.runner.run_eval`) and a sweep (each run
through ``run_eval``, then its own summary) write through :func:`write_outputs`:
``results.json`` (NaN as null), ``report.md``, the PNG figures and, for a run,
``skipped.json``, each atomically (:mod:`birdbridge.io`). The renderers
(:mod:`.report`, :mod:`.sweep_report`) turn results into text and figures and write
nothing themselves. ``birdbridge score`` writes its results JSON with :func:`write_json`.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text


def _json_safe(x: Any) -> Any:
    # NaN (e.g. mAP with no scorable query) is not valid JSON; write null instead.
    if isinstance(x, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(result: dict, out: str | Path) -> Path:
    """Write ``result`` to ``out`` atomically (:mod:`birdbridge.io`), NaN as null."""
    out = Path(out)
    atomic_write_text(out, json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")
    return out


def save_png(fig, path: Path) -> Path:
    """A matplotlib ``Figure`` as a PNG (Agg canvas: no pyplot state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_outputs(out: Path, results: dict, render: Callable[[dict], str], *,
                  figures: Callable[[dict], dict] | None = None, skips: dict | None = None,
                  seconds: float, log=print) -> None:
    """``results.json``, ``report.md`` (``render(results)``), ``figures(results)`` (file name -> figure)
    and ``skipped.json`` (``skips``) in ``out``; then one log line."""
    write_json(results, out / "results.json")
    atomic_write_text(out / "report.md", render(results))
    if figures is not None:  # drawn after the numbers are on disk: a failing plot never costs them
        for name, fig in figures(results).items():
            save_png(fig, out / name)
    if skips is not None:
        atomic_write_json(out / "skipped.json", skips)
    log(f"wrote {out / 'results.json'}, {out / 'report.md'} ({seconds:.0f} s)")


def write_species_csv(path: Path, rows: list[dict], comment: str = "") -> Path:
    """A species-list CSV (``species_id,scientific_name,common_name``) that
    :func:`birdbridge.data.species_list.read_species_list` reads; ``comment`` lines start with ``#``."""
    import csv

    buf = io.StringIO()
    for line in comment.splitlines():
        buf.write(f"# {line}\n")
    w = csv.DictWriter(buf, fieldnames=["species_id", "scientific_name", "common_name"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path
