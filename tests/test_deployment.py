"""Issue 22, points 1, 2 and 4: ``detect`` over a deployment -- folders in, one table per recording
mirroring the tree, a combined table, a journal that survives a kill, detect.json, recorder clock
times, Kaleidoscope and Parquet, and BirdNET-style species lists on the command line.

Real bird recordings (phoebe, 6 s MP3s) under AudioMoth and SM4 names, one corrupt and one empty
file among them; the tiny random-weight checkpoint (scores mean nothing, the files must be right).
The CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SPECIES = "Sayornis nigricans_Black Phoebe\nSpinus psaltria_Lesser Goldfinch\nStrix varia_Barred Owl\n"
# (place in the deployment, phoebe file): AudioMoth and SM4 names, and one without a timestamp
LAYOUT = [("siteA/moth1/20240501_053000.WAV", "129079.mp3"), ("siteA/moth1/20240501_060000.WAV", "129809.mp3"),
          ("siteA/moth2/20240502_053000.mp3", "132865.mp3"), ("siteB/SM4A_20240501_053000.mp3", "143244.mp3"),
          ("siteB/deeper/night/SM4A_20240501_230000.mp3", "143245.mp3"), ("siteB/notes.mp3", "150351.mp3")]
N_GOOD = len(LAYOUT)


def bb(*args, cwd: Path, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                         timeout=timeout)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    return res


def make_deployment(phoebe: Path, root: Path) -> Path:
    for rel, src in LAYOUT:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(phoebe / "audio" / src)  # a file's extension says nothing: read by content
    (root / "siteB" / "SM4A_20240502_010000.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)  # corrupt
    (root / "siteA" / "moth1" / "20240501_063000.WAV").write_bytes(b"")  # empty
    (root / "siteA" / ".hidden.wav").write_bytes(b"x")  # hidden: not a recording
    (root / "siteA" / "readme.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def deploy(phoebe, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("deploy")
    make_deployment(phoebe, d / "rec")
    (d / "species.txt").write_text(SPECIES)
    return d


def base(deploy: Path, model: Path, *extra) -> list:
    return ["detect", deploy / "rec", "--model", model, "--species-list", deploy / "species.txt",
            "--cache-dir", deploy / "cache", *extra]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_deployment_tree_combined_csv_journal_sidecar_and_rerun(deploy, tiny_distilled_dir, tmp_path):
    import pandas as pd

    out = tmp_path / "out"
    res = bb(*base(deploy, tiny_distilled_dir, "-k", "2", "--out", out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # one table per recording, mirroring the tree; the bad files are skipped with reasons, not fatal
    tables = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.csv") if p.name != "combined.csv")
    assert tables == sorted(str(Path(rel).with_suffix(".csv").as_posix()) for rel, _ in LAYOUT)
    assert "2 inputs skipped" in res.stderr and "SM4A_20240502_010000.wav" in res.stderr
    assert "species list: 3 entries" in res.stderr and "read by the teacher's text tower" in res.stderr
    combined = read_csv(out / "combined.csv")
    per = [r for t in tables for r in read_csv(out / t)]
    assert len(combined) == len(per) == N_GOOD * 6 * 2  # 6 s each, 1 s windows, k=2
    assert sorted(map(tuple, (r.values() for r in combined))) == sorted(map(tuple, (r.values() for r in per)))
    # clock times from the recorder names: AudioMoth and SM4; none for a name without a timestamp
    moth = [r for r in combined if r["recording"].endswith("20240501_060000.WAV")]
    assert [r["start_time"] for r in moth if r["rank"] == "1"] == [f"2024-05-01T06:00:0{i}.000" for i in range(6)]
    night = [r for r in combined if r["recording"].endswith("SM4A_20240501_230000.mp3")]
    assert night[-1]["start_time"] == "2024-05-01T23:00:05.000"
    assert all(r["start_time"] == "" for r in combined if r["recording"].endswith("notes.mp3"))
    df = pd.read_csv(out / "combined.csv")
    assert len(df) == len(combined) and df["recording"].nunique() == N_GOOD and df["score"].dtype == float
    # detect.json: model, teacher, species list, settings, counts, skips
    side = json.loads((out / "detect.json").read_text())
    assert side["model"]["weights_fingerprint"].startswith("w1:") and side["teacher"]["fingerprint"]
    assert side["species_list"]["n_entries"] == 3 and side["species_list"]["digest"].startswith("sha256:")
    assert side["settings"]["k"] == 2 and side["settings"]["window_s"] == 1.0 and side["format"] == "csv"
    assert side["counts"]["done"] == N_GOOD and side["n_skipped"] == 2
    assert sorted((Path(s["input"]).name, s["reason"]) for s in side["skipped"]) == [
        ("20240501_063000.WAV", "empty"), ("SM4A_20240502_010000.wav", "unreadable")]
    journal = [json.loads(ln) for ln in (out / "detect.journal.jsonl").read_text().splitlines()]
    assert journal[0]["kind"] == "header" and sum(e["kind"] == "done" for e in journal) == N_GOOD
    assert sum(e["kind"] == "skipped" for e in journal) == 2

    # the same settings again: nothing analysed twice, bad files not retried, nothing doubled
    stamps = {t: (out / t).stat().st_mtime_ns for t in tables}
    res = bb(*base(deploy, tiny_distilled_dir, "-k", "2", "--out", out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{N_GOOD} of {N_GOOD + 2} recordings already analysed (journal), skipping them" in res.stderr
    assert "2 recordings were unreadable in an earlier run and are unchanged: not retried" in res.stderr
    assert {t: (out / t).stat().st_mtime_ns for t in tables} == stamps
    assert read_csv(out / "combined.csv") == combined
    # a changed setting starts afresh, and says which
    res = bb(*base(deploy, tiny_distilled_dir, "-k", "1", "--out", out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "starting afresh" in res.stderr and "changed: k" in res.stderr and "already analysed" not in res.stderr
    assert len(read_csv(out / "combined.csv")) == N_GOOD * 6


def test_kill_mid_deployment_then_rerun_loses_and_doubles_nothing(deploy, tiny_distilled_dir, tmp_path):
    out = tmp_path / "out"
    args = [str(BIN), *map(str, base(deploy, tiny_distilled_dir, "--format", "raven", "--out", out))]
    # test-only hook (retrieval/deployment.py): a pause between recordings, so the kill lands mid-deployment
    proc = subprocess.Popen(args, cwd=tmp_path, env={**ENV, "BIRDBRIDGE_TEST_PAUSE_S": "1.5"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal = out / "detect.journal.jsonl"
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if journal.is_file():
            done = sum('"kind": "done"' in ln for ln in journal.read_text().splitlines())
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "combined.selections.txt").exists()
    before = sum('"kind": "done"' in ln for ln in journal.read_text().splitlines())
    assert 2 <= before < N_GOOD
    # what a kill during an atomic write leaves (io's temp file beside the table): the re-run clears it
    stale = out / "siteB" / ".notes.selections.txt.k1ll3d"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("half a table")
    mine = out / "siteB" / ".my-notes.txt"
    mine.write_text("a user's file")
    res = bb(*base(deploy, tiny_distilled_dir, "--format", "raven", "--out", out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{before} of {N_GOOD + 2} recordings already analysed (journal), skipping them" in res.stderr
    entries = [json.loads(ln) for ln in journal.read_text().splitlines()[1:]]
    assert sorted(e["path"] for e in entries if e["kind"] == "done") == sorted(
        str(deploy / "rec" / rel) for rel, _ in LAYOUT)  # each recording journaled done exactly once
    assert not stale.exists() and mine.read_text() == "a user's file"
    per = sorted(p for p in out.rglob("*.selections.txt") if p.name != "combined.selections.txt")
    assert len(per) == N_GOOD
    check_combined_raven(out / "combined.selections.txt", per, deploy)


def check_combined_raven(path: Path, per: list[Path], deploy: Path) -> None:
    import crowsetta
    import pandas as pd

    df = pd.read_csv(path, sep="\t")
    assert {"Begin Path", "File Offset (s)", "Species", "Score"} <= set(df.columns)
    assert list(df["Selection"]) == list(range(1, len(df) + 1))
    # every recording exactly once: 6 windows x 3 species each, no row doubled by the kill and re-run
    counts = df.groupby("Begin Path").size()
    assert sorted(counts.index) == sorted(str(deploy / "rec" / rel) for rel, _ in LAYOUT)
    assert set(counts) == {6 * 3} and len(df) == sum(len(pd.read_csv(p, sep="\t")) for p in per)
    # a file sequence: begin = the recordings before + the offset in the file
    order = list(dict.fromkeys(df["Begin Path"]))
    assert order == sorted(order)
    starts = {p: 6.0 * i for i, p in enumerate(order)}
    assert ((df["Begin Time (s)"] - df["Begin Path"].map(starts) - df["File Offset (s)"]).abs() < 1e-6).all()
    bboxes = crowsetta.formats.bbox.Raven.from_file(path, annot_col="Species").to_bbox()
    assert len(bboxes) == len(df) and bboxes[-1].offset == pytest.approx(6.0 * N_GOOD)


def test_kaleidoscope_parquet_and_json_deployments(deploy, tiny_distilled_dir, tmp_path):
    import pandas as pd

    res = bb(*base(deploy, tiny_distilled_dir, "-k", "1", "--format", "kaleidoscope", "--out", "k"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    k = pd.read_csv(tmp_path / "k" / "combined.kaleidoscope.csv")
    assert list(k.columns[:8]) == ["INDIR", "FOLDER", "IN FILE", "OFFSET", "DURATION", "scientific_name",
                                   "common_name", "confidence"]
    row = k[k["IN FILE"] == "SM4A_20240501_230000.mp3"].iloc[0]
    assert row["FOLDER"] == "night" and row["INDIR"] == str(deploy / "rec" / "siteB" / "deeper")
    assert row["OFFSET"] == 0.0 and row["DURATION"] == 1.0 and row["start_time"] == "2024-05-01T23:00:00.000"
    assert len(k) == N_GOOD * 6 and (tmp_path / "k" / "siteB" / "notes.kaleidoscope.csv").is_file()

    res = bb(*base(deploy, tiny_distilled_dir, "-k", "1", "--format", "parquet", "--out", "p"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    p = pd.read_parquet(tmp_path / "p" / "combined.parquet")
    assert len(p) == N_GOOD * 6 and str(p["score"].dtype) == "float32" and str(p["rank"].dtype) == "int32"
    assert str(p["start_time"].dtype).startswith("datetime64") and p["start_time"].isna().sum() == 6  # notes.mp3
    one = pd.read_parquet(tmp_path / "p" / "siteA" / "moth1" / "20240501_053000.parquet")
    assert one["start_time"].iloc[0] == pd.Timestamp("2024-05-01 05:30:00") and len(one) == 6

    res = bb(*base(deploy, tiny_distilled_dir, "-k", "1", "--format", "json", "--no-combine", "--out", "j"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "j" / "combined.json").exists()
    assert len(list((tmp_path / "j").rglob("*.json"))) == N_GOOD + 1  # + detect.json


def test_glob_and_single_file_keeps_one_table(deploy, tiny_distilled_dir, tmp_path):
    res = bb(*base(deploy, tiny_distilled_dir, "-k", "1", "--glob", "*.WAV", "--out", "wavs"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = sorted(p.relative_to(tmp_path / "wavs").as_posix() for p in (tmp_path / "wavs").rglob("*.csv"))
    assert got == ["combined.csv", "siteA/moth1/20240501_053000.csv", "siteA/moth1/20240501_060000.csv"]
    # another model (here: the same weights under another config, so another weights fingerprint) starts afresh
    other = tmp_path / "other-model"
    shutil.copytree(tiny_distilled_dir, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["training"] = {"note": "retrained"}
    (other / "config.json").write_text(json.dumps(cfg))
    res = bb(*base(deploy, other, "-k", "1", "--glob", "*.WAV", "--out", "wavs"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "starting afresh" in res.stderr and "changed: model" in res.stderr and "already analysed" not in res.stderr
    assert json.loads((tmp_path / "wavs" / "detect.json").read_text())["model"]["path"] == str(other.resolve())
    # one file and --out FILE: today's single table, no journal
    one = deploy / "rec" / "siteB" / "notes.mp3"
    res = bb("detect", one, "--model", tiny_distilled_dir, "--species-list", deploy / "species.txt", "--cache-dir",
             deploy / "cache", "--out", "one.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(read_csv(tmp_path / "one.csv")) == 6 * 3 and not (tmp_path / "detect.journal.jsonl").exists()


def test_species_list_matching_on_the_command_line(deploy, tiny_distilled_dir, tmp_path):
    """A checkpoint that records its training species: entries match it, others are still scored; --strict refuses them."""
    model = tmp_path / "model"
    shutil.copytree(tiny_distilled_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["train_species"] = ["Sayornis_nigricans", "Spinus psaltria"]
    (model / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "list.txt").write_text("sayornis NIGRICANS_Black Phoebe\nLesser goldfinch\nspinus_psaltria\nWrentit\n")
    one = deploy / "rec" / "siteB" / "notes.mp3"
    args = ["detect", one, "--model", model, "--species-list", "list.txt", "--cache-dir", deploy / "cache", "-k", "4"]
    res = bb(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    msg = " ".join(res.stderr.split())
    # "Lesser goldfinch" has no scientific name and the model records only ids: it is read as a name
    assert ("species list: 4 entries, 2 matched the model's species, 2 not (read by the teacher's text tower): "
            "Lesser goldfinch, Wrentit") in msg
    rows = list(csv.DictReader(res.stdout.splitlines()))
    # matched entries take the model's ids, the rest their own names; all four are scored in every window
    assert {r["species_id"] for r in rows} == {"Sayornis_nigricans", "Spinus psaltria", "Lesser goldfinch", "Wrentit"}
    assert len(rows) == 6 * 4
    res = bb(*args, "--strict", cwd=tmp_path)
    assert res.returncode == 2 and "--strict: 2 of 4 entries" in " ".join(res.stderr.split())
    assert "Wrentit" in res.stderr and res.stdout == ""
