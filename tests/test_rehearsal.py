"""A rehearsal of the paper's real run, end to end, on a few species of real bird audio.

A real HTTP server (with Range support) serves the four datasets rebuilt small in their
real release layouts (tests/dataset_mirror.py) from the phoebe recordings and photos;
then the commands a researcher types, as console scripts from another directory:

    birdbridge data download all --root ROOT --mirror URL --checksums FILE
    birdbridge data prepare inat_sounds ROOT/inat_sounds/train.json --out ROOT/shards/inat_sounds-train
    birdbridge train train.yaml --out run                     # data: {kind: shards, ...}
    birdbridge eval paper.yaml --root ROOT --out table        # paper.yaml = configs/paper/ssw60_table.yaml
                                                              #   with tiny model ids, local roots, small sizes

The eval config is derived from ``configs/paper/ssw60_table.yaml`` here, and the test
checks it differs from that file only in model ids, roots and sizes, so the shipped config
and the rehearsal cannot drift apart.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from dataset_mirror import SPECIES, RangeServer, build_inat, build_soundscapes, build_ssw60, build_taxonomy, checksums

BIN = Path(sys.executable).with_name("birdbridge")
PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper" / "ssw60_table.yaml"
# what the rehearsal may change in the paper config: model ids, roots (data, caches, outputs), sizes
ALLOWED = {"name", "train.student", "train.teacher", "train.cache_dir", "train.batch_size", "train.max_epochs",
           "train.num_workers", "train.warmup_steps", "max_items_per_species", "work_dir", "plots"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cli(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, f"birdbridge {' '.join(map(str, args[:2]))} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    assert "Traceback" not in res.stderr
    return res


def _mirror(phoebe: Path, d: Path) -> Path:
    """The four datasets from phoebe: 10 recordings and 1 photo per species, split between them."""
    import csv

    from PIL import Image, ImageOps

    from birdbridge.data.audio import load_audio

    rows = list(csv.DictReader((phoebe / "recordings.csv").open()))
    by_sp: dict[str, list[Path]] = {}
    for r in rows:
        by_sp.setdefault(r["scientific_name"], []).append(phoebe / r["path"])
    names = [s[0] for s in SPECIES]
    assert sorted(by_sp) == sorted(names)
    wav = {sci: [load_audio(p, 22050) for p in sorted(paths)[:10]] for sci, paths in by_sp.items()}  # 22.05 kHz, as iNat/SSW60
    build_inat(d, {"train": {s: w[:3] for s, w in wav.items()}, "val": {s: w[3:4] for s, w in wav.items()},
                   "test": {s: w[4:5] for s, w in wav.items()}})
    photos = {}
    for r in csv.DictReader((phoebe / "images.csv").open()):
        img = Image.open(phoebe / r["path"]).convert("RGB")
        jpgs = []
        for variant in (img, ImageOps.mirror(img), img.rotate(8)):
            buf = io.BytesIO()
            variant.save(buf, "JPEG")
            jpgs.append(buf.getvalue())
        photos[r["scientific_name"]] = jpgs
    build_ssw60(d, {"train": {s: w[5:8] for s, w in wav.items()}, "test": {s: w[8:10] for s, w in wav.items()}}, photos)
    calls = [(code, load_audio(sorted(by_sp[sci])[0], 32000)[: 32000 * 3]) for sci, _, code, *_ in SPECIES]
    build_soundscapes(d, calls)
    build_taxonomy(d)
    (d / "checksums.md5").write_text(checksums(d))
    return d


def _eval_config(tmp: Path, clap: Path, teacher: Path) -> tuple[Path, dict]:
    paper = yaml.safe_load(PAPER.read_text())
    cfg = json.loads(json.dumps(paper))
    cfg["name"] = "rehearsal"
    cfg["train"].update({"student": str(clap), "teacher": str(teacher), "cache_dir": str(tmp / "text-cache"),
                         "batch_size": 8, "max_epochs": 1, "num_workers": 0, "warmup_steps": 2})
    cfg.update({"max_items_per_species": 3, "work_dir": str(tmp / "work"), "plots": False})
    changed = {k for k in set(_flat(paper)) | set(_flat(cfg)) if _flat(paper).get(k, "∅") != _flat(cfg).get(k, "∅")}
    assert changed <= ALLOWED, f"the rehearsal must differ from {PAPER.name} only in model ids, roots and sizes: {changed - ALLOWED}"
    path = tmp / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, cfg


def test_paper_run_rehearsed_end_to_end(tmp_path, phoebe, tiny_clap_dir, tiny_open_clip_dir):
    t0 = time.monotonic()
    mirror = _mirror(phoebe, tmp_path / "mirror")
    root, work = tmp_path / "ROOT", tmp_path / "cwd"
    work.mkdir()
    timings = {"build_mirror_s": time.monotonic() - t0}

    with RangeServer(mirror) as srv:
        t = time.monotonic()
        res = _cli("data", "download", "all", "--root", root, "--mirror", srv.url, "--checksums", mirror / "checksums.md5",
                   cwd=work)
        timings["download_s"] = time.monotonic() - t
        assert {r[1] for r in srv.log if r[0] == "GET"} == {p.relative_to(mirror).as_posix() for p in mirror.rglob("*")
                                                           if p.is_file() and p.name != "checksums.md5"}
    for rel in ("inat_sounds/train.json", "inat_sounds/train", "inat_sounds/val.json", "inat_sounds/test", "ssw60/taxa.csv",
                "ssw60/audio_ml", "ssw_soundscapes/annotations.csv", "ssw_soundscapes/soundscape_data",
                "ebird/eBird_taxonomy_v2024.csv"):
        assert (root / rel).exists(), rel

    t = time.monotonic()
    res = _cli("data", "prepare", "inat_sounds", root / "inat_sounds" / "train.json", "--out",
               root / "shards" / "inat_sounds-train", "--workers", "2", cwd=work)
    timings["prepare_s"] = time.monotonic() - t
    manifest = json.loads((root / "shards" / "inat_sounds-train" / "birdbridge.json").read_text())
    assert manifest["n_samples"] == 21 and manifest["n_skipped"] == 0 and manifest["sample_rate"] == 48000

    train_yaml = work / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({
        "data": {"kind": "shards", "path": str(root / "shards" / "inat_sounds-train")},
        "train": {"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path / "text-cache"),
                  "batch_size": 8, "max_epochs": 1, "num_workers": 2, "progress": False, "warmup_steps": 1}}))
    t = time.monotonic()
    _cli("train", train_yaml, "--out", work / "run", cwd=work)
    timings["train_s"] = time.monotonic() - t
    assert (work / "run" / "model" / "model.safetensors").is_file()
    assert json.loads((work / "run" / "skipped.json").read_text())["n_skipped"] == 0

    config, cfg = _eval_config(tmp_path, tiny_clap_dir, tiny_open_clip_dir)
    t = time.monotonic()
    res = _cli("eval", config, "--root", root, "--out", work / "table", cwd=work)
    timings["eval_s"] = time.monotonic() - t
    report = (work / "table" / "report.md").read_text()
    assert report.strip() and report.strip()[:200] in res.stdout  # the table comes out
    results = json.loads((work / "table" / "results.json").read_text())
    main = results["main"]["methods"]
    assert set(main) == set(cfg["methods"])
    for m, r in main.items():
        flat = json.dumps(r)
        assert "NaN" not in flat and "Infinity" not in flat, m
    assert set(results["prompt_ablation"]["arms"]) == set(cfg["prompt_ablation"])
    assert results["unseen"]["unseen_species"]  # one of the two Setophaga held out
    setting = results["setting"]
    assert setting["train_collection"]["n_audio"] == 21 and setting["eval_collection"]["n_species"] == 7
    assert setting["soundscapes"]["n_files"] == 2 and setting["soundscapes"]["n_species"] >= 7
    assert results["config"]["root"] == str(root)
    timings["total_s"] = time.monotonic() - t0
    print("rehearsal timings:", {k: round(v, 1) for k, v in timings.items()})
