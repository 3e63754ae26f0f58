"""Species lists: the label space a user names for detection, a species guess or a checkpoint's combination.

A species list is a file of species without recordings or photos (``detect --species-list``,
``search --species-list``, the train config's ``combination_species``). Today that is a
CSV with a ``scientific_name`` column; every reader of a list goes through here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..taxonomy import Species
from .generic import read_csv_rows, species_from_row


def load_species_list(csv_path: str | Path) -> list[Species]:
    """Species from a CSV with ``scientific_name`` (+ optional common_name, species_id, ranks)."""
    rows = read_csv_rows(csv_path)
    if not rows or "scientific_name" not in rows[0]:
        raise ConfigError(f"{csv_path}: a species list needs a 'scientific_name' column")
    out, seen = [], set()
    for row in rows:
        if row.get("scientific_name"):
            sp = species_from_row(row)
            if sp.id not in seen:
                seen.add(sp.id)
                out.append(sp)
    return sorted(out, key=lambda s: s.id)
