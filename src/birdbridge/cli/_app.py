"""The Typer app, its console, and the rules every verb shares.

Verb modules (``data``, ``embed``, ``retrieval``, ``run``) register their commands on
:data:`app` when the package is imported; this module imports none of them.
Errors a user can act on (:class:`~birdbridge.errors.BirdbridgeError`) are printed as
one line and exit with status 2; tracebacks are for bugs only.

Output: a verb prints its own progress and results; third-party logs, progress bars and
known-benign warnings show only with ``birdbridge --verbose VERB`` (:mod:`birdbridge.quiet`).
Off a terminal (logs, SLURM) nothing is wrapped or truncated (:mod:`birdbridge.console`).
Every verb that writes files ends with :func:`print_outputs`: where they are.
"""

from __future__ import annotations

import os

import sys
from pathlib import Path

import typer
from rich.console import Console

from ..errors import BirdbridgeError

# Typer 0.2x prints each parameter's Python type as a hint (`<bool>`, `<list[str]>`, `<int range>`): noise
# to a user, and a flag takes no value at all. Every command here is built with plain metavars instead:
# none for a flag, TEXT / PATH / INTEGER / FLOAT for a value.
_PLAIN_TYPES = {"str": "TEXT", "path": "PATH", "file": "PATH", "directory": "PATH", "int": "INTEGER",
                "int range": "INTEGER", "float": "FLOAT", "float range": "FLOAT", "list[str]": "TEXT"}


def _plain_metavar(param, ctx=None) -> None:
    from typer.core import TyperArgument

    if getattr(param, "is_flag", False):
        param.metavar = ""
        return
    shown = param.display_type(ctx) if hasattr(param, "display_type") else ""
    label = _PLAIN_TYPES.get(shown.strip("<>"), shown.strip("<>").upper())
    if isinstance(param, TyperArgument):
        # an argument's type column ignores its metavar (its name column and usage keep Typer's `audio...`)
        param.display_type_rich = lambda ctx, label=label: label
    elif param.metavar is None:
        param.metavar = label


class _Plain:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            _plain_metavar(param)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)  # built on demand, not among self.params
        if option is not None:
            _plain_metavar(option)
        return option


class _PlainCommand(_Plain, typer.core.TyperCommand):
    pass


class _PlainGroup(_Plain, typer.core.TyperGroup):
    pass


class PlainTyper(typer.Typer):
    """A Typer app whose commands show plain metavars in ``--help`` (see ``_PLAIN_TYPES``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, cls=kwargs.pop("cls", _PlainGroup), **kwargs)

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _PlainCommand, **kwargs)


app = PlainTyper(
    name="birdbridge",
    help="Retrieve pictures of bird species from bird sound (audio distilled onto BioCLIP-2's text space).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show third-party logs, progress bars and warnings "
                                 "(Lightning, transformers, TFLite, mpg123); by default only birdbridge's own output."),
) -> None:
    """birdbridge: bird sound in, pictures of the singer out."""
    from ..console import fit_to_stream
    from ..quiet import configure

    configure(verbose)
    fit_to_stream(console)


@app.command()
def version() -> None:
    """Print the installed birdbridge version."""
    from .. import __version__

    typer.echo(__version__)


def out_npy(out: Path) -> Path:
    return out if out.suffix == ".npy" else out.with_name(out.name + ".npy")


DEVICE_HELP = "cpu, cuda, cuda:N, mps, or auto (cuda when there is one)."

# --engine and its Ray options: defined once here, used by embed-audio, embed-images, index and detect
# (docs/DISTRIBUTED.md says when to use which engine)
ENGINE_OPTION = typer.Option("local", "--engine", help="local (this process, or torchrun/srun ranks) or ray: Ray Data, "
                             "decoding on CPUs pipelined ahead of one model per worker, written as resumable parts "
                             "(needs birdbridge's ray extra).")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="--engine ray: the Ray cluster to join (default: "
                                  "RAY_ADDRESS, else a local Ray started and stopped by this command).")
RAY_WORKERS_OPTION = typer.Option(1, "--workers", min=1, help="--engine ray: model replicas (Ray actors).")
GPUS_PER_WORKER_OPTION = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="--engine ray: GPUs per model replica "
                                      "(0: CPU; fractions share a GPU).")
PART_SIZE_OPTION = typer.Option(1000, "--part-size", min=1, help="--engine ray: inputs per part (emb/part-*.npy + "
                                "meta/part-*.parquet), the resume granularity: a re-run computes only missing parts.")


def ray_options(address, workers: int, gpus_per_worker: float, part_size: int):
    """The Ray options of a verb, after its preflight; Ray's own logs and bars only with ``--verbose``."""
    from ..quiet import verbose
    from ..retrieval.ray_engine import RayOptions, require_ray

    require_ray()  # a real import: a broken or shadowed Ray is one line too, before any model loads
    return RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker, part_size=part_size,
                      verbose=verbose())


def print_outputs(*outputs, what: str = "outputs") -> None:
    """The last lines of a verb: where each file or folder it wrote is, as absolute paths.

    ``outputs`` are paths, or ``(path, note)`` pairs; paths that were not written are left out.
    """
    rows = [(Path(o[0]), o[1]) if isinstance(o, tuple) else (Path(o), "") for o in outputs if o is not None]
    # absolute, but as typed: a symlinked folder keeps its name (os.path.abspath, not resolve())
    rows = [(Path(os.path.abspath(p)), note) for p, note in rows if p.exists()]
    if not rows:
        return
    console.print(f"{what}:", markup=False)
    for path, note in rows:
        console.print(f"  {path}{'/' if path.is_dir() else ''}" + (f"  ({note})" if note else ""), markup=False)


def warn_provenance(model, paths, name: str) -> None:
    """The one warning a model's provenance calls for here (:mod:`birdbridge.encoders.provenance`), once."""
    from ..encoders.provenance import synthetic_world_note

    note = synthetic_world_note(model, paths, name)
    if note:
        console.print(note, markup=False, soft_wrap=True, style="yellow")


def run_with_progress(label: str, total: int, job):
    """Run ``job(progress_callback)`` under the one progress policy (:mod:`birdbridge.progress`):
    a rich bar on a terminal, plain lines (stage, done/total, rate, ETA) every 10 % or 30 s off it."""
    from ..progress import make_progress

    with make_progress(console) as prog:
        task = prog.add_task(label, total=total)
        return job(lambda n: prog.advance(task, n))


def exit_status(none_done: bool, n_failed: int, n_inputs: int | None, what: str, none_msg: str, strict: bool,
                failed: str = "were skipped") -> None:
    """The one exit rule of every many-input verb: 0 when at least one input succeeded
    (``--strict``: when none failed), else 1 with one line saying why. ``failed`` says what
    happened to the failed ones ("were skipped", "are bad or missing"); ``n_inputs`` None when
    the verb does not count its inputs (training draws clips, it does not list them)."""
    if none_done:
        console.print(f"[bold red]error:[/] none of the {n_inputs} {what} {none_msg}")
        raise typer.Exit(1)
    if strict and n_failed:
        of = f" of {n_inputs}" if n_inputs is not None else ""
        console.print(f"[bold red]error:[/] --strict: {n_failed}{of} {what} {failed}")
        raise typer.Exit(1)


def save_and_report(emb, out: Path, n_inputs: int, what: str, strict: bool) -> None:
    """Write the outputs, say what was skipped and why, and set the exit status.

    Exit 0 when at least one input was embedded (``--strict``: when none was skipped). When none
    was, nothing is written (an empty ``.npy`` looks like a result): the skips are listed here
    and one error line says how many inputs were skipped and why, exit 1.
    """
    n_ok = len({r["input"] for r in emb.rows})
    target = out_npy(out)
    if n_ok:
        path = emb.save(target)
        dim = emb.vectors.shape[1] if emb.vectors.ndim == 2 else 0
        console.print(f"wrote {len(emb.vectors)} rows ({dim}-d, {emb.meta.get('space')} space) from {n_ok}/{n_inputs} "
                      f"{what} to {path}; {emb.skips.summary()}")
    for skip in emb.skips.skips[:10]:
        console.print(f"  skipped {skip.input}: {skip.reason}" + (f" ({skip.detail})" if skip.detail else ""), markup=False)
    if len(emb.skips) > 10:
        where = f"all listed in {target.with_suffix('.json')}" if n_ok else "each of them one line above"
        console.print(f"  ... and {len(emb.skips) - 10} more" + (f" ({where})" if n_ok else ""), markup=False)
    if not n_ok:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(emb.skips.counts().items())) or "no reason recorded"
        console.print(f"[bold red]error:[/] none of the {n_inputs} {what} could be embedded: {len(emb.skips)} "
                      f"skipped ({counts}); nothing written to {target}", soft_wrap=True)
        raise typer.Exit(1)
    print_outputs((path, "vectors"), (path.with_suffix(".parquet"), "one row per vector"),
                  (path.with_suffix(".json"), "provenance and skips"))
    exit_status(False, len(emb.skips), n_inputs, what, "", strict)


def main() -> None:
    try:
        app()
    except BirdbridgeError as err:
        from rich.markup import escape

        # soft_wrap: one line however long (a URL or path cut by the terminal width is no use);
        # escape: the message may hold [brackets]
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        sys.exit(2)
