"""``detect`` over a deployment: folders of recorder files in, one table per recording, a combined table, a journal.

Layout of ``OUT`` (``detect INPUT... --out OUT``):

- one table per recording, mirroring the input tree relative to the folder given
  (``OUT/site1/20240501_053000.csv``; with several inputs each folder's own name comes
  first, files given one by one sit at the top);
- ``combined.csv`` / ``combined.selections.txt`` / ... (``--combine``, the default for several
  recordings): every recording's rows in input order, rebuilt from the per-recording tables
  at the end of every run (so a re-run never doubles a row); the Raven one runs on in time
  as a file sequence, with ``Begin Path`` and ``File Offset (s)`` (:mod:`.combine`);
- ``detect.journal.jsonl``: a header line with the run's settings key, then one line per
  recording, appended and fsynced *after* its table is in place (written atomically);
- ``detect.json``: model, teacher fingerprint, species list (path, digest, matches),
  settings, counts and the skipped recordings with their reasons.

A re-run with the same settings key (model weights, teacher, the species scored, window,
hop, k, min score, format) skips the recordings the journal has done whose table still
exists and whose file is unchanged (size and modification time); a recording the journal
records as unreadable is not retried unless the file changed since (a copy that finished,
a file replaced). A changed setting or model starts afresh: the journal is begun anew and
every recording is analysed again. A run killed at any point loses at most the recording
it was analysing; the half-written temp file a kill may leave beside a table is removed by
the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError, SkipLog
from ..io import append_line, atomic_write_text
from . import tables

JOURNAL = "detect.journal.jsonl"
SIDECAR = "detect.json"
JOURNAL_VERSION = 1
SUFFIXES = {"csv": ".csv", "raven": ".selections.txt", "audacity": ".txt", "json": ".json",
            "kaleidoscope": ".kaleidoscope.csv", "parquet": ".parquet"}
COMBINED = {"csv": "combined.csv", "raven": "combined.selections.txt", "json": "combined.json",
            "kaleidoscope": "combined.kaleidoscope.csv", "parquet": "combined.parquet"}  # Audacity: one file each
TABLE_SUFFIXES = (".csv", ".txt", ".json", ".parquet", ".tsv")


@dataclass(frozen=True)
class Recording:
    path: str  # as found (absolute when a folder was given absolutely)
    rel: str  # its place in the output tree (POSIX path, with the recording's extension)


def is_deployment_out(out: Path | None) -> bool:
    """Is ``--out`` a folder of per-recording tables (an existing folder, or a name without a table suffix)?"""
    if out is None:
        return False
    return out.is_dir() or out.suffix.lower() not in TABLE_SUFFIXES


def find_recordings(inputs: Sequence[str | Path], glob: str | None = None, problems: list | None = None) -> list[Recording]:
    """Recordings of the inputs, in order: a folder's audio files recursively (sorted; ``glob`` filters
    them by name, e.g. ``*.WAV``; hidden files and folders left out), files, ``@lists`` and CSVs as
    :func:`~.embed.expand_inputs` reads them. Each gets its place in the output tree.
    ``problems``: collect every wrong input's error there instead of raising at the first."""
    from ..data.generic import AUDIO_EXTS
    from .embed import expand_inputs

    found: list[tuple[str, str]] = []
    several = len(inputs) > 1
    for arg in map(str, inputs):
        root = Path(arg)
        if root.is_dir():
            files = sorted(f for f in root.rglob(glob or "*") if f.is_file() and f.suffix.lower() in AUDIO_EXTS
                           and not any(part.startswith(".") for part in f.relative_to(root).parts))
            if not files:
                what = f"audio files matching {glob!r}" if glob else "audio files"
                err = ConfigError(f"folder {arg} holds no {what} ({', '.join(sorted(AUDIO_EXTS))})")
                if problems is None:
                    raise err
                problems.append(err)
                continue
            prefix = (root.resolve().name + "/") if several else ""
            found.extend((str(f), prefix + f.relative_to(root).as_posix()) for f in files)
        else:
            found.extend((p, Path(p).name) for p in expand_inputs([arg], "audio", problems))
    out, used, seen = [], set(), set()
    for path, rel in found:
        if path in seen:  # the same file named twice is analysed once
            continue
        seen.add(path)
        base, n = rel, 1
        while rel.casefold() in used:
            n += 1
            stem, dot, ext = base.rpartition(".")
            rel = f"{stem}-{n}.{ext}" if dot else f"{base}-{n}"
        used.add(rel.casefold())
        out.append(Recording(path, rel))
    return out


def output_paths(recordings: Sequence[Recording], fmt: str) -> dict[str, str]:
    """Each recording's table, relative to OUT: its place with the format's suffix for the extension;
    recordings of one folder that share a stem (``a.wav``, ``a.flac``) keep their extension too."""
    stems: dict[str, int] = {}
    for r in recordings:
        key = str(Path(r.rel).with_suffix("")).casefold()
        stems[key] = stems.get(key, 0) + 1
    out = {}
    for r in recordings:
        p = Path(r.rel)
        name = p.stem if stems[str(p.with_suffix("")).casefold()] == 1 else p.name
        out[r.path] = (p.parent / (name + SUFFIXES[fmt])).as_posix()
    return out


def settings_key(settings: dict) -> str:
    return "k1:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def _stat(path: str) -> dict:
    try:
        st = os.stat(path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    except OSError:
        return {"size": None, "mtime_ns": None}


@dataclass
class JournalState:
    fresh: bool  # True: no journal, or one from other settings (then ``reason`` says which)
    reason: str = ""
    done: dict[str, dict] = field(default_factory=dict)  # path -> its last "done" line
    skipped: dict[str, dict] = field(default_factory=dict)  # path -> its last "skipped" line
    old_settings: dict | None = None  # the settings of a journal from other settings


def read_journal(out: Path, key: str) -> JournalState:
    """What a journal in ``out`` says was done with the settings ``key`` (a cut last line is ignored)."""
    path = out / JOURNAL
    if not path.is_file():
        return JournalState(True)
    lines = []
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            lines.append(json.loads(ln))
        except ValueError:
            continue
    if not lines or lines[0].get("kind") != "header":
        return JournalState(True, "the journal had no header")
    if lines[0].get("key") != key:
        return JournalState(True, "the settings or model changed", old_settings=lines[0].get("settings") or {})
    state = JournalState(False)
    for e in lines[1:]:
        if e.get("kind") == "done":
            state.done[e["path"]] = e
            state.skipped.pop(e["path"], None)
        elif e.get("kind") == "skipped":
            state.skipped[e["path"]] = e
            state.done.pop(e["path"], None)
    return state


def changed_settings(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


@dataclass
class DeploymentRun:
    """What a deployment run did (the CLI prints it; ``detect.json`` records it)."""

    out: Path
    n_recordings: int
    n_already: int = 0  # analysed by an earlier run (journal)
    n_skipped_before: int = 0  # unreadable in an earlier run, unchanged since
    n_analysed: int = 0
    fresh_reason: str = ""
    written: list[Path] = field(default_factory=list)
    combined: Path | None = None
    skips: SkipLog = field(default_factory=SkipLog)
    n_detections: int = 0
    n_windows: int = 0


def run_deployment(model, recordings: Sequence[Recording], out: str | Path, fmt: str, *, species, settings: dict,
                   describe: dict, index=None, k: int = 3, min_score: float | None = None,
                   min_confidence: float | None = None, window_s: float | None = None, hop_s: float | None = None, cache_dir=None,
                   allow_teacher_mismatch: bool = False, combine: bool = True,
                   progress: Callable[[int], None] | None = None,
                   on_start: Callable[[DeploymentRun, int], None] | None = None,
                   embedded=None) -> DeploymentRun:
    """Detect over ``recordings`` into the folder ``out``, resuming from its journal (module docstring).

    ``settings``: everything the run's tables depend on (its hash is the journal key);
    ``describe``: what ``detect.json`` records besides (model, species list, ...).
    ``on_start(run, n_to_do)`` is called once the journal is read, before the first recording.
    ``embedded``: the windows' vectors computed already (:func:`~.detect.detect_audio`'s).
    """
    from .combine import combine_tables
    from .detect import detect_audio

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; a deployment's tables go to a folder")
    out.mkdir(parents=True, exist_ok=True)
    key = settings_key(settings)
    state = read_journal(out, key)
    run = DeploymentRun(out, len(recordings))
    rel_out = output_paths(recordings, fmt)
    if state.fresh:
        if state.old_settings is not None:
            run.fresh_reason = "changed: " + (", ".join(changed_settings(state.old_settings, settings)) or "settings")
        elif state.reason:
            run.fresh_reason = state.reason
        atomic_write_text(out / JOURNAL, json.dumps({"kind": "header", "version": JOURNAL_VERSION, "key": key,
                                                     "settings": settings}) + "\n")
        state = JournalState(True)
    _remove_stale_temps(out, [*rel_out.values(), *COMBINED.values()])
    todo = []
    for r in recordings:
        now = _stat(r.path)
        done, bad = state.done.get(r.path), state.skipped.get(r.path)
        if done and done.get("output") == rel_out[r.path] and (out / done["output"]).is_file() \
                and _same_file(done, now):
            run.n_already += 1
        elif bad and _same_file(bad, now):
            run.n_skipped_before += 1
            run.skips.add(r.path, bad.get("reason", "unreadable"), bad.get("detail", ""))
        else:
            todo.append(r)
    if on_start:
        on_start(run, len(todo))
    if progress and len(todo) < len(recordings):
        progress(len(recordings) - len(todo))  # the bar counts every recording; these were done before
    for r in todo:
        res = detect_audio(model, [r.path], species=species, index=index, k=k, min_score=min_score,
                           min_confidence=min_confidence,
                           window_s=window_s, hop_s=hop_s, cache_dir=cache_dir,
                           allow_teacher_mismatch=allow_teacher_mismatch, embedded=embedded)[0]
        entry = {"path": r.path, **_stat(r.path)}
        if res.ok:
            target = out / rel_out[r.path]
            low, high = tables.model_band(model)
            tables.write([res], fmt, target, high_freq_hz=high, low_freq_hz=low)
            run.written.append(target)
            append_line(out / JOURNAL, json.dumps({"kind": "done", **entry, "output": rel_out[r.path],
                                                   "duration_s": res.duration_s, "n_windows": len(res.windows),
                                                   "n_detections": len(res.detections)}))
            run.n_analysed += 1
        else:
            run.skips.add(r.path, res.error or "unreadable", res.error_detail)
            append_line(out / JOURNAL, json.dumps({"kind": "skipped", **entry, "reason": res.error,
                                                   "detail": res.error_detail}))
        if progress:
            progress(1)
        _test_pause()
    state = read_journal(out, key)  # every recording done, by this run or an earlier one
    done = [(r, state.done[r.path]) for r in recordings if r.path in state.done]
    run.n_detections = sum(e.get("n_detections", 0) for _, e in done)
    run.n_windows = sum(e.get("n_windows", 0) for _, e in done)
    if combine and fmt in COMBINED and done:
        run.combined = out / COMBINED[fmt]
        combine_tables(fmt, [(out / e["output"], r.path, e.get("duration_s", 0.0)) for r, e in done], run.combined)
    run.skips.write_json(out / SIDECAR, **describe, settings=settings, key=key, format=fmt,
                         counts={"recordings": run.n_recordings, "analysed_now": run.n_analysed,
                                 "already_analysed": run.n_already, "done": len(done), "skipped": len(run.skips),
                                 "windows": run.n_windows, "detections": run.n_detections},
                         combined=run.combined.name if run.combined else None,
                         recordings=[{"path": r.path, "output": rel_out[r.path]} for r, _ in done])
    return run


def run_description(model, species, *, index=None, species_list: str | Path | None = None, match=None,
                    window_s: float | None = None, hop_s: float | None = None, k: int = 3,
                    min_score: float | None = None, fmt: str = "csv",
                    min_confidence: float | None = None) -> tuple[dict, dict]:
    """``(settings, describe)`` of a detect run: what its tables depend on (the journal key hashes it) and
    what ``detect.json`` records besides. The model is named by its weights (fingerprint of config +
    weights), so a moved checkpoint is the same model and a retrained one is not."""
    from .. import __version__
    from ..data.species_list import file_digest
    from ..encoders.identity import weights_fingerprint
    from .search import index_teacher, model_teacher

    source = getattr(getattr(model, "model", None), "source_dir", None)
    weights = weights_fingerprint(source) if source else None
    teacher_id, teacher_fp = index_teacher(index) if index is not None else model_teacher(model)
    window = float(window_s or model.window_samples / model.sample_rate)
    scored = hashlib.sha256(json.dumps([[s.id, s.scientific_name, s.common_name] for s in species]).encode())
    settings = {"model": weights or str(getattr(model, "name", model)), "teacher": teacher_fp or teacher_id,
                "species": "sha256:" + scored.hexdigest()[:24], "window_s": window, "hop_s": float(hop_s or window),
                "k": k, "min_score": min_score, "format": fmt}
    if min_confidence is not None:  # only when set: journals of runs without it keep their key
        settings["min_confidence"] = min_confidence
    describe = {"birdbridge_version": __version__,
                "model": {"id": str(getattr(model, "name", model)), "path": str(source) if source else None,
                          "weights_fingerprint": weights},
                "teacher": {"id": teacher_id, "fingerprint": teacher_fp},
                "species_list": None if species_list is None else {
                    "path": os.path.abspath(species_list), "digest": file_digest(species_list),
                    **(match.to_dict() if match is not None else {})},
                "index": None if index is None else os.path.abspath(index.root),
                "n_species": len(species)}
    return settings, describe


def _remove_stale_temps(out: Path, names: Sequence[str]) -> int:
    """Remove what a killed run's atomic writes left half-written: ``.NAME.<random>`` beside a table
    this run writes (:mod:`birdbridge.io`'s temp files; nothing else has that name). Returns how many."""
    by_dir: dict[Path, set[str]] = {}
    for n in names:
        p = out / n
        by_dir.setdefault(p.parent, set()).add(p.name)
    removed = 0
    for folder, expected in by_dir.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.is_file() and entry.name.startswith(".") and any(
                    entry.name.startswith(f".{e}.") and len(entry.name) > len(e) + 2 for e in expected):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _same_file(entry: dict, now: dict) -> bool:
    return entry.get("size") == now["size"] and entry.get("mtime_ns") == now["mtime_ns"]


def _test_pause() -> None:
    """Test hook only: ``BIRDBRIDGE_TEST_PAUSE_S`` seconds between recordings, so a test can kill a run
    in the middle of a deployment (tests/test_deployment.py); unset in real use."""
    pause = os.environ.get("BIRDBRIDGE_TEST_PAUSE_S")
    if pause:
        import time

        time.sleep(float(pause))


__all__ = ["JOURNAL", "SIDECAR", "SUFFIXES", "COMBINED", "Recording", "DeploymentRun", "is_deployment_out",
           "find_recordings", "output_paths", "settings_key", "read_journal", "run_deployment", "run_description"]
