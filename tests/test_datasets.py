"""Dataset loaders on tiny replicas of each real format, plus image I/O."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from birdbridge.data.generic import load_csv, load_folder, split_family
from birdbridge.data.loaders import LOADERS, load_collection, register_loader
from birdbridge.data.images import image_info, load_image
from birdbridge.data.inat_sounds import load_inat_sounds
from birdbridge.data.records import Collection
from birdbridge.data.soundscapes import (
    load_segment_csv,
    load_soundscape_annotations,
    parse_codes,
    segment_grid,
    soundscape_segments,
)
from birdbridge.data.ssw60 import load_ssw60
from birdbridge.errors import BadInputError, ConfigError
from dataset_mirror import write_csv

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NO_SHARED = "../shared/data is absent (real data for tests); see shared/data/README.md"


def tone(path: Path, dur: float = 0.5, sr: int = 22050, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(dur * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32), sr, **kw)
    return path


# --------------------------------------------------------------------------- iNatSounds

CATS = [
    # id, name, common, class, order, family, evaluation
    (7, "Turdus migratorius", "American Robin", "Aves", "Passeriformes", "Turdidae", 1),
    (3, "Cardinalis cardinalis", "Northern Cardinal", "Aves", "Passeriformes", "Cardinalidae", 0),
    (12, "Gryllus pennsylvanicus", "Fall Field Cricket", "Insecta", "Orthoptera", "Gryllidae", 1),
    (40, "Lithobates catesbeianus", "American Bullfrog", "Amphibia", "Anura", "Ranidae", 0),
]


def make_inat(d: Path) -> Path:
    cats = []
    for cid, name, common, cls, order, fam, ev in CATS:
        genus, ep = name.split()
        phylum = "Arthropoda" if cls == "Insecta" else "Chordata"
        cats.append({
            "id": cid, "name": name, "common_name": common, "supercategory": cls, "kingdom": "Animalia",
            "phylum": phylum, "class": cls, "order": order, "family": fam, "genus": genus, "specific_epithet": ep,
            "audio_dir_name": f"{cid:05d}_Animalia_{phylum}_{cls}_{order}_{fam}_{genus}_{ep}", "evaluation": ev,
        })
    audio, ann = [], []
    plan = [(1, 7, "train"), (2, 7, "val"), (3, 3, "train"), (4, 12, "train"), (5, 40, "val"), (6, 99, "train"), (8, 7, "train")]
    for aid, cid, split in plan:
        dirname = next((c["audio_dir_name"] for c in cats if c["id"] == cid), "x")
        audio.append({"id": aid, "file_name": f"{split}/{dirname}/{aid:04d}.wav", "duration": 2.5 + aid, "license": 1,
                      "rights_holder": f"user{aid}", "date": "2023-05-01", "latitude": 42.0, "longitude": -76.5, "location_uncertainty": 10})
        if aid != 8:  # 8 has no annotation; 6 points at a category that does not exist
            ann.append({"id": aid, "audio_id": aid, "category_id": cid})
    data = {"info": {"year": 2024}, "categories": cats, "audio": audio, "annotations": ann,
            "licenses": [{"id": 1, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/4.0/"}]}
    p = d / "mini.json"
    p.write_text(json.dumps(data))
    return p


def test_inat_fields_and_default_birds(tmp_path):
    c = load_inat_sounds(make_inat(tmp_path))
    assert [s.id for s in c.species] == ["3", "7"]  # birds only, sorted by category id
    robin = c.species_by_id["7"]
    assert (robin.scientific_name, robin.common_name, robin.kingdom, robin.phylum, robin.class_) == (
        "Turdus migratorius", "American Robin", "Animalia", "Chordata", "Aves")
    assert (robin.order, robin.family, robin.genus, robin.epithet) == ("Passeriformes", "Turdidae", "Turdus", "migratorius")
    assert robin.extra == {"audio_dir_name": "00007_Animalia_Chordata_Aves_Passeriformes_Turdidae_Turdus_migratorius",
                           "evaluation": 1, "supercategory": "Aves"}
    assert sorted(a.extra["audio_id"] for a in c.audio) == [1, 2, 3]
    a1 = next(a for a in c.audio if a.extra["audio_id"] == 1)
    assert a1.path.startswith("train/00007_") and a1.species_id == "7" and a1.split == "train"
    assert a1.extra["duration_s"] == 3.5 and a1.extra["author"] == "user1"
    assert a1.extra["license"] == "http://creativecommons.org/licenses/by/4.0/" and a1.extra["latitude"] == 42.0
    assert c.root == str(tmp_path.resolve()) and c.resolve(a1.path) == tmp_path.resolve() / a1.path
    assert c.skips.counts() == {"unknown_category": 1, "no_annotation": 1}


def test_inat_filters(tmp_path):
    p = make_inat(tmp_path)
    every = load_inat_sounds(p, classes=None)
    assert len(every.species) == 4 and len(every.audio) == 5
    assert every.species_by_id["12"].phylum == "Arthropoda"
    assert [s.id for s in load_inat_sounds(p, classes=None, evaluation_only=True).species] == ["7", "12"]
    assert [s.id for s in load_inat_sounds(p, classes="amphibia").species] == ["40"]
    only = load_inat_sounds(p, classes=None, species=["Cardinalis cardinalis", 12])
    assert [s.id for s in only.species] == ["3", "12"] and len(only.audio) == 2
    val = load_inat_sounds(p, classes=None, split="val", media_root="/data/inat")
    assert {a.split for a in val.audio} == {"val"} and len(val.audio) == 2 and val.root == "/data/inat"


def test_inat_bad_file(tmp_path):
    with pytest.raises(ConfigError):
        load_inat_sounds(tmp_path / "none.json")
    (tmp_path / "x.json").write_text('{"images": []}')
    with pytest.raises(ConfigError):
        load_inat_sounds(tmp_path / "x.json")


def test_inat_real_test_json():
    p = SHARED / "inat_sounds" / "test.json"
    if not p.is_file():
        pytest.skip(NO_SHARED)
    c = load_inat_sounds(p, classes=None)
    assert len(c.audio) == 49527 and len(c.species) == 5569
    assert sum(s.class_ == "Aves" for s in c.species) == 3846
    assert sum(s.extra["evaluation"] for s in c.species) == 1212
    birds = load_inat_sounds(p)
    assert len(birds.species) == 3846 and all(a.split == "test" for a in birds.audio[:100])
    assert all(s.common_name and s.order and s.family for s in birds.species)


# --------------------------------------------------------------------------- SSW60


def make_ssw60(d: Path) -> Path:
    write_csv(d / "taxa.csv", ["label", "species_code", "inat_taxon_id", "inat2021_label", "nabirds_labels", "common_name", "scientific_name", "family", "order"], [
        [0, "amecro", 8021, 9433, "[950]", "American Crow", "Corvus brachyrhynchos", "Corvidae (Crows, Jays, and Magpies)", "Passeriformes"],
        [1, "mallar3", 6930, 3011, "[803, 804]", "Mallard", "Anas platyrhynchos", "Anatidae (Ducks, Geese, and Waterfowl)", "Anseriformes"],
    ])
    write_csv(d / "audio_ml.csv", ["asset_id", "label", "split", "samplerate", "channels", "samples", "duration_seconds"], [
        [1001, 0, "train", 22050, 1, 220500, 10.0], [1002, 1, "test", 22050, 1, 110250, 5.0], [1003, 7, "train", 22050, 1, 100, 0.0045],
    ])
    write_csv(d / "images_nabirds.csv", ["asset_id", "label", "split", "height", "width", "channels", "photographer"], [
        ["ab12", 0, "train", 300, 400, 3, "Jane Doe"], ["cd34", 1, "test", 300, 400, 3, "John Roe"],
    ])
    write_csv(d / "images_inat.csv", ["asset_id", "label", "split", "height", "width", "channels", "rights_holder", "license_id"], [
        ["ef56", 1, "train", 500, 375, 3, "birder1", 2], ["gh78", 0, "val", 500, 375, 3, "birder2", 4],
    ])
    return d


def test_ssw60_mapping(tmp_path):
    c = load_ssw60(make_ssw60(tmp_path))
    crow = c.species_by_id["amecro"]
    assert (crow.scientific_name, crow.common_name, crow.family, crow.order) == ("Corvus brachyrhynchos", "American Crow", "Corvidae", "Passeriformes")
    assert (crow.kingdom, crow.phylum, crow.class_, crow.genus, crow.epithet) == ("Animalia", "Chordata", "Aves", "Corvus", "brachyrhynchos")
    assert crow.extra["family_common_name"] == "Crows, Jays, and Magpies" and crow.extra["label"] == "0"
    assert c.species_by_id["mallar3"].extra["nabirds_labels"] == "[803, 804]"
    assert [(a.path, a.species_id, a.split) for a in c.audio] == [("audio_ml/1001.wav", "amecro", "train"), ("audio_ml/1002.wav", "mallar3", "test")]
    assert c.audio[0].extra == {"asset_id": "1001", "label": "0", "samplerate": 22050, "channels": 1, "samples": 220500, "duration_s": 10.0}
    assert c.skips.counts() == {"unknown_label": 1}
    nab = next(i for i in c.images if i.extra["source"] == "nabirds")
    assert nab.path == "images_nabirds/ab12.jpg" and nab.extra["author"] == "Jane Doe" and nab.extra["license"] == ""
    inat = [i for i in c.images if i.extra["source"] == "inat"]
    assert {i.split for i in inat} == {"train", "val"}
    assert inat[0].path == "images_inat/ef56.jpg" and inat[0].extra["author"] == "birder1" and inat[0].extra["license"] == "2"


def test_ssw60_options(tmp_path):
    root = make_ssw60(tmp_path)
    assert {i.extra["source"] for i in load_ssw60(root, image_sources=("inat",)).images} == {"inat"}
    assert load_ssw60(root, image_sources=()).images == []
    assert [a.split for a in load_ssw60(root, splits=["test"]).audio] == ["test"]
    with pytest.raises(ConfigError):
        load_ssw60(root, image_sources=("flickr",))
    with pytest.raises(ConfigError):
        load_ssw60(tmp_path / "nowhere")


def test_split_family():
    assert split_family("Anatidae (Ducks, Geese, and Waterfowl)") == ("Anatidae", "Ducks, Geese, and Waterfowl")
    assert split_family("Parulidae") == ("Parulidae", "")


# --------------------------------------------------------------------------- soundscapes


def make_soundscapes(d: Path) -> tuple[Path, Path]:
    tax = write_csv(d / "taxonomy.csv", ["SPECIES_CODE", "SCI_NAME", "PRIMARY_COM_NAME", "ORDER1", "FAMILY"], [
        ["amerob", "Turdus migratorius", "American Robin", "Passeriformes", "Turdidae (Thrushes and Allies)"],
        ["norcar", "Cardinalis cardinalis", "Northern Cardinal", "Passeriformes", "Cardinalidae (Cardinals and Allies)"],
        ["blujay", "Cyanocitta cristata", "Blue Jay", "Passeriformes", "Corvidae (Crows, Jays, and Magpies)"],
    ])
    for name in ("a.flac", "b.flac"):
        tone(d / "soundscape_data" / name, dur=12.0, sr=8000, format="FLAC")
    ann = write_csv(d / "annotations.csv", ["Filename", "Start Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)", "Species eBird Code"], [
        ["a.flac", 1.0, 2.0, 2000, 4000, "amerob"],
        ["a.flac", 4.5, 5.5, 1500, 3000, "norcar"],  # straddles segments 0 and 1
        ["a.flac", 7.0, 8.0, 1000, 2000, "????"],  # unknown code: reported, not a target
        ["b.flac", 2.0, 5.0, 1000, 2000, "amerob"],  # ends exactly where segment 1 starts
        ["b.flac", 9.0, 9.0, 1000, 2000, "norcar"],  # zero-length: bad row
    ])
    return ann, tax


def test_soundscape_annotations(tmp_path):
    ann, tax = make_soundscapes(tmp_path)
    sc = load_soundscape_annotations(ann, tax)
    assert sc.files == ["a.flac", "b.flac"] and len(sc.events) == 4
    assert sc.audio_root == str(tmp_path.resolve() / "soundscape_data")  # auto-detected
    assert [s.id for s in sc.collection.species] == ["amerob", "norcar"]  # only annotated species
    rob = sc.collection.species_by_id["amerob"]
    assert (rob.scientific_name, rob.common_name, rob.order, rob.family) == ("Turdus migratorius", "American Robin", "Passeriformes", "Turdidae")
    assert sc.unknown_codes == {"????": 1}
    assert sc.collection.skips.counts() == {"unknown_code": 1, "bad_row": 1}
    ev = sc.events[1]
    assert (ev.file, ev.start_s, ev.end_s, ev.code, ev.species_id, ev.low_hz, ev.high_hz) == ("a.flac", 4.5, 5.5, "norcar", "norcar", 1500.0, 3000.0)
    items = sc.collection.audio
    assert len(items) == 3 and (items[0].start_s, items[0].end_s) == (1.0, 2.0)
    assert len(load_soundscape_annotations(ann, tax, all_species=True).collection.species) == 3


def test_soundscape_segments_and_targets(tmp_path):
    ann, tax = make_soundscapes(tmp_path)
    sc = load_soundscape_annotations(ann, tax)
    segs, y = soundscape_segments(sc)  # durations from the FLAC headers: 12 s each
    assert segs[:3] == [("a.flac", 0.0, 5.0), ("a.flac", 5.0, 10.0), ("a.flac", 10.0, 12.0)] and len(segs) == 6
    assert y.dtype == np.uint8 and y.shape == (6, 2)
    assert y.tolist() == [[1, 1], [0, 1], [0, 0], [1, 0], [0, 0], [0, 0]]
    _, y2 = soundscape_segments(sc, min_overlap_s=0.6)
    assert y2[:, 1].sum() == 0  # 0.5 s on either side is below the minimum
    segs3, y3 = soundscape_segments(sc, 5.0, 2.5, durations={"a.flac": 6.0, "b.flac": 5.0})
    assert [s[1] for s in segs3] == [0.0, 2.5, 5.0, 0.0, 2.5] and y3.shape == (5, 2)
    assert y3.tolist() == [[1, 1], [0, 1], [0, 1], [1, 0], [1, 0]]


def test_soundscape_duration_fallback_warns(tmp_path):
    ann, tax = make_soundscapes(tmp_path)
    sc = load_soundscape_annotations(ann, tax, audio_root=tmp_path / "elsewhere")
    with pytest.warns(UserWarning, match="duration unknown"):
        segs, _ = soundscape_segments(sc)
    assert segs[-1] == ("b.flac", 0.0, 5.0)  # b's last event ends at 5 s


def test_soundscape_needs_taxonomy(tmp_path):
    ann = write_csv(tmp_path / "sub" / "annotations.csv", ["Filename", "Start Time (s)", "End Time (s)", "Species eBird Code"], [["a.flac", 0, 1, "amerob"]])
    with pytest.raises(ConfigError, match="taxonomy"):
        load_soundscape_annotations(ann)


def test_segment_csv(tmp_path):
    _, tax = make_soundscapes(tmp_path)
    seg = write_csv(tmp_path / "test_5s.csv", ["filepath", "start_time", "end_time", "ebird_code_multilabel"], [
        ["a.flac", 0, 5, "amerob;norcar"],
        ["a.flac", 5, 10, ""],
        ["a.flac", 2.5, 7.5, "['blujay']"],  # overlapping segment: its own labels only
        ["b.flac", 0, 5, "norcar zzzzzz"],
    ])
    sc = load_segment_csv(seg, tax)
    segs, y = soundscape_segments(sc, window_s=99)  # window ignored for fixed segments
    assert segs == [("a.flac", 0.0, 5.0), ("a.flac", 5.0, 10.0), ("a.flac", 2.5, 7.5), ("b.flac", 0.0, 5.0)]
    assert [s.id for s in sc.collection.species] == ["amerob", "blujay", "norcar"]
    assert y.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert sc.unknown_codes == {"zzzzzz": 1}
    coll = load_collection("soundscape", seg, taxonomy_csv=tax)  # dispatcher tells formats apart
    assert coll.meta["n_events"] == 5


def test_parse_codes_and_grid():
    assert parse_codes("['amerob', 'norcar']") == ["amerob", "norcar"]
    assert parse_codes("amerob, norcar;blujay") == ["amerob", "norcar", "blujay"]
    assert parse_codes("") == []
    assert segment_grid(10.0, 5.0, 5.0) == [(0.0, 5.0), (5.0, 10.0)]
    assert segment_grid(0.0, 5.0, 5.0) == []


# --------------------------------------------------------------------------- generic CSV / folders


def test_generic_csv_audio_and_images(tmp_path):
    tone(tmp_path / "media" / "r1.wav")
    p = write_csv(tmp_path / "data.csv", ["Path", "Scientific Name", "common_name", "class", "order", "species_id", "split", "start_s", "end_s", "recordist", "licence", "site"], [
        ["media/r1.wav", "Lithobates  catesbeianus", "American Bullfrog", "Amphibia", "Anura", "", "train", "0.5", "2", "A. Person", "CC-BY", "pond"],
        ["media/r2.flac", "Setophaga coronata", "", "", "", "yrwarb", "test", "", "", "", "", ""],
        ["media/p1.jpg", "Setophaga coronata", "Yellow-rumped Warbler", "", "", "yrwarb", "train", "", "", "", "", ""],
        ["", "Setophaga coronata", "", "", "", "", "", "", "", "", "", ""],
        ["media/x.dat", "Setophaga coronata", "", "", "", "", "", "", "", "", "", ""],
        ["media/r3.wav", "", "", "", "", "", "", "", "", "", "", ""],
    ])
    c = load_csv(p)
    frog = c.species_by_id["Lithobates catesbeianus"]  # whitespace collapsed into a stable id
    assert (frog.kingdom, frog.phylum, frog.class_, frog.order, frog.genus, frog.epithet) == ("Animalia", "Chordata", "Amphibia", "Anura", "Lithobates", "catesbeianus")
    warbler = c.species_by_id["yrwarb"]
    assert warbler.common_name == "Yellow-rumped Warbler" and warbler.class_ == "Aves"  # filled by a later row
    assert len(c.audio) == 2 and len(c.images) == 1
    a = c.audio[0]
    assert (a.start_s, a.end_s, a.split) == (0.5, 2.0, "train")
    assert a.extra == {"recordist": "A. Person", "license": "CC-BY", "site": "pond", "author": "A. Person"}
    assert c.resolve(a.path) == tmp_path.resolve() / "media" / "r1.wav"
    assert c.skips.counts() == {"bad_row": 2, "unknown_media_type": 1}
    only_images = load_csv(p, kind="images")
    assert len(only_images.audio) == 0 and len(only_images.images) == 4  # extension ignored when kind is given
    with pytest.raises(ConfigError):
        load_csv(write_csv(tmp_path / "bad.csv", ["file", "species"], [["a", "b"]]))


def test_folder_per_species(tmp_path):
    root = tmp_path / "birds"
    tone(root / "Setophaga_coronata" / "a.wav")
    tone(root / "Setophaga_coronata" / "sub" / "b.flac", format="FLAC")
    Image.new("RGB", (16, 16)).save(root / "Setophaga_coronata" / "photo.jpg")
    (root / "Setophaga_coronata" / "notes.txt").write_text("x")
    (root / "Setophaga_coronata" / ".DS_Store").write_text("x")
    tone(root / "Bufo bufo" / "c.wav")
    write_csv(root / "species.csv", ["folder", "common_name", "class", "order"], [["Bufo bufo", "Common Toad", "Amphibia", "Anura"]])
    c = load_folder(root)
    assert [s.id for s in c.species] == ["Bufo bufo", "Setophaga coronata"]
    toad = c.species_by_id["Bufo bufo"]
    assert (toad.common_name, toad.class_, toad.order) == ("Common Toad", "Amphibia", "Anura")
    assert sorted(a.path for a in c.audio) == ["Bufo bufo/c.wav", "Setophaga_coronata/a.wav", "Setophaga_coronata/sub/b.flac"]
    assert [i.path for i in c.images] == ["Setophaga_coronata/photo.jpg"]
    assert c.skips.counts() == {"unknown_media_type": 1}
    assert load_folder(root, "audio").images == [] and load_folder(root, "images").audio == []


def test_folder_with_splits(tmp_path):
    for split in ("train", "test"):
        tone(tmp_path / split / "Spinus_psaltria" / f"{split}.wav")
    c = load_folder(tmp_path)
    assert [s.id for s in c.species] == ["Spinus psaltria"]
    assert sorted((a.split, a.path) for a in c.audio) == [("test", "test/Spinus_psaltria/test.wav"), ("train", "train/Spinus_psaltria/train.wav")]


def test_phoebe_loads_as_is():
    if not (SHARED / "phoebe").is_dir():
        pytest.skip(NO_SHARED)
    rec = load_collection("csv", SHARED / "phoebe" / "recordings.csv")
    assert len(rec.audio) == 70 and len(rec.species) == 7 and not rec.images and not rec.skips
    a = rec.audio[0]
    assert a.start_s is None and float(a.extra["clip_end_s"]) - float(a.extra["clip_start_s"]) == pytest.approx(6.0)
    assert a.extra["author"] == a.extra["recordist"] and a.extra["license"].startswith("https://creativecommons.org/")
    assert rec.resolve(a.path).is_file()
    img = load_collection("csv", SHARED / "phoebe" / "images.csv", kind="images")
    assert len(img.images) == 7 and {s.id for s in img.species} == {s.id for s in rec.species}
    assert all(i.extra["author"] for i in img.images)
    assert load_image(img.resolve(img.images[0].path)).size == (150, 150)


def test_dispatcher(tmp_path):
    assert load_collection("inat_sounds", make_inat(tmp_path), classes=None).name == "inat_sounds:mini"
    assert load_collection("ssw60", make_ssw60(tmp_path / "ssw")).name == "ssw60"
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        load_collection("nope", tmp_path)
    register_loader("_test_kind", lambda path, **o: Collection("t", []))
    try:
        assert load_collection("_test_kind", tmp_path).name == "t"
    finally:
        LOADERS.pop("_test_kind")


# --------------------------------------------------------------------------- images


def png_bomb(path: Path, w: int, h: int) -> Path:
    """A valid PNG header claiming w×h pixels, with almost no data: a tiny file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def img_reason(path, **kw) -> str:
    with pytest.raises(BadInputError) as ei:
        load_image(path, **kw)
    return ei.value.reason


def test_image_conversions(tmp_path):
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    im = load_image(tmp_path / "cmyk.jpg")
    assert im.mode == "RGB" and np.asarray(im)[5, 5].tolist() == [255, 0, 0]
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    px = np.asarray(load_image(tmp_path / "g16.png"))[0, 0]
    assert px.tolist() == [156, 156, 156]  # 40000/65535·255, not clipped to 255
    Image.new("L", (20, 20), 77).save(tmp_path / "grey.png")
    assert np.asarray(load_image(tmp_path / "grey.png"))[0, 0].tolist() == [77, 77, 77]
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png"))[0, 0].tolist() == [255, 255, 255]  # onto white
    Image.new("LA", (20, 20), (0, 255)).save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png"))[0, 0].tolist() == [0, 0, 0]
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "pal.gif")
    assert np.asarray(load_image(tmp_path / "pal.gif"))[0, 0].tolist() == [10, 200, 30]
    pal.save(tmp_path / "paltr.png", transparency=1)
    assert np.asarray(load_image(tmp_path / "paltr.png"))[0, 0].tolist() == [255, 255, 255]
    Image.new("1", (20, 20), 1).save(tmp_path / "bw.png")
    assert np.asarray(load_image(tmp_path / "bw.png"))[0, 0].tolist() == [255, 255, 255]
    Image.new("RGB", (30, 20), (1, 2, 3)).save(tmp_path / "rgb.webp", lossless=True)
    assert load_image(tmp_path / "rgb.webp").size == (30, 20)


def test_image_exif_rotation(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)
    assert load_image(tmp_path / "rot.jpg", exif_transpose=False).size == (40, 20)


def test_image_bad_files(tmp_path):
    assert img_reason(tmp_path / "nope.jpg") == "missing"
    Image.new("RGB", (200, 200), (10, 200, 30)).save(tmp_path / "full.jpg", quality=95)
    b = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(b[: len(b) // 2])
    assert img_reason(tmp_path / "trunc.jpg") == "truncated"
    (tmp_path / "text.jpg").write_text("not an image")
    assert img_reason(tmp_path / "text.jpg") == "unreadable"
    (tmp_path / "zero.png").write_bytes(b"")
    assert img_reason(tmp_path / "zero.png") == "unreadable"
    Image.new("RGB", (1, 1)).save(tmp_path / "pixel.png")
    assert img_reason(tmp_path / "pixel.png") == "too_small"
    assert load_image(tmp_path / "pixel.png", min_side=1).size == (1, 1)
    bomb = png_bomb(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 200
    assert img_reason(bomb) == "too_large"  # Pillow's own limit
    assert img_reason(png_bomb(tmp_path / "big.png", 9000, 9000)) == "too_large"  # ours (81 MP > 64 MP)
    assert img_reason(tmp_path / "full.jpg", max_pixels=100) == "too_large"
    assert image_info(png_bomb(tmp_path / "b2.png", 9000, 9000))["width"] == 9000  # header only, no decode
    assert image_info(tmp_path / "full.jpg") == {"width": 200, "height": 200, "mode": "RGB", "format": "JPEG", "n_frames": 1}
