"""SSW60 (Van Horn et al., ECCV 2022): 60 Sapsucker Woods species, audio + two image sources.

Layout of the release root::

    taxa.csv            label, species_code, inat_taxon_id, inat2021_label, nabirds_labels,
                        common_name, scientific_name, family, order
    audio_ml.csv        asset_id, label, split, samplerate, channels, samples, duration_seconds
    images_nabirds.csv  asset_id, label, split, height, width, channels, photographer
    images_inat.csv     asset_id, label, split, height, width, channels, rights_holder, license_id
    audio_ml/{asset_id}.wav   images_nabirds/{asset_id}.jpg   images_inat/{asset_id}.jpg

Species ids are eBird ``species_code`` s (``amecro``), stable across releases and shared with
eBird-coded soundscape annotations; SSW60's integer ``label`` is kept in ``extra``. Families
arrive as ``"Anatidae (Ducks, Geese, and Waterfowl)"``: the Latin part is the rank, the
English part goes to ``extra["family_common_name"]``. All 60 are birds, so kingdom, phylum
and class are Animalia / Chordata / Aves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import ConfigError, SkipLog
from ..taxonomy import Species
from .generic import read_csv_rows, split_family
from .records import AudioItem, Collection, ImageItem

IMAGE_SOURCES = ("nabirds", "inat")
_AUTHOR_COL = {"nabirds": "photographer", "inat": "rights_holder"}


def _num(v: str) -> float | int | None:
    if v == "" or v is None:
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return int(f) if f.is_integer() and "." not in v else f


def _taxa(root: Path) -> tuple[list[Species], dict[str, str]]:
    rows = read_csv_rows(root / "taxa.csv")
    species, by_label = [], {}
    for r in rows:
        family, family_en = split_family(r.get("family", ""))
        extra = {k: r[k] for k in ("label", "species_code", "inat_taxon_id", "inat2021_label", "nabirds_labels")
                 if r.get(k, "") != ""}
        if family_en:
            extra["family_common_name"] = family_en
        sp = Species(
            id=r.get("species_code") or r["label"],
            scientific_name=r["scientific_name"],
            common_name=r.get("common_name", ""),
            kingdom="Animalia",
            phylum="Chordata",
            class_="Aves",
            order=r.get("order", ""),
            family=family,
            extra=extra,
        )
        species.append(sp)
        by_label[r["label"]] = sp.id
    return species, by_label


def load_ssw60(
    root: str | Path,
    *,
    image_sources: Iterable[str] = IMAGE_SOURCES,
    audio: bool = True,
    splits: Iterable[str] | None = None,
) -> Collection:
    """Load SSW60 audio and images (``image_sources`` ⊆ {"nabirds", "inat"}; ``()`` for none).

    Audio items carry the metadata (``samplerate``, ``channels``, ``samples``,
    ``duration_s``) in ``extra``; image items carry ``source``, ``author``, ``license``
    (``license_id`` for iNat; NABirds states none per image), ``height``/``width``.
    Rows whose label is not in ``taxa.csv`` are skipped and logged (reason ``unknown_label``).
    """
    root = Path(root)
    if not (root / "taxa.csv").is_file():
        raise ConfigError(f"{root}: not an SSW60 root (taxa.csv missing)")
    sources = tuple(image_sources)
    bad = [s for s in sources if s not in IMAGE_SOURCES]
    if bad:
        raise ConfigError(f"unknown SSW60 image source(s) {bad}; expected {IMAGE_SOURCES}")
    keep_splits = set(splits) if splits is not None else None
    species, by_label = _taxa(root)
    skips = SkipLog()

    def rows(name: str) -> list[dict[str, str]]:
        out = []
        for r in read_csv_rows(root / name):
            if r.get("label") not in by_label:
                skips.add(f"{name}:{r.get('asset_id', '?')}", "unknown_label", f"label {r.get('label')!r}")
                continue
            if keep_splits is None or r.get("split", "") in keep_splits:
                out.append(r)
        return out

    audio_items: list[AudioItem] = []
    if audio:
        for r in rows("audio_ml.csv"):
            extra = {"asset_id": r["asset_id"], "label": r["label"]}
            for k in ("samplerate", "channels", "samples"):
                if (v := _num(r.get(k, ""))) is not None:
                    extra[k] = v
            if (d := _num(r.get("duration_seconds", ""))) is not None:
                extra["duration_s"] = float(d)
            audio_items.append(AudioItem(f"audio_ml/{r['asset_id']}.wav", by_label[r["label"]], r.get("split", ""), extra=extra))

    image_items: list[ImageItem] = []
    for src in sources:
        for r in rows(f"images_{src}.csv"):
            extra = {
                "asset_id": r["asset_id"],
                "label": r["label"],
                "source": src,
                "author": r.get(_AUTHOR_COL[src], ""),
                "license": r.get("license_id", "") if src == "inat" else "",
            }
            if src == "inat" and r.get("license_id", "") != "":
                extra["license_id"] = r["license_id"]
            for k in ("height", "width", "channels"):
                if (v := _num(r.get(k, ""))) is not None:
                    extra[k] = v
            image_items.append(ImageItem(f"images_{src}/{r['asset_id']}.jpg", by_label[r["label"]], r.get("split", ""), extra))

    return Collection(
        name="ssw60",
        species=species,
        audio=audio_items,
        images=image_items,
        root=str(root.resolve()),
        skips=skips,
        meta={"source": str(root), "format": "ssw60", "image_sources": list(sources)},
    )
