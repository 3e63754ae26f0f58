"""``birdbridge inspect``: what a dataset holds and what is wrong with it, before any training.

Works from annotation files alone: when media are absent the report says so (counts of
missing files, ``media.checked = false``) instead of failing, so the real iNatSounds JSON
can be inspected without its 100+ GB of audio. Media checks read headers only
(``audio_info`` / ``image_info``) unless ``deep=True`` decodes every checked file, which
also finds truncation, NaNs and silence.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from pathlib import Path

from ..errors import BadInputError, SkipLog
from .loaders import load_collection
from .records import Collection

_EXAMPLES = 20  # skip examples kept in the report; counts are always complete


def _present(paths: list[str]) -> list[bool]:
    """Existence of many files with one directory listing per folder instead of one stat each.

    Plain strings, not pathlib: building 50k Path objects alone takes seconds.
    """
    listing: dict[str, set[str] | None] = {}
    out = []
    for p in paths:
        d, name = os.path.split(p)
        if d not in listing:
            try:
                listing[d] = set(os.listdir(d or "."))
            except OSError:
                listing[d] = None
        names = listing[d]
        out.append(names is not None and name in names)
    return out


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "total_s": round(float(sum(values)), 3),
        "mean_s": round(statistics.fmean(values), 3),
        "median_s": round(statistics.median(values), 3),
        "min_s": round(min(values), 3),
        "max_s": round(max(values), 3),
    }


def _meta_duration(item) -> float | None:
    if item.start_s is not None and item.end_s is not None:
        return item.end_s - item.start_s
    d = item.extra.get("duration_s")
    return float(d) if d is not None else None


def _check_media(coll: Collection, max_files: int | None, deep: bool, skips: SkipLog) -> tuple[dict, dict[str, float]]:
    from .audio import audio_info, load_audio
    from .images import image_info, load_image

    entries = [(a.path, "audio") for a in coll.audio] + [(i.path, "image") for i in coll.images]
    entries = list(dict.fromkeys(entries))  # soundscape events share files
    root = coll.root
    resolved = [p if (os.path.isabs(p) or not root) else os.path.join(root, p) for p, _ in entries]
    present = _present(resolved)
    n_present = sum(present)
    media = {"root": coll.root, "n_files": len(entries), "n_present": n_present, "n_missing": len(entries) - n_present}
    if entries and n_present == 0:
        media.update(checked=False, note=f"no media found under {coll.root}; annotation-only report")
        return media, {}
    for (p, _), ok in zip(entries, present):
        if not ok:
            skips.add(p, "missing")
    durations: dict[str, float] = {}
    n_checked = n_bad = 0
    for (p, kind), path, ok in zip(entries, resolved, present):
        if not ok:
            continue
        if max_files is not None and n_checked >= max_files:
            break
        n_checked += 1
        try:
            if kind == "audio":
                info = audio_info(path)
                if info["frames"] <= 0 or deep:
                    load_audio(path, info["samplerate"] or 16000, reject_silent=True)
                durations[p] = info["duration_s"]
            elif deep:
                load_image(path)
            else:
                image_info(path)
        except BadInputError as err:
            n_bad += 1
            skips.add_error(err, p)
    media.update(checked=True, n_checked=n_checked, n_bad=n_bad, deep=deep)
    if max_files is not None and n_checked < n_present:
        media["note"] = f"checked {n_checked} of {n_present} present files (max_files={max_files})"
    return media, durations


def inspect_dataset(
    kind: str,
    path: str | Path,
    /,
    *,
    check_media: bool = True,
    max_files: int | None = None,
    deep: bool = False,
    **opts,
) -> dict:
    """A JSON-ready report on a dataset of any :func:`~birdbridge.data.generic.load_collection` kind."""
    t0 = time.perf_counter()
    if kind == "inat_sounds":
        opts.setdefault("classes", None)  # report every class, not just the default birds
    coll = load_collection(kind, path, **opts)
    species = coll.species
    audio_per_class = Counter()
    cls_of = {s.id: s.class_ or "?" for s in species}
    for a in coll.audio:
        audio_per_class[cls_of.get(a.species_id, "?")] += 1
    per_species = Counter(a.species_id for a in coll.audio) + Counter(i.species_id for i in coll.images)
    # a species listed but without any item (a taxonomy's long tail) is not a species with 0 items
    counts = [c for c in (per_species.get(s.id, 0) for s in species) if c > 0]
    report: dict = {
        "kind": kind,
        "path": str(path),
        "name": coll.name,
        "n_recordings": len(coll.audio),
        "n_images": len(coll.images),
        "n_species": len(species),
        "n_species_with_audio": len({a.species_id for a in coll.audio if a.species_id}),
        "n_species_with_images": len({i.species_id for i in coll.images if i.species_id}),
        "n_species_without_items": len(species) - len(counts),
        "n_without_species": {"audio": sum(1 for a in coll.audio if not a.species_id),
                              "images": sum(1 for i in coll.images if not i.species_id)},
        "n_bird_species": sum(1 for s in species if s.class_ == "Aves"),
        "species_per_class": dict(Counter(s.class_ or "?" for s in species).most_common()),
        "recordings_per_class": dict(audio_per_class.most_common()),
        "items_per_species": {"min": min(counts, default=0), "median": statistics.median(counts) if counts else 0, "max": max(counts, default=0)},
        "splits": {
            "audio": dict(Counter(a.split or "-" for a in coll.audio)),
            "images": dict(Counter(i.split or "-" for i in coll.images)),
        },
    }
    if any("evaluation" in s.extra for s in species):
        report["n_evaluation_species"] = sum(1 for s in species if s.extra.get("evaluation"))
    for k in ("n_files", "n_events", "unknown_codes", "n_species_from_file_name"):
        if k in coll.meta:
            report[k] = coll.meta[k]
    hint = _species_hint(kind, Path(path), report["n_without_species"])
    if hint:
        report["species_note"] = hint
    if coll.images:
        report["image_sources"] = dict(Counter(i.extra.get("source", "-") for i in coll.images))

    skips = SkipLog()
    meta_d = [d for d in (_meta_duration(a) for a in coll.audio) if d is not None]
    durations = {"source": "metadata", **_stats(meta_d)} if meta_d else {"source": None, "n": 0}
    if check_media:
        media, measured = _check_media(coll, max_files, deep, skips)
        if not meta_d and measured:
            durations = {"source": "audio_info", **_stats(list(measured.values()))}
    else:
        media = {"checked": False, "note": "media check disabled"}
    report["durations"] = durations
    report["media"] = media
    report["loader_skips"] = {"n": len(coll.skips), "counts": coll.skips.counts(), "examples": coll.skips.to_list()[:_EXAMPLES]}
    report["bad_files"] = {"n": len(skips), "counts": skips.counts(), "examples": skips.to_list()[:_EXAMPLES]}
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _species_hint(kind: str, path: Path, unnamed: dict) -> str:
    """How to give species to files that have none (loose files in a folder)."""
    n_audio, n_images = unnamed["audio"], unnamed["images"]
    if not n_audio and not n_images:
        return ""
    what = " and ".join(f"{n:,} {w}" for n, w in ((n_audio, "recordings"), (n_images, "images")) if n)
    text = (f"{what} have no species (not in a species folder): put them in folders named Genus_species/ "
            "(photos may instead be named Genus_species.jpg), or list them in a CSV with path,scientific_name columns")
    csvs = sorted(p.name for p in path.glob("*.csv")) if kind == "folder" and path.is_dir() else []
    csvs.sort(key=lambda n: not any(w in n.lower() for w in (("rec", "audio", "sound") if n_audio else ("im", "photo"))))
    if csvs:
        text += f"; this folder has {', '.join(csvs)}: `birdbridge inspect csv {path / csvs[0]}` reads species from it"
    return text


def format_inspect(report: dict) -> str:
    """A plain-text summary (the CLI prints it; ``--json`` prints the report itself)."""
    lines = [f"{report['name']}  ({report['kind']}: {report['path']})"]

    def row(label: str, value) -> None:
        lines.append(f"  {label:<26} {value}")

    row("recordings", f"{report['n_recordings']:,}")
    row("images", f"{report['n_images']:,}")
    row("species", f"{report['n_species']:,} ({report['n_bird_species']:,} birds)")
    if report["n_recordings"]:
        row("species with recordings", f"{report['n_species_with_audio']:,}")
    if report["n_images"]:
        row("species with images", f"{report['n_species_with_images']:,}")
    unnamed = report.get("n_without_species", {})
    if unnamed.get("audio") or unnamed.get("images"):
        row("without species", f"{unnamed.get('audio', 0):,} recordings, {unnamed.get('images', 0):,} images")
    if report.get("n_species_without_items"):
        row("species without items", f"{report['n_species_without_items']:,}")
    if "n_evaluation_species" in report:
        row("evaluation species", f"{report['n_evaluation_species']:,}")
    for k in ("n_files", "n_events"):
        if k in report:
            row(k[2:], f"{report[k]:,}")
    if report.get("unknown_codes"):
        row("codes not in taxonomy", ", ".join(f"{c} ×{n}" for c, n in report["unknown_codes"].items()))
    if len(report["species_per_class"]) > 1:
        row("species per class", ", ".join(f"{c} {n:,}" for c, n in report["species_per_class"].items()))
    ips = report["items_per_species"]
    if ips["max"]:
        row("items per species", f"min {ips['min']}, median {ips['median']}, max {ips['max']} (species with items)")
    for kind in ("audio", "images"):
        if report["splits"][kind]:
            row(f"{kind} splits", ", ".join(f"{s} {n:,}" for s, n in sorted(report["splits"][kind].items())))
    d = report["durations"]
    if d.get("n"):
        row("durations", f"{d['total_s'] / 3600:.1f} h; mean {d['mean_s']:.1f} s, median {d['median_s']:.1f} s, max {d['max_s']:.1f} s ({d['source']})")
    m = report["media"]
    if m.get("checked"):
        row("media", f"{m['n_present']:,} present, {m['n_missing']:,} missing, {m['n_bad']:,} bad of {m['n_checked']:,} checked")
    else:
        row("media", "not checked")
    if m.get("note"):
        row("", m["note"])
    for key, label in (("bad_files", "bad/missing files"), ("loader_skips", "rows skipped by loader")):
        s = report[key]
        if s["n"]:
            row(label, ", ".join(f"{r} {n:,}" for r, n in sorted(s["counts"].items())))
            for ex in s["examples"][:5]:
                lines.append(f"    {ex['input']}: {ex['reason']}" + (f" ({ex['detail']})" if ex["detail"] else ""))
    if report.get("n_species_from_file_name"):
        row("named by file", f"{report['n_species_from_file_name']:,} photos got their species from the file name "
                             "(Genus_species.jpg)")
    if report.get("species_note"):
        row("note", report["species_note"])
    row("time", f"{report['seconds']:.2f} s")
    return "\n".join(lines)
