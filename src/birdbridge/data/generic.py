"""User data: a CSV of files, or one folder per species (the dispatcher over all kinds is :mod:`.loaders`).

CSV format (one row per file; header case, spaces and punctuation do not matter)::

    path, scientific_name[, common_name, species_id, kingdom, phylum, class, order,
    family, genus, specific_epithet | epithet, split, start_s, end_s, author, license, ...]

* ``path`` is resolved against the CSV's folder when relative.
* ``species_id`` defaults to the scientific name (whitespace collapsed), a stable label.
* Only ranks that are given are set; the rest keep :class:`~birdbridge.taxonomy.Species`
  defaults (Animalia / Chordata / Aves, genus and epithet from the binomial) — right for
  birds, overridable per row for anything else.
* ``start_s`` / ``end_s`` select a segment of the file (``AudioItem.start_s/end_s``).
  ``clip_start_s`` / ``clip_end_s`` (as in the phoebe set) say where the file was cut from
  its source recording: provenance, kept in ``extra`` and never used to seek.
* ``author`` may also be called ``recordist``, ``photographer`` or ``rights_holder``;
  ``licence`` is accepted for ``license``. All other columns land in ``extra`` verbatim.

Folder format: ``root/<Scientific_name>/<files>`` (underscores become spaces), optionally
``root/<split>/<Scientific_name>/...`` when every top folder is a split name, and an
optional ``root/species.csv`` (``folder`` or ``scientific_name`` plus any CSV columns above)
for common names and ranks. Media type comes from the extension only to *find* files;
decoding always sniffs the content.

Every media file under ``root`` is an item, as ``birdbridge embed-audio root`` finds it:
files directly in ``root`` and in media-type folders (``audio/``, ``images/``,
``recordings/``, ``photos/`` ... -- :data:`MEDIA_FOLDERS`, never species) have no species
(``species_id=None``); a media-type folder's own subfolders are species folders again.
A loose *photo* whose file name is a binomial (``Sayornis_nigricans.jpg``,
``Sayornis_nigricans_12.jpg``, ``Sayornis nigricans 2.jpg``: :func:`species_from_file_name`)
gets that species, marked ``extra["species_from"] = "file name"``; ``IMG_1234.jpg`` gets none.
"""

from __future__ import annotations

import os

import csv
import re
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, SkipLog
from ..taxonomy import Species
from .records import AudioItem, Collection, ImageItem

AUDIO_EXTS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".rf64", ".caf"})
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "dev", "test"})
# Folders named for what they hold, not for a species (phoebe/audio, phoebe/images, ...).
MEDIA_FOLDERS = frozenset({"audio", "sound", "sounds", "recordings", "wav", "wavs", "mp3", "flac", "images", "image",
                           "photos", "photo", "pictures", "img", "imgs", "jpg", "media"})
_RANK_COLUMNS = {  # Species field -> accepted column names, first non-empty wins
    "kingdom": ("kingdom",),
    "phylum": ("phylum",),
    "class_": ("class",),
    "order": ("order", "order1"),
    "family": ("family",),
    "genus": ("genus",),
    "epithet": ("specific_epithet", "epithet", "species_epithet"),
}
_AUTHOR_COLUMNS = ("author", "recordist", "photographer", "rights_holder", "creator")
_CORE = {"path", "scientific_name", "common_name", "species_id", "split", "start_s", "end_s"}
_CORE |= {c for cols in _RANK_COLUMNS.values() for c in cols}
_FAMILY_RE = re.compile(r"^\s*([A-Za-z]+idae)\s*\((.*)\)\s*$")


# --------------------------------------------------------------------------- helpers


def norm_key(name: str) -> str:
    """``"Start Time (s)"`` → ``"start_time_s"``: header spelling never matters."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """All rows with normalised header names and stripped values (BOM-safe for Excel CSVs)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"CSV not found: {p}")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [norm_key(h) for h in next(reader)]
        except StopIteration:
            return []
        return [{k: (v or "").strip() for k, v in zip(header, row)} for row in reader if any(c.strip() for c in row)]


def clean_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


def split_family(value: str) -> tuple[str, str]:
    """``"Anatidae (Ducks, Geese, and Waterfowl)"`` → ``("Anatidae", "Ducks, Geese, and Waterfowl")``."""
    m = _FAMILY_RE.match(value or "")
    return (m.group(1), m.group(2).strip()) if m else ((value or "").strip(), "")


def species_from_row(row: dict[str, str], species_id: str | None = None, *, extra: dict | None = None) -> Species:
    """A :class:`Species` from a normalised CSV row; only non-empty ranks override defaults."""
    sci = clean_name(row.get("scientific_name", ""))
    kwargs: dict = {}
    for fieldname, cols in _RANK_COLUMNS.items():
        for c in cols:
            if row.get(c):
                kwargs[fieldname] = row[c].strip()
                break
    ex = dict(extra or {})
    if "family" in kwargs:
        fam, english = split_family(kwargs["family"])
        kwargs["family"] = fam
        if english:
            ex["family_common_name"] = english
    return Species(
        id=species_id or row.get("species_id") or sci,
        scientific_name=sci,
        common_name=row.get("common_name", ""),
        extra=ex,
        **kwargs,
    )


_GENUS, _EPITHET = re.compile(r"^[A-Z][a-z]+$"), re.compile(r"^[a-z]{3,}$")
SPECIES_FROM_FILE_NAME = "file name"


def species_from_file_name(path: str | Path) -> str | None:
    """``"Genus species"`` when a file's name (without extension and trailing counters such as
    ``_12`` or `` 2``) is two words, a capitalised genus and a lower-case epithet of 3+ letters;
    else None (``IMG_1234``, ``DSC_0001``, ``sunset``, ``Sayornis`` alone)."""
    words = [w for w in re.split(r"[\s_]+", Path(path).stem) if w]
    while words and re.fullmatch(r"\(?\d+\)?", words[-1]):  # copies and counters: _2, " (3)"
        words.pop()
    if len(words) == 2 and _GENUS.match(words[0]) and _EPITHET.match(words[1]):
        return f"{words[0]} {words[1]}"
    return None


def _float_or_none(v: str) -> float | None:
    try:
        return float(v) if v not in ("", None) else None
    except ValueError:
        return None


def _media_kind(path: str) -> str | None:
    ext = Path(path).suffix.lower()
    return "audio" if ext in AUDIO_EXTS else "images" if ext in IMAGE_EXTS else None


def _item_extra(row: dict[str, str]) -> dict:
    extra = {k: v for k, v in row.items() if k not in _CORE and v != ""}
    author = next((row[c] for c in _AUTHOR_COLUMNS if row.get(c)), None)
    if author is not None:
        extra["author"] = author
    if "licence" in extra and "license" not in extra:
        extra["license"] = extra.pop("licence")
    return extra


class _SpeciesTable:
    """Species seen while reading rows; later rows only fill fields the first left blank."""

    def __init__(self) -> None:
        self.by_id: dict[str, Species] = {}

    def add(self, sp: Species) -> str:
        old = self.by_id.get(sp.id)
        if old is None:
            self.by_id[sp.id] = sp
        elif not old.common_name and sp.common_name:
            self.by_id[sp.id] = replace(old, common_name=sp.common_name)
        return sp.id

    def sorted(self) -> list[Species]:
        return [self.by_id[k] for k in sorted(self.by_id)]


# --------------------------------------------------------------------------- CSV


def load_csv(csv_path: str | Path, kind: str = "auto", *, root: str | Path | None = None, name: str | None = None) -> Collection:
    """Load a generic CSV (see module docstring) of audio, images, or both (``kind="auto"``)."""
    if kind not in ("audio", "images", "auto"):
        raise ConfigError(f"kind must be audio, images or auto, not {kind!r}")
    csv_path = Path(csv_path)
    rows = read_csv_rows(csv_path)
    if rows and ("path" not in rows[0] or "scientific_name" not in rows[0]):
        raise ConfigError(f"{csv_path}: needs columns 'path' and 'scientific_name'; has {sorted(rows[0])}")
    table, skips = _SpeciesTable(), SkipLog()
    audio: list[AudioItem] = []
    images: list[ImageItem] = []
    for i, row in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them
        where = f"{csv_path.name}:{i}"
        path = row.get("path", "")
        if not path:
            skips.add(where, "bad_row", "empty path")
            continue
        if not clean_name(row.get("scientific_name", "")) and not row.get("species_id"):
            skips.add(where, "bad_row", "no scientific_name")
            continue
        media = kind if kind != "auto" else _media_kind(path)
        if media is None:
            skips.add(path, "unknown_media_type", "extension is neither audio nor image; pass kind=")
            continue
        try:
            sid = table.add(species_from_row(row))
        except ValueError as err:
            skips.add(where, "bad_row", str(err))
            continue
        if media == "audio":
            audio.append(AudioItem(path, sid, row.get("split", ""), _float_or_none(row.get("start_s", "")), _float_or_none(row.get("end_s", "")), _item_extra(row)))
        else:
            images.append(ImageItem(path, sid, row.get("split", ""), _item_extra(row)))
    return Collection(
        name=name or csv_path.stem,
        species=table.sorted(),
        audio=audio,
        images=images,
        root=str(Path(root) if root is not None else Path(os.path.abspath(csv_path)).parent),
        skips=skips,
        meta={"source": str(csv_path), "format": "csv"},
    )


# --------------------------------------------------------------------------- folders


def _species_csv(root: Path) -> dict[str, dict[str, str]]:
    p = root / "species.csv"
    if not p.is_file():
        return {}
    out: dict[str, dict[str, str]] = {}
    for row in read_csv_rows(p):
        for key in (row.get("folder", ""), clean_name(row.get("scientific_name", ""))):
            if key:
                out[key] = row
    return out


def load_folder(root: str | Path, kind: str = "auto", *, name: str | None = None) -> Collection:
    """Load ``root/<Scientific_name>/*`` (or ``root/<split>/<Scientific_name>/*``); loose files have no species."""
    if kind not in ("audio", "images", "auto"):
        raise ConfigError(f"kind must be audio, images or auto, not {kind!r}")
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"not a folder: {root}")

    def subdirs(d: Path) -> list[Path]:
        return sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith("."))

    containers = [root] + [d for d in subdirs(root) if d.name.lower() in MEDIA_FOLDERS]
    top = [d for c in containers for d in subdirs(c) if d.name.lower() not in MEDIA_FOLDERS or c is not root]
    split_layout = bool(top) and all(d.name.lower() in SPLIT_NAMES for d in top)
    groups = [(d.name, s) for d in top for s in subdirs(d)] if split_layout else [("", d) for d in top]
    info = _species_csv(root)
    table, skips = _SpeciesTable(), SkipLog()
    audio: list[AudioItem] = []
    images: list[ImageItem] = []

    def add(f: Path, sid: str | None, split: str) -> None:
        rel = f.relative_to(root).as_posix()
        media = _media_kind(rel)
        if media is None or (kind != "auto" and media != kind):
            if media is None and sid is not None:  # a species folder holds media; loose notes and CSVs are no news
                skips.add(rel, "unknown_media_type")
            return
        if media == "audio":
            audio.append(AudioItem(rel, sid, split))
            return
        named = species_from_file_name(f) if sid is None else None
        if named is None:
            images.append(ImageItem(rel, sid, split))
        else:  # a loose photo named Genus_species.jpg
            sid = table.add(species_from_row(dict(info.get(named) or {}, scientific_name=named)))
            images.append(ImageItem(rel, sid, split, {"species_from": SPECIES_FROM_FILE_NAME}))

    for c in containers:  # loose files: no species (photos named for a species aside)
        for f in sorted(c.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                add(f, None, "")
    for split, d in groups:
        row = dict(info.get(d.name) or info.get(clean_name(d.name)) or {})
        row["scientific_name"] = clean_name(row.get("scientific_name") or d.name)
        try:
            sid = table.add(species_from_row(row, row.get("species_id") or None))
        except ValueError as err:
            skips.add(d, "bad_row", str(err))
            continue
        for f in sorted(d.rglob("*")):
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(d).parts):
                add(f, sid, split)
    return Collection(
        name=name or root.name,
        species=table.sorted(),
        audio=audio,
        images=images,
        root=os.path.abspath(root),  # as typed (symlinks kept): item paths in outputs are the user's
        skips=skips,
        meta={"source": str(root), "format": "folder", "split_layout": split_layout,
              "n_species_from_file_name": sum(1 for i in images if i.extra.get("species_from") == SPECIES_FROM_FILE_NAME)},
    )
