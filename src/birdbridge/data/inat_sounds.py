"""iNatSounds 2024 (Chasmai, Maji & Van Horn): COCO-style annotation JSON.

Structure of ``{train,val,test}.json`` (checked on the real ``test.json``)::

    info         {year, version, description, contributor, url, date_created}
    categories   [{id:int, name, common_name, supercategory, kingdom, phylum, class, order,
                   family, genus, specific_epithet, audio_dir_name, evaluation:0|1}]
    audio        [{id:int, file_name:"test/<audio_dir_name>/<uuid>.wav", duration:float s,
                   license:int, rights_holder, date, latitude, longitude, location_uncertainty}]
    annotations  [{id, audio_id, category_id}]      one per recording
    licenses     [{id, name, url}]

Species ids are ``str(category id)``, the dataset's own stable label. Audio paths stay
relative (``{split}/{audio_dir_name}/{uuid}.wav``) and resolve against ``media_root``,
by default the JSON's folder (where the release tarballs unpack ``train/``, ``test/`` …).
The whole test JSON (49,527 recordings, 22 MB) loads in about a second with ``json.load``,
so no streaming parser is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError, SkipLog
from ..taxonomy import Species
from .records import AudioItem, Collection

_EXTRA_AUDIO = ("date", "latitude", "longitude", "location_uncertainty")


def _as_set(v: str | Iterable | None) -> set[str] | None:
    if v is None:
        return None
    if isinstance(v, (str, int)):
        v = [v]
    return {str(x) for x in v}


def read_inat_json(json_path: str | Path) -> dict:
    p = Path(json_path)
    if not p.is_file():
        raise ConfigError(f"iNatSounds annotation file not found: {p}")
    try:
        with open(p, "rb") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: not valid JSON ({err})") from None
    missing = [k for k in ("categories", "audio", "annotations") if k not in data]
    if missing:
        raise ConfigError(f"{p}: not an iNatSounds/COCO audio file, missing keys {missing}")
    return data


def category_species(cat: dict) -> Species:
    return Species(
        id=str(cat["id"]),
        scientific_name=cat["name"],
        common_name=cat.get("common_name") or "",
        kingdom=cat.get("kingdom") or "",
        phylum=cat.get("phylum") or "",
        class_=cat.get("class") or "",
        order=cat.get("order") or "",
        family=cat.get("family") or "",
        genus=cat.get("genus") or "",
        epithet=cat.get("specific_epithet") or "",
        extra={
            "audio_dir_name": cat.get("audio_dir_name", ""),
            "evaluation": int(cat.get("evaluation", 0) or 0),
            "supercategory": cat.get("supercategory", ""),
            # the 2024 release has no iNaturalist taxon id; a JSON that carries one keeps it
            **{k: cat[k] for k in ("taxon_id", "inat_taxon_id") if cat.get(k) not in (None, "")},
        },
    )


def load_inat_sounds(
    json_path: str | Path,
    media_root: str | Path | None = None,
    *,
    classes: Iterable[str] | str | None = ("Aves",),
    evaluation_only: bool = False,
    species: Iterable[str | int] | None = None,
    split: Iterable[str] | str | None = None,
    _data: dict | None = None,
) -> Collection:
    """Load an iNatSounds annotation JSON as a :class:`Collection`.

    ``classes``: taxonomic classes to keep (default birds only; ``None`` keeps all five).
    ``evaluation_only``: keep categories marked ``evaluation: 1``.
    ``species``: category ids or scientific names to keep.
    ``split``: keep recordings whose path starts with this split folder.
    Species lists every kept category even when it has no recording in the file.
    """
    json_path = Path(json_path)
    data = _data if _data is not None else read_inat_json(json_path)
    keep_classes = {c.lower() for c in _as_set(classes)} if classes is not None else None
    keep_species = _as_set(species)
    keep_splits = _as_set(split)

    kept: dict[int, Species] = {}
    for cat in data["categories"]:
        if keep_classes is not None and (cat.get("class") or "").lower() not in keep_classes:
            continue
        if evaluation_only and not cat.get("evaluation"):
            continue
        if keep_species is not None and str(cat["id"]) not in keep_species and cat["name"] not in keep_species:
            continue
        kept[cat["id"]] = category_species(cat)

    licenses = {lic["id"]: lic for lic in data.get("licenses", [])}
    label = {a["audio_id"]: a["category_id"] for a in data["annotations"]}
    known = {c["id"] for c in data["categories"]}
    skips = SkipLog()
    items: list[AudioItem] = []
    for rec in data["audio"]:
        cid = label.get(rec["id"])
        fname = rec["file_name"]
        if cid is None or cid not in known:
            skips.add(fname, "no_annotation" if cid is None else "unknown_category")
            continue
        if cid not in kept:
            continue  # filtered out by the caller's choice, not a problem with the data
        rec_split = fname.split("/", 1)[0] if "/" in fname else ""
        if keep_splits is not None and rec_split not in keep_splits:
            continue
        lic = licenses.get(rec.get("license"), {})
        extra = {"audio_id": rec["id"], "author": rec.get("rights_holder", ""), "license": lic.get("url", ""), "license_name": lic.get("name", "")}
        if rec.get("duration") is not None:
            extra["duration_s"] = float(rec["duration"])
        for k in _EXTRA_AUDIO:
            if rec.get(k) is not None:
                extra[k] = rec[k]
        items.append(AudioItem(path=fname, species_id=str(cid), split=rec_split, extra=extra))

    species_list = sorted(kept.values(), key=lambda s: int(s.id))
    return Collection(
        name=f"inat_sounds:{json_path.stem}",
        species=species_list,
        audio=items,
        root=str(Path(media_root) if media_root is not None else json_path.resolve().parent),
        skips=skips,
        meta={"source": str(json_path), "format": "inat_sounds", "info": data.get("info", {}), "n_categories_in_file": len(data["categories"])},
    )
