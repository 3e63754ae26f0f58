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
) -> None:
    """Count recordings, images and species of a dataset and list bad or missing files."""
    import json

    from .data.inspect import format_inspect, inspect_dataset

    opts: dict = {"taxonomy_csv": taxonomy} if taxonomy is not None else {}
    if media is not None:
        opts["kind"] = media
    report = inspect_dataset(kind, path, check_media=not no_media, max_files=max_files, deep=deep, **opts)
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else format_inspect(report))


def main() -> None:
    try:
        app()
    except BirdbridgeError as err:
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
