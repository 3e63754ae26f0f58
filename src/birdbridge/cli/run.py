"""The method's runs: ``demo``, ``train``, ``eval``, ``score``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app, console, exit_status, print_outputs
from ._checks import Preflight


def _check_eval_paths(checks: Preflight, cfg) -> None:
    """The data files and given models an evaluation config names (URLs left to their readers)."""
    for name in ("train_data", "eval_data"):
        spec = getattr(cfg, name)
        if spec is not None and "://" not in spec.path and not spec.path.startswith("local:"):
            checks.exists(spec.path, f"config {name}.path")
    sc = cfg.soundscapes
    if sc is not None:
        for key in ("annotations", "taxonomy", "audio_root", "class_list"):
            value = getattr(sc, key)
            if value and "://" not in value and not value.startswith("local:"):
                checks.exists(value, f"config soundscapes.{key}")
    for model in [cfg.distilled_model, *cfg.ablation_models.values()]:
        checks.model(model, "distilled model")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Output directory."),
    seed: int = typer.Option(0, "--seed", help="Seed for the world, models and training."),
) -> None:
    """Run the paper's whole loop offline on a synthetic world and report retrieval mAP."""
    from ..demo.run import run_demo

    run_demo(out, seed, console=console)
    print_outputs((out / "report.md", "the table"), (out / "results.json", "every number"),
                  (out / "search.html", "photos found for held-out clips"), (out / "model", "distilled model"),
                  (out / "index", "image index"), (out / "teacher", "stand-in teacher"))


@app.command("eval")
def eval_cmd(
    config: Path = typer.Argument(..., help="Evaluation config (YAML), e.g. configs/synthetic/paper_table.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: results.json, report.md, plots."),
    root: Optional[Path] = typer.Option(None, "--root", help="Where `birdbridge data download` put the datasets: the "
                                        "config's relative data paths are read below it (overrides its `root:`)."),
) -> None:
    """Run the paper's evaluation (methods x protocols, ablation, unseen species) from a config."""
    from ..evaluate.eval_config import load_eval_config

    checks = Preflight()  # the config (strict keys, values), its data paths, before torch loads
    cfg = checks.attempt(load_eval_config, config, root)
    if cfg is not None:
        _check_eval_paths(checks, cfg)
    checks.done()
    from transformers.utils import logging as hf_logging

    from ..evaluate.pipeline import evaluate

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model load buries the log
    evaluate(config, out, root=root, log=lambda msg: console.print(msg, markup=False))
    typer.echo((out / "report.md").read_text())
    print_outputs((out / "report.md", "the tables"), (out / "results.json", "every number"),
                  (out / "skipped.json", "inputs skipped, with reasons"), *sorted(out.glob("*.png")))


@app.command("score")
def score_cmd(
    queries: Path = typer.Argument(..., help="Query parquet: `embedding` (list of floats) and `label` columns, or an embed-audio/embed-images .parquet (vectors in the .npy beside it)."),
    gallery: Path = typer.Argument(..., help="Gallery parquet, the same way."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the results JSON here."),
    ranks: Optional[str] = typer.Option(None, "--ranks", help="Comma-separated extra ranks (columns), e.g. genus,family."),
) -> None:
    """Score your own embeddings: retrieval mAP / R@k of queries against a gallery, per rank."""
    import json

    from ..evaluate.score import score_files
    from ..evaluate.write import write_json

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
    print_outputs((out, "results as JSON") if out is not None else None)


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML with `data: {kind, path, ...loader options}`, `train: {TrainConfig fields}` "
                                            "and optional `validation: {path, kind, images}`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: model/, checkpoints/, logs/, metrics.csv, skipped.json."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Devices per node (a number or 'auto'); overrides the config."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Number of nodes; overrides the config."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Lightning strategy, e.g. ddp; overrides the config."),
    accelerator: Optional[str] = typer.Option(None, "--accelerator", help="cpu, gpu or auto; overrides the config."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last.ckpt if it exists."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any training clip was skipped."),
) -> None:
    """Distil the student onto the teacher's species-text space (one GPU, DDP, torchrun or SLURM)."""
    from ..config import load_yaml
    from ..data.loaders import loader_kinds
    from ..data.shards import is_remote
    from ..distill.config import TrainConfig, ValidationConfig
    from ..errors import ConfigError

    from ..encoders.hub import anchored

    checks = Preflight()  # the config (strict keys, values), its paths and data, the accelerator, before torch loads
    doc = load_yaml(config)
    unknown = sorted(set(doc) - {"data", "train", "validation"})
    data = doc.get("data")
    if unknown or not isinstance(data, dict) or "kind" not in data or "path" not in data:
        raise ConfigError(f"{config}: needs `data: {{kind, path, ...}}` and optional `train: {{...}}`, `validation: {{...}}`"
                          + (f"; unknown top-level key {unknown[0]!r}" if unknown else ""))
    data = dict(data)
    kind, path = data.pop("kind"), data.pop("path")
    exclude = data.pop("exclude_species", None)  # a species list to leave out (eval's unseen_species.csv)
    if exclude is not None:
        exclude = Path(exclude).expanduser()
        if not exclude.is_absolute() and (config.parent / exclude).exists():
            exclude = config.parent / exclude  # relative to the config, as data.path
    n_before = len(checks.problems)
    if kind not in loader_kinds():
        checks.problems.append(ConfigError(f"{config}: data.kind must be one of {', '.join(loader_kinds())}, not {kind!r}"))
    if not is_remote(path):  # shards may live at a URL (s3://, gs://, ...): kept as written
        path = Path(path)
        if not path.is_absolute():
            path = (config.parent / path) if (config.parent / path).exists() else path  # relative to the config
        if not path.exists():
            checks.problems.append(ConfigError(f"{config}: data.path not found: {path}"))
    data_ok = len(checks.problems) == n_before  # a known kind, a path that exists
    vcfg = None
    if doc.get("validation") is not None:  # held-out recordings (and photos) for model selection
        vcfg = checks.attempt(ValidationConfig.from_dict, doc["validation"])
        if vcfg is not None:
            for key in ("path", "images"):  # relative to the config, as data.path
                value = getattr(vcfg, key)
                if value and not Path(value).expanduser().is_absolute() and (config.parent / value).exists():
                    setattr(vcfg, key, str(config.parent / value))
                if value and not Path(getattr(vcfg, key)).expanduser().exists():
                    checks.problems.append(ConfigError(f"{config}: validation.{key} not found: {value}"))
                    vcfg = None
                    break
    overrides = {k: v for k, v in {"num_nodes": num_nodes, "strategy": strategy, "accelerator": accelerator}.items() if v is not None}
    if devices is not None:
        overrides["devices"] = int(devices) if devices.isdigit() else devices
    train = dict(doc.get("train") or {})
    for key in ("student", "teacher"):  # model folders, like data.path, may be written relative to the config
        if isinstance(train.get(key), str):
            train[key] = anchored(train[key], config.parent)
    for key in ("head_species", "reference_audio", "combination_species"):  # lists and audio: relative to the config too
        value = train.get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute() and (config.parent / value).exists():
            train[key] = str(config.parent / value)
    cfg = checks.attempt(TrainConfig.from_dict, {**train, **overrides})
    if cfg is not None:
        checks.model(cfg.student, "student")
        checks.model(cfg.teacher, "teacher")
        checks.accelerator(cfg.accelerator)
        for key in ("head_species", "reference_audio", "combination_species"):
            value = getattr(cfg, key)
            if value and not Path(value).expanduser().exists():
                checks.problems.append(ConfigError(f"{config}: train.{key} not found: {value}"))
        if cfg.zscl_weight > 0 and not cfg.reference_audio:
            checks.problems.append(ConfigError(f"{config}: train.zscl_weight > 0 needs train.reference_audio "
                                               "(unlabeled recordings: a CSV, a folder or an iNatSounds JSON)"))
    collection = excluded = validation = None
    if data_ok and cfg is not None:  # the data itself (read, not decoded): its labelled recordings of the train split
        from ..data.loaders import load_collection
        from ..distill.items import load_validation, training_items, validation_data

        collection = checks.attempt(load_collection, kind, path, **data)
        if collection is not None:
            if exclude is not None:
                from ..data.species_list import exclude_species

                res = checks.attempt(exclude_species, collection, exclude)
                collection, excluded = res if res is not None else (None, None)
            if collection is not None:
                checks.attempt(training_items, collection, cfg)
                loaded = checks.attempt(load_validation, vcfg) if vcfg is not None else (None, None)
                if loaded is not None:  # the validation split: the block's data, else the val_split rows
                    validation = checks.attempt(validation_data, collection, cfg, *loaded)
    checks.done()
    from ..devices import check_accelerator
    from ..distill.train import distill
    from ..distributed import is_main_process
    from ..errors import SkipLog

    check_accelerator(cfg.accelerator, cfg.devices)  # torch's word, before the models load
    if excluded is not None and is_main_process():
        from ..data.species_list import exclusion_line

        console.print(exclusion_line(excluded), markup=False, soft_wrap=True)
    import json

    distill(collection, cfg, out, resume=resume, validation=validation)
    if is_main_process():
        typer.echo(f"model written to {out / 'model'}")
        selection = json.loads((out / "model" / "training.json").read_text())
        if selection.get("best_epoch") is not None:
            v = selection["validation"]
            kind = "audio->image" if v["kind"] == "audio_image" else "audio->text"
            typer.echo(f"best validation: epoch {selection['best_epoch']}, {kind} mAP {selection['best_val_map']:.4f} "
                       f"({v['n_audio']} recordings, {v['source']}); that epoch's weights are the model")
        skipped = SkipLog.read_json(out / "skipped.json")
        if skipped:
            console.print(f"{len(skipped)} training clips skipped {skipped.counts()} (listed in {out / 'skipped.json'})",
                          markup=False)
        print_outputs((out / "model", "distilled model (training.json: its epoch, by validation)"),
                      (out / "checkpoints", "Lightning checkpoints (--resume)"),
                      (out / "logs", "training metrics (CSV)"), (out / "metrics.csv", "one row per validation"),
                      (out / "wise", "WiSE-FT end points: start and fine-tuned weights (wise_alpha < 1)"),
                      (out / "skipped.json", "clips skipped, with reasons"))
        # no step at all raised in distill(); here only --strict can turn skips into a failure
        exit_status(False, len(skipped), None, "training clips", "", strict)
