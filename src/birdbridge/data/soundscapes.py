"""Annotated soundscapes: long recordings with timed, eBird-coded events.

Two input formats:

1. Cornell / Zenodo box annotations (e.g. the Sapsucker Woods and Sierra Nevada sets)::

       Filename,Start Time (s),End Time (s),Low Freq (Hz),High Freq (Hz),Species eBird Code

   ``Filename`` is relative to ``audio_root`` (default: ``soundscape_data/`` beside the CSV
   when it exists, else the CSV's folder).

2. Fixed segments, BirdSet-style (one row per segment, multi-label)::

       filepath,start_time,end_time,ebird_code_multilabel
       a.flac,0.0,5.0,"amerob;norcar"
       a.flac,5.0,10.0,                 <- empty: a no-call segment

   Codes may be separated by ``;``, ``,`` or spaces, and a Python-list string such as
   ``"['amerob', 'norcar']"`` also parses. ``filename``/``file``/``path`` and
   ``ebird_codes``/``codes``/``labels`` are accepted as column names.

eBird codes become species through a taxonomy CSV with at least ``species_code,
scientific_name, common_name`` (optional ranks; the official eBird taxonomy CSV with
``SPECIES_CODE, SCI_NAME, PRIMARY_COM_NAME, ORDER (ORDER1), FAMILY, CATEGORY, REPORT_AS``
works as is). Species ids are the codes. Where a ``CATEGORY`` column exists only
``species`` rows are species: a subspecies group or form (``issf``, ``form``, ...) whose
``REPORT_AS`` names a species counts as that species, and spuh/slash/hybrid rows are not
species at all. Codes missing from the taxonomy are counted in ``unknown_codes`` and logged
in ``collection.skips`` (reason ``unknown_code``); they never produce a target column.

The label space (``collection.species``, the target columns, the candidates of zero-shot
scoring) is, as in BirdSet, the dataset's own: the species annotated in it, or a class
list (``classes``); ``all_species`` takes the whole species-level taxonomy instead.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError, ConfigError, SkipLog
from ..taxonomy import Species
from .generic import AUDIO_EXTS, clean_name, read_csv_rows, species_from_row
from .records import AudioItem, Collection

_CODE_COLS = ("species_code", "ebird_code", "code", "species_ebird_code")
_SCI_COLS = ("scientific_name", "sci_name", "scientific")
_COMMON_COLS = ("common_name", "primary_com_name", "com_name", "english_name")
_FILE_COLS = ("filepath", "filename", "file", "path")
_LABEL_COLS = ("ebird_code_multilabel", "ebird_codes", "codes", "labels", "ebird_code")
_SPLIT_RE = re.compile(r"[;,\s]+")


@dataclass
class SoundEvent:
    file: str
    start_s: float
    end_s: float
    code: str
    species_id: str | None  # None when the code is not in the taxonomy
    low_hz: float | None = None
    high_hz: float | None = None


@dataclass
class Soundscapes:
    """Soundscape files and their events; ``collection.audio`` holds one item per known event."""

    collection: Collection
    files: list[str]
    events: list[SoundEvent]
    audio_root: str = ""
    unknown_codes: dict[str, int] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    # Set by segment CSVs: the fixed segments and their codes, used as-is for targets.
    segments: list[tuple[str, float, float]] | None = None
    segment_codes: list[list[str]] | None = None
    label_space: str = "annotated"  # "annotated", "class_list" or "taxonomy"
    n_events_outside_label_space: int = 0
    taxonomy: dict[str, Species] = field(default_factory=dict)  # eBird code (and alias) -> species


def _first(row: dict[str, str], cols: tuple[str, ...]) -> str:
    return next((row[c] for c in cols if row.get(c)), "")


def load_taxonomy(taxonomy_csv: str | Path) -> dict[str, Species]:
    """eBird code → species-level :class:`Species` from a user or official eBird taxonomy CSV.

    Aliases (an ``issf``/``form``/... code whose ``REPORT_AS`` is a species) map to their
    species' object, whose ``id`` is the species code."""
    out: dict[str, Species] = {}
    aliases: dict[str, str] = {}
    for row in read_csv_rows(taxonomy_csv):
        code = _first(row, _CODE_COLS)
        sci = clean_name(_first(row, _SCI_COLS))
        if not code or not sci:
            continue
        category = row.get("category", "").strip().lower()
        if category and category != "species":
            if row.get("report_as", "").strip():
                aliases[code] = row["report_as"].strip()
            continue
        r = dict(row, scientific_name=sci, common_name=_first(row, _COMMON_COLS))
        out[code] = species_from_row(r, code, extra={"species_code": code})
    for code, parent in aliases.items():
        if parent in out and code not in out:
            out[code] = out[parent]
    if not out:
        raise ConfigError(f"{taxonomy_csv}: no species rows with a species code and a scientific name "
                          f"(columns {_CODE_COLS[:2]} and {_SCI_COLS[:2]})")
    return out


def read_class_list(path: str | Path) -> list[str]:
    """eBird codes, one per line (``#`` comments), or a CSV's ``species_code``/``ebird_code`` column."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"class list not found: {p}")
    if p.suffix.lower() == ".csv":
        rows = read_csv_rows(p)
        col = next((c for c in _CODE_COLS if rows and c in rows[0]), None)
        if col is None:
            raise ConfigError(f"{p}: a class-list CSV needs one of the columns {', '.join(_CODE_COLS)}")
        codes = [r[col] for r in rows if r.get(col)]
    else:
        codes = [ln.split("#", 1)[0].strip() for ln in p.read_text(encoding="utf-8-sig").splitlines()]
        codes = [c for c in codes if c]
    if not codes:
        raise ConfigError(f"{p}: the class list is empty")
    return list(dict.fromkeys(codes))


def parse_codes(value: str) -> list[str]:
    return [c for c in _SPLIT_RE.split(value.strip().strip("[]()").replace("'", " ").replace('"', " ")) if c]


def _default_audio_root(csv_path: Path) -> Path:
    sub = csv_path.resolve().parent / "soundscape_data"
    return sub if sub.is_dir() else csv_path.resolve().parent


def _resolve_taxonomy(csv_path: Path, taxonomy_csv) -> Path:
    if taxonomy_csv is not None:
        return Path(taxonomy_csv)
    guess = csv_path.resolve().parent / "taxonomy.csv"
    if guess.is_file():
        return guess
    raise ConfigError(f"soundscapes need a taxonomy CSV mapping eBird codes to species (taxonomy_csv=…); none next to {csv_path}")


def _label_space(taxa, used: set[str], all_species: bool, classes) -> tuple[list[Species], str]:
    by_id = {sp.id: sp for sp in taxa.values()}
    if classes is not None:
        unknown = [c for c in classes if c not in taxa]
        if unknown:
            raise ConfigError(f"class list names {len(unknown)} code(s) that are no species in the taxonomy: "
                              f"{', '.join(unknown[:5])}")
        return [by_id[i] for i in dict.fromkeys(taxa[c].id for c in classes)], "class_list"
    if all_species:
        return [by_id[i] for i in sorted(by_id)], "taxonomy"
    return [by_id[i] for i in sorted(used)], "annotated"


def _build(name, csv_path, taxa, files, events, audio_root, skips, all_species, classes=None, **kw) -> Soundscapes:
    unknown: dict[str, int] = {}
    for ev in events:
        if ev.species_id is None:
            unknown[ev.code] = unknown.get(ev.code, 0) + 1
            skips.add(f"{ev.file}@{ev.start_s:g}", "unknown_code", ev.code)
    used = {ev.species_id for ev in events if ev.species_id is not None}
    if kw.get("segment_codes"):
        used |= {c for codes in kw["segment_codes"] for c in codes}
    species, label_space = _label_space(taxa, used, all_species, classes)
    in_space = {sp.id for sp in species}
    items = [
        AudioItem(ev.file, ev.species_id, "", ev.start_s, ev.end_s, {"code": ev.code, "low_hz": ev.low_hz, "high_hz": ev.high_hz})
        for ev in events
        if ev.species_id in in_space
    ]
    outside = sum(1 for ev in events if ev.species_id is not None and ev.species_id not in in_space)
    coll = Collection(name=name, species=species, audio=items, root=str(audio_root), skips=skips,
                      meta={"source": str(csv_path), "format": "soundscape", "n_files": len(files), "n_events": len(events),
                            "unknown_codes": unknown, "label_space": label_space, "n_classes": len(species)})
    return Soundscapes(coll, files, events, str(audio_root), unknown, label_space=label_space,
                       n_events_outside_label_space=outside, taxonomy=taxa, **kw)


def load_soundscape_annotations(
    annotations_csv: str | Path,
    taxonomy_csv: str | Path | None = None,
    audio_root: str | Path | None = None,
    *,
    all_species: bool = False,
    classes: list[str] | None = None,
    scan_audio_root: bool = False,
) -> Soundscapes:
    """Load Cornell-style box annotations.

    The label space is the annotated species; ``classes`` (eBird codes) names it instead,
    and ``all_species`` takes every species of the taxonomy. ``scan_audio_root`` adds audio
    files under ``audio_root`` that have no annotation row, as fully negative files (for
    sets where every call was annotated).
    """
    csv_path = Path(annotations_csv)
    taxa = load_taxonomy(_resolve_taxonomy(csv_path, taxonomy_csv))
    root = Path(audio_root) if audio_root is not None else _default_audio_root(csv_path)
    skips, events, files = SkipLog(), [], {}
    for i, row in enumerate(read_csv_rows(csv_path), start=2):
        fname, code = _first(row, _FILE_COLS), _first(row, _CODE_COLS)
        try:
            start, end = float(row.get("start_time_s", "")), float(row.get("end_time_s", ""))
        except ValueError:
            start = end = math.nan
        if not fname or not code or not (end > start >= 0):
            skips.add(f"{csv_path.name}:{i}", "bad_row", "needs Filename, Species eBird Code and 0 <= start < end")
            continue
        files.setdefault(fname, None)
        lo, hi = row.get("low_freq_hz", ""), row.get("high_freq_hz", "")
        events.append(SoundEvent(fname, start, end, code, taxa[code].id if code in taxa else None,
                                 float(lo) if lo else None, float(hi) if hi else None))
    if scan_audio_root and root.is_dir():
        for f in sorted(root.rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_EXTS:
                files.setdefault(f.relative_to(root).as_posix(), None)
    return _build(csv_path.stem, csv_path, taxa, sorted(files), events, root, skips, all_species, classes)


def load_segment_csv(
    csv_path: str | Path,
    taxonomy_csv: str | Path | None = None,
    audio_root: str | Path | None = None,
    *,
    all_species: bool = False,
    classes: list[str] | None = None,
) -> Soundscapes:
    """Load fixed multi-label segments (BirdSet-style; format in the module docstring)."""
    csv_path = Path(csv_path)
    taxa = load_taxonomy(_resolve_taxonomy(csv_path, taxonomy_csv))
    root = Path(audio_root) if audio_root is not None else _default_audio_root(csv_path)
    skips, events, files = SkipLog(), [], {}
    segments, seg_codes = [], []
    for i, row in enumerate(read_csv_rows(csv_path), start=2):
        fname = _first(row, _FILE_COLS)
        try:
            start, end = float(row.get("start_time", "")), float(row.get("end_time", ""))
        except ValueError:
            start = end = math.nan
        if not fname or not (end > start >= 0):
            skips.add(f"{csv_path.name}:{i}", "bad_row", "needs filepath and 0 <= start_time < end_time")
            continue
        files.setdefault(fname, None)
        codes = parse_codes(_first(row, _LABEL_COLS))
        segments.append((fname, start, end))
        seg_codes.append([taxa[c].id for c in codes if c in taxa])
        events += [SoundEvent(fname, start, end, c, taxa[c].id if c in taxa else None) for c in codes]
    return _build(csv_path.stem, csv_path, taxa, sorted(files), events, root, skips, all_species, classes,
                  segments=segments, segment_codes=seg_codes)


def load_soundscapes_any(path: str | Path, **opts) -> Soundscapes:
    """Either format, told apart by the header (segment CSVs have ``start_time``)."""
    rows = read_csv_rows(path)
    if rows and "start_time" in rows[0]:
        return load_segment_csv(path, **opts)
    return load_soundscape_annotations(path, **opts)


# --------------------------------------------------------------------------- segments


def _duration(sc: Soundscapes, f: str, durations: dict | None) -> float:
    for d in (durations or {}, sc.durations):
        if f in d:
            return float(d[f])
    from .audio import audio_info

    try:
        return audio_info(Path(sc.audio_root) / f)["duration_s"]
    except BadInputError as err:
        ends = [ev.end_s for ev in sc.events if ev.file == f]
        warnings.warn(f"{f}: duration unknown ({err.reason}); using the last event end {max(ends, default=0):g} s", stacklevel=3)
        return max(ends, default=0.0)


def segment_grid(duration_s: float, window_s: float, hop_s: float) -> list[tuple[float, float]]:
    """Segments ``[k·hop, k·hop + window)`` for every start before the end (last one clipped)."""
    if window_s <= 0 or hop_s <= 0:
        raise ValueError("window_s and hop_s must be positive")
    n = max(0, math.ceil(duration_s / hop_s - 1e-9))
    return [(k * hop_s, min(k * hop_s + window_s, duration_s)) for k in range(n)]


def soundscape_segments(
    soundscapes: Soundscapes,
    window_s: float = 5.0,
    hop_s: float = 5.0,
    durations: dict[str, float] | None = None,
    *,
    min_overlap_s: float = 0.0,
) -> tuple[list[tuple[str, float, float]], np.ndarray]:
    """Fixed-length segments of every file and their multi-label targets.

    Returns ``(segments, targets)``: ``segments[i] = (file, start_s, end_s)`` and
    ``targets`` a ``uint8`` array ``(n_segments, n_species)`` in ``collection.species``
    order. A segment is positive for a species when one of its events overlaps it by more
    than ``min_overlap_s`` seconds; segments without events are all-zero no-call rows.
    File durations come from ``durations``, then ``soundscapes.durations``, then the audio
    header, and last (with a warning) from the latest event end. Segment CSVs keep their
    own segments and labels; ``window_s``/``hop_s`` are then ignored.
    """
    species = soundscapes.collection.species
    col = {s.id: j for j, s in enumerate(species)}
    if soundscapes.segments is not None:
        segs = list(soundscapes.segments)
        targets = np.zeros((len(segs), len(species)), np.uint8)
        for i, codes in enumerate(soundscapes.segment_codes or []):
            for c in codes:
                if c in col:
                    targets[i, col[c]] = 1
        return segs, targets
    by_file: dict[str, list[SoundEvent]] = {}
    for ev in soundscapes.events:
        if ev.species_id in col:
            by_file.setdefault(ev.file, []).append(ev)
    segs: list[tuple[str, float, float]] = []
    blocks = []
    for f in soundscapes.files:
        grid = segment_grid(_duration(soundscapes, f, durations), window_s, hop_s)
        if not grid:
            continue
        s = np.array(grid, dtype=np.float64)
        t = np.zeros((len(grid), len(species)), np.uint8)
        evs = by_file.get(f, [])
        if evs:
            e = np.array([(ev.start_s, ev.end_s) for ev in evs], dtype=np.float64)
            overlap = np.minimum(s[:, 1:2], e[None, :, 1]) - np.maximum(s[:, 0:1], e[None, :, 0])
            hit_seg, hit_ev = np.nonzero(overlap > min_overlap_s)
            cols = np.array([col[ev.species_id] for ev in evs])
            t[hit_seg, cols[hit_ev]] = 1
        segs += [(f, float(a), float(b)) for a, b in grid]
        blocks.append(t)
    targets = np.concatenate(blocks) if blocks else np.zeros((0, len(species)), np.uint8)
    return segs, targets
