"""Atomic writes: a reader never sees a half-written file or directory.

Outputs follow the user's umask like any other file: ``mkstemp``/``mkdtemp`` create
0600/0700 whatever the umask, and a file renamed into place keeps those bits, so the
temp file or folder gets the mode ``open()``/``mkdir()`` would have given it (0666 or
0777 less the umask) before it is renamed. Colleagues on a shared lab account or group
project folder can then read results, and a private umask (077) still keeps them private.
This module is the one place that reads the umask; :func:`share` gives the same mode to
what another library made privately (an archive unpacked into a ``mkdtemp`` folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Build a directory in a sibling temp dir, then swap it into place.

    The old directory (if any) is renamed aside and removed only after the new one is in
    place, so a crash at any point leaves either the old or the new directory whole.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        share(tmp)
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(target: str | Path) -> bool:
    """Put back the previous directory a writer killed between its two renames left aside.

    :func:`atomic_dir` renames the old directory to ``.NAME.old-PID`` and then the new one
    into place; a SIGKILL between the two leaves no ``NAME`` at all. The aside copy is whole,
    so it is renamed back (the newest one, if several). Returns True when it restored one.
    """
    target = Path(target)
    if target.exists():
        return False
    aside = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not aside:
        return False
    with contextlib.suppress(FileNotFoundError, OSError):  # another process may have restored it first
        os.replace(aside[-1], target)
    return target.exists()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with _file_beside(Path(path)) as f:
        f.write(data)


def atomic_copy(src: str | Path, path: str | Path) -> None:
    """Copy the file ``src`` to ``path`` as :func:`atomic_write_bytes` writes: whole or not at all."""
    with _file_beside(Path(path)) as f, open(src, "rb") as fin:
        shutil.copyfileobj(fin, f, 1 << 20)


@contextlib.contextmanager
def _file_beside(path: Path) -> Iterator[BinaryIO]:
    """A temp file in ``path``'s folder with the user's mode, fsynced and renamed onto ``path``
    when the block ends; removed if the block fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _user_mode(is_dir=False))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process umask, read without changing it: ``os.umask`` can only be read by setting it,
    which would briefly loosen it for every other thread. Linux reports it in /proc; elsewhere
    (macOS) it is read off the mode the kernel gives a new folder asked for with 0777."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    probe = Path(tempfile.mkdtemp(prefix=".umask-"))
    try:
        (probe / "d").mkdir(0o777)
        return 0o777 & ~(probe / "d").stat().st_mode
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _user_mode(is_dir: bool) -> int:
    return (0o777 if is_dir else 0o666) & ~current_umask()


def share(path: str | Path) -> None:
    """Give a file or folder the mode a new one of the user's would have (0666 or 0777 less the
    umask), as :func:`atomic_write_bytes` and :func:`atomic_dir` give theirs: for what another
    library created owner-only (``mkdtemp``'s 0700) before it is renamed into place."""
    os.chmod(path, _user_mode(is_dir=Path(path).is_dir()))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log (a run's journal) and fsync it: once this returns, the line survives a
    crash or a kill. A line cut short by a kill during the write is the reader's to ignore (it is the
    last one, without its newline). A new log gets the user's mode, like every file written here."""
    path = Path(path)
    if not path.exists():
        atomic_write_text(path, "")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file written in place of ``path`` as :func:`atomic_write_bytes` writes one, streamed:
    for outputs too large to hold as one string (a deployment's combined table)."""
    with _file_beside(Path(path)) as f:
        yield f
