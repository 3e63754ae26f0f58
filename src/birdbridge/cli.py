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


def main() -> None:
    try:
        app()
    except BirdbridgeError as err:
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
