"""Rich consoles that suit where the output goes.

In a terminal rich wraps to the window. In a log file, a pipe or a SLURM output, it would
wrap (and shorten table cells) to 80 columns, splitting one error over several lines and
cutting paths: there, nothing is wrapped or truncated and a line is one physical line.
"""

from __future__ import annotations

from rich.console import Console

LOG_WIDTH = 10_000  # "no limit": wide enough for any path, narrow enough for rich's layout maths


def fit_to_stream(console: Console) -> Console:
    """No wrapping or truncation when ``console`` does not write to a terminal (checked now)."""
    if not console.is_terminal:
        console.soft_wrap = True
        console.width = LOG_WIDTH
    return console


def make_console(stderr: bool = False, **kwargs) -> Console:
    return fit_to_stream(Console(stderr=stderr, **kwargs))
