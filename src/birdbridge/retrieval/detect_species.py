"""The species a detection run scores: a user's species list matched against what the model or index knows.

What a model knows: the species an index holds (``--index``), else the species a
checkpoint records -- its zero-shot combination's list (ids and names) and
``train_species`` (ids; an id that is a name, ``Turdus_migratorius``, is also that
scientific name). A checkpoint that records none leaves every entry "unknown to the
model"; the teacher's text tower reads them all the same.
"""

from __future__ import annotations

from pathlib import Path

from ..data.generic import clean_name
from ..data.species_list import ListEntry, SpeciesListMatch, match_species_list, read_species_list
from ..errors import ConfigError
from ..taxonomy import Species


def model_species(model, index=None) -> tuple[list[Species], str]:
    """The species ``index`` (else the loaded ``model``) knows, and what to call their source in messages."""
    if index is not None:
        return list(index.species()), "the index"
    meta = dict(getattr(getattr(model, "model", None), "meta", None) or {})
    out: dict[str, Species] = {}
    combination = getattr(getattr(model, "model", None), "combination", None)
    for d in getattr(combination, "species", None) or ():
        sid, sci = str(d.get("id") or d.get("species_id") or ""), d.get("scientific_name") or ""
        if sid and sci:
            out.setdefault(sid, Species(id=sid, scientific_name=sci, common_name=d.get("common_name") or ""))
    for sid in meta.get("train_species") or ():
        sid = str(sid)
        if sid and sid not in out:
            out[sid] = Species(id=sid, scientific_name=clean_name(sid))
    return list(out.values()), "the model"


def species_for_detection(path: str | Path, model, index=None, *, strict: bool = False,
                          entries: list[ListEntry] | None = None) -> SpeciesListMatch:
    """Read the list at ``path`` (or take its ``entries``, read already) and match it against
    ``model_species(model, index)``.

    ``strict``: entries the model does not know are an error (one line naming them), when
    the model records species at all.
    """
    known, source = model_species(model, index)
    match = match_species_list(entries if entries is not None else read_species_list(path), known, source)
    if strict and match.n_known and match.unmatched:
        raise ConfigError(f"--strict: {len(match.unmatched)} of {match.n_entries} entries of {path} match none of "
                          f"{source}'s {match.n_known} species: {', '.join(match.unmatched_names())}")
    return match


__all__ = ["model_species", "species_for_detection"]
