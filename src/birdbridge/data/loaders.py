"""One entry point for every dataset kind: ``load_collection(kind, path, **opts)``.

The dispatcher sits apart from the loaders it names: ``generic`` (CSV/folder parsing) is
used by ``ssw60``, ``soundscapes`` and ``synthetic``, and this module imports them all,
so the dependency runs one way. Shards are read here (``shards``, below) and written above
(``shard_writer``, which reads its input through :func:`load_collection`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from ..errors import ConfigError
from .generic import load_csv, load_folder
from .records import Collection


def _inat(path, **opts):
    from .inat_sounds import load_inat_sounds

    return load_inat_sounds(path, **opts)


def _ssw60(path, **opts):
    from .ssw60 import load_ssw60

    return load_ssw60(path, **opts)


def _soundscape(path, **opts):
    from .soundscapes import load_soundscapes_any

    return load_soundscapes_any(path, **opts).collection


def _shards(path, **opts):
    from .shards import load_shards

    return load_shards(path, **opts)


def _synthetic(path, **opts):
    from .synthetic import load_world

    return load_world(path, **opts)


LOADERS: dict[str, Callable[..., Collection]] = {
    "inat_sounds": _inat,
    "ssw60": _ssw60,
    "soundscape": _soundscape,
    "csv": load_csv,
    "folder": load_folder,
    "synthetic": _synthetic,
    "shards": _shards,  # read by data/shards.py, written by `birdbridge data prepare` (data/shard_writer.py)
}


def register_loader(kind: str, fn: Callable[..., Collection]) -> None:
    """Add a dataset kind to :func:`load_collection` (e.g. ``synthetic``)."""
    LOADERS[kind] = fn


def loader_kinds() -> Iterable[str]:
    return tuple(LOADERS)


def load_collection(kind: str, path: str | Path, /, **opts) -> Collection:
    """One entry point for every dataset kind: ``inat_sounds, ssw60, soundscape, csv, folder, shards``.

    ``opts`` go to the kind's loader (e.g. ``classes=None`` for iNatSounds, ``kind="images"``
    for csv/folder, ``taxonomy_csv=`` for soundscapes); ``kind`` and ``path`` are
    positional-only so that the csv/folder ``kind=`` option can pass through.
    """
    try:
        fn = LOADERS[kind]
    except KeyError:
        raise ConfigError(f"unknown dataset kind {kind!r}; expected one of {sorted(LOADERS)}") from None
    return fn(path, **opts)
