"""Windows of many files decoded ahead in worker processes, handed back in file order.

(:func:`prefetch` is the general form: any module-level decoding generator, per-file
arguments; :func:`prefetch_spans` is it with :func:`~birdbridge.data.stream.iter_spans`.)

:func:`prefetch_spans` yields, for each path in order, an iterator over that file's
:func:`~birdbridge.data.stream.iter_spans` windows -- the same windows, decoded in
``workers`` spawned processes while the caller's model runs, so decoding and resampling
overlap with inference. File ``i`` is decoded by worker ``i % workers``; each worker sends
through its own bounded queue (``depth`` windows), so memory stays bounded and files come
back in input order. A :class:`~birdbridge.errors.BadInputError` raised while decoding a
file is raised again by that file's iterator, after the windows before it (as in-process).
``workers=0`` decodes in the calling process. Each file's iterator must be consumed (or
left) before the next one is asked for.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import BadInputError
from .stream import iter_spans

Span = tuple[float, float, "object"]


def default_workers(model_threads: int) -> int:
    """One decoding process when a core is left over beside the model's threads, else none.

    Measured on 2 cores with a 2-thread model (docs/PERFORMANCE.md), a decoding process only
    takes CPU from the model (1-3 % slower); with a spare core it overlaps decoding with inference."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 1 if cores > model_threads else 0


def _decode(queue, jobs: list[tuple[int, str, dict]], decode: Callable) -> None:
    """Worker: every item ``decode`` gives of each of its files, then an end (or error) message per file."""
    for i, path, kwargs in jobs:
        try:
            for item in decode(path, **kwargs):
                queue.put(("win", i, item))
            queue.put(("end", i, None))
        except BadInputError as err:
            queue.put(("bad", i, (err.reason, err.path, err.detail)))
        except Exception as err:  # noqa: BLE001 - reported to the caller, which raises it
            queue.put(("fail", i, f"{type(err).__name__}: {err}"))


def _from_queue(queue, i: int, path: str, procs) -> Iterator[Span]:
    import queue as queue_mod

    while True:
        try:
            kind, j, payload = queue.get(timeout=5.0)
        except queue_mod.Empty:
            if not any(p.is_alive() for p in procs):
                raise RuntimeError(f"the decoding worker of {path} exited without finishing it") from None
            continue
        if j != i:  # cannot happen while files are consumed in order
            raise RuntimeError(f"decoding workers out of step: expected file {i}, got {j}")
        if kind == "win":
            yield payload
        elif kind == "end":
            return
        elif kind == "bad":
            reason, p, detail = payload
            raise BadInputError(reason, p, detail)
        else:
            raise RuntimeError(f"decoding {path} failed in a worker: {payload}")


def prefetch_spans(paths: Sequence[str | Path], workers: int = 1, depth: int = 8,
                   **span_kwargs) -> Iterator[tuple[int, Iterator[Span]]]:
    """``(index, windows of paths[index])`` for every path in order; ``span_kwargs`` go to ``iter_spans``."""
    return prefetch([(p, span_kwargs) for p in paths], iter_spans, workers, depth)


def prefetch(jobs: Sequence[tuple[str | Path, dict]], decode: Callable[..., Iterator] = iter_spans, workers: int = 1,
             depth: int = 8) -> Iterator[tuple[int, Iterator]]:
    """``(index, iterator over decode(path, **kwargs))`` for every ``(path, kwargs)`` job in order.

    ``decode`` is any module-level generator function (it is pickled by name into the spawned
    workers), e.g. :func:`~birdbridge.data.stream.iter_spans` or
    :func:`~birdbridge.data.stream.iter_segments` (the soundscape evaluation: each file's
    segments from one decoding pass); the items it yields cross the process boundary as they are."""
    jobs = [(str(p), dict(kw)) for p, kw in jobs]
    workers = max(0, min(int(workers), len(jobs)))
    if workers == 0:
        for i, (p, kw) in enumerate(jobs):
            yield i, decode(p, **kw)
        return
    paths = [p for p, _ in jobs]
    ctx = mp.get_context("spawn")  # no fork of a process holding torch's thread pools
    queues = [ctx.Queue(maxsize=max(1, depth)) for _ in range(workers)]
    procs = [ctx.Process(target=_decode, args=(queues[w], [(i, p, kw) for i, (p, kw) in enumerate(jobs) if i % workers == w],
                                                 decode), daemon=True) for w in range(workers)]
    for p in procs:
        p.start()
    try:
        for i, p in enumerate(paths):
            it = _from_queue(queues[i % workers], i, p, procs)
            yield i, it
            for _ in it:  # whatever the caller left of this file, so the next file's windows come next
                pass
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
        for q in queues:
            q.cancel_join_thread()
            q.close()
