"""Which training species are the held-out evaluation species? Reconciled across datasets.

iNatSounds (training), SSW60 (evaluation) and eBird-coded soundscapes name species in
three taxonomies: iNaturalist's, SSW60's (eBird/Clements of its release) and the eBird
taxonomy CSV's. A held-out SSW60 species that survives in the training data under another
name leaks: the "unseen" numbers would then be seen ones. Species are matched on the
strongest identifier both sides have, in this order:

1. ``same_id``: training and evaluation are one collection;
2. ``taxon_id``: iNaturalist taxon ids (SSW60's ``inat_taxon_id``, an iNatSounds category's
   ``taxon_id`` where the JSON has one; the 2024 release has none). When both sides have one
   it decides: different ids are different species, whatever the names say;
3. ``ebird_code``: eBird species codes (SSW60's ids, soundscape codes), and the codes an
   eBird taxonomy gives either side's scientific or common name -- the bridge between a
   renamed genus on one side and the current name on the other;
4. ``scientific_name``, then ``common_name`` (case, spacing and punctuation ignored).

After removing every matched training species, a remaining training species that still
shares a name or code with a held-out species (only possible when taxon ids disagree) makes
the split ambiguous: :func:`reconcile` raises a one-line :class:`ConfigError` instead of
evaluating on a possibly seen species.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..errors import ConfigError
from ..taxonomy import Species

METHODS = ("same_id", "taxon_id", "ebird_code", "scientific_name", "common_name")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def norm_name(name: str) -> str:
    return _NON_WORD.sub(" ", (name or "").casefold()).strip()


@dataclass
class _Keys:
    taxon: str | None
    codes: set[str]
    sci: set[str]
    common: set[str]


def _taxon_id(sp: Species) -> str | None:
    for k in ("inat_taxon_id", "taxon_id"):
        v = str(sp.extra.get(k, "") or "").strip()
        if v:
            try:
                return str(int(float(v)))
            except ValueError:
                return v
    return None


class _EbirdIndex:
    """eBird code lookup by code, scientific and common name (species-level rows)."""

    def __init__(self, taxonomy: Mapping[str, Species] | None):
        self.by_sci: dict[str, set[str]] = {}
        self.by_common: dict[str, set[str]] = {}
        self.codes = {code: sp.id for code, sp in (taxonomy or {}).items()}  # alias code -> species code
        for sp in {id(s): s for s in (taxonomy or {}).values()}.values():
            self.by_sci.setdefault(norm_name(sp.scientific_name), set()).add(sp.id)
            if sp.common_name:
                self.by_common.setdefault(norm_name(sp.common_name), set()).add(sp.id)

    def keys(self, sp: Species, own_code: str | None) -> _Keys:
        sci, common = {norm_name(sp.scientific_name)}, {norm_name(sp.common_name)} - {""}
        codes = {self.codes.get(own_code, own_code)} if own_code else set()
        for s in sci:
            codes |= self.by_sci.get(s, set())
        for c in common:
            codes |= self.by_common.get(c, set())
        return _Keys(_taxon_id(sp), codes, sci, common)


def _code(sp: Species) -> str | None:
    return str(sp.extra.get("species_code") or "").strip() or None


@dataclass
class Reconciliation:
    """``matches[eval id]`` = training ids of that species; ``how[eval id]`` = the identifier used."""

    held_out: list[str]
    matches: dict[str, list[str]] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    n_eval_species: int = 0
    n_eval_species_in_training: int = 0

    @property
    def unmatched(self) -> list[str]:
        return [h for h in self.held_out if not self.matches.get(h)]

    @property
    def removed_train_ids(self) -> set[str]:
        return {t for h in self.held_out for t in self.matches.get(h, [])}

    def summary(self) -> dict:
        by = {m: sum(1 for h in self.held_out if self.how.get(h) == m) for m in METHODS}
        return {"n_held_out": len(self.held_out), "n_matched": len(self.held_out) - len(self.unmatched),
                "n_unmatched": len(self.unmatched), "matched_by": {m: n for m, n in by.items() if n},
                "unmatched": self.unmatched, "n_train_species_removed": len(self.removed_train_ids),
                "n_eval_species": self.n_eval_species, "n_eval_species_in_training": self.n_eval_species_in_training}


def _same(h: _Keys, t: _Keys) -> str | None:
    if h.taxon and t.taxon:
        return "taxon_id" if h.taxon == t.taxon else None
    if h.codes & t.codes:
        return "ebird_code"
    if h.sci & t.sci:
        return "scientific_name"
    if h.common & t.common:
        return "common_name"
    return None


def reconcile(eval_species: Sequence[Species], train_species: Sequence[Species], held_out: Sequence[str], *,
              same_collection: bool = False, ebird: Mapping[str, Species] | None = None) -> Reconciliation:
    """Match every evaluation species to the training species that are the same species."""
    idx = _EbirdIndex(ebird)
    t_keys = {t.id: idx.keys(t, _code(t)) for t in train_species}
    # candidates through any shared key, so each evaluation species is compared with few
    by_key: dict[tuple[str, str], set[str]] = {}
    for tid, k in t_keys.items():
        for kind, values in (("taxon", {k.taxon} - {None}), ("code", k.codes), ("sci", k.sci), ("common", k.common)):
            for v in values:
                by_key.setdefault((kind, v), set()).add(tid)
    rec = Reconciliation(list(held_out), n_eval_species=len(eval_species))
    held = set(held_out)
    train_ids = {t.id for t in train_species}
    for sp in eval_species:
        h = idx.keys(sp, _code(sp) or (sp.id if ebird and sp.id in ebird else None))
        cands = set()
        for kind, values in (("taxon", {h.taxon} - {None}), ("code", h.codes), ("sci", h.sci), ("common", h.common)):
            for v in values:
                cands |= by_key.get((kind, v), set())
        found: dict[str, str] = {}
        if same_collection and sp.id in train_ids:
            found[sp.id] = "same_id"
        for tid in sorted(cands - set(found)):
            how = _same(h, t_keys[tid])
            if how:
                found[tid] = how
        if found:
            rec.n_eval_species_in_training += 1
        if sp.id in held:
            rec.matches[sp.id] = sorted(found)
            if found:
                rec.how[sp.id] = min(found.values(), key=METHODS.index)
            left = sorted(cands - set(found))
            if left:  # shares a name or code, yet taxon ids say it is another species
                t = next(x for x in train_species if x.id == left[0])
                raise ConfigError(
                    f"held-out species {sp.id} ({sp.scientific_name}) would stay in the training data: training species "
                    f"{t.id} ({t.scientific_name}) shares its name or eBird code but has another iNaturalist taxon id; "
                    "fix the taxon ids or the names, or hold out another split")
    return rec
