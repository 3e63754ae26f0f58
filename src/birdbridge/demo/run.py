"""``birdbridge demo``: the paper's whole loop on the synthetic world, offline.

1. generate a world (species, names, songs, looks) and write it as WAV/PNG + CSV;
2. train the stand-in teacher (tiny open_clip) on image-text pairs, save, reload via ``local-dir:``;
3. pretrain the stand-in student (tiny ``ClapModel``) on audio-caption pairs, save, reload;
4. distil: student audio onto the teacher's cached species *text* embeddings (no images);
5. evaluate audio -> image retrieval on held-out clips and photos, against the random-
   projection baseline (same student, untrained head), and write results + report.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..console import make_console
from ..data.synthetic import SyntheticWorld, load_world
from ..distill.presets import DEMO_TRAIN
from ..distill.config import TrainConfig
from ..distill.train import distill
from ..encoders.factory import StudentEmbedder
from ..encoders.teacher import Teacher
from ..io import atomic_write_json, atomic_write_text
from ..retrieval.embed import embed_audio, embed_images
from ..metrics import chance_map, retrieval_metrics


def _progress(console: Console):
    from ..progress import make_progress

    return make_progress(console, info=True)


def _loss_info(loss: float | None) -> str:
    # None: the stand-in came from the cache (distill/standin_cache.py), bit-identical to training it
    return "from the stand-in cache (no training)" if loss is None else f"loss {loss:.3f}"


def evaluate_retrieval(embedder, teacher: Teacher, collection, split: str = "test") -> dict:
    audio_items = collection.audio_split(split)
    image_items = collection.image_split(split)
    a = embed_audio(embedder, [collection.resolve(i.path) for i in audio_items])
    g = embed_images(teacher, [collection.resolve(i.path) for i in image_items])
    by_path_a = {str(collection.resolve(i.path)): i.species_id for i in audio_items}
    by_path_g = {str(collection.resolve(i.path)): i.species_id for i in image_items}
    q_labels = [by_path_a[r["input"]] for r in a.rows]
    g_labels = [by_path_g[r["input"]] for r in g.rows]
    m = retrieval_metrics(a.vectors @ g.vectors.T, q_labels, g_labels)
    return {"metrics": m, "q_labels": q_labels, "g_labels": g_labels, "n_skipped": len(a.skips) + len(g.skips)}


def run_demo(out: str | Path, seed: int = 0, *, teacher_steps: int = 150, clap_steps: int = 400,
             train_overrides: dict | None = None, console: Console | None = None) -> dict:
    console = console or make_console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t_start = time.time()
    timings: dict[str, float] = {}

    with _progress(console) as prog:
        task = prog.add_task("world", total=1, info="")
        world = SyntheticWorld(seed)
        world.write(out / "world")
        collection = load_world(out / "world")
        prog.update(task, completed=1, info=f"{len(collection.species)} species, {len(collection.audio)} clips, {len(collection.images)} images")
        timings["world_s"] = time.time() - t_start

        from ..distill.standins import pretrain_clap, train_teacher

        t0 = time.time()
        task = prog.add_task("teacher (tiny open_clip, image-text)", total=teacher_steps, info="")
        train_teacher(collection, out / "teacher", steps=teacher_steps, seed=seed,
                      progress=lambda s, n, l: prog.update(task, completed=s, info=_loss_info(l)))
        timings["teacher_s"] = time.time() - t0
        t0 = time.time()
        task = prog.add_task("student (tiny CLAP, audio-caption)", total=clap_steps, info="")
        pretrain_clap(collection, world, out / "student", steps=clap_steps, seed=seed,
                      progress=lambda s, n, l: prog.update(task, completed=s, info=_loss_info(l)))
        timings["student_pretrain_s"] = time.time() - t0

    cfg = TrainConfig.from_dict({**DEMO_TRAIN, **(train_overrides or {}), "student": str(out / "student"),
                                 "teacher": str(out / "teacher"), "seed": seed, "cache_dir": str(out / "cache"),
                                 "accelerator": "cpu", "devices": 1})
    console.print("[bold]distilling[/] student audio onto teacher species-text embeddings (no images)")
    t0 = time.time()
    model = distill(collection, cfg, out / "train")
    model.save_pretrained(out / "model")
    timings["distill_s"] = time.time() - t0

    t0 = time.time()
    teacher = Teacher.load(str(out / "teacher"))
    from ..distill.train import build_student

    torch.manual_seed(seed)  # the same head initialisation distillation started from
    random_student = build_student(cfg, teacher.dim)
    methods = {}
    for name, m in (("random_projection", random_student), ("distilled", model)):
        res = evaluate_retrieval(StudentEmbedder(m, name), teacher, collection)
        methods[name] = res
    q_labels, g_labels = methods["distilled"]["q_labels"], methods["distilled"]["g_labels"]
    timings["evaluate_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_start

    results = {
        "dataset": "synthetic",
        "seed": seed,
        "n_species": len(collection.species),
        "n_queries": len(q_labels),
        "n_gallery": len(g_labels),
        "chance_map": chance_map(q_labels, g_labels),
        "methods": {k: {"map": v["metrics"]["map"], "recall@1": v["metrics"]["recall@1"], "recall@5": v["metrics"]["recall@5"],
                        "recall@10": v["metrics"]["recall@10"], "n_queries_without_relevant": v["metrics"]["n_queries_without_relevant"]}
                    for k, v in methods.items()},
        "config": {"train": cfg.__dict__, "teacher_steps": teacher_steps, "clap_steps": clap_steps},
        "provenance": {"birdbridge": __version__, "torch": torch.__version__, "python": platform.python_version(),
                       "teacher": str(out / "teacher"), "student": str(out / "student"), "model": str(out / "model")},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render_report(results))
    print_table(results, make_console())
    # Pictures for the ears: index the held-out photos, search with a few held-out clips.
    results.update(show_pictures(out, collection, teacher, StudentEmbedder(model, str(out / "model")), console))
    atomic_write_json(out / "results.json", results)
    return results


def show_pictures(out: Path, collection, teacher: Teacher, embedder, console: Console, n_species: int = 6) -> dict:
    """Index the test photos into ``out/index`` and write ``out/search.html`` for one test clip per species."""
    from ..io import atomic_dir
    from ..retrieval.html import write_html
    from ..retrieval.index import ImageIndex, records_from_collection
    from ..retrieval.search import search_audio

    t0 = time.time()
    with atomic_dir(out / "index") as tmp:  # a re-run retrains the teacher: never reuse old vectors
        ImageIndex.build(tmp, teacher, records_from_collection(collection, ("test",)))
    index = ImageIndex.open(out / "index")
    first_clip: dict[str, str] = {}
    for a in collection.audio_split("test"):
        first_clip.setdefault(a.species_id, str(collection.resolve(a.path)))
    picks = [(sid, first_clip[sid]) for sid in sorted(first_clip)[:n_species]]
    found = search_audio(embedder, index, [p for _, p in picks], k=8, guess=True, cache_dir=out / "cache")
    write_html(found, out / "search.html", subtitle=f"{len(picks)} held-out synthetic clips searched against "
               f"{index.count} held-out photos (synthetic world; nothing here is a real bird)")
    top1 = float(np.mean([r.ok and r.hits[0].species_id == sid for r, (sid, _) in zip(found, picks)]))
    console.print(f"wrote {out / 'search.html'} ({len(picks)} clips; top-1 species {top1:.2f}; {time.time() - t0:.1f} s)")
    return {"index": str(out / "index"), "search_html": str(out / "search.html"), "search_top1_species": top1}


def _rows(results: dict):
    for name, m in results["methods"].items():
        yield name, m["map"], m["recall@1"], m["recall@10"]


def print_table(results: dict, console: Console) -> None:
    t = Table(title=f"audio -> image retrieval, synthetic world (seed {results['seed']}, {results['n_species']} species)")
    for col in ("method", "mAP", "R@1", "R@10", "chance mAP"):
        t.add_column(col, justify="right" if col != "method" else "left")
    for name, mAP, r1, r10 in _rows(results):
        t.add_row(name, f"{mAP:.3f}", f"{r1:.3f}", f"{r10:.3f}", f"{results['chance_map']:.3f}")
    console.print(t)


def render_report(results: dict) -> str:
    lines = [
        "# birdbridge demo: audio → image retrieval on the synthetic world",
        "",
        f"Seed {results['seed']}; {results['n_species']} species; {results['n_queries']} held-out clips as queries, "
        f"{results['n_gallery']} held-out images as the gallery. The student never saw an image: it was distilled "
        "onto the teacher's species *text* embeddings only.",
        "",
        "| method | mAP | R@1 | R@10 | chance mAP |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, mAP, r1, r10 in _rows(results):
        lines.append(f"| {name} | {mAP:.3f} | {r1:.3f} | {r10:.3f} | {results['chance_map']:.3f} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in results["timings_s"].items()), ""]
    return "\n".join(lines)
