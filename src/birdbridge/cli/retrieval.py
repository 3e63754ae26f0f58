"""The retrieval product: ``index`` a photo collection, ``search`` it with recordings, ``serve`` it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..console import make_console
from ..devices import resolve_device
from ._checks import Preflight
from ._app import DEVICE_HELP, exit_status, run_with_progress, app, console, print_outputs, warn_provenance
from ._app import ENGINE_OPTION, GPUS_PER_WORKER_OPTION, PART_SIZE_OPTION, RAY_ADDRESS_OPTION, RAY_WORKERS_OPTION


@app.command("index")
def index_cmd(
    images: str = typer.Argument(..., help="Folder (per-species subfolders and/or loose photos), CSV (path, scientific_name, ...), a dataset path with --dataset, or an embedding parts folder (emb/part-*.npy + meta/part-*.parquet: indexed as it is, nothing embedded)."),
    teacher: str = typer.Option("hf-hub:imageomics/bioclip-2", "--teacher", "-t", help="open_clip teacher whose image tower embeds the photos."),
    out: Path = typer.Option(..., "--out", "-o", help="Index directory (created; an interrupted build there resumes)."),
    add: bool = typer.Option(False, "--add", help="Append to a complete index; paths already indexed are skipped."),
    kind: str = typer.Option("auto", "--kind", help="auto (exact below 100k images, HNSW above), faiss-flat, faiss-hnsw, faiss-ivf or faiss-ivfpq (compressed, sized to --max-index-memory)."),
    max_index_memory: Optional[str] = typer.Option(None, "--max-index-memory", help="faiss-ivfpq: RAM the index may take, e.g. 4GB, 512MB, 1.5G (default 4GB); IVF/PQ/OPQ sizes are picked to fit."),
    rerank: Optional[bool] = typer.Option(None, "--rerank/--no-rerank", help="Record whether search re-ranks by default: the top k x 10 candidates re-scored with the exact vectors (for faiss-ivfpq)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Read IMAGES as this dataset kind: ssw60, csv, folder, synthetic, ..."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Only images of this split (repeatable)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    shard_size: int = typer.Option(1024, "--shard-size", min=1, help="Images per committed shard (the resume granularity)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any image was skipped."),
    engine: str = ENGINE_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    workers: int = RAY_WORKERS_OPTION,
    gpus_per_worker: float = GPUS_PER_WORKER_OPTION,
    part_size: int = PART_SIZE_OPTION,
) -> None:
    """Embed a photo collection with the teacher and store it as a searchable index."""
    import time

    from ..errors import ConfigError
    from ..retrieval.embed import require_some_present
    from ..retrieval.index_format import choose_kind, records_from_source

    t0 = time.time()
    from ..embedding_parts import EmbeddingParts
    from ..retrieval.index_pq import parse_memory

    if EmbeddingParts.is_parts_dir(images):
        return _index_parts(Path(images), out, kind, add, max_index_memory, rerank, teacher, t0)
    checks = Preflight()  # every wrong input at once, before torch and FAISS load
    checks.attempt(choose_kind, kind, 0)
    if max_index_memory is not None:
        checks.attempt(parse_memory, max_index_memory)
    checks.model(teacher, "teacher")
    checks.device(device)
    checks.engine(engine)
    records = checks.attempt(records_from_source, images, dataset, splits=split or ())
    if records == []:
        checks.problems.append(ConfigError(f"no images found in {images}"))
    elif records:
        checks.attempt(require_some_present, [r.path for r in records], "image")
    checks.done()
    from ..distributed import agree, rank_device, rank_world, shared_group
    from ..encoders.teacher import Teacher
    from ..retrieval.index import ImageIndex

    device = rank_device(resolve_device(device))  # torch's word on the device
    from ..retrieval.index_format import named_by_file_note, unnamed_note

    by_file = named_by_file_note(records)
    note = unnamed_note(records)
    if note:
        from rich.markup import escape

        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    # under torchrun/srun each rank embeds a block of every round of shards; rank 0 alone writes the index
    rank, world = rank_world()
    # --engine ray: the photos embedded on Ray into parts first; the builder below commits their vectors
    embedded = _embed_index_on_ray(teacher, records, out, batch_size, (ray_address, workers, gpus_per_worker, part_size)) \
        if engine == "ray" else None
    # one process group from the start: a rank that fails before the build (loading the teacher,
    # rank 0's writer lock) stops every rank with its message instead of leaving them in the rendezvous
    with shared_group(rank, world):
        error = None
        try:
            model = Teacher.load(teacher, device=device) if embedded is None else teacher
            before = ImageIndex.open(out).count if (out / "index.json").is_file() else 0
            if kind == "faiss-ivfpq":  # the budget fails now, not after every photo was embedded
                from ..retrieval.index_pq import DEFAULT_MAX_MEMORY, choose_params

                dim = model.dim if embedded is None else int(embedded.vectors.shape[1])
                choose_params(before + len(records), dim, max_index_memory or DEFAULT_MAX_MEMORY)
        except Exception as err:  # noqa: BLE001 - every rank must hear of it
            error = err
        agree(rank, world, error, " before the build")

        def build(cb):
            return ImageIndex.build(out, model, records, kind=kind, add=add, shard_size=shard_size, batch_size=batch_size,
                                    progress=cb, rank=rank, world=world, embedded=embedded,
                                    max_memory=max_index_memory, rerank=rerank)

        if rank != 0:
            build(None)
            console.print(f"rank {rank}/{world}: embedded its part of {out}; rank 0 writes the index", markup=False)
            return
        index = run_with_progress(("indexing Ray's vectors" if embedded is not None else "embedding images")
                                  + (f" ({world} ranks)" if world > 1 else ""), len(records), build)
        m = index.manifest
        updated = index.last_build.get("metadata_updated", 0)
        news = f"{index.count - before} new" + (f", metadata of {updated} updated" if updated else "")
        same = before and index.count == before and not updated
        console.print(f"index {out}: {index.count} images ({news}), {index.dim}-d, {index.kind}, "
                      f"{m['n_skipped']} skipped {m['skip_counts'] or ''} in {time.time() - t0:.1f} s"
                      + ("; every image was indexed already, with the same metadata" if same else "")
                      + (f"; {by_file}" if by_file else ""), markup=False)
        for s in m["skipped"][:10]:
            console.print(f"  skipped {s['input']}: {s['reason']}" + (f" ({s['detail']})" if s["detail"] else ""), markup=False)
        # exit status from this run's inputs only (skips of earlier runs stay listed in the manifest);
        # an input indexed by an earlier, interrupted run counts as done
        asked = {r.path for r in records}
        skipped_now = sum(1 for s in m["skipped"] if s["input"] in asked)
        none_done = bool(skipped_now) and not any(r["path"] in asked for r in index.metadata(range(index.count)))
        print_outputs((out, f"index of {index.count} images; skips listed in index.json"))
        # "none of N" counts the distinct paths asked for, "--strict: k of N" the records
        exit_status(none_done, skipped_now, len(asked) if none_done else len(records), "images",
                     f"could be indexed (reasons in {out / 'index.json'})", strict)
        if embedded is not None:
            import shutil

            shutil.rmtree(out / RAY_PARTS, ignore_errors=True)  # committed into the index's shards


RAY_PARTS = ".ray-parts"  # index --engine ray: the Ray job's parts, inside the index folder until committed


def _embed_index_on_ray(teacher: str, records, out: Path, batch_size: int, ray_args):
    """The records' photos not in the index yet (each path once) embedded on Ray into ``OUT/.ray-parts``
    (a re-run reuses its complete parts), read back as one :class:`~birdbridge.embeddings.Embeddings`."""
    from ._app import ray_options
    from ..retrieval.index_format import indexed_paths
    from ..retrieval.ray_engine import image_spec, run_job

    opts = ray_options(*ray_args)
    spec = image_spec(teacher, batch_size=batch_size)
    paths = sorted({r.path for r in records} - indexed_paths(out))
    if not paths:  # every photo is in the index already: nothing for Ray to do
        import numpy as np

        from ..embeddings import Embeddings
        from ..errors import SkipLog

        return Embeddings(np.zeros((0, spec.dim), np.float32), [], SkipLog(), spec.meta)
    parts = run_with_progress("embedding images on Ray", len(paths), lambda cb: run_job(
        spec, [(p, {}) for p in paths], out / RAY_PARTS, opts, cb))
    m = parts.manifest()
    console.print(f"Ray: {m['parts_computed']} parts computed, {m['parts_reused']} already complete", markup=False)
    return parts.load_all()


def _index_parts(parts: Path, out: Path, kind: str, add: bool, max_index_memory, rerank, teacher: str, t0: float) -> None:
    """``index PARTS_DIR``: index embedding parts where they lie (nothing is embedded)."""
    import time

    from ..embedding_parts import EmbeddingParts
    from ..retrieval.index_format import choose_kind
    from ..retrieval.index_pq import DEFAULT_MAX_MEMORY, choose_params

    emb = EmbeddingParts(parts)
    checks = Preflight()
    checks.attempt(choose_kind, kind, 0)
    n, d = emb.n_rows(), emb.dim()
    if not n:
        from ..errors import ConfigError

        checks.problems.append(ConfigError(f"{parts}: no complete embedding parts to index"))
    elif kind == "faiss-ivfpq":
        checks.attempt(choose_params, n, d, max_index_memory or DEFAULT_MAX_MEMORY)
    checks.done()
    from ..retrieval.index import ImageIndex

    pm = emb.manifest()
    index = run_with_progress("indexing parts", n, lambda cb: ImageIndex.build_from_parts(
        out, parts, kind=kind, max_memory=max_index_memory, add=add, rerank=rerank,
        teacher=pm.get("teacher_id") or pm.get("model") or teacher, progress=cb))
    pq = index.manifest.get("pq")
    console.print(f"index {out}: {index.count} vectors from {parts}, {index.dim}-d, {index.kind}"
                  + (f" (IVF {pq['nlist']} lists, {pq['m']}-byte PQ codes{', OPQ' if pq['opq'] else ''})" if pq else "")
                  + f", {index.manifest['n_skipped']} skipped in {time.time() - t0:.1f} s", markup=False)
    print_outputs((out, f"index of {index.count} vectors; their exact vectors stay in {parts}"))


@app.command("search")
def search_cmd(
    audio: list[str] = typer.Argument(..., help="Recordings, folders (recursive), CSVs with a path column, or @list.txt."),
    model: str = typer.Option(..., "--model", "-m", help="A distilled birdbridge checkpoint (teacher space)."),
    index: Path = typer.Option(..., "--index", "-i", help="Index directory from `birdbridge index`."),
    k: int = typer.Option(10, "-k", "--top-k", min=1, help="Images per recording (per window with csv / raven)."),
    old_k: Optional[int] = typer.Option(None, "--k", min=1, hidden=True),  # the spelling before --top-k, still read
    window_s: Optional[float] = typer.Option(None, "--window-s", min=0.01, help="Search window (default: the model's window)."),
    hop_s: Optional[float] = typer.Option(None, "--hop-s", min=0.01, help="Window hop (default: half a window, "
                                          "unlike detect: windows overlap, so a call cut by one window's edge is whole "
                                          "in the next, and each photo keeps its best window)."),
    aggregate: str = typer.Option("max", "--aggregate", help="Per-image score over windows: max (best window) or mean."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, html, or csv / raven: per-window species from the photos (as `detect` writes)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the output here (html defaults to search.html)."),
    species_list: Optional[Path] = typer.Option(None, "--species-list", help="CSV of species (scientific_name, ...) for a zero-shot species guess."),
    guess: bool = typer.Option(False, "--guess-species", help="Zero-shot species guess over the index's species."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Text-embedding cache (default ~/.cache/birdbridge/text)."),
    allow_teacher_mismatch: bool = typer.Option(False, "--allow-teacher-mismatch", help="Only warn when the model's teacher is not the index's."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any recording was skipped."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", min=0.0, max=1.0, help="Leave out photos and per-window rows whose confidence (their species' softmax share among the species found near, 0-1) is below this."),
    rerank: Optional[bool] = typer.Option(None, "--rerank/--no-rerank", help="Re-score the index's top k x 10 candidates with the exact vectors (default: what the index recorded; for faiss-ivfpq)."),
) -> None:
    """Show the photos nearest to each recording (long recordings are searched window by window)."""
    import json

    k = old_k if old_k is not None else k
    checks = Preflight()  # every wrong input at once, before torch loads
    checks.choice(fmt, ("table", "json", "html", "csv", "raven"), "--format")
    checks.choice(aggregate, ("max", "mean"), "--aggregate")
    checks.model(model)
    checks.index(index)
    from ..data.species_list import load_species_list

    species = checks.attempt(load_species_list, species_list) if species_list else None
    checks.device(device)
    paths, _ = checks.inputs(audio, "audio")
    checks.done()
    from ..retrieval import tables
    from ..retrieval.search import search_audio

    device = resolve_device(device)
    per_window = k if fmt in ("csv", "raven") else 0
    from ..encoders.factory import load_audio_embedder
    from ..retrieval.confidence import fallback_note

    # loaded here: a table's selections span the band the model hears, and its temperature is checked
    model_id, model = model, load_audio_embedder(model, device=device)
    note = fallback_note(model) if getattr(model, "space", None) == "teacher" else None
    if note:
        console.print(note, markup=False, soft_wrap=True)
    warn_provenance(model, paths, model_id)
    results = run_with_progress("searching", len(paths), lambda cb: search_audio(
        model, index, paths, k=k, window_s=window_s, hop_s=hop_s, aggregate=aggregate, guess=guess, species=species,
        cache_dir=cache_dir, allow_teacher_mismatch=allow_teacher_mismatch, per_window_k=per_window, device=device, progress=cb,
        min_confidence=min_confidence, rerank=rerank))
    if fmt in ("csv", "raven"):
        low, high = tables.model_band(model)
        if out:
            tables.write(results, fmt, out, high_freq_hz=high, low_freq_hz=low)
            print_outputs((out, f"{sum(len(r.detections) for r in results)} per-window rows ({fmt})"))
        else:
            typer.echo(tables.render(results, fmt, high_freq_hz=high, low_freq_hz=low), nl=False)
    elif fmt == "html":
        from ..retrieval.html import write_html

        target = write_html(results, out or Path("search.html"), subtitle=f"index {index}, model {model}")
        print_outputs((target, "search page"))
    elif fmt == "json":
        text = json.dumps([r.to_dict() for r in results], indent=2)
        if out:
            from ..io import atomic_write_text

            atomic_write_text(out, text + "\n")
            print_outputs((out, "results as JSON"))
        else:
            typer.echo(text)
    else:
        if out:
            from ..io import atomic_write_text

            # a file is read later, maybe by a script: no colours, and wide enough for full paths
            buf = Console(file=io.StringIO(), width=240, color_system=None, soft_wrap=True)
            _print_tables(results, buf)
            atomic_write_text(out, buf.file.getvalue())
            print_outputs((out, "result tables"))
        else:
            _print_tables(results, make_console())
    failed = [r for r in results if not r.ok]
    exit_status(bool(failed) and len(failed) == len(results), len(failed), len(results), "recordings",
                 f"could be searched ({', '.join(sorted({r.error for r in failed}))})", strict)


def _print_tables(results, out: Console) -> None:
    """One table of hits per recording (``--format table``), to the terminal or a file."""
    from rich.table import Table

    for r in results:
        if not r.ok:
            out.print(f"{r.path}: skipped ({r.error}{': ' + r.error_detail if r.error_detail else ''})", markup=False)
            continue
        t = Table(title=f"{r.path} ({r.duration_s:.1f} s, {len(r.windows)} windows, {r.aggregate})")
        for col in ("#", "score", "confidence", "species", "image", "window (s)"):
            t.add_column(col)
        for h in r.hits:
            t.add_row(str(h.rank), f"{h.score:.3f}", "" if h.confidence is None else f"{h.confidence:.2f}", h.common_name or h.scientific_name or "?", h.path,
                      f"{h.window_start_s:.1f}-{h.window_end_s:.1f}")
        out.print(t)
        if r.species_guess:
            out.print("species guess: " + ", ".join(f"{g['scientific_name']} {g['score']:.2f} ({g['confidence']:.0%})" for g in r.species_guess[:3]),
                      markup=False)


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
    allow_teacher_mismatch: bool = typer.Option(False, "--allow-teacher-mismatch", help="Only warn when the model's teacher is not the index's."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Serve a search page and JSON API (POST /search, GET /images/{id}) with uvicorn."""
    checks = Preflight()
    checks.model(model)
    checks.index(index)
    checks.device(device)
    checks.done()
    from ..serve.app import ServeSettings, serve

    device = resolve_device(device)
    settings = ServeSettings(max_upload_bytes=int(max_upload_mb * 2**20), max_duration_s=max_duration_s,
                             request_timeout_s=timeout_s, guess_species=guess, cache_dir=str(cache_dir) if cache_dir else None)
    serve(model, index, host=host, port=port, settings=settings, allow_teacher_mismatch=allow_teacher_mismatch,
          device=device, announce=lambda line: console.print(line, markup=False))
