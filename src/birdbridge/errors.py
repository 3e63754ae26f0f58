"""Errors a user can act on, and the record of inputs a long job skipped.

Long jobs never die on one bad file: loaders raise :class:`BadInputError` with a
short reason, the job catches it, records a :class:`Skip` and carries on. Every skip
is counted and written next to the outputs, so nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .io import atomic_write_json


class BirdbridgeError(Exception):
    """Base class: the CLI prints these as a one-line message, never a traceback."""


class BadInputError(BirdbridgeError, ValueError):
    """One input (audio file, image, row) cannot be used. ``reason`` is short and stable."""

    def __init__(self, reason: str, path: str | Path | None = None, detail: str = ""):
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.detail = detail
        msg = reason if path is None else f"{path}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class ConfigError(BirdbridgeError, ValueError):
    """A config key has the wrong type, is unknown, or points at something missing."""


class ModelNotAvailableError(BirdbridgeError, OSError):
    """Model weights cannot be found locally and cannot be downloaded."""


class DeviceNotAvailableError(ConfigError):
    """A device (``--device cuda``, ``--accelerator gpu``) that this machine does not have."""


@dataclass
class Skip:
    input: str
    reason: str
    detail: str = ""


@dataclass
class SkipLog:
    """Collects skipped inputs of one job; serialised into sidecars and reports."""

    skips: list[Skip] = field(default_factory=list)

    def add(self, input: str | Path, reason: str, detail: str = "") -> None:
        self.skips.append(Skip(str(input), reason, detail))

    def add_error(self, err: BadInputError, input: str | Path | None = None) -> None:
        self.add(input if input is not None else (err.path or "?"), err.reason, err.detail)

    def __len__(self) -> int:
        return len(self.skips)

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skips))

    def to_list(self) -> list[dict]:
        return [asdict(s) for s in self.skips]

    def summary(self) -> str:
        if not self.skips:
            return "no inputs skipped"
        parts = ", ".join(f"{n} {r}" for r, n in sorted(self.counts().items()))
        return f"{len(self.skips)} inputs skipped ({parts})"

    @classmethod
    def from_list(cls, rows: Iterable[dict]) -> SkipLog:
        """The log :meth:`to_list` wrote."""
        return cls([Skip(s["input"], s["reason"], s.get("detail", "")) for s in rows])

    def write_json(self, path: str | Path, **extra) -> None:
        """Write ``skipped.json`` atomically: ``n_skipped``, ``counts``, ``skipped`` (then ``extra``'s keys)."""
        atomic_write_json(path, {"n_skipped": len(self), "counts": self.counts(), "skipped": self.to_list(), **extra})

    @classmethod
    def read_json(cls, path: str | Path) -> SkipLog:
        """The log a :meth:`write_json` file holds."""
        return cls.from_list(json.loads(Path(path).read_text())["skipped"])
