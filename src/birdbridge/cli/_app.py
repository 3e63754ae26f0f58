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

app = typer.Typer(
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


def run_with_progress(label: str, total: int, job):
    """Run ``job(progress_callback)`` under a rich progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as prog:
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

    Exit 0 when at least one input was embedded (``--strict``: when none was skipped);
    1 otherwise. The sidecar JSON is written either way, so the reasons stay on disk.
    """
    path = emb.save(out_npy(out))
    n_ok = len({r["input"] for r in emb.rows})
    dim = emb.vectors.shape[1] if emb.vectors.ndim == 2 else 0
    console.print(f"wrote {len(emb.vectors)} rows ({dim}-d, {emb.meta.get('space')} space) from {n_ok}/{n_inputs} "
                  f"{what} to {path}; {emb.skips.summary()}")
    for skip in emb.skips.skips[:10]:
        console.print(f"  skipped {skip.input}: {skip.reason}" + (f" ({skip.detail})" if skip.detail else ""), markup=False)
    if len(emb.skips) > 10:
        console.print(f"  ... and {len(emb.skips) - 10} more (all listed in {path.with_suffix('.json')})")
    print_outputs((path, "vectors"), (path.with_suffix(".parquet"), "one row per vector"),
                  (path.with_suffix(".json"), "provenance and skips"))
    exit_status(n_ok == 0, len(emb.skips), n_inputs, what,
                 f"could be embedded (reasons in {path.with_suffix('.json')})", strict)


def main() -> None:
    try:
        app()
    except BirdbridgeError as err:
        from rich.markup import escape

        # soft_wrap: one line however long (a URL or path cut by the terminal width is no use);
        # escape: the message may hold [brackets]
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        sys.exit(2)
