"""Dataset verbs: ``inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app, console


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

    from ..data.inspect import format_inspect, inspect_dataset

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
