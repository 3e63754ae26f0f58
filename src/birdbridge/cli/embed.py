"""Embedding verbs: media or texts in, ``.npy`` + ``.parquet``/``.json`` sidecars out; ``models``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..devices import resolve_device
from ._checks import Preflight
from ._app import (DEVICE_HELP, ENGINE_OPTION, GPUS_PER_WORKER_OPTION, PART_SIZE_OPTION, RAY_ADDRESS_OPTION,
                   RAY_WORKERS_OPTION, app, console, exit_status, out_npy, print_outputs, ray_options,
                   run_with_progress, save_and_report, warn_provenance)


@app.command("embed-audio")
def embed_audio_cmd(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders (searched recursively), CSVs with a path column (their other columns, e.g. species and split, are kept in the .parquet), or @list.txt."),
    model: str = typer.Option(..., "--model", "-m", help="Distilled checkpoint (teacher space), CLAP id/dir (its own space), or 'birdnet'."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy (float32 unit rows); .parquet and .json sidecars go beside it. "
                             "With --engine ray, a path not ending in .npy is a parts folder (emb/, meta/, embeddings.json)."),
    per_window: bool = typer.Option(False, "--per-window", help="One row per window instead of one per recording."),
    hop_s: Optional[float] = typer.Option(None, "--hop-s", min=0.001, help="Window hop in seconds (default: half the model's window)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Windows per forward pass."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any input was skipped."),
    engine: str = ENGINE_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    workers: int = RAY_WORKERS_OPTION,
    gpus_per_worker: float = GPUS_PER_WORKER_OPTION,
    part_size: int = PART_SIZE_OPTION,
) -> None:
    """Embed recordings: long ones over sliding windows, averaged and renormalised (or kept per window)."""
    checks = Preflight()  # every wrong input at once, before torch loads
    checks.model(model)
    checks.device(device)
    checks.engine(engine)
    paths, labels = checks.inputs(inputs, "audio")  # a CSV's label columns go into the .parquet rows
    checks.done()
    if engine == "ray":
        from ..retrieval.ray_engine import audio_spec

        from ..encoders.provenance import recorded_meta

        opts = ray_options(ray_address, workers, gpus_per_worker, part_size)
        warn_provenance(recorded_meta(model), paths, model)  # the model loads in the Ray actors, not here
        spec = audio_spec(model, hop_s=hop_s, per_window=per_window, batch_size=batch_size)
        return embed_on_ray(spec, list(zip(paths, labels)), out, opts, "recordings", strict)
    from ..encoders.factory import load_audio_embedder
    from ..retrieval.embed import embed_audio

    from ..distributed import rank_device, run_sharded

    device = rank_device(resolve_device(device))  # torch's word on the device, before anything loads
    embedder = load_audio_embedder(model, device=device)
    from ..distributed import rank_world

    if rank_world()[0] == 0:
        warn_provenance(embedder, paths, model)
    # under torchrun/srun each rank embeds one block; rank 0 merges in input order
    emb = run_sharded(lambda xs: run_with_progress(f"embedding audio ({embedder.space} space)", len(xs), lambda cb: embed_audio(
        embedder, [p for p, _ in xs], hop_s=hop_s, per_window=per_window, batch_size=batch_size,
        labels=[lab for _, lab in xs], progress=cb)), list(zip(paths, labels)), out_npy(out),
        key=f"audio {model} {hop_s} {per_window}", save=False)  # saved below, only when something was embedded
    if emb is not None:
        save_and_report(emb, out, len(paths), "recordings", strict)


@app.command("embed-images")
def embed_images_cmd(
    inputs: list[str] = typer.Argument(..., help="Image files, folders (searched recursively), CSVs with a path column (their other columns are kept in the .parquet), or @list.txt."),
    teacher: str = typer.Option("hf-hub:imageomics/bioclip-2", "--teacher", "-t", help="open_clip teacher: hf-hub:ID, local-dir:DIR or a directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy (float32 unit rows); .parquet and .json sidecars go beside it. "
                             "With --engine ray, a path not ending in .npy is a parts folder (emb/, meta/, embeddings.json)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any input was skipped."),
    engine: str = ENGINE_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    workers: int = RAY_WORKERS_OPTION,
    gpus_per_worker: float = GPUS_PER_WORKER_OPTION,
    part_size: int = PART_SIZE_OPTION,
) -> None:
    """Embed photos with the teacher's image tower (the gallery side of retrieval)."""
    checks = Preflight()  # every wrong input at once, before torch loads
    checks.model(teacher, "teacher")
    checks.device(device)
    checks.engine(engine)
    paths, labels = checks.inputs(inputs, "images")
    checks.done()
    if engine == "ray":
        from ..retrieval.ray_engine import image_spec

        opts = ray_options(ray_address, workers, gpus_per_worker, part_size)
        spec = image_spec(teacher, batch_size=batch_size)
        return embed_on_ray(spec, list(zip(paths, labels)), out, opts, "images", strict)
    from ..encoders.teacher import Teacher
    from ..retrieval.embed import embed_images

    from ..distributed import rank_device, run_sharded

    device = rank_device(resolve_device(device))
    model = Teacher.load(teacher, device=device)
    emb = run_sharded(lambda xs: run_with_progress("embedding images", len(xs), lambda cb: embed_images(
        model, [p for p, _ in xs], batch_size=batch_size, labels=[lab for _, lab in xs], progress=cb)),
        list(zip(paths, labels)), out_npy(out), key=f"images {teacher}", save=False)
    if emb is not None:
        save_and_report(emb, out, len(paths), "images", strict)


def embed_on_ray(spec, items, out: Path, opts, what: str, strict: bool) -> None:
    """``--engine ray``: the job's parts, then the local engine's outputs (``--out X.npy``: one file, its
    parts staged in ``X.npy.parts/`` and removed once it is written) or the parts folder itself."""
    import shutil

    from ..embedding_parts import MANIFEST
    from ..retrieval.ray_engine import run_job

    single = out.suffix == ".npy"
    where = out.with_name(out.name + ".parts") if single else out
    label = f"embedding {what} on Ray ({spec.meta.get('space')} space)"
    parts = run_with_progress(label, len(items), lambda cb: run_job(spec, items, where, opts, cb))
    m = parts.manifest()
    console.print(f"Ray: {m['parts_computed']} parts computed, {m['parts_reused']} already complete in {where}",
                  markup=False)
    if single:
        emb = parts.load_all()
        shutil.rmtree(where)
        return save_and_report(emb, out, len(items), what, strict)
    n_ok = m["n_rows"] if not spec.per_window else len({r["input"] for i in parts.complete_parts()
                                                          for r in parts.read_rows(i)})
    console.print(f"wrote {m['n_rows']} rows ({m['dim']}-d, {m.get('space')} space) from {n_ok}/{len(items)} {what} "
                  f"in {m['n_parts']} parts to {out}; {parts.skips().summary()}", markup=False)
    for skip in m["skipped"][:10]:
        console.print(f"  skipped {skip['input']}: {skip['reason']}" + (f" ({skip['detail']})" if skip["detail"] else ""),
                      markup=False)
    print_outputs((out, "parts: emb/part-*.npy + meta/part-*.parquet"), (out / MANIFEST, "provenance and skips"))
    exit_status(n_ok == 0, m["n_skipped"], len(items), what,
                f"could be embedded (reasons in {out / MANIFEST})", strict)


@app.command("embed-text")
def embed_text_cmd(
    texts: list[str] = typer.Argument(..., help="Texts to embed, or @file.txt for one text per line."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy (float32 unit rows); .parquet and .json sidecars go beside it."),
    teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="open_clip teacher (default hf-hub:imageomics/bioclip-2)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A CLAP id/dir: embed with its own text tower (CLAP space) instead."),
) -> None:
    """Embed texts (species names, captions) with the teacher's or a CLAP's text tower."""
    from ..errors import ConfigError
    from ..retrieval.embed import embed_texts

    checks = Preflight()  # every wrong input at once, before torch loads
    if teacher and model:
        checks.problems.append(ConfigError("give --teacher (teacher space) or --model (a CLAP's own space), not both"))
    checks.model(teacher, "teacher")
    checks.model(model, "CLAP model")
    items: list[str] = []
    for t in texts:
        if t.startswith("@"):
            listing = Path(t[1:])
            if not listing.is_file():
                checks.problems.append(ConfigError(f"text list {listing} not found"))
                continue
            items.extend(ln.strip() for ln in listing.read_text(encoding="utf-8-sig").splitlines() if ln.strip())
        else:
            items.append(t)
    if not items and not checks.problems:
        checks.problems.append(ConfigError("no texts to embed"))
    checks.done()
    if model:
        from ..encoders.student import is_distilled_checkpoint
        from ..encoders.text import ClapTextEncoder

        if is_distilled_checkpoint(model):
            raise ConfigError(f"{model} is a distilled audio checkpoint (no text tower); its space is the "
                              f"teacher's: use --teacher {{teacher id}} instead")
        encoder = ClapTextEncoder.load(model)
    else:
        from ..encoders.teacher import DEFAULT_TEACHER, Teacher

        encoder = Teacher.load(teacher or DEFAULT_TEACHER)
    save_and_report(embed_texts(encoder, items), out, len(items), "texts", strict=False)


@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print the table as JSON.")) -> None:
    """List known student and teacher ids, what each is, and whether its weights are here (no network)."""
    import json

    from rich.table import Table

    from ..console import make_console
    from ..encoders.registry import known_models

    infos = known_models()
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    from rich.markup import escape

    from ..encoders.hub import hf_cache_dir

    table = Table(show_lines=True, caption=f"HF cache: {hf_cache_dir()} (checked without network)")
    table.add_column("id", no_wrap=True)
    table.add_column("role/space", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    table.add_column("what / where", overflow="fold")
    for i in infos:
        table.add_row(i.id, f"{i.role}/{i.space}", "[green]yes[/]" if i.cached else "[red]no[/]",
                      f"{escape(i.description)}\n[dim]{escape(i.detail)}[/]")
    make_console().print(table)
    console.print("Any HF CLAP id/dir, open_clip hf-hub:/local-dir: id, or distilled checkpoint dir also works.")
