"""What a checkpoint says about its making, said to the user where it matters.

A distilled checkpoint records the data it was trained on (``trained_on``: ``{"dataset": name,
"synthetic": bool}``, written by :mod:`birdbridge.distill.train`). A model distilled on the
synthetic world -- the demo's model, a stand-in student and teacher that never heard a bird --
answers anything, but its answers on real recordings mean nothing. This module is the one
rule for saying so: :func:`synthetic_world_note` gives one warning line when such a model is
used on a file that is not itself from a written synthetic world
(:func:`birdbridge.data.synthetic.in_synthetic_world`); ``search``, ``detect`` and
``embed-audio`` print it once, before their progress. No torch here.
"""

from __future__ import annotations

from typing import Iterable


def checkpoint_meta(model) -> dict:
    """The metadata of a distilled model, or of the model an embedder wraps, or a checkpoint's
    recorded metadata as a dict (:func:`recorded_meta`); ``{}`` for others."""
    if isinstance(model, dict):
        return model
    for obj in (model, getattr(model, "model", None)):
        meta = getattr(obj, "meta", None)
        if isinstance(meta, dict):
            return meta
    return {}


def recorded_meta(model_id: str) -> dict:
    """A local checkpoint folder's recorded metadata (its ``config.json``), without loading the model:
    for paths where the model runs elsewhere (``--engine ray``). ``{}`` for anything else."""
    import json
    from pathlib import Path

    text = str(model_id)
    folder = Path(text[len("local-dir:"):] if text.startswith("local-dir:") else text).expanduser()
    try:
        return json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    except (OSError, ValueError):
        return {}


def trained_on_synthetic(model) -> bool:
    """True when the checkpoint records that it was distilled on the synthetic world."""
    trained_on = checkpoint_meta(model).get("trained_on") or {}
    return bool(isinstance(trained_on, dict) and trained_on.get("synthetic"))


def synthetic_world_note(model, paths: Iterable[str], name: str | None = None) -> str | None:
    """One line when a synthetic-world model is about to read real files (None otherwise)."""
    if not trained_on_synthetic(model):
        return None
    from ..data.synthetic import in_synthetic_world

    real = sum(1 for p in paths if not in_synthetic_world(p))
    if not real:
        return None
    who = name or getattr(model, "name", None) or "this model"
    return (f"warning: {who} was distilled on the synthetic world (the demo's stand-in birds, "
            f"dataset {(checkpoint_meta(model).get('trained_on') or {}).get('dataset', 'synthetic')!r}): its "
            f"answers on the {real} real recording{'s' if real != 1 else ''} here mean nothing; distil on "
            "real recordings (`birdbridge train`) for real use")
