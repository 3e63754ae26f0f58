"""Species lists: the label space a user names for detection, a species guess or a checkpoint's combination.

A species list is a file of species without recordings or photos (``detect --species-list``,
``search --species-list``, the train config's ``combination_species``); every reader of a
list goes through here. It is written the ways BirdNET users write them:

- BirdNET-Analyzer's custom list: one ``Scientific name_Common name`` per line
  (``Turdus migratorius_American Robin``);
- plain names, one a line, scientific or common (``Turdus migratorius``, ``American Robin``);
- a CSV with a header: ``scientific_name`` and/or ``common_name``, ``species_id``, ranks
  (header spelling does not matter: ``Scientific name`` is ``scientific_name``).

Blank lines and ``#`` comments are ignored. :func:`match_species_list` matches the
entries against the species a model or index knows -- by id, then scientific name, then
common name, case- and space-insensitive (``_`` counts as a space) -- and keeps the
entries it cannot match: the teacher's text tower reads any name, so they are still
scored, and the summary says so.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from ..errors import ConfigError
from ..taxonomy import Species
from .generic import clean_name, norm_key, species_from_row

_ID_COLUMNS = ("species_id", "id", "code", "species_code", "ebird_code", "label")
_NAME_COLUMNS = ("species", "name", "label_name")
_BINOMIAL = re.compile(r"^[A-Z][a-z-]+( [a-z][a-z-]+){1,2}$")  # Genus epithet [subspecies]


@dataclass(frozen=True)
class ListEntry:
    """One line (or CSV row) of a species list, as written."""

    line: int
    text: str
    species_id: str = ""
    scientific_name: str = ""
    common_name: str = ""
    name: str = ""  # a plain name: scientific or common, matching decides
    row: dict = field(default_factory=dict, compare=False, hash=False)  # a CSV row (its ranks)

    def to_species(self) -> Species:
        """The species the entry names on its own (for names the model does not know)."""
        if self.row and self.scientific_name:
            return species_from_row(self.row)
        name = self.scientific_name or self.name or self.common_name
        common = self.common_name or ("" if looks_scientific(name) else name)
        return Species(id=self.species_id or name, scientific_name=name, common_name=common)


def looks_scientific(name: str) -> bool:
    """``Turdus migratorius`` yes, ``American Robin`` no."""
    return bool(_BINOMIAL.match(clean_name(name)))


def normalise_name(name: str) -> str:
    """The key names are matched by: case-folded, ``_`` as a space, runs of space as one."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


def read_species_list(path: str | Path) -> list[ListEntry]:
    """Every entry of a species list file, in file order (any of the three ways of writing one)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"species list not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read the species list as UTF-8 text ({err})") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    header = [norm_key(h) for h in next(csv.reader([first]))] if first else []
    known = {"scientific_name", "common_name", *_ID_COLUMNS, *_NAME_COLUMNS}
    if "," in first and known & set(header) or p.suffix.lower() == ".csv":
        entries = _csv_entries(p, lines)
    else:
        entries = [e for i, ln in enumerate(lines, start=1) if (e := _line_entry(i, ln)) is not None]
    if not entries:
        raise ConfigError(f"{p}: the species list names no species (one 'Scientific name_Common name', scientific or "
                          "common name a line, or a CSV with a scientific_name or common_name column)")
    return entries


def _line_entry(i: int, raw: str) -> ListEntry | None:
    text = raw.strip()
    if not text or text.startswith("#"):
        return None
    if "_" in text:
        sci, common = (s.strip() for s in text.split("_", 1))
        if " " in sci and common:  # BirdNET: "Turdus migratorius_American Robin"
            return ListEntry(i, text, scientific_name=clean_name(sci), common_name=" ".join(common.split()))
    return ListEntry(i, text, name=clean_name(text))


def _csv_entries(p: Path, lines: list[str]) -> list[ListEntry]:
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    rows = list(csv.reader(body))
    if not rows:
        return []
    header = [norm_key(h) for h in rows[0]]
    if not {"scientific_name", "common_name", *_NAME_COLUMNS} & set(header):
        raise ConfigError(f"{p}: a species list CSV needs a 'scientific_name' or 'common_name' column "
                          f"(found {', '.join(header) or 'none'})")
    out = []
    for n, cells in enumerate(rows[1:], start=2):
        row = {k: (v or "").strip() for k, v in zip(header, cells)}
        sid = next((row[c] for c in _ID_COLUMNS if row.get(c)), "")
        name = next((row[c] for c in _NAME_COLUMNS if row.get(c)), "")
        sci, common = clean_name(row.get("scientific_name", "")), " ".join(row.get("common_name", "").split())
        if sci or common or name:
            out.append(ListEntry(n, ",".join(cells), species_id=sid, scientific_name=sci, common_name=common,
                                 name=clean_name(name), row=row if sci else {}))
    return out


def _dedup(species: list[Species]) -> list[Species]:
    out, seen = [], set()
    for sp in species:
        if sp.id not in seen:
            seen.add(sp.id)
            out.append(sp)
    return sorted(out, key=lambda s: s.id)


def load_species_list(path: str | Path) -> list[Species]:
    """The species a list file names, on their own (no matching), sorted by id and without repeats."""
    return _dedup([e.to_species() for e in read_species_list(path)])


@dataclass
class SpeciesListMatch:
    """A species list matched against the species a model (or index) knows."""

    species: list[Species]  # what is scored: the known species matched, then the list's own for the rest
    matched: list[tuple[ListEntry, Species]]
    unmatched: list[ListEntry]
    n_known: int  # how many species the model/index knows (0: it records none)
    source: str = "the model"  # what the species were matched against, for messages
    # close matches among the known names for each unmatched entry's text (difflib), best first
    suggestions: dict[str, list[str]] = field(default_factory=dict)

    MAX_LINES: ClassVar[int] = 20  # one line per unmatched entry up to here, then a count

    @property
    def n_entries(self) -> int:
        return len(self.matched) + len(self.unmatched)

    def unmatched_names(self) -> list[str]:
        return [e.text for e in self.unmatched]

    def summary(self) -> str:
        """One line: how many entries, how many matched, which did not (and that they still work)."""
        head = f"species list: {self.n_entries} entries"
        if not self.n_known:
            return (f"{head}; {self.source} records no species of its own to match them against, so all are read "
                    "by the teacher's text tower")
        line = f"{head}, {len(self.matched)} matched {self.source}'s species"
        if self.unmatched:
            names = self.unmatched_names()
            shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
            line += f", {len(self.unmatched)} not (read by the teacher's text tower): {shown}"
        return line

    def unmatched_lines(self) -> list[str]:
        """One line per entry the model never heard (with close matches: "did you mean ...?"), capped
        at :attr:`MAX_LINES`, then what happens to them; empty when all matched or nothing is known."""
        if not self.n_known or not self.unmatched:
            return []
        lines = []
        for name in self.unmatched_names()[: self.MAX_LINES]:
            close = self.suggestions.get(name) or []
            lines.append(f"  not among {self.source}'s {self.n_known} species: {name}"
                         + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        if len(self.unmatched) > self.MAX_LINES:
            lines.append(f"  ... and {len(self.unmatched) - self.MAX_LINES} more")
        lines.append(f"  the teacher's text tower reads these names all the same; {self.source} never heard them "
                     "(a misspelt name scores as a different species)")
        return lines

    def to_dict(self) -> dict:
        return {"n_entries": self.n_entries, "n_matched": len(self.matched), "n_unmatched": len(self.unmatched),
                "n_known": self.n_known, "unmatched": self.unmatched_names(),
                "suggestions": {k: v for k, v in self.suggestions.items() if v}}


def match_species_list(entries: list[ListEntry], known: list[Species], source: str = "the model") -> SpeciesListMatch:
    """Match each entry to a known species: by id, then scientific name, then common name
    (:func:`normalise_name` keys). Unmatched entries keep their own names (``species`` holds both)."""
    by_id: dict[str, Species] = {}
    by_sci: dict[str, Species] = {}
    by_common: dict[str, Species] = {}
    for sp in known:
        by_id.setdefault(normalise_name(sp.id), sp)
        by_sci.setdefault(normalise_name(sp.scientific_name), sp)
        if sp.common_name:
            by_common.setdefault(normalise_name(sp.common_name), sp)
    matched, unmatched, species = [], [], []
    for e in entries:
        tries = ((by_id, e.species_id or e.name), (by_sci, e.scientific_name or e.name),
                 (by_common, e.common_name or e.name))
        hit = next((table[normalise_name(v)] for table, v in tries if v and normalise_name(v) in table), None)
        if hit is None:
            unmatched.append(e)
            species.append(e.to_species())
            continue
        if not hit.common_name and e.common_name:
            hit = replace(hit, common_name=e.common_name)
        matched.append((e, hit))
        species.append(hit)
    return SpeciesListMatch(_dedup(species), matched, unmatched, len(known), source,
                            close_matches(unmatched, known))


def close_matches(entries: list[ListEntry], known: list[Species], n: int = 2, cutoff: float = 0.8) -> dict[str, list[str]]:
    """For each entry (by its text), the known scientific or common names closest to its names
    (difflib, case- and space-insensitive like the matching), as the known species spell them."""
    import difflib

    spelled: dict[str, str] = {}
    for sp in known:
        for v in (sp.scientific_name, sp.common_name):
            if v:
                spelled.setdefault(normalise_name(v), v)
    keys = list(spelled)
    out: dict[str, list[str]] = {}
    for e in entries:
        found: list[str] = []
        for v in (e.scientific_name, e.name, e.common_name):
            for k in difflib.get_close_matches(normalise_name(v), keys, n=n, cutoff=cutoff) if v else ():
                if spelled[k] not in found:
                    found.append(spelled[k])
        out[e.text] = found[:n]
    return out


def exclude_species(collection, path: str | Path) -> tuple[object, dict]:
    """``collection`` without the species a list file names, and what was left out.

    ``data prepare --exclude-species FILE`` and the train config's ``data.exclude_species``
    (an unseen-species run trained outside ``birdbridge eval``; eval writes the list as
    ``OUT/unseen_species.csv``). Entries are matched as :func:`match_species_list` does (id,
    then scientific, then common name); recordings without a species are kept. Returns
    ``(collection, summary)``: ``n_entries``, ``excluded_species`` (ids), ``n_recordings_excluded``
    and the ``unmatched`` entries (named in no species of the collection: nothing of theirs to
    leave out, but a typo would leak, so callers say so)."""
    m = match_species_list(read_species_list(path), collection.species, source=collection.name)
    drop = {sp.id for _, sp in m.matched}
    kept = replace(collection, species=[sp for sp in collection.species if sp.id not in drop],
                   audio=[a for a in collection.audio if a.species_id not in drop],
                   images=[i for i in collection.images if i.species_id not in drop])
    summary = {"file": str(path), "n_entries": m.n_entries, "excluded_species": sorted(drop),
               "n_recordings_excluded": len(collection.audio) - len(kept.audio), "unmatched": m.unmatched_names()}
    return kept, summary


def exclusion_line(summary: dict) -> str:
    """One line saying what an exclusion list left out (and which entries matched nothing)."""
    line = (f"left out {summary['n_recordings_excluded']} recordings of {len(summary['excluded_species'])} species "
            f"listed in {summary['file']}")
    if summary["unmatched"]:
        names = summary["unmatched"]
        line += (f"; {len(names)} of its {summary['n_entries']} entries match no species of the data: "
                 + ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
    return line


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes (a species list's identity in a run's journal)."""
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]


__all__ = ["ListEntry", "SpeciesListMatch", "read_species_list", "load_species_list", "match_species_list",
           "normalise_name", "looks_scientific", "file_digest", "exclude_species", "exclusion_line"]
