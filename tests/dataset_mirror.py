"""A real HTTP server with Range support, and the paper's datasets rebuilt small in their real layouts.

Used by ``test_download.py`` and ``test_rehearsal.py``. The archives follow what each
release unpacks to (iNatSounds ``train/<audio_dir_name>/<uuid>.wav`` + ``train.json`` in
``train.json.tar.gz``; SSW60 ``ssw60/{taxa,audio_ml,images_*}.csv`` + media; the Zenodo
soundscapes ``annotations.csv`` + ``soundscape_data.zip``; the eBird v2024 CSV header),
laid out as a mirror: ``KIND/FILE``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import threading
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile as sf

# phoebe's species: (scientific, common, eBird code, order, family (English))
SPECIES = [
    ("Leiothlypis celata", "Orange-crowned Warbler", "orcwar", "Passeriformes", "Parulidae (New World Warblers)"),
    ("Melozone crissalis", "California Towhee", "caltow", "Passeriformes", "Passerellidae (New World Sparrows)"),
    ("Poecile rufescens", "Chestnut-backed Chickadee", "chbchi", "Passeriformes", "Paridae (Tits, Chickadees, and Titmice)"),
    ("Sayornis nigricans", "Black Phoebe", "blkpho", "Passeriformes", "Tyrannidae (Tyrant Flycatchers)"),
    ("Setophaga coronata", "Yellow-rumped Warbler", "yerwar", "Passeriformes", "Parulidae (New World Warblers)"),
    ("Setophaga townsendi", "Townsend's Warbler", "towwar", "Passeriformes", "Parulidae (New World Warblers)"),
    ("Spinus psaltria", "Lesser Goldfinch", "lesgol", "Passeriformes", "Fringillidae (Finches, Euphonias, and Allies)"),
]


# --------------------------------------------------------------------------- server


class RangeServer:
    """``ThreadingHTTPServer`` over a directory: HEAD, GET and ``Range: bytes=N-[M]`` (206 / 416).

    ``break_after[path] = n`` makes the next GET of ``path`` send its headers and ``n`` body
    bytes, then drop the connection (once). ``head_size[path]`` overrides HEAD's length.
    ``log`` records ``(method, path, range header)``.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.log: list[tuple[str, str, str | None]] = []
        self.break_after: dict[str, int] = {}
        self.head_size: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _file(self):
                rel = self.path.split("?", 1)[0].lstrip("/")
                p = server.root / rel
                return rel, (p if p.is_file() else None)

            def do_HEAD(self):
                rel, p = self._file()
                server.log.append(("HEAD", rel, None))
                if p is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(server.head_size.get(rel, p.stat().st_size)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self):
                rel, p = self._file()
                rng = self.headers.get("Range")
                server.log.append(("GET", rel, rng))
                if p is None:
                    self.send_error(404)
                    return
                data = p.read_bytes()
                start, end = 0, len(data) - 1
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start, end = int(a), int(b) if b else len(data) - 1
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start : end + 1]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.break_after.pop(rel, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "RangeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- archives


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """A CSV file in a dataset's layout (parents made), as the release files are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def wav_bytes(wave: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _tar(path: Path, files: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        for name, data in files.items():
            _add(tf, name, data)


def _csv(rows: list[dict], header: list[str] | None = None) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header or list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def build_inat(mirror: Path, clips: dict[str, dict[str, list[np.ndarray]]], sr: int = 22050) -> None:
    """``clips[split][scientific_name]`` -> waves; writes ``inat_sounds/{split}.tar.gz`` and ``{split}.json.tar.gz``."""
    cats = []
    for k, (sci, common, _, order, family) in enumerate(SPECIES):
        genus, epithet = sci.split()
        fam = family.split()[0]
        cats.append({"id": 3000 + k, "name": sci, "common_name": common, "supercategory": "Aves", "kingdom": "Animalia",
                     "phylum": "Chordata", "class": "Aves", "order": order, "family": fam, "genus": genus,
                     "specific_epithet": epithet, "audio_dir_name": f"{3000 + k:05d}_Animalia_Chordata_Aves_{order}_{fam}_{genus}_{epithet}",
                     "evaluation": 1})
    by_name = {c["name"]: c for c in cats}
    rid = 100000
    for split, per_species in clips.items():
        audio, anns, files = [], [], {}
        for sci, waves in per_species.items():
            cat = by_name[sci]
            for w in waves:
                rid += 1
                name = f"{split}/{cat['audio_dir_name']}/{uuid.UUID(int=rid)}.wav"
                files[name] = wav_bytes(w, sr)
                audio.append({"id": rid, "duration": round(len(w) / sr, 1), "file_name": name, "license": 0,
                              "rights_holder": "phoebe", "date": "2023-05-01T06:00:00-07:00", "latitude": 37.4,
                              "longitude": -122.1, "location_uncertainty": 10.0})
                anns.append({"id": rid, "audio_id": rid, "category_id": cat["id"]})
        doc = {"info": {"year": 2024, "version": 1, "description": f"iNatSounds rehearsal {split}"}, "categories": cats,
               "audio": audio, "annotations": anns,
               "licenses": [{"id": 0, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/4.0/"}]}
        _tar(mirror / "inat_sounds" / f"{split}.tar.gz", files)
        _tar(mirror / "inat_sounds" / f"{split}.json.tar.gz", {f"{split}.json": json.dumps(doc).encode()})


def build_ssw60(mirror: Path, clips: dict[str, dict[str, list[np.ndarray]]], photos: dict[str, list[bytes]],
                sr: int = 22050) -> None:
    """``clips[split][sci]`` waves and ``photos[sci]`` JPEG bytes (first for train, rest for test)."""
    files: dict[str, bytes] = {}
    taxa, audio_rows, nab_rows, inat_rows = [], [], [], []
    for label, (sci, common, code, order, family) in enumerate(SPECIES):
        taxa.append({"label": label, "species_code": code, "inat_taxon_id": 10000 + label, "inat2021_label": label,
                     "nabirds_labels": label, "common_name": common, "scientific_name": sci, "family": family, "order": order})
    asset = 0
    for split, per_species in clips.items():
        for sci, waves in per_species.items():
            label = [s[0] for s in SPECIES].index(sci)
            for w in waves:
                asset += 1
                files[f"ssw60/audio_ml/{asset}.wav"] = wav_bytes(w, sr)
                audio_rows.append({"asset_id": asset, "label": label, "split": split, "samplerate": sr, "channels": 1,
                                   "samples": len(w), "duration_seconds": round(len(w) / sr, 3)})
    for sci, jpgs in photos.items():
        label = [s[0] for s in SPECIES].index(sci)
        for j, data in enumerate(jpgs):
            split = "train" if j == 0 else "test"
            for src, rows in (("nabirds", nab_rows), ("inat", inat_rows)):
                asset += 1
                files[f"ssw60/images_{src}/{asset}.jpg"] = data
                row = {"asset_id": asset, "label": label, "split": split, "height": 150, "width": 150, "channels": 3}
                rows.append({**row, "photographer": "phoebe"} if src == "nabirds" else {**row, "rights_holder": "phoebe", "license_id": 1})
    files["ssw60/taxa.csv"] = _csv(taxa)
    files["ssw60/audio_ml.csv"] = _csv(audio_rows)
    img = ["asset_id", "label", "split", "height", "width", "channels"]
    files["ssw60/images_nabirds.csv"] = _csv(nab_rows, img + ["photographer"])
    files["ssw60/images_inat.csv"] = _csv(inat_rows, img + ["rights_holder", "license_id"])
    _tar(mirror / "ssw60" / "ssw60.tar.gz", files)


def build_soundscapes(mirror: Path, calls: list[tuple[str, np.ndarray]], sr: int = 32000, n_files: int = 2) -> None:
    """Hour-long files made small: ``calls`` (eBird code, wave at ``sr``) placed with gaps, FLAC in a zip."""
    d = mirror / "soundscapes"
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    with zipfile.ZipFile(d / "soundscape_data.zip", "w", zipfile.ZIP_STORED) as zf:
        for f in range(n_files):
            name = f"SSW_S0{f + 1}_20170701_060000Z.flac"
            parts, t = [], 0.0
            for code, w in calls[f::n_files]:
                gap = np.zeros(int(0.5 * sr), np.float32)
                parts += [gap, w.astype(np.float32)]
                rows.append({"Filename": name, "Start Time (s)": round(t + 0.5, 3), "End Time (s)": round(t + 0.5 + len(w) / sr, 3),
                             "Low Freq (Hz)": 1000, "High Freq (Hz)": 8000, "Species eBird Code": code})
                t += 0.5 + len(w) / sr
            zf.writestr(f"soundscape_data/{name}", wav_bytes(np.concatenate(parts), sr, "FLAC"))
    (d / "annotations.csv").write_bytes(_csv(rows))


def build_taxonomy(mirror: Path) -> None:
    rows = [{"TAXON_ORDER": 100 + k, "CATEGORY": "species", "SPECIES_CODE": code, "TAXON_CONCEPT_ID": "",
             "PRIMARY_COM_NAME": common, "SCI_NAME": sci, "ORDER": order, "FAMILY": family, "SPECIES_GROUP": "",
             "REPORT_AS": ""} for k, (sci, common, code, order, family) in enumerate(SPECIES)]
    rows.append({"TAXON_ORDER": 1, "CATEGORY": "species", "SPECIES_CODE": "ostric2", "TAXON_CONCEPT_ID": "",
                 "PRIMARY_COM_NAME": "Common Ostrich", "SCI_NAME": "Struthio camelus", "ORDER": "Struthioniformes",
                 "FAMILY": "Struthionidae (Ostriches)", "SPECIES_GROUP": "Ostriches", "REPORT_AS": ""})
    d = mirror / "ebird_taxonomy"
    d.mkdir(parents=True, exist_ok=True)
    (d / "eBird_taxonomy_v2024.csv").write_bytes("\ufeff".encode() + _csv(rows))


def checksums(mirror: Path, algo: str = "md5") -> str:
    """``md5sum``-style lines over every ``KIND/FILE`` in the mirror."""
    lines = []
    for p in sorted(mirror.rglob("*")):
        if p.is_file():
            lines.append(f"{hashlib.new(algo, p.read_bytes()).hexdigest()}  {p.relative_to(mirror).as_posix()}")
    return "\n".join(lines) + "\n"
