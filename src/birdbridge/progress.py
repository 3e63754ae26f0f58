"""Progress, one policy for every verb: rich bars on a terminal, plain lines off it.

On a terminal a stage is a live rich bar. Redirected to a file, a pipe or a SLURM log, a rich
bar prints nothing until it finishes (then every finished bar at once: eight silent minutes
of ``make demo > log``), so there a stage is written as plain lines instead::

    embedding images: 120/1000 (12 %), 4.1/s, ETA 3m35s

one when the stage starts, then at most one each time another 10 % is done or
:data:`DEFAULT_INTERVAL_S` (30 s) have passed since the last line, and one when it is done.
No colour, no control characters: the log reads as text. ``BIRDBRIDGE_PROGRESS_INTERVAL_S``
sets the interval (the tests set it small).

:func:`make_progress` returns a rich ``Progress`` or a :class:`PlainProgress` with the same
methods (``add_task``, ``advance``, ``update``, used as a context manager), so callers do
not branch. Third-party bars (Lightning's, Hugging Face's) show only with ``--verbose``
(:mod:`birdbridge.quiet`); birdbridge's own progress goes through here.
"""

from __future__ import annotations

import os
import threading
import time

from rich.console import Console

INTERVAL_ENV = "BIRDBRIDGE_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def make_progress(console: Console, *, unit: str = "count", info: bool = False, transient: bool = False):
    """A progress display on ``console``: rich bars on a terminal, :class:`PlainProgress` off it.

    ``unit``: ``count`` (done/total) or ``bytes`` (sizes and transfer speed); ``info``: show
    each task's ``info`` field (a loss, a summary) after the counts.
    """
    if not console.is_terminal:
        return PlainProgress(console, unit=unit)
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    if unit == "bytes":
        columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn()]
    else:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        if info:
            columns.insert(3, TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=console, transient=transient)


def _duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class _Task:
    def __init__(self, description: str, total: float | None, completed: float, fields: dict) -> None:
        self.description, self.total, self.completed, self.fields = description, total, completed, dict(fields)
        self.start = self.last_time = time.monotonic()
        self.start_completed = completed
        self.last_bucket = self._bucket()
        self.finished_line = False

    def _bucket(self) -> int:
        return int(10 * self.completed / self.total) if self.total else 0

    @property
    def done(self) -> bool:
        return bool(self.total) and self.completed >= self.total


class PlainProgress:
    """Plain progress lines for logs (see the module's docstring); rich ``Progress``'s methods."""

    def __init__(self, console: Console, *, unit: str = "count", interval: float | None = None) -> None:
        self.console, self.unit = console, unit
        self.interval = interval_s() if interval is None else interval
        self.tasks: list[_Task] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        with self._lock:
            self.tasks.append(_Task(description, total, completed, fields))
            task = self.tasks[-1]
            self._print(task)
            return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        with self._lock:
            task = self.tasks[task_id]
            if total is not None:
                task.total = total
            if completed is not None:
                task.completed = completed
            if advance:
                task.completed += advance
            if description is not None:
                task.description = description
            task.fields.update(fields)
            now = time.monotonic()
            if task.done:
                if not task.finished_line:
                    task.finished_line = True
                    self._print(task, now)
            elif now - task.last_time >= self.interval or task._bucket() > task.last_bucket:
                self._print(task, now)

    def _amount(self, n: float) -> str:
        return _size(n) if self.unit == "bytes" else f"{n:g}"

    def line(self, task: _Task, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - task.start
        done_now = task.completed - task.start_completed
        rate = done_now / elapsed if elapsed > 0 else 0.0
        parts = [f"{task.description}: {self._amount(task.completed)}"
                 + (f"/{self._amount(task.total)} ({100 * task.completed / task.total:.0f} %)" if task.total else "")]
        if task.done:
            parts.append(f"done in {_duration(elapsed)}")
        if done_now > 0 and elapsed > 0:
            parts.append(f"{self._amount(rate)}/s" if self.unit == "bytes" else f"{rate:.3g}/s")
            if task.total and not task.done:
                parts.append(f"ETA {_duration((task.total - task.completed) / rate)}")
        info = task.fields.get("info")
        if info:
            parts.append(str(info))
        return ", ".join(parts)

    def _print(self, task: _Task, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        task.last_time, task.last_bucket = now, task._bucket()
        self.console.print(self.line(task, now), markup=False, highlight=False, soft_wrap=True)
