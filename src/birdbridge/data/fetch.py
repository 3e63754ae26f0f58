"""Moving bytes for ``data.download``: resumable HTTP/file transfers with hashing, and atomic extraction.

Kept apart from the dataset table and the orchestration (``download.py``), which decide
*what* to fetch; this module only knows *how*, with the standard library (``urllib``
handles ``Range`` requests cleanly, and ``tarfile``'s ``data`` filter refuses links and
paths that would escape the target).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from ..errors import BirdbridgeError, ConfigError
from ..io import share

MIRROR_ENV = "BIRDBRIDGE_DATA_MIRROR"
_BLOCK = 1 << 20


class DownloadError(BirdbridgeError):
    """A server could not be reached, or a transfer broke off (re-running resumes it)."""


class Hashes:
    def __init__(self, algos):
        self.h = {a: hashlib.new(a) for a in algos}

    def update(self, b: bytes) -> None:
        for h in self.h.values():
            h.update(b)

    def hex(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self.h.items()}


def _local(src: str) -> Path | None:
    if src.startswith("file://"):
        return Path(urllib.request.url2pathname(src[7:]))
    return None if "://" in src else Path(src)


def _unreachable(src: str, err: Exception) -> DownloadError:
    why = getattr(err, "reason", None) or err
    return DownloadError(f"cannot reach {src}: {why} (offline? --mirror or ${MIRROR_ENV} points at a copy)")


def remote_size(src: str, timeout_s: float) -> int | None:
    """The file's size from the server (HEAD), None when it does not say; unreachable raises."""
    if (p := _local(src)) is not None:
        if not p.is_file():
            raise DownloadError(f"cannot reach {src}: no such file")
        return p.stat().st_size
    try:
        with urllib.request.urlopen(urllib.request.Request(src, method="HEAD"), timeout=timeout_s) as r:
            n = r.headers.get("Content-Length")
            return int(n) if n and n.isdigit() else None
    except urllib.error.HTTPError as err:
        if err.code in (403, 405, 501):  # servers that refuse HEAD still serve GET
            return None
        raise DownloadError(f"{src}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise _unreachable(src, err) from None


def fetch(src: str, part: Path, hashes: Hashes, timeout_s: float, advance: Callable[[int], None]) -> None:
    """Append the rest of ``src`` to ``part`` (a Range request from its current size), hashing as it goes."""
    have = part.stat().st_size if part.exists() else 0
    if have:
        with open(part, "rb") as fh:  # hash what is there, so the checksum covers the whole file
            while b := fh.read(_BLOCK):
                hashes.update(b)
        advance(have)
    if (p := _local(src)) is not None:
        with open(p, "rb") as fin, open(part, "ab") as fout:
            fin.seek(have)
            while b := fin.read(_BLOCK):
                fout.write(b)
                hashes.update(b)
                advance(len(b))
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(src, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part is whole (the checksum decides)
            return
        raise DownloadError(f"{src}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise _unreachable(src, err) from None
    with resp, open(part, "ab") as fout:
        if have and resp.status != 206:  # the server ignored Range: start over
            fout.truncate(0)
            hashes.__init__(list(hashes.h))
            advance(-have)
        got = 0
        try:
            while b := resp.read(_BLOCK):
                fout.write(b)
                hashes.update(b)
                advance(len(b))
                got += len(b)
        except (OSError, http.client.HTTPException) as err:  # a dropped connection: IncompleteRead
            raise DownloadError(f"download of {src} broke off after {part.stat().st_size} bytes ({err}); "
                                "run the command again to resume") from None
        want = resp.headers.get("Content-Length")
        if want and want.isdigit() and got < int(want):
            raise DownloadError(f"download of {src} broke off after {part.stat().st_size} bytes; "
                                "run the command again to resume")


# --------------------------------------------------------------------------- extraction


def extract(archive: Path, member: str | None, target: Path, advance: Callable[[int], None]) -> None:
    """Unpack into a temporary directory beside ``target``; rename the wanted entry into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    zf.extract(info, tmp)  # zipfile drops absolute paths and '..' itself
                    advance(info.compress_size)
        else:
            with open(archive, "rb") as raw, tarfile.open(fileobj=_Counting(raw, advance), mode="r|*") as tf:
                tf.extractall(tmp, filter="data")  # no links out, no absolute paths, no devices
        src = tmp / member if member else tmp
        if not src.exists() and archive.name.endswith(".zip"):
            src = tmp  # a zip of loose files: they are the target's content
        if not src.exists():
            found = sorted(p.name for p in tmp.iterdir())[:5]
            raise ConfigError(f"{archive.name} has no {member!r} at its top level (found {found}); is it the right file?")
        if src.is_dir():
            share(src)  # mkdtemp made it 0700; data is for sharing
        os.replace(src, target)  # the commit: the target appears whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Counting:
    """A read-only file wrapper reporting bytes read (tar's progress in archive bytes)."""

    def __init__(self, fh, advance):
        self.fh, self.advance = fh, advance

    def read(self, n=-1):
        b = self.fh.read(n)
        self.advance(len(b))
        return b


def hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        while b := fh.read(_BLOCK):
            h.update(b)
    return h.hexdigest()
