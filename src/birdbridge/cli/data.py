"""Dataset verbs: ``inspect``, and the ``data`` group: ``data download``, ``data prepare``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._checks import Preflight
from ._app import PlainTyper, app, console, exit_status, print_outputs


@app.command("inspect")
def inspect_cmd(
    kind: str = typer.Argument(..., help="Dataset kind: inat_sounds, ssw60, soundscape, csv, folder, synthetic or shards (a `data prepare` folder)."),
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
    if not report.get("n_recordings") and not report.get("n_images"):
        from ..errors import ConfigError

        # nothing to report on is an input error, as `detect` and `index` say for an empty folder
        what = {"audio": "recordings", "images": "images"}.get(media or "", "recordings or images")
        raise ConfigError(f"no {what} found in {path} ({kind})")
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else format_inspect(report))
    m, n_bad = report.get("media", {}), report.get("bad_files", {}).get("n", 0)
    n_checked, n_listed = m.get("n_checked") or 0, m.get("n_present", 0) + m.get("n_missing", 0)
    none = bool(n_checked) and m.get("n_bad", 0) >= n_checked
    exit_status(none, n_bad, n_checked if none else n_listed, "checked media files" if none else "media files",
                "is usable", strict, failed="are bad or missing")


data_app = PlainTyper(name="data", help="Fetch the paper's datasets and prepare training shards.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _bytes_progress():
    from ..progress import make_progress

    return make_progress(console, unit="bytes")


@data_app.command("download")
def download_cmd(
    kind: list[str] = typer.Argument(..., help="One or more of inat_sounds, ssw60, soundscapes, ebird_taxonomy, or all."),
    root: Path = typer.Option(..., "--root", help="Directory the datasets go into (the paper config's --root)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="A copy with the layout KIND/FILE (URL or directory); "
                                         "default $BIRDBRIDGE_DATA_MIRROR, else the datasets' own URLs."),
    checksums: Optional[Path] = typer.Option(None, "--checksums", help="md5sum/sha256sum-style file over KIND/FILE names; "
                                             "overrides the built-in checksums."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="iNatSounds split(s) to fetch (repeatable; default all)."),
    keep_archives: bool = typer.Option(False, "--keep-archives", help="Keep the verified archives in ROOT/.downloads "
                                       "(then usable as a --mirror)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for a server to answer."),
) -> None:
    """Download, verify and unpack datasets into ROOT; resumes, and skips what is already there."""
    from ..data.download import download

    with _bytes_progress() as prog:
        def report(label, total):
            task = prog.add_task(label, total=total)
            return lambda n: prog.advance(task, n)

        result = download(kind, root, mirror=mirror, checksums=checksums, splits=split, keep_archives=keep_archives,
                          timeout_s=timeout, report=report)
    for a in result["assets"]:
        extra = f" (sha256 recorded: {a['recorded'].split(':', 1)[1][:16]}…; no published checksum)" if a.get("recorded") else ""
        console.print(f"{a['status']:>10}  {root / a['target']}{extra}", markup=False, soft_wrap=True)
    print_outputs(*((root / a["target"], a["status"]) for a in result["assets"]))


@data_app.command("prepare")
def prepare_cmd(
    kind: str = typer.Argument(..., help="Dataset kind as in `inspect`: inat_sounds, ssw60, soundscape, csv, folder or synthetic."),
    path: Path = typer.Argument(..., help="Annotation file (JSON/CSV) or dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Shard directory to write (LitData chunks + birdbridge.json)."),
    sample_rate: str = typer.Option("48000", "--sample-rate", help="Rate the audio is stored at (Hz), or 'native'."),
    encoding: str = typer.Option("pcm16", "--encoding", help="pcm16 (fastest to read) or flac (smaller)."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Keep these splits only (repeatable)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: all cores)."),
    part_size: int = typer.Option(1000, "--part-size", help="Recordings per committed part (the resume step)."),
    media_root: Optional[Path] = typer.Option(None, "--media-root", help="inat_sounds: folder the JSON's paths are relative to."),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", help="Soundscapes: CSV mapping eBird codes to species."),
    media: Optional[str] = typer.Option(None, "--media", help="csv/folder: audio, images or auto (by extension)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any recording was skipped."),
    exclude_species: Optional[Path] = typer.Option(None, "--exclude-species", help="Leave out the species this file "
                                                   "names (one a line: id, scientific or common name, or a CSV; e.g. "
                                                   "the unseen_species.csv `birdbridge eval` writes)."),
) -> None:
    """Decode a dataset's recordings once into shards that training streams (`data: {kind: shards}`)."""
    from ..data.loaders import loader_kinds
    from ..data.shards import ENCODINGS
    from ..errors import ConfigError

    checks = Preflight()  # every wrong input at once, before any progress shows
    if sample_rate != "native" and not sample_rate.isdigit():
        checks.problems.append(ConfigError(f"--sample-rate must be a number of Hz or 'native', got {sample_rate!r}"))
    checks.choice(encoding, ENCODINGS, "--encoding")
    checks.choice(kind, tuple(loader_kinds()), "KIND")
    checks.exists(path, "dataset")
    checks.exists(media_root, "--media-root")
    checks.file(taxonomy, "--taxonomy")
    checks.done()
    from ..data.shard_writer import prepare_shards
    opts: dict = {}
    if media_root is not None:
        opts["media_root"] = str(media_root)
    if taxonomy is not None:
        opts["taxonomy_csv"] = str(taxonomy)
    if media is not None:
        opts["kind"] = media
    from ..progress import make_progress

    with make_progress(console) as prog:
        task = prog.add_task("recordings", total=None)
        m = prepare_shards(kind, path, out, sample_rate=None if sample_rate == "native" else int(sample_rate),
                           encoding=encoding, splits=split, options=opts, num_workers=workers, part_size=part_size,
                           progress=lambda n: prog.advance(task, n),
                           on_start=lambda total, done: prog.update(task, total=total, completed=done),
                           exclude_species=exclude_species)
    what = "already complete" if m.get("already_complete") else f"wrote {m['n_samples']} samples"
    console.print(f"{out}: {what} ({m['hours']:.2f} h of audio at {m['sample_rate']} Hz, {m['encoding']}, "
                  f"{m['bytes'] / 1e9:.2f} GB in {m['n_chunks']} chunks) from {m['n_inputs']} recordings"
                  + (f", resumed after {m['resumed_parts']} finished part(s)" if m.get("resumed_parts") else ""), markup=False,
                  soft_wrap=True)
    if m.get("excluded"):
        from ..data.species_list import exclusion_line

        console.print(exclusion_line(m["excluded"]), markup=False, soft_wrap=True)
    print_outputs((out, "shards (`data: {kind: shards, path: ...}` in a train config)"),
                  (out / "skipped.json", "recordings skipped, with reasons"))
    if m["n_skipped"]:
        console.print(f"{m['n_skipped']} skipped {m['skip_counts']} (listed in {out / 'skipped.json'})", markup=False,
                      soft_wrap=True)
    exit_status(False, m["n_skipped"], m["n_inputs"], "recordings", "", strict)
