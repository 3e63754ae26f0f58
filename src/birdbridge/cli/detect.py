"""``detect``: per-window species of long recordings, as CSV, Raven selection tables, Audacity labels or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..devices import resolve_device
from ._app import DEVICE_HELP, exit_status, run_with_progress, app, console, print_outputs


@app.command("detect")
def detect_cmd(
    audio: list[str] = typer.Argument(..., help="Recordings, folders (recursive), CSVs with a path column, or @list.txt."),
    model: str = typer.Option(..., "--model", "-m", help="A distilled birdbridge checkpoint (teacher space)."),
    species_list: Optional[Path] = typer.Option(None, "--species-list", help="CSV of species (scientific_name[, common_name, species_id, ranks]); any species, trained on or not."),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="Index directory: its species (when no --species-list) and its teacher."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, raven (Raven selection table), audacity (label track) or json."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (audacity with several recordings: a folder, one file each); default: stdout."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Leave out rows whose score (cosine with the species text) is below this."),
    window_s: Optional[float] = typer.Option(None, "--window-s", min=0.01, help="Window length (default: the model's window)."),
    hop_s: Optional[float] = typer.Option(None, "--hop-s", min=0.01, help="Window hop (default: the window, no overlap)."),
    k: int = typer.Option(3, "-k", "--top-k", min=1, help="Species per window."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Text-embedding cache (default ~/.cache/birdbridge/text)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    allow_teacher_mismatch: bool = typer.Option(False, "--allow-teacher-mismatch", help="Only warn when the model's teacher is not the index's."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any recording was skipped."),
    runtime: str = typer.Option("torch", "--runtime", help="torch, or onnx: the student int8 on ONNX Runtime (CPU; the onnx extra)."),
    precision: str = typer.Option("auto", "--precision", help="Torch weights: auto (bf16 on a CPU with AMX, else fp32), fp32 or bf16."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Processes decoding recordings ahead of the model (0: none; default: 1 when a core is spare beside --threads)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads of the model (default: torch's)."),
) -> None:
    """Score each window of each recording against species names (the teacher's text space): per-window top-k species."""
    from ..data.species_list import load_species_list
    from ..errors import ConfigError
    from ..retrieval import tables
    from ..retrieval.detect import detect_audio, load_detect_model
    from ..retrieval.embed import expand_inputs

    tables.check_format(fmt)
    device = resolve_device(device)  # an absent device fails before anything loads
    if species_list is None and index is None:
        raise ConfigError("detect needs the species to score: --species-list FILE (a CSV with a scientific_name "
                          "column) or --index DIR (the species of an index)")
    paths = expand_inputs(audio, "audio")  # a mistyped file fails here, before the model loads
    species = load_species_list(species_list) if species_list else None
    if fmt == "audacity" and len(paths) > 1 and out is None:
        raise ConfigError("Audacity labels are one file per recording: give --out DIR for several recordings")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if workers is None:
        import torch

        from ..data.prefetch import default_workers

        workers = default_workers(torch.get_num_threads())
    embedder = load_detect_model(model, device, runtime=runtime, precision=precision)
    results = run_with_progress("detecting", len(paths), lambda cb: detect_audio(
        embedder, paths, species=species, index=index, k=k, min_score=min_score, window_s=window_s, hop_s=hop_s,
        cache_dir=cache_dir, allow_teacher_mismatch=allow_teacher_mismatch, progress=cb, workers=workers))
    for r in results:
        if not r.ok:
            console.print(f"  skipped {r.path}: {r.error}" + (f" ({r.error_detail})" if r.error_detail else ""), markup=False)
    nyquist = embedder.sample_rate / 2  # the band the model hears: each selection spans it
    n = sum(len(r.detections) for r in results)
    if out is not None:
        written = tables.write(results, fmt, out, high_freq_hz=nyquist)
        where = str(written[0]) if len(written) == 1 else f"{len(written)} files in {out}"
        console.print(f"wrote {n} detections in {sum(len(r.windows) for r in results)} windows of "
                      f"{sum(r.ok for r in results)} recordings to {where}", markup=False)
        print_outputs(*((w, f"detections ({fmt})") for w in written))
    else:
        typer.echo(tables.render(results, fmt, high_freq_hz=nyquist), nl=False)
    failed = [r for r in results if not r.ok]
    exit_status(bool(failed) and len(failed) == len(results), len(failed), len(results), "recordings",
                 f"could be read ({', '.join(sorted({r.error for r in failed}))})", strict)
