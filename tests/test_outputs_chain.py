"""Issue 16, point 9: outputs that chain -- embed a CSV, score it as it is; a batch page stays light."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def bb(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    return res


def test_embed_csvs_then_score_them_with_no_hand_editing(phoebe, tiny_distilled_dir, tiny_open_clip_dir, tmp_path):
    q = bb("embed-audio", phoebe / "recordings.csv", "--model", tiny_distilled_dir, "--out", "rec.npy", cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    g = bb("embed-images", phoebe / "images.csv", "--teacher", tiny_open_clip_dir, "--out", "img.npy", cwd=tmp_path)
    assert g.returncode == 0, g.stderr
    rows = pq.read_table(tmp_path / "rec.parquet").to_pylist()
    assert len(rows) == 70 and {"label", "scientific_name", "common_name", "recordist", "license"} <= set(rows[0])
    assert all(r["label"] == r["scientific_name"] for r in rows)  # the species id, as the CSV loaders name it
    assert len({r["label"] for r in pq.read_table(tmp_path / "img.parquet").to_pylist()}) == 7
    res = bb("score", "rec.parquet", "img.parquet", "--out", "scores.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "scores.json").read_text())
    assert (result["n_queries"], result["n_gallery"]) == (70, 7) and not result["skipped"]
    m = result["metrics"]["species"]
    assert m["n_queries_scored"] == 70 and 0 <= m["map"] <= 1 and m["chance_map"] == pytest.approx(m["chance_map"])
    # a folder has no labels to keep: score says what is missing and how to get it, in one line
    bb("embed-images", phoebe / "images", "--teacher", tiny_open_clip_dir, "--out", "nolabel.npy", cwd=tmp_path)
    res = bb("score", "rec.parquet", "nolabel.parquet", cwd=tmp_path)
    assert res.returncode == 2 and "no 'label' column" in res.stderr and "scientific_name" in res.stderr


def test_batch_page_opens_with_a_summary_and_stays_light(phoebe, tiny_distilled_dir, tiny_open_clip_dir, tmp_path):
    res = bb("index", phoebe / "images.csv", "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = bb("search", phoebe / "audio", "--model", tiny_distilled_dir, "--index", "idx", "-k", "5", "--format", "html",
             "--out", "pages/phoebe.html", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    page_path = tmp_path / "pages" / "phoebe.html"
    page = page_path.read_text()
    size_mb = len(page.encode()) / 2**20
    print(f"batch page for 70 phoebe recordings: {size_mb:.2f} MB")
    assert size_mb < 2.5, f"{size_mb:.1f} MB for 70 recordings"  # inlined, it was 21 MB
    # the summary first: one row per recording, each linking to its section
    summary = page[page.index('<table class="summary">'):page.index("</table>")]
    assert page.index('<table class="summary">') < page.index('<section class="query"')
    assert summary.count('<a href="#q') == 70 and 'id="q70"' in page
    # every photo's pixels once, however many recordings found it
    found = re.findall(r'class="thumb i(\d+)"', page)
    assert len(found) == 70 * 5 and page.count("background-image:url(\"data:image/jpeg;base64,") == len(set(found)) <= 7
    # recordings are linked (not inlined), relative to the page, and the links resolve
    links = re.findall(r'<audio controls preload="none" src="([^"]+)"', page)
    assert len(links) == 70 and not any(link.startswith("data:") for link in links)
    assert all((page_path.parent / unquote(html.unescape(link))).resolve().is_file() for link in links)
