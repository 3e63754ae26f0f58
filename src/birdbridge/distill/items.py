"""The labelled recordings a training run draws from and validates on, or why there are none (no torch here: the CLI
checks them with a config's other inputs before anything heavy loads)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..data.records import Collection
from ..errors import BadInputError

if TYPE_CHECKING:
    from .config import TrainConfig, ValidationConfig


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


@dataclass
class ValidationData:
    """What a run validates on: labelled recordings (species ids the training collection's), the photos
    to score them against (empty: audio->text against the species prompts), and where they came from."""

    collection: Collection  # the recordings' collection (their paths resolve against it)
    audio: list = field(default_factory=list)  # AudioItem, species_id a training species
    images: list = field(default_factory=list)  # (absolute path, training species id)
    source: str = ""
    unmatched: int = 0  # labelled recordings or photos of species the training data does not have

    @property
    def kind(self) -> str:
        return "audio_image" if self.images else "audio_text"


def _species_matcher(species) -> "callable":
    """A species of another collection -> the training species id: by id, then scientific, then common name."""
    by_id = {s.id: s.id for s in species}
    by_name: dict[str, str] = {}
    for s in species:
        for name in (s.scientific_name, s.common_name):
            if name:
                by_name.setdefault(" ".join(name.lower().split()), s.id)

    def match(sp) -> str | None:
        if sp is None:
            return None
        if sp.id in by_id:
            return sp.id
        for name in (sp.scientific_name, sp.common_name):
            hit = by_name.get(" ".join((name or "").lower().split()))
            if hit:
                return hit
        return None

    return match


def load_validation(vcfg: "ValidationConfig") -> tuple[Collection, Collection | None]:
    """The collections a ``validation:`` block names: its recordings, and its photos (or ``None``)."""
    from ..data.loaders import load_collection

    audio = load_collection(vcfg.resolved_kind, vcfg.path)
    images = None
    if vcfg.images:
        from pathlib import Path

        images = load_collection("csv" if Path(vcfg.images).suffix.lower() == ".csv" else "folder", vcfg.images,
                                 kind="images")
    return audio, images


def validation_data(collection: Collection, cfg: "TrainConfig", val_audio: Collection | None = None,
                    val_images: Collection | None = None, *, where: str = "validation") -> ValidationData | None:
    """The run's validation set, or ``None`` when there is none (no ``validation:`` block and no
    labelled rows in ``cfg.val_split``). Photos: ``val_images``, else the validation data's own
    labelled photos (for the split column: the ``val_split`` rows'). A ``BadInputError`` when a
    ``validation:`` block gives nothing usable."""
    match = _species_matcher(collection.species)
    if val_audio is None:  # the training data's split column
        if not cfg.val_split:
            return None
        audio = [a for a in collection.audio_split(cfg.val_split) if a.species_id]
        if not audio:
            return None
        source, own_images = f"split {cfg.val_split!r} of {collection.name}", collection.image_split(cfg.val_split)
        val_audio = collection
    else:
        audio, source, own_images = [a for a in val_audio.audio if a.species_id], where, val_audio.images
    sp_audio = val_audio.species_by_id
    kept, unmatched = [], 0
    for a in audio:
        sid = match(sp_audio.get(a.species_id))
        if sid is None:
            unmatched += 1
        else:
            kept.append(replace(a, species_id=sid))
    img_coll = val_images if val_images is not None else val_audio
    img_items = val_images.images if val_images is not None else own_images
    sp_img = img_coll.species_by_id
    images = []
    for im in img_items:
        sid = match(sp_img.get(im.species_id)) if im.species_id else None
        if sid is None:
            unmatched += im.species_id is not None
        else:
            images.append((str(img_coll.resolve(im.path)), sid))
    if not kept:
        raise BadInputError("no_validation_audio", detail=f"{source}: none of its {len(audio)} labelled recordings "
                            f"is of a training species ({len(collection.species)} species in {collection.name})")
    if val_images is not None and not images:
        raise BadInputError("no_validation_images", detail=f"{source}: none of the photos in {val_images.root or 'images'} "
                            "is of a training species (species folders named by scientific name)")
    if images and not {sid for _, sid in images} & {a.species_id for a in kept}:
        raise BadInputError("no_validation_images", detail=f"{source}: no photo shares a species with the "
                            "validation recordings, so audio->image mAP has nothing to find")
    # the recordings where they live (root, shard meta), labelled by the training species
    view = Collection(val_audio.name, collection.species, kept, root=val_audio.root, meta=dict(val_audio.meta))
    return ValidationData(view, kept, images, source, unmatched)
