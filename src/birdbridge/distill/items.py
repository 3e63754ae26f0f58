"""The labelled recordings a training run draws from, or why there are none (no torch here: the CLI
checks them with a config's other inputs before anything heavy loads)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..data.records import Collection
from ..errors import BadInputError

if TYPE_CHECKING:
    from .config import TrainConfig


def training_items(collection: Collection, cfg: "TrainConfig") -> list:
    """The labelled recordings of ``cfg.train_split``, or a :class:`BadInputError` that says how to get some."""
    from collections import Counter

    items = collection.audio_split(cfg.train_split)
    labelled = [a for a in items if a.species_id]
    if labelled:
        return labelled
    where = f"{collection.name} ({collection.meta.get('source') or collection.root})"
    if items:
        raise BadInputError("no_training_audio", detail=f"none of the {len(items)} recordings of split "
                            f"{cfg.train_split!r} in {where} has a species: put them in species folders or "
                            "give a CSV with a scientific_name column")
    splits = Counter(a.split for a in collection.audio)
    if not collection.audio:
        detail = f"{where} has no recordings"
    elif set(splits) == {""}:
        detail = (f"{where} has no split column (no recording has a split) and train_split is {cfg.train_split!r}: "
                  "add a `split` column (train, val, test) or set `train_split` in the config's `train:` section "
                  "(`train_split: \"\"` trains on every recording)")
    else:
        have = ", ".join(f"{s or '(none)'} {n}" for s, n in sorted(splits.items()))
        detail = (f"split {cfg.train_split!r} of {where} is empty (its splits: {have}): "
                  "fix the `split` column or set `train_split` in the config's `train:` section")
    raise BadInputError("no_training_audio", detail=detail)
