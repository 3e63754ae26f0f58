"""``detect``: per-window species of long recordings, as CSV, Raven selection tables, Audacity labels, JSON,
Kaleidoscope CSV or Parquet; over whole deployments (folders of recorder files) with a resumable journal."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..devices import resolve_device
from ._checks import Preflight

# encoders.factory's RUNTIMES and PRECISIONS (it imports torch; tests/test_fast_answers.py checks they agree)
RUNTIMES = ("torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")
from ._app import DEVICE_HELP, exit_status, run_with_progress, app, console, print_outputs, warn_provenance
from ._app import ENGINE_OPTION, GPUS_PER_WORKER_OPTION, PART_SIZE_OPTION, RAY_ADDRESS_OPTION


@app.command("detect")
def detect_cmd(
    audio: list[str] = typer.Argument(..., help="Recordings, folders (recursive), CSVs with a path column, or @list.txt."),
    model: str = typer.Option(..., "--model", "-m", help="A distilled birdbridge checkpoint (teacher space)."),
    species_list: Optional[Path] = typer.Option(None, "--species-list", help="Species to score: BirdNET's 'Scientific name_Common name' lines, plain scientific or common names (one a line), or a CSV (scientific_name, common_name, species_id, ranks); any species, trained on or not."),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="Index directory: its species (when no --species-list) and its teacher."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, raven (Raven selection table), audacity (label track), json, kaleidoscope (Kaleidoscope CSV) or parquet."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="A folder (a deployment: one table per recording mirroring the input tree, a combined table, a journal that lets a re-run resume, detect.json) or one table file (.csv, .txt, .json, .parquet); default: stdout."),
    glob: Optional[str] = typer.Option(None, "--glob", help="Only a folder's files whose name matches this pattern (e.g. '*.WAV'), at any depth."),
    combine: Optional[bool] = typer.Option(None, "--combine/--no-combine", help="With --out DIR, also write one combined table (combined.csv, combined.selections.txt, ...); default: on for several recordings."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Leave out rows whose score (cosine with the species text) is below this."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", min=0.0, max=1.0, help="Leave out rows whose confidence (softmax over the species list at the model's learned temperature, 0-1) is below this."),
    window_s: Optional[float] = typer.Option(None, "--window-s", min=0.01, help="Window length (default: the model's window)."),
    hop_s: Optional[float] = typer.Option(None, "--hop-s", min=0.01, help="Window hop (default: the window, "
                                          "unlike search: no overlap, so each stretch of audio is one table row, as in "
                                          "BirdNET's tables)."),
    k: int = typer.Option(3, "-k", "--top-k", min=1, help="Species per window."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Text-embedding cache (default ~/.cache/birdbridge/text)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    allow_teacher_mismatch: bool = typer.Option(False, "--allow-teacher-mismatch", help="Only warn when the model's teacher is not the index's."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any recording was skipped, or when a species-list entry matches none of the model's species."),
    runtime: str = typer.Option("torch", "--runtime", help="torch, or onnx: the student int8 on ONNX Runtime (CPU; the onnx extra)."),
    precision: str = typer.Option("auto", "--precision", help="Torch weights: auto (bf16 on a CPU with AMX, else fp32), fp32 or bf16."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Processes decoding recordings ahead of the model (0: none; default: 1 when a core is spare beside --threads). With --engine ray: model replicas (Ray actors; default 1)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads of the model (default: torch's)."),
    engine: str = ENGINE_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    gpus_per_worker: float = GPUS_PER_WORKER_OPTION,
    part_size: int = PART_SIZE_OPTION,
) -> None:
    """Score each window of each recording against species names (the teacher's text space): per-window top-k species."""
    from ..data.species_list import read_species_list
    from ..errors import ConfigError
    from ..retrieval import deployment, tables

    checks = Preflight()  # every wrong input at once, before torch loads
    checks.attempt(tables.check_format, fmt)
    checks.choice(runtime, RUNTIMES, "--runtime")
    checks.choice(precision, PRECISIONS, "--precision")
    checks.model(model)
    if species_list is None and index is None:
        checks.problems.append(ConfigError(
            "detect needs the species to score: --species-list FILE (BirdNET-style names, one a line, or "
            "a CSV with a scientific_name column) or --index DIR (the species of an index)"))
    checks.index(index)
    entries = checks.attempt(read_species_list, species_list) if species_list else None
    checks.device(device)
    checks.engine(engine)
    recordings = deployment.find_recordings(audio, glob, checks.problems)
    deploy = deployment.is_deployment_out(out)
    if not deploy and fmt == "audacity" and len(recordings) > 1:
        checks.problems.append(ConfigError("Audacity labels are one file per recording: give --out DIR for several recordings"))
    if out is None and fmt == "parquet":
        checks.problems.append(ConfigError("parquet is a binary format: give --out FILE.parquet or --out DIR"))
    checks.done()
    ray_opts = None
    if engine == "ray":
        from ._app import ray_options

        ray_opts = ray_options(ray_address, workers or 1, gpus_per_worker, part_size)
        device = "cpu"  # here only the scoring; the model runs in the Ray actors
    from ..retrieval.detect import load_detect_model

    device = resolve_device(device)  # torch's word on the device, before anything loads
    if threads:
        import torch

        torch.set_num_threads(threads)
    if workers is None and ray_opts is None:
        import torch

        from ..data.prefetch import default_workers

        workers = default_workers(torch.get_num_threads())
    embedder = load_detect_model(model, device, runtime=runtime, precision=precision)
    index_obj, match, species = _species(embedder, index, species_list, entries, strict)
    from ..retrieval.confidence import fallback_note

    note = fallback_note(embedder)
    if note:
        console.print(note, markup=False, soft_wrap=True)
    warn_provenance(embedder, [r.path for r in recordings], model)
    common = dict(species=species, index=index_obj, k=k, min_score=min_score, min_confidence=min_confidence,
                  window_s=window_s, hop_s=hop_s,
                  cache_dir=cache_dir, allow_teacher_mismatch=allow_teacher_mismatch)
    staged = None
    if ray_opts is not None:  # the windows embedded on Ray into parts; scored and written below as ever
        staged, common["embedded"] = _windows_on_ray(model, embedder, recordings, out, deploy, window_s, hop_s, runtime,
                                                     precision, ray_opts)
    try:
        if deploy:
            # runtime and precision change scores (within docs/PERFORMANCE.md's bound): part of the journal key
            _deployment(embedder, recordings, out, fmt, combine, species_list, match, strict, common,
                        {"runtime": runtime, "precision": precision})
        else:
            _one_table(embedder, [r.path for r in recordings], out, fmt, strict, {**common, "workers": workers or 0})
    except typer.Exit:  # the tables are written (the exit status says what was skipped)
        _drop(staged)
        raise
    _drop(staged)  # an error above keeps the Ray parts: a re-run reuses them


def _drop(staged) -> None:
    if staged is not None:
        import shutil

        shutil.rmtree(staged, ignore_errors=True)


def _windows_on_ray(model, embedder, recordings, out, deploy, window_s, hop_s, runtime, precision, opts):
    """``--engine ray``: every recording's windows embedded on Ray into parts (``OUT/.ray-parts`` for a
    deployment, ``TABLE.parts`` beside one table, a temporary folder for stdout); the staging folder
    and a :class:`~birdbridge.retrieval.ray_engine.WindowVectors` over it."""
    import tempfile

    from ..retrieval.ray_engine import WindowVectors, detect_spec, run_job

    spec = detect_spec(model, embedder, window_s=window_s, hop_s=hop_s, runtime=runtime, precision=precision)
    where = out / ".ray-parts" if deploy else (out.with_name(out.name + ".parts") if out is not None
                                               else Path(tempfile.mkdtemp(prefix="birdbridge-ray-")))
    parts = run_with_progress("embedding windows on Ray", len(recordings), lambda cb: run_job(
        spec, [(r.path, {}) for r in recordings], where, opts, cb))
    m = parts.manifest()
    console.print(f"Ray: {m['parts_computed']} parts computed, {m['parts_reused']} already complete", markup=False)
    return where, WindowVectors(parts)


def _species(embedder, index, species_list, entries, strict):
    """The opened index, the species list's match (printed) and the species to score."""
    from ..retrieval.detect_species import species_for_detection
    from ..retrieval.index import ImageIndex

    index_obj = ImageIndex.open(index) if index is not None else None
    if entries is None:
        return index_obj, None, None  # the index's species (detect_audio reads them)
    match = species_for_detection(species_list, embedder, index_obj, strict=strict, entries=entries)
    console.print(match.summary(), markup=False, soft_wrap=True)
    for line in match.unmatched_lines():  # each name the model never heard, with close matches
        console.print(line, markup=False, soft_wrap=True)
    return index_obj, match, match.species


def _one_table(embedder, paths, out, fmt, strict, common) -> None:
    """Today's single table: to stdout or one file (several recordings in one table)."""
    from ..retrieval import tables
    from ..retrieval.detect import detect_audio

    results = run_with_progress("detecting", len(paths), lambda cb: detect_audio(embedder, paths, progress=cb, **common))
    for r in results:
        if not r.ok:
            console.print(f"  skipped {r.path}: {r.error}" + (f" ({r.error_detail})" if r.error_detail else ""), markup=False)
    low, high = tables.model_band(embedder)  # the band the model hears: each selection spans it
    n = sum(len(r.detections) for r in results)
    if out is not None:
        written = tables.write(results, fmt, out, high_freq_hz=high, low_freq_hz=low)
        where = str(written[0]) if len(written) == 1 else f"{len(written)} files in {out}"
        console.print(f"wrote {n} detections in {sum(len(r.windows) for r in results)} windows of "
                      f"{sum(r.ok for r in results)} recordings to {where}", markup=False)
        print_outputs(*((w, f"detections ({fmt})") for w in written))
    else:
        typer.echo(tables.render(results, fmt, high_freq_hz=high, low_freq_hz=low), nl=False)
    failed = [r for r in results if not r.ok]
    exit_status(bool(failed) and len(failed) == len(results), len(failed), len(results), "recordings",
                f"could be read ({', '.join(sorted({r.error for r in failed}))})", strict)


def _deployment(embedder, recordings, out, fmt, combine, species_list, match, strict, common, runtime) -> None:
    """``--out DIR``: one table per recording, a combined table, the journal and detect.json."""
    from ..retrieval import deployment

    settings, describe = deployment.run_description(
        embedder, common["species"] or common["index"].species(), index=common["index"], species_list=species_list,
        match=match, window_s=common["window_s"], hop_s=common["hop_s"], k=common["k"],
        min_score=common["min_score"], min_confidence=common["min_confidence"], fmt=fmt)
    settings = {**settings, **runtime}

    def started(run, n_todo):
        if run.fresh_reason:
            console.print(f"{out}: starting afresh, the journal there was from other settings ({run.fresh_reason})",
                          markup=False)
        if run.n_already:
            console.print(f"{run.n_already} of {run.n_recordings} recordings already analysed (journal), skipping them",
                          markup=False)
        if run.n_skipped_before:
            console.print(f"{run.n_skipped_before} recordings were unreadable in an earlier run and are unchanged: "
                          "not retried", markup=False)

    n_todo = len(recordings)
    run = run_with_progress("detecting", n_todo, lambda cb: deployment.run_deployment(
        embedder, recordings, out, fmt, settings=settings, describe=describe,
        combine=len(recordings) > 1 if combine is None else combine, progress=cb, on_start=started, **common))
    for s in run.skips.skips[:10]:
        console.print(f"  skipped {s.input}: {s.reason}" + (f" ({s.detail})" if s.detail else ""), markup=False)
    if len(run.skips) > 10:
        console.print(f"  ... and {len(run.skips) - 10} more (all listed in {out / deployment.SIDECAR})", markup=False)
    n_done = run.n_analysed + run.n_already
    console.print(f"wrote {run.n_detections} detections in {run.n_windows} windows of {n_done} recordings to {out} "
                  f"({run.n_analysed} analysed now, {run.n_already} by an earlier run; {run.skips.summary()})",
                  markup=False)
    print_outputs((out, f"one {fmt} table per recording"), (run.combined, "combined table") if run.combined else None,
                  (out / deployment.SIDECAR, "model, species list, settings, counts, skips"),
                  (out / deployment.JOURNAL, "journal: a re-run resumes"))
    exit_status(n_done == 0 and bool(recordings), len(run.skips), len(recordings), "recordings",
                f"could be read ({', '.join(sorted(run.skips.counts()))})", strict)
