"""The ``birdbridge`` command line. Each verb is a thin wrapper over the Python API.

Errors a user can act on (:class:`~birdbridge.errors.BirdbridgeError`) are printed as
one line and exit with status 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import BirdbridgeError

app = typer.Typer(
    name="birdbridge",
    help="Retrieve pictures of bird species from bird sound (audio distilled onto BioCLIP-2's text space).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """birdbridge: bird sound in, pictures of the singer out."""


@app.command()
def version() -> None:
    """Print the installed birdbridge version."""
    from . import __version__

    typer.echo(__version__)


# --- verbs are registered below; keep each a thin wrapper over the API ---


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Output directory."),
    seed: int = typer.Option(0, "--seed", help="Seed for the world, models and training."),
) -> None:
    """Run the paper's whole loop offline on a synthetic world and report retrieval mAP."""
    from .demo.run import run_demo

    run_demo(out, seed)


@app.command("inspect")
def inspect_cmd(
    kind: str = typer.Argument(..., help="Dataset kind: inat_sounds, ssw60, soundscape, csv, folder."),
    path: Path = typer.Argument(..., help="Annotation file (JSON/CSV) or dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    no_media: bool = typer.Option(False, "--no-media", help="Only read annotations; do not look for media files."),
    max_files: Optional[int] = typer.Option(None, "--max-files", help="Check at most this many media files."),
    deep: bool = typer.Option(False, "--deep", help="Decode every checked file (finds truncation, NaNs, silence)."),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", help="Soundscapes: CSV mapping eBird codes to species."),
    media: Optional[str] = typer.Option(None, "--media", help="csv/folder: audio, images or auto (by extension)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any media file is bad or missing."),
) -> None:
    """Count recordings, images and species of a dataset and list bad or missing files."""
    import json

    from .data.inspect import format_inspect, inspect_dataset

    opts: dict = {"taxonomy_csv": taxonomy} if taxonomy is not None else {}
    if media is not None:
        opts["kind"] = media
    report = inspect_dataset(kind, path, check_media=not no_media, max_files=max_files, deep=deep, **opts)
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else format_inspect(report))
    m, n_bad = report.get("media", {}), report.get("bad_files", {}).get("n", 0)
    if m.get("n_checked") and m.get("n_bad", 0) >= m["n_checked"]:
        console.print(f"[bold red]error:[/] none of the {m['n_checked']} checked media files is usable")
        raise typer.Exit(1)
    if strict and n_bad:
        console.print(f"[bold red]error:[/] --strict: {n_bad} media files are bad or missing")
        raise typer.Exit(1)


# --- embedding verbs (media in, .npy + .parquet/.json sidecars out) ---


def _out_npy(out: Path) -> Path:
    return out if out.suffix == ".npy" else out.with_name(out.name + ".npy")


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _run_with_progress(label: str, total: int, job):
    """Run ``job(progress_callback)`` under a rich progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as prog:
        task = prog.add_task(label, total=total)
        return job(lambda n: prog.advance(task, n))


def _exit_status(none_done: bool, n_skipped: int, n_inputs: int, what: str, none_msg: str, strict: bool) -> None:
    """The exit rule every many-input verb shares: 0 when at least one input succeeded
    (``--strict``: when none was skipped), else 1 with one line saying why."""
    if none_done:
        console.print(f"[bold red]error:[/] none of the {n_inputs} {what} {none_msg}")
        raise typer.Exit(1)
    if strict and n_skipped:
        console.print(f"[bold red]error:[/] --strict: {n_skipped} of {n_inputs} {what} were skipped")
        raise typer.Exit(1)


def _save_and_report(emb, out: Path, n_inputs: int, what: str, strict: bool) -> None:
    """Write the outputs, say what was skipped and why, and set the exit status.

    Exit 0 when at least one input was embedded (``--strict``: when none was skipped);
    1 otherwise. The sidecar JSON is written either way, so the reasons stay on disk.
    """
    path = emb.save(_out_npy(out))
    n_ok = len({r["input"] for r in emb.rows})
    dim = emb.vectors.shape[1] if emb.vectors.ndim == 2 else 0
    console.print(f"wrote {len(emb.vectors)} rows ({dim}-d, {emb.meta.get('space')} space) from {n_ok}/{n_inputs} "
                  f"{what} to {path}; {emb.skips.summary()}")
    for skip in emb.skips.skips[:10]:
        console.print(f"  skipped {skip.input}: {skip.reason}" + (f" ({skip.detail})" if skip.detail else ""), markup=False)
    if len(emb.skips) > 10:
        console.print(f"  ... and {len(emb.skips) - 10} more (all listed in {path.with_suffix('.json')})")
    _exit_status(n_ok == 0, len(emb.skips), n_inputs, what,
                 f"could be embedded (reasons in {path.with_suffix('.json')})", strict)


@app.command("embed-audio")
def embed_audio_cmd(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders (searched recursively), CSVs with a path column, or @list.txt."),
    model: str = typer.Option(..., "--model", "-m", help="Distilled checkpoint (teacher space), CLAP id/dir (its own space), or 'birdnet'."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy (float32 unit rows); .parquet and .json sidecars go beside it."),
    per_window: bool = typer.Option(False, "--per-window", help="One row per window instead of one per recording."),
    hop_s: Optional[float] = typer.Option(None, "--hop-s", min=0.001, help="Window hop in seconds (default: half the model's window)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Windows per forward pass."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, or auto."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any input was skipped."),
) -> None:
    """Embed recordings: long ones over sliding windows, averaged and renormalised (or kept per window)."""
    from .encoders.factory import load_audio_embedder
    from .retrieval.embed import embed_audio, expand_inputs

    from .distributed import rank_device, run_sharded

    paths = expand_inputs(inputs, "audio")
    embedder = load_audio_embedder(model, device=rank_device(_device(device)))
    # under torchrun/srun each rank embeds one block; rank 0 merges in input order
    emb = run_sharded(lambda xs: _run_with_progress(f"embedding audio ({embedder.space} space)", len(xs), lambda cb: embed_audio(
        embedder, xs, hop_s=hop_s, per_window=per_window, batch_size=batch_size, progress=cb)), paths, _out_npy(out),
        key=f"audio {model} {hop_s} {per_window}")
    if emb is not None:
        _save_and_report(emb, out, len(paths), "recordings", strict)


@app.command("embed-images")
def embed_images_cmd(
    inputs: list[str] = typer.Argument(..., help="Image files, folders (searched recursively), CSVs with a path column, or @list.txt."),
    teacher: str = typer.Option("hf-hub:imageomics/bioclip-2", "--teacher", "-t", help="open_clip teacher: hf-hub:ID, local-dir:DIR or a directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy (float32 unit rows); .parquet and .json sidecars go beside it."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, or auto."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any input was skipped."),
) -> None:
    """Embed photos with the teacher's image tower (the gallery side of retrieval)."""
    from .encoders.teacher import Teacher
    from .retrieval.embed import embed_images, expand_inputs

    from .distributed import rank_device, run_sharded

    paths = expand_inputs(inputs, "images")
    model = Teacher.load(teacher, device=rank_device(_device(device)))
    emb = run_sharded(lambda xs: _run_with_progress("embedding images", len(xs), lambda cb: embed_images(
        model, xs, batch_size=batch_size, progress=cb)), paths, _out_npy(out), key=f"images {teacher}")
    if emb is not None:
        _save_and_report(emb, out, len(paths), "images", strict)


@app.command("embed-text")
def embed_text_cmd(
    texts: list[str] = typer.Argument(..., help="Texts to embed, or @file.txt for one text per line."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy (float32 unit rows); .parquet and .json sidecars go beside it."),
    teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="open_clip teacher (default hf-hub:imageomics/bioclip-2)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A CLAP id/dir: embed with its own text tower (CLAP space) instead."),
) -> None:
    """Embed texts (species names, captions) with the teacher's or a CLAP's text tower."""
    from .errors import ConfigError
    from .retrieval.embed import embed_texts

    if teacher and model:
        raise ConfigError("give --teacher (teacher space) or --model (a CLAP's own space), not both")
    items: list[str] = []
    for t in texts:
        if t.startswith("@"):
            listing = Path(t[1:])
            if not listing.is_file():
                raise ConfigError(f"text list {listing} not found")
            items.extend(ln.strip() for ln in listing.read_text(encoding="utf-8-sig").splitlines() if ln.strip())
        else:
            items.append(t)
    if not items:
        raise ConfigError("no texts to embed")
    if model:
        from .encoders.clap import load_clap_text
        from .encoders.student import is_distilled_checkpoint

        if is_distilled_checkpoint(model):
            raise ConfigError(f"{model} is a distilled audio checkpoint (no text tower); its space is the "
                              f"teacher's: use --teacher {{teacher id}} instead")
        encoder = load_clap_text(model)
    else:
        from .encoders.teacher import DEFAULT_TEACHER, Teacher

        encoder = Teacher.load(teacher or DEFAULT_TEACHER)
    _save_and_report(embed_texts(encoder, items), out, len(items), "texts", strict=False)


@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print the table as JSON.")) -> None:
    """List known student and teacher ids, what each is, and whether its weights are here (no network)."""
    import json

    from rich.table import Table

    from .encoders.registry import known_models

    infos = known_models()
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    from rich.markup import escape

    from .encoders.hub import hf_cache_dir

    table = Table(show_lines=True, caption=f"HF cache: {hf_cache_dir()} (checked without network)")
    table.add_column("id", no_wrap=True)
    table.add_column("role/space", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    table.add_column("what / where", overflow="fold")
    for i in infos:
        table.add_row(i.id, f"{i.role}/{i.space}", "[green]yes[/]" if i.cached else "[red]no[/]",
                      f"{escape(i.description)}\n[dim]{escape(i.detail)}[/]")
    Console().print(table)
    console.print("Any HF CLAP id/dir, open_clip hf-hub:/local-dir: id, or distilled checkpoint dir also works.")


@app.command("index")
def index_cmd(
    images: str = typer.Argument(..., help="Folder (per-species subfolders and/or loose photos), CSV (path, scientific_name, ...), or a dataset path with --dataset."),
    teacher: str = typer.Option("hf-hub:imageomics/bioclip-2", "--teacher", "-t", help="open_clip teacher whose image tower embeds the photos."),
    out: Path = typer.Option(..., "--out", "-o", help="Index directory (created; an interrupted build there resumes)."),
    add: bool = typer.Option(False, "--add", help="Append to a complete index; paths already indexed are skipped."),
    kind: str = typer.Option("auto", "--kind", help="auto (exact below 100k images, HNSW above), faiss-flat, faiss-hnsw or faiss-ivf."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Read IMAGES as this dataset kind: ssw60, csv, folder, synthetic, ..."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Only images of this split (repeatable)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    shard_size: int = typer.Option(1024, "--shard-size", min=1, help="Images per committed shard (the resume granularity)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, or auto."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any image was skipped."),
) -> None:
    """Embed a photo collection with the teacher and store it as a searchable index."""
    import time

    from .distributed import rank_device, rank_world
    from .encoders.teacher import Teacher
    from .retrieval.index import ImageIndex, choose_kind, records_from_source

    t0 = time.time()
    choose_kind(kind, 0)  # a typo in --kind fails before the teacher is loaded
    records = records_from_source(images, dataset, splits=split or ())
    if not records:
        from .errors import ConfigError

        raise ConfigError(f"no images found in {images}")
    # under torchrun/srun each rank embeds a block of every round of shards; rank 0 alone writes the index
    rank, world = rank_world()
    model = Teacher.load(teacher, device=rank_device(_device(device)))
    before = ImageIndex.open(out).count if (out / "index.json").is_file() else 0

    def build(cb):
        return ImageIndex.build(out, model, records, kind=kind, add=add, shard_size=shard_size, batch_size=batch_size,
                                progress=cb, rank=rank, world=world)

    if rank != 0:
        build(None)
        console.print(f"rank {rank}/{world}: embedded its part of {out}; rank 0 writes the index", markup=False)
        return
    index = _run_with_progress("embedding images" + (f" ({world} ranks)" if world > 1 else ""), len(records), build)
    m = index.manifest
    console.print(f"index {out}: {index.count} images ({index.count - before} new), {index.dim}-d, {index.kind}, "
                  f"{m['n_skipped']} skipped {m['skip_counts'] or ''} in {time.time() - t0:.1f} s", markup=False)
    for s in m["skipped"][:10]:
        console.print(f"  skipped {s['input']}: {s['reason']}" + (f" ({s['detail']})" if s["detail"] else ""), markup=False)
    # exit status from this run's inputs only (skips of earlier runs stay listed in the manifest);
    # an input indexed by an earlier, interrupted run counts as done
    asked = {r.path for r in records}
    skipped_now = sum(1 for s in m["skipped"] if s["input"] in asked)
    none_done = bool(skipped_now) and not any(r["path"] in asked for r in index.metadata(range(index.count)))
    # "none of N" counts the distinct paths asked for, "--strict: k of N" the records
    _exit_status(none_done, skipped_now, len(asked) if none_done else len(records), "images",
                 f"could be indexed (reasons in {out / 'index.json'})", strict)


@app.command("search")
def search_cmd(
    audio: list[str] = typer.Argument(..., help="Recordings, folders (recursive), CSVs with a path column, or @list.txt."),
    model: str = typer.Option(..., "--model", "-m", help="A distilled birdbridge checkpoint (teacher space)."),
    index: Path = typer.Option(..., "--index", "-i", help="Index directory from `birdbridge index`."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Images per recording."),
    window_s: Optional[float] = typer.Option(None, "--window-s", min=0.01, help="Search window (default: the model's window)."),
    hop_s: Optional[float] = typer.Option(None, "--hop-s", min=0.01, help="Window hop (default: half a window)."),
    aggregate: str = typer.Option("max", "--aggregate", help="Per-image score over windows: max (best window) or mean."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json or html."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the output here (html defaults to search.html)."),
    species_list: Optional[Path] = typer.Option(None, "--species-list", help="CSV of species (scientific_name, ...) for a zero-shot species guess."),
    guess: bool = typer.Option(False, "--guess-species", help="Zero-shot species guess over the index's species."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Text-embedding cache (default ~/.cache/birdbridge/text)."),
    allow_teacher_mismatch: bool = typer.Option(False, "--allow-teacher-mismatch", help="Only warn when the model's teacher is not the index's."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any recording was skipped."),
) -> None:
    """Show the photos nearest to each recording (long recordings are searched window by window)."""
    import json

    from .errors import ConfigError
    from .retrieval.embed import expand_inputs
    from .retrieval.search import load_species_list, search_audio

    if fmt not in ("table", "json", "html"):
        raise ConfigError(f"--format must be table, json or html, not {fmt!r}")
    paths = expand_inputs(audio, "audio")
    species = load_species_list(species_list) if species_list else None
    results = _run_with_progress("searching", len(paths), lambda cb: search_audio(
        model, index, paths, k=k, window_s=window_s, hop_s=hop_s, aggregate=aggregate, guess=guess, species=species,
        cache_dir=cache_dir, allow_teacher_mismatch=allow_teacher_mismatch, progress=cb))
    if fmt == "html":
        from .retrieval.html import write_html

        target = write_html(results, out or Path("search.html"), subtitle=f"index {index}, model {model}")
        console.print(f"wrote {target}")
    elif fmt == "json":
        text = json.dumps([r.to_dict() for r in results], indent=2)
        if out:
            from .io import atomic_write_text

            atomic_write_text(out, text + "\n")
            console.print(f"wrote {out}")
        else:
            typer.echo(text)
    else:
        from rich.table import Table

        for r in results:
            if not r.ok:
                console.print(f"{r.path}: skipped ({r.error}{': ' + r.error_detail if r.error_detail else ''})", markup=False)
                continue
            t = Table(title=f"{r.path} ({r.duration_s:.1f} s, {len(r.windows)} windows, {r.aggregate})")
            for col in ("#", "score", "species", "image", "window (s)"):
                t.add_column(col)
            for h in r.hits:
                t.add_row(str(h.rank), f"{h.score:.3f}", h.common_name or h.scientific_name or "?", h.path,
                          f"{h.window_start_s:.1f}-{h.window_end_s:.1f}")
            Console(file=sys.stdout).print(t)
            if r.species_guess:
                typer.echo("species guess: " + ", ".join(f"{g['scientific_name']} {g['score']:.2f}" for g in r.species_guess[:3]))
    failed = [r for r in results if not r.ok]
    _exit_status(bool(failed) and len(failed) == len(results), len(failed), len(results), "recordings",
                 f"could be searched ({', '.join(sorted({r.error for r in failed}))})", strict)


@app.command("serve")
def serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="A distilled birdbridge checkpoint (teacher space)."),
    index: Path = typer.Option(..., "--index", "-i", help="Index directory from `birdbridge index`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest upload accepted."),
    max_duration_s: float = typer.Option(300.0, "--max-duration-s", min=0.1, help="Longest recording accepted."),
    timeout_s: float = typer.Option(60.0, "--timeout-s", min=0.1, help="Per-search time limit."),
    guess: bool = typer.Option(True, "--guess-species/--no-guess-species", help="Zero-shot species guess in answers."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Text-embedding cache (default ~/.cache/birdbridge/text)."),
) -> None:
    """Serve a search page and JSON API (POST /search, GET /images/{id}) with uvicorn."""
    from .serve.app import ServeSettings, serve

    settings = ServeSettings(max_upload_bytes=int(max_upload_mb * 2**20), max_duration_s=max_duration_s,
                             request_timeout_s=timeout_s, guess_species=guess, cache_dir=str(cache_dir) if cache_dir else None)
    serve(model, index, host=host, port=port, settings=settings)


@app.command("eval")
def eval_cmd(
    config: Path = typer.Argument(..., help="Evaluation config (YAML), e.g. configs/synthetic/paper_table.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: results.json, report.md, plots."),
) -> None:
    """Run the paper's evaluation (methods x protocols, ablation, unseen species) from a config."""
    from transformers.utils import logging as hf_logging

    from .evaluate.runner import run_eval

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model load buries the log
    run_eval(config, out, log=lambda msg: console.print(msg, markup=False))
    typer.echo((out / "report.md").read_text())


@app.command("score")
def score_cmd(
    queries: Path = typer.Argument(..., help="Query parquet: `embedding` (list of floats) and `label` columns."),
    gallery: Path = typer.Argument(..., help="Gallery parquet with the same columns."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the results JSON here."),
    ranks: Optional[str] = typer.Option(None, "--ranks", help="Comma-separated extra ranks (columns), e.g. genus,family."),
) -> None:
    """Score your own embeddings: retrieval mAP / R@k of queries against a gallery, per rank."""
    import json

    from .evaluate.score import score_files, write_json

    rank_list = [r for r in ranks.split(",")] if ranks is not None else None
    result = score_files(queries, gallery, ranks=rank_list)
    if out is not None:
        write_json(result, out)
    for rank, m in result["metrics"].items():
        typer.echo(f"{rank:>8}: mAP {m['map']:.4f}  R@1 {m['recall@1']:.4f}  R@5 {m['recall@5']:.4f}  "
                   f"R@10 {m['recall@10']:.4f}  chance mAP {m['chance_map']:.4f}  "
                   f"({m['n_queries_scored']} scored, {m['n_queries_without_relevant']} without a relevant item)")
    if result["skipped"]:
        typer.echo(f"{len(result['skipped'])} rows skipped: " + json.dumps(result["skipped"][:5]))


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML with `data: {kind, path, ...loader options}` and `train: {TrainConfig fields}`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: model/, checkpoints/, logs/, skipped.json."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Devices per node (a number or 'auto'); overrides the config."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Number of nodes; overrides the config."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Lightning strategy, e.g. ddp; overrides the config."),
    accelerator: Optional[str] = typer.Option(None, "--accelerator", help="cpu, gpu or auto; overrides the config."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last.ckpt if it exists."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any training clip was skipped."),
) -> None:
    """Distil the student onto the teacher's species-text space (one GPU, DDP, torchrun or SLURM)."""
    from .config import load_yaml
    from .data.generic import load_collection
    from .distill.train import TrainConfig, distill
    from .distributed import is_main_process
    from .errors import ConfigError

    doc = load_yaml(config)
    unknown = sorted(set(doc) - {"data", "train"})
    data = doc.get("data")
    if unknown or not isinstance(data, dict) or "kind" not in data or "path" not in data:
        raise ConfigError(f"{config}: needs `data: {{kind, path, ...}}` and optional `train: {{...}}`"
                          + (f"; unknown top-level key {unknown[0]!r}" if unknown else ""))
    data = dict(data)
    kind, path = data.pop("kind"), Path(data.pop("path"))
    if not path.is_absolute():
        path = (config.parent / path) if (config.parent / path).exists() else path  # relative to the config
    overrides = {k: v for k, v in {"num_nodes": num_nodes, "strategy": strategy, "accelerator": accelerator}.items() if v is not None}
    if devices is not None:
        overrides["devices"] = int(devices) if devices.isdigit() else devices
    cfg = TrainConfig.from_dict({**(doc.get("train") or {}), **overrides})
    distill(load_collection(kind, path, **data), cfg, out, resume=resume)
    if is_main_process():
        typer.echo(f"model written to {out / 'model'}")
        import json

        skipped = json.loads((out / "skipped.json").read_text())
        if skipped["n_skipped"]:
            console.print(f"{skipped['n_skipped']} training clips skipped {skipped['counts']} (listed in {out / 'skipped.json'})",
                          markup=False)
            if strict:
                console.print("[bold red]error:[/] --strict: training clips were skipped")
                raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except BirdbridgeError as err:
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
