"""Issue 25, point 7: one vocabulary across verbs, and help screens a user can read.

Every verb's ``--help`` is read from the real console script, run from another directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).with_name("birdbridge"))
ENV = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
VERBS = ["", "version", "inspect", "embed-audio", "embed-images", "embed-text", "models", "index", "search", "serve",
         "detect", "demo", "eval", "score", "train", "data", "data download", "data prepare"]


def _help(verb: str, cwd) -> str:
    res = subprocess.run([BIN, *verb.split(), "--help"], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(scope="module")
def helps(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("elsewhere")
    return {v: _help(v, cwd) for v in VERBS}


def test_no_python_type_hints_in_any_help(helps):
    for verb, text in helps.items():
        hints = re.findall(r"<[a-z][a-z \[\]|,]*>", text)
        assert not hints, f"`birdbridge {verb} --help` shows Typer's type hints {hints}"
    # the plain metavars are there instead, and a flag shows none
    assert re.search(r"--index\s+-i\s+PATH", helps["search"])
    assert re.search(r"--strict\s+Exit", helps["search"])


def test_top_k_in_search_and_detect_alike(helps):
    for verb in ("search", "detect"):
        assert re.search(r"--top-k\s+-k\s", helps[verb]), verb
    assert not re.search(r"--k\s", helps["search"])  # the old spelling still works, hidden


def test_hop_defaults_are_explained_where_they_differ(helps):
    assert "half a window" in helps["search"] and "unlike detect" in helps["search"]
    assert "no overlap" in helps["detect"] and "unlike search" in helps["detect"]


def test_inspect_help_lists_every_loader_kind(helps):
    from birdbridge.data.loaders import loader_kinds

    text = " ".join(helps["inspect"].split())
    for kind in loader_kinds():
        assert kind in text, f"`inspect --help` does not list {kind}"
    assert "shards" in text


def test_old_k_spelling_still_reaches_search(tmp_path):
    # --k N parses (hidden); it fails later on the missing model, not as an unknown option
    res = subprocess.run([BIN, "search", "--k", "3", "--model", "nope", "--index", "nope", "rec.wav"], cwd=tmp_path,
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "No such option" not in res.stderr, res.stderr


def test_engine_options_alike_on_every_verb_that_maps_over_files(helps):
    def option_help(text: str, option: str) -> str:
        """The help column of ``option``'s row (its continuation lines joined), metavar and range left out."""
        rows = [ln.strip("│ ").strip() for ln in text.splitlines()]
        start = next(i for i, ln in enumerate(rows) if re.match(re.escape(option) + r"\s", ln))
        parts = [re.sub(re.escape(option) + r"\s+(-\w\s+)?([A-Z]+\s+)?(\[x>=[\d.]+\]\s+)?", "", rows[start], count=1)]
        for ln in rows[start + 1:]:
            if not ln or ln.startswith("-") or ln.startswith("╰"):
                break
            parts.append(ln)
        return " ".join(" ".join(parts).split())

    for option in ("--engine", "--ray-address", "--gpus-per-worker", "--part-size"):
        texts = {verb: option_help(helps[verb], option) for verb in ("embed-audio", "embed-images", "index", "detect")}
        assert len(set(texts.values())) == 1, texts  # one definition (cli/_app.py), the same words everywhere
    assert "ray extra" in option_help(helps["index"], "--engine")
    assert "--engine ray: model replicas" in option_help(helps["embed-images"], "--workers")
    assert "With --engine ray: model replicas" in option_help(helps["detect"], "--workers")
