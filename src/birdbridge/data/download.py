"""Fetch the paper's datasets into one root: ``birdbridge data download KIND --root DIR``.

URLs and checksums are the datasets' own (sources in ``docs/DATA.md``). Layout under ROOT::

    inat_sounds/{train,val,test}/<audio_dir_name>/<uuid>.wav   inat_sounds/{train,val,test}.json
    ssw60/            taxa.csv, audio_ml.csv, audio_ml/, images_nabirds(.csv), images_inat(.csv), ...
    ssw_soundscapes/  annotations.csv, soundscape_data/*.flac
    ebird/            eBird_taxonomy_v2024.csv
    .downloads/KIND/FILE(.part)  archives in flight; FILE.json records what was verified

What makes it safe to interrupt and re-run:

* **resume** -- a file downloads to ``FILE.part``; a re-run asks for the rest with an HTTP
  ``Range`` request (a server that ignores it makes the download start over);
* **verify** -- every file is checked against its checksum before it is used (md5 from the
  dataset's documentation, or a ``--checksums`` file); a mismatch deletes the download and
  stops. The eBird CSV has no published checksum: its sha256 is recorded at download and
  checked on every later run;
* **atomic extraction** -- an archive unpacks into a hidden temporary directory beside its
  target, which is renamed into place only when complete; the rename is the commit, so a
  killed extraction leaves no target (its debris is removed by the next run);
* **idempotent** -- a target that exists is complete, and is not fetched again;
* **fail early** -- the sizes of what is missing are asked for before anything is written:
  an unreachable server fails at once with one line naming the URL, and too little disk
  space fails with one line saying how much is needed.

``--mirror URL`` (or ``BIRDBRIDGE_DATA_MIRROR``) replaces every URL by ``URL/KIND/FILE``; a
mirror is a web server or a local directory with that layout (``--keep-archives`` leaves
one in ``ROOT/.downloads``). ``--checksums FILE`` (``md5sum``/``sha256sum`` format over
``KIND/FILE`` names) pins checksums, overriding the built-in ones.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BirdbridgeError, ConfigError
from ..io import atomic_copy, atomic_write_json
from .fetch import MIRROR_ENV, DownloadError, Hashes, extract, fetch, hash_file, remote_size

DOWNLOADS = ".downloads"
_INAT = "https://ml-inat-competition-datasets.s3.amazonaws.com/sounds/2024"
_ZENODO = "https://zenodo.org/record/7079380/files"
GB = 1e9


class ChecksumError(BirdbridgeError):
    """A downloaded file is not the published one."""


class DiskSpaceError(BirdbridgeError):
    """Not enough free space under the root for what is still to download and extract."""


@dataclass(frozen=True)
class Asset:
    kind: str
    name: str  # file name; also its path in a mirror: KIND/NAME
    url: str
    checksum: str | None  # "md5:<hex>" / "sha256:<hex>"; None: recorded at first download
    size: float  # bytes, used only when the server does not say
    target: str  # what it becomes under ROOT
    member: str | None = None  # the archive's top-level entry that becomes the target (None: a plain file)
    expand: float = 1.0  # extracted bytes per archive byte, for the disk check (WAV/FLAC barely compress)
    split: str | None = None


def _inat(split: str, md5: str, md5_json: str, size: float) -> list[Asset]:
    return [Asset("inat_sounds", f"{split}.json.tar.gz", f"{_INAT}/{split}.json.tar.gz", f"md5:{md5_json}", 0.2 * GB,
                  f"inat_sounds/{split}.json", member=f"{split}.json", expand=8.0, split=split),
            Asset("inat_sounds", f"{split}.tar.gz", f"{_INAT}/{split}.tar.gz", f"md5:{md5}", size,
                  f"inat_sounds/{split}", member=split, expand=1.05, split=split)]


ASSETS: dict[str, list[Asset]] = {
    # github.com/gvanhorn38/iNatSounds README (AWS Open Data)
    "inat_sounds": [*_inat("train", "181c5419220c8a9468a12b8c938469ec", "a28055b8cae7020c3bbf0c0a0717483a", 81 * GB),
                    *_inat("val", "828e4cf96e818228cb3536469cb3fb1c", "eac9536716b161ee559620aa899d47e9", 25 * GB),
                    *_inat("test", "082a2e96ca34f6c9f61767e33cbf3626", "638579313eb526f3b3b82bdcdc933a2d", 27 * GB)],
    # github.com/visipedia/ssw60 README
    "ssw60": [Asset("ssw60", "ssw60.tar.gz", "https://ml-inat-competition-datasets.s3.amazonaws.com/ssw60/ssw60.tar.gz",
                    "md5:e0526d53c7f7b2e3167b2b43bb2690ed", 32 * GB, "ssw60", member="ssw60", expand=1.05)],
    # zenodo.org/record/7079380 (checksums as third-party loaders pin them; docs/DATA.md)
    "soundscapes": [Asset("soundscapes", "annotations.csv", f"{_ZENODO}/annotations.csv?download=1",
                          "md5:517eb9700f88ec9ac054a8aec7c805ec", 0.005 * GB, "ssw_soundscapes/annotations.csv"),
                    Asset("soundscapes", "soundscape_data.zip", f"{_ZENODO}/soundscape_data.zip?download=1",
                          "md5:4dc5a3e83494a638d80bc7b3d1517137", 35 * GB, "ssw_soundscapes/soundscape_data",
                          member="soundscape_data", expand=1.02)],
    # birds.cornell.edu/clementschecklist: no published checksum
    "ebird_taxonomy": [Asset("ebird_taxonomy", "eBird_taxonomy_v2024.csv",
                             "https://www.birds.cornell.edu/clementschecklist/wp-content/uploads/2024/10/eBird_taxonomy_v2024.csv",
                             None, 0.003 * GB, "ebird/eBird_taxonomy_v2024.csv")],
}
KINDS = (*ASSETS, "all")


def select(kinds: str | list[str], splits: list[str] | None = None) -> list[Asset]:
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ConfigError(f"unknown dataset {bad[0]!r}; expected one of {', '.join(KINDS)}")
    names = list(ASSETS) if "all" in kinds else kinds
    known = {a.split for a in ASSETS["inat_sounds"]}
    if splits and (unknown := sorted(set(splits) - known)):
        raise ConfigError(f"unknown split {unknown[0]!r}; iNatSounds has {sorted(known)}")
    return [a for k in names for a in ASSETS[k] if not splits or a.split is None or a.split in splits]


def read_checksums(path: str | Path) -> dict[str, str]:
    """``KIND/FILE -> "md5:<hex>"`` from an ``md5sum``/``sha256sum`` style file (algorithm by length)."""
    out: dict[str, str] = {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checksums file not found: {p}")
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 1)
        algo = {32: "md5", 64: "sha256"}.get(len(parts[0]))
        if len(parts) != 2 or algo is None:
            raise ConfigError(f"{p}:{n}: expected '<md5 or sha256 hex>  KIND/FILE', got {line.strip()!r}")
        out[parts[1].strip().lstrip("*")] = f"{algo}:{parts[0].lower()}"
    return out




# --------------------------------------------------------------------------- the job

Reporter = Callable[[str, float | None], Callable[[int], None]]  # (label, total bytes) -> advance(n)


def _quiet(label: str, total: float | None) -> Callable[[int], None]:
    return lambda n: None


def source(asset: Asset, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{asset.kind}/{asset.name}" if mirror else asset.url


def _paths(root: Path, a: Asset) -> tuple[Path, Path, Path]:
    d = root / DOWNLOADS / a.kind
    return d / a.name, d / f"{a.name}.part", d / f"{a.name}.json"


def _clean_debris(target: Path) -> None:
    """Temporary directories a killed extraction left beside ``target``."""
    if target.parent.is_dir():
        for d in target.parent.glob(f".{target.name}.extract-*"):
            shutil.rmtree(d, ignore_errors=True)


def _verify_plain(a: Asset, root: Path, pin: str | None) -> dict:
    """A file kept as is (CSV) is re-checked on every run: against its pin, else the recorded sha256."""
    target, marker = root / a.target, _paths(root, a)[2]
    rec = json.loads(marker.read_text()) if marker.is_file() else {}
    want = pin or rec.get("recorded")
    if want is None:  # first sight of a file someone put there: record it
        rec = {"recorded": f"sha256:{hash_file(target, 'sha256')}", "source": "found in place"}
        atomic_write_json(marker, rec)
        return rec
    algo, hexd = want.split(":", 1)
    if (got := hash_file(target, algo)) != hexd:
        raise ChecksumError(f"{target}: {algo} {got} differs from the {'pinned' if pin else 'recorded'} {hexd}; "
                            "it changed since it was downloaded (delete it to download it again)")
    return rec


def _install(a: Asset, root: Path, archive: Path, keep: bool, report: Reporter) -> None:
    target = root / a.target
    target.parent.mkdir(parents=True, exist_ok=True)
    if a.member is not None:
        extract(archive, a.member, target, report(f"extract {a.kind}/{a.name}", archive.stat().st_size))
    else:  # a plain file: copied beside the target, then renamed (a reader never sees half of it)
        atomic_copy(archive, target)
    if not keep:
        archive.unlink()


def _get(a: Asset, root: Path, mirror: str | None, pin: str | None, size: float | None, keep: bool,
         timeout_s: float, report: Reporter) -> dict:
    archive, part, marker = _paths(root, a)
    src = source(a, mirror)
    expected = pin or a.checksum
    status = "installed"
    if not archive.exists():  # archives stand verified: only a checked .part is renamed to one
        archive.parent.mkdir(parents=True, exist_ok=True)
        resumed = part.exists() and part.stat().st_size > 0
        hashes = Hashes(sorted({"md5", expected.split(":")[0] if expected else "sha256"}))
        fetch(src, part, hashes, timeout_s, report(f"{a.kind}/{a.name}", size))
        got = hashes.hex()
        if expected:
            algo, want = expected.split(":", 1)
            if got[algo] != want:
                part.unlink()
                raise ChecksumError(f"{src}: {algo} {got[algo]} is not the expected {want}; the download was deleted "
                                    "(a wrong mirror or a corrupted transfer; run again to retry)")
        rec = {"url": src, "bytes": part.stat().st_size, "md5": got["md5"], "verified": expected,
               "recorded": None if expected else f"sha256:{got['sha256']}", "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(marker, rec)
        os.replace(part, archive)
        status = "resumed" if resumed else "downloaded"
    _install(a, root, archive, keep, report)
    return {"asset": f"{a.kind}/{a.name}", "target": a.target, "status": status, "url": src,
            **{k: v for k, v in json.loads(marker.read_text()).items() if k in ("bytes", "verified", "recorded")}}


def _check_disk(root: Path, todo: list[tuple[Asset, float]], keep: bool) -> None:
    """Peak space the jobs need, in order: earlier targets stay, each archive lives until it is unpacked."""
    need = held = 0.0
    for a, size in todo:
        archive, part, _ = _paths(root, a)
        have = archive.stat().st_size if archive.exists() else (part.stat().st_size if part.exists() else 0)
        out = size * a.expand
        need = max(need, held + (size - have) + out)
        held += out + (size - have if keep else 0)
    free = shutil.disk_usage(root).free
    if need > free:
        names = ", ".join(f"{a.kind}/{a.name}" for a, _ in todo)
        raise DiskSpaceError(f"{root}: {need / GB:.1f} GB of free space needed for {names}; {free / GB:.1f} GB available")


def download(kinds: str | list[str], root: str | Path, *, mirror: str | None = None, checksums: str | Path | None = None,
             splits: list[str] | None = None, keep_archives: bool = False, timeout_s: float = 30.0,
             report: Reporter | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Fetch, verify and unpack ``kinds`` (``inat_sounds``, ``ssw60``, ``soundscapes``,
    ``ebird_taxonomy`` or ``all``) into ``root``; see the module docstring for the rules.

    Returns ``{"root", "mirror", "assets": [{asset, target, status, ...}]}``, status one of
    ``present`` (nothing to do), ``downloaded``, ``resumed`` or ``installed`` (a verified
    archive from an earlier run was unpacked). Raises :class:`DownloadError`,
    :class:`ChecksumError`, :class:`DiskSpaceError` or :class:`ConfigError` as one line.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    pins = read_checksums(checksums) if checksums else {}
    report, log = report or _quiet, log or (lambda msg: None)
    results, pending = [], []
    for a in select(kinds, splits):
        target = root / a.target
        _clean_debris(target)
        if target.exists():  # only a finished rename creates a target
            rec = _verify_plain(a, root, pins.get(f"{a.kind}/{a.name}")) if a.member is None else {}
            results.append({"asset": f"{a.kind}/{a.name}", "target": a.target, "status": "present",
                            **{k: v for k, v in rec.items() if k in ("verified", "recorded")}})
            log(f"{a.target}: present")
        else:
            pending.append(a)
    todo = []
    for a in pending:  # every size first: offline fails here, before anything is written
        archive = _paths(root, a)[0]
        size = archive.stat().st_size if archive.exists() else remote_size(source(a, mirror), timeout_s)
        todo.append((a, float(size) if size is not None else a.size))
    _check_disk(root, todo, keep_archives)
    for a, size in todo:
        results.append(_get(a, root, mirror, pins.get(f"{a.kind}/{a.name}"), size, keep_archives, timeout_s, report))
        log(f"{a.target}: {results[-1]['status']}")
    return {"root": str(root), "mirror": mirror, "assets": results}


__all__ = ["ASSETS", "Asset", "ChecksumError", "DiskSpaceError", "DownloadError", "KINDS", "MIRROR_ENV", "download",
           "read_checksums", "select", "source"]
