"""Issue 25, point 3: progress in a log file is plain lines, birdbridge's own, every 10 % or 30 s.

``BIRDBRIDGE_PROGRESS_INTERVAL_S`` (birdbridge/progress.py) sets the interval; the console
scripts run from another directory with stdout and stderr piped (not a terminal).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from rich.console import Console

BIN = str(Path(sys.executable).with_name("birdbridge"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
LINE = re.compile(r"^(?P<stage>[^:]+): (?P<done>[\d.]+)/(?P<total>[\d.]+) \((?P<pct>\d+) %\)(?P<rest>.*)$")
BAR_CHARS = ("\x1b", "━", "╸", "█", "\r")


def _plain(stderr: str) -> None:
    for ch in BAR_CHARS:
        assert ch not in stderr, f"{ch!r} in a log: {stderr[-2000:]}"


def test_plain_lines_every_tenth_or_interval():
    from birdbridge.progress import PlainProgress, make_progress

    buf = io.StringIO()
    con = Console(file=buf, force_terminal=False, width=200)
    assert isinstance(make_progress(con), PlainProgress)  # off a terminal: lines, not a bar
    with make_progress(con) as prog:
        task = prog.add_task("embedding", total=200)
        for _ in range(200):
            prog.advance(task, 1)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 11, lines  # the start, each 10 % (10 .. 90), the end
    assert [int(LINE.match(ln)["pct"]) for ln in lines] == list(range(0, 101, 10))
    assert "done in" in lines[-1] and "/s" in lines[-1] and "ETA" in lines[5]
    # interval 0: every change is a line (what the subprocess tests below ask for)
    buf2 = io.StringIO()
    prog = PlainProgress(Console(file=buf2, width=200), interval=0)
    task = prog.add_task("x", total=5, info="")
    for i in range(5):
        prog.update(task, advance=1, info=f"loss {i}")
    assert len(buf2.getvalue().splitlines()) == 6 and buf2.getvalue().splitlines()[-1].endswith("loss 4")


def test_a_terminal_keeps_the_rich_bar():
    from rich.progress import Progress

    from birdbridge.progress import make_progress

    assert isinstance(make_progress(Console(file=io.StringIO(), force_terminal=True)), Progress)


def test_train_in_a_log_prints_birdbridges_progress_not_lightnings(tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    sr = 16000
    lines = ["path,scientific_name,split"]
    for i in range(8):
        t = np.arange(int(1.2 * sr)) / sr
        sf.write(tmp_path / f"r{i}.wav", (0.3 * np.sin(2 * np.pi * (800 + 600 * (i % 2)) * t)).astype(np.float32), sr)
        lines.append(f"r{i}.wav,{['Sayornis nigricans', 'Spinus psaltria'][i % 2]},train")
    (tmp_path / "rec.csv").write_text("\n".join(lines) + "\n")
    doc = {"data": {"kind": "csv", "path": "rec.csv"},
           "train": {"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path / "cache"),
                     "batch_size": 2, "max_epochs": 2, "num_workers": 0, "accelerator": "cpu", "devices": 1,
                     "warmup_steps": 1}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(doc))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run([BIN, "train", str(tmp_path / "train.yaml"), "--out", "run"], cwd=elsewhere, capture_output=True,
                         text=True, timeout=900, env={**ENV, "BIRDBRIDGE_PROGRESS_INTERVAL_S": "0"})
    assert res.returncode == 0, res.stderr[-3000:]
    _plain(res.stderr)
    assert "v_num" not in res.stderr and "Epoch 0" not in res.stderr and "it/s" not in res.stderr, res.stderr[-2000:]
    steps = [m for m in map(LINE.match, res.stderr.splitlines()) if m and m["stage"] == "training steps"]
    assert steps and steps[-1]["done"] == steps[-1]["total"] == "8", res.stderr[-2000:]  # 4 steps x 2 epochs
    assert "epoch 2/2, loss" in steps[-1]["rest"] and "done in" in steps[-1]["rest"]


def test_embed_images_in_a_log_prints_plain_lines(tiny_open_clip_dir, tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (32, 32), (40 * i, 90, 200 - 40 * i)).save(tmp_path / f"p{i}.png")
    res = subprocess.run([BIN, "embed-images", str(tmp_path), "--teacher", str(tiny_open_clip_dir), "--out",
                          str(tmp_path / "img.npy"), "--device", "cpu"], cwd=tmp_path.parent, capture_output=True,
                         text=True, timeout=600, env={**ENV, "BIRDBRIDGE_PROGRESS_INTERVAL_S": "0"})
    assert res.returncode == 0, res.stderr[-3000:]
    _plain(res.stderr)
    done = [m for m in map(LINE.match, res.stderr.splitlines()) if m and m["stage"] == "embedding images"]
    assert done and done[0]["done"] == "0" and done[-1]["done"] == done[-1]["total"] == "3", res.stderr
    assert "done in" in done[-1]["rest"]
