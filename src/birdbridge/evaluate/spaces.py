"""Methods as embedding *spaces*, and the one scoring path they all go through.

A space maps every audio set of the run (``query``: eval-split clips, ``reference``:
reference-split clips for kNN) to teacher-space unit rows, row-aligned with the set's items
plus an ``ok`` mask (False where the input was skipped). Models are embedded once per set;
the CLAP-derived baselines transform the student's CLAP-space rows, which are computed once.
A :class:`View` restricts scoring to a species subset (the unseen-species split) without
re-embedding anything. Soundscape windows are the exception: every space is registered with
:class:`~birdbridge.evaluate.windows.SoundscapeWindows`, scoring only requests their
numbers, and :meth:`Evaluator.score_windows` decodes the windows once for every requested
space at the end of the run and fills them in (the real sets are too large for one pass per
space and for their rows in memory).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..encoders.species_text import TextEmbeddingCache, clap_species_text
from ..encoders.text import ClapTextEncoder
from ..errors import SkipLog
from . import protocols
from .windows import SoundscapeWindows, decode_workers
from .baselines import (
    fit_text_mapping,
    random_projection_student,
    zero_shot_combination,
)
from ..metrics import precision_recall_curve

Space = dict  # set name -> (vectors [N, D] float32, ok [N] bool)


@dataclass
class AudioSet:
    inputs: list  # (path, start_s | None, end_s | None) for embed_audio
    labels: list[str]  # species id per item ("" for soundscape windows)


@dataclass
class View:
    species: list  # candidate species (text rows, zero-shot classes), eval collection order
    masks: dict[str, np.ndarray]  # set name (and "images") -> items of these species
    windows: bool  # soundscape windows are scored only in the full view
    index: dict[str, int] = field(default_factory=dict)


def _key(path, start) -> tuple[str, float]:
    return str(path), round(float(start or 0.0), 4)


def _aligned(emb, keys: list, row_key: Callable[[dict], tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Place embedding rows back at their input positions (skipped inputs have no row)."""
    vec = np.zeros((len(keys), emb.vectors.shape[1] if emb.vectors.ndim == 2 else 0), np.float32)
    ok = np.zeros(len(keys), bool)
    j = 0
    for i, k in enumerate(keys):
        if j < len(emb.rows) and row_key(emb.rows[j]) == k:
            vec[i], ok[i] = emb.vectors[j], True
            j += 1
    if j != len(emb.rows):
        raise RuntimeError(f"could not align {len(emb.rows) - j} embedding rows with their inputs")
    return vec, ok


def _cap(items: list, per_species: int | None) -> list:
    if per_species is None:
        return items
    seen: dict[str, int] = {}
    out = []
    for it in items:
        seen[it.species_id] = seen.get(it.species_id, 0) + 1
        if seen[it.species_id] <= per_species:
            out.append(it)
    return out


class Evaluator:
    def __init__(self, cfg, setting, train_cfg, log=print):
        import torch

        from ..encoders.factory import load_audio_embedder
        from ..encoders.teacher import Teacher
        from ..retrieval.embed import embed_images

        self.cfg, self.setting, self.train_cfg, self.log = cfg, setting, train_cfg, log
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        self.progress = sys.stderr.isatty()  # bars for long text embeddings, for people watching only
        self.timings: dict[str, float] = {}
        self.skips: dict[str, SkipLog] = {}
        t0 = time.time()
        coll = setting.eval_collection
        self.species_by_id = coll.species_by_id
        known = set(self.species_by_id)
        self.sets: dict[str, AudioSet] = {}
        for name, split in (("query", cfg.eval_split), ("reference", cfg.reference_split)):
            items = _cap([a for a in coll.audio_split(split) if a.species_id in known], cfg.max_items_per_species)
            self.sets[name] = AudioSet([(str(coll.resolve(a.path)), a.start_s, a.end_s) for a in items], [a.species_id for a in items])
        if not self.sets["query"].inputs:
            from ..errors import ConfigError

            raise ConfigError(f"no audio in split {cfg.eval_split!r} of {coll.name} (config key 'eval_split')")
        self.windows: SoundscapeWindows | None = None
        if setting.soundscapes is not None:
            from ..data.soundscapes import soundscape_segments

            sc = setting.soundscapes
            segs, targets = soundscape_segments(sc, window_s=setting.window_s, hop_s=setting.hop_s)
            if setting.max_files is not None:
                keep_files = set(sc.files[: setting.max_files])
                keep = [i for i, s in enumerate(segs) if s[0] in keep_files]
                segs, targets = [segs[i] for i in keep], targets[keep]
            self.windows = SoundscapeWindows([(str(Path(sc.audio_root) / f), a, b) for f, a, b in segs], targets, log)
            self.window_species = list(sc.collection.species)
        images = _cap([i for i in coll.image_split(cfg.eval_split) if i.species_id in known], cfg.max_items_per_species)
        self.image_labels = [i.species_id for i in images]
        self.image_sources = [i.extra.get("source") for i in images]
        self.teacher = Teacher.load(setting.teacher, self.device)
        paths = [str(coll.resolve(i.path)) for i in images]
        log(f"embedding {len(paths)} images with the teacher")
        img = embed_images(self.teacher, paths)
        self.skips["images"] = img.skips
        self.image_vec, self.image_ok = _aligned(img, paths, lambda r: r["input"])
        self.clap_embedder = load_audio_embedder(setting.student, self.device)
        self.clap = self._embed(self.clap_embedder, "clap")
        if self.windows is not None:
            self.windows.add_model("clap", self.clap_embedder)
        self._clap_text = None
        self._text_cache: dict[tuple, np.ndarray] = {}
        self.spaces: dict[str, Space | Callable] = {}
        self.text_mappings: dict[str, dict] = {}
        self.timings["shared_s"] = time.time() - t0

    # ------------------------------------------------------------------ embedding
    def _embed(self, embedder, name: str) -> Space:
        from ..retrieval.embed import embed_audio

        out: Space = {}
        for set_name, s in self.sets.items():
            self.log(f"embedding {len(s.inputs)} {set_name} clips with {name}")
            emb = embed_audio(embedder, s.inputs, batch_size=64)
            self.skips.setdefault(f"audio:{set_name}", emb.skips)
            out[set_name] = _aligned(emb, [_key(p, a) for p, a, _ in s.inputs], lambda r: (r["input"], r["window_start_s"]))
        return out

    def add_model_space(self, name: str, model) -> None:
        from ..encoders.factory import StudentEmbedder

        embedder = StudentEmbedder(model, name, device=self.device)
        self.spaces[name] = self._embed(embedder, name)
        if self.windows is not None:  # embedded at score_windows, with every other space, if its numbers are asked for
            self.windows.add_model(name, embedder)

    def random_projection(self):
        return random_projection_student(self.train_cfg, self.teacher.dim)

    @property
    def clap_text(self) -> ClapTextEncoder:
        if self._clap_text is None:
            self._clap_text = ClapTextEncoder.load(str(self.setting.student)).to(self.device)
        return self._clap_text

    def add_text_mapping(self, name: str, train_species_ids: list[str]) -> None:
        by_id = self.setting.train_collection.species_by_id
        species = [by_id[i] for i in train_species_ids]
        types = self.train_cfg.resolved_prompt_types  # the prompt types distillation trains on
        rows = {pt: self.teacher_rows(species, pt, self.train_cfg.template_set) for pt in types}
        lin = fit_text_mapping(self.clap_text, rows, species, templates=self.cfg.clap_text.templates,
                               alpha=self.cfg.ridge_alpha, progress=self.progress)
        self.text_mappings[name] = {"n_pairs": lin.n_pairs, "n_species": len(species), "prompt_types": list(types),
                                    "clap_templates": list(self.cfg.clap_text.templates),
                                    "teacher_template_set": self.train_cfg.template_set}
        self.log(f"{name}: ridge map CLAP text -> teacher text fitted on {lin.n_pairs} CLAP captions of {len(species)} "
                 f"species ({'+'.join(types)}), each paired with the teacher's prompt of that species and type")
        self.spaces[name] = {k: (lin.apply(v), ok) for k, (v, ok) in self.clap.items()}
        if self.windows is not None:
            self.windows.add_derived(name, "clap", lin.apply)

    def add_zero_shot_combination(self, name: str, all_species: bool = False) -> None:
        """``all_species``: CLAP chooses among every evaluation species, not only the view's."""
        scale = self.clap_text.logit_scale
        every = list(self.setting.eval_collection.species)

        def space(view: View) -> Space:
            out = {}
            for k, (v, ok) in self.clap.items():
                cands = every if all_species else view.species
                out[k] = (zero_shot_combination(v, self.clap_species_text(cands), self.teacher_text(cands), scale), ok)
            return out

        self.spaces[name] = space
        if self.windows is not None:  # windows: CLAP chooses among the soundscapes' label space
            ws = self.window_species
            self.windows.add_derived(name, "clap", lambda v: zero_shot_combination(
                v, self.clap_species_text(ws), self.teacher_text(ws), scale))

    def space(self, name: str, view: View) -> Space:
        s = self.spaces[name]
        return s(view) if callable(s) else s

    # ------------------------------------------------------------------ texts
    def teacher_rows(self, species: list, prompt_type: str, template_set: str) -> np.ndarray:
        """The teacher's species embeddings in one prompt format, through the on-disk text cache."""
        key = ("teacher", prompt_type, template_set, tuple(sp.id for sp in species))
        if key not in self._text_cache:
            cache = TextEmbeddingCache(Path(self.setting.cache_dir).expanduser())
            self._text_cache[key] = cache.get(self.setting.teacher, species, prompt_type, template_set, lambda: self.teacher,
                                              progress=self.progress).numpy()
        return self._text_cache[key]

    def teacher_text(self, species: list) -> np.ndarray:
        """The teacher's species texts for text queries and zero-shot (config key ``text``)."""
        return self.teacher_rows(species, self.cfg.text.prompt_type, self.cfg.text.template_set)

    def clap_species_text(self, species: list) -> np.ndarray:
        key = ("clap", tuple(sp.id for sp in species))
        if key not in self._text_cache:
            c = self.cfg.clap_text
            self._text_cache[key] = clap_species_text(self.clap_text, species, c.templates, c.prompt_types, self.progress)
        return self._text_cache[key]

    # ------------------------------------------------------------------ views and scoring
    def view(self, species_ids: list[str] | None) -> View:
        """All eval species (``None``) or a subset; masks select their items."""
        coll = self.setting.eval_collection
        ids = set(species_ids) if species_ids is not None else {sp.id for sp in coll.species}
        species = [sp for sp in coll.species if sp.id in ids]
        masks = {k: np.array([lab in ids for lab in s.labels], bool) for k, s in self.sets.items() if k != "windows"}
        masks["images"] = np.array([lab in ids for lab in self.image_labels], bool)
        return View(species, masks, windows=species_ids is None, index={sp.id: i for i, sp in enumerate(species)})

    def _taxa(self, labels) -> list[dict]:
        return protocols.taxa_for(labels, self.species_by_id)

    def _select(self, space: Space, set_name: str, view: View):
        vec, ok = space[set_name]
        keep = ok & view.masks[set_name]
        labels = [lab for lab, k in zip(self.sets[set_name].labels, keep) if k]
        return vec[keep], labels, int((~ok & view.masks[set_name]).sum())

    def score(self, name: str, view: View, *, space: Space | None = None, text=None, window_text=None,
              retrieval: bool = True) -> dict:
        cfg = self.cfg
        space = space if space is not None else self.space(name, view)
        q, q_labels, q_skipped = self._select(space, "query", view)
        q_taxa = self._taxa(q_labels)
        text = self.teacher_text(view.species) if text is None else text
        res: dict = {"n_queries": len(q_labels), "n_queries_skipped": q_skipped}
        if retrieval:
            im = self.image_ok & view.masks["images"]
            g, g_labels = self.image_vec[im], [lab for lab, k in zip(self.image_labels, im) if k]
            g_taxa, g_src = self._taxa(g_labels), [s for s, k in zip(self.image_sources, im) if k]
            res["audio_to_image"] = protocols.audio_to_image(q, q_taxa, g, g_taxa, g_src, cfg.ranks, cfg.retrieval_ks)
            res["image_to_audio"] = protocols.retrieval(g, g_taxa, q, q_taxa, cfg.ranks, cfg.retrieval_ks)
            res["text_to_audio"] = protocols.retrieval(text, self._taxa([sp.id for sp in view.species]), q, q_taxa,
                                                       cfg.ranks, cfg.retrieval_ks)
        r, r_labels, _ = self._select(space, "reference", view)
        res["knn"] = protocols.knn(r, r_labels, q, q_labels, cfg.knn_ks)
        res["zero_shot_focal"] = protocols.zero_shot_focal(q, [view.index[lab] for lab in q_labels], text)
        if view.windows and self.windows is not None and self.windows.has(name):
            wt = self.teacher_text(self.window_species) if window_text is None else window_text
            self.windows.request(name, wt, res)  # filled in by score_windows
        return res

    def score_windows(self, work_dir: str | Path) -> None:
        """Decode the soundscape windows once, embed them in every space whose numbers were
        asked for, score them from disk (rows under ``work_dir``, removed after) and fill in
        each pending ``zero_shot_soundscape``."""
        if self.windows is None:
            return
        t0 = time.time()
        self.windows.run(work_dir, workers=decode_workers(self.device))
        self.skips["audio:windows"] = self.windows.skips
        self.timings["soundscape_s"] = time.time() - t0

    def score_clap(self, view: View) -> dict:
        """The student before distillation, in its own CLAP space: kNN and CLAP zero-shot."""
        wt = self.clap_species_text(self.window_species) if self.windows is not None else None
        return self.score("clap", view, space=self.clap, text=self.clap_species_text(view.species), window_text=wt,
                          retrieval=False)

    def score_teacher(self, view: View) -> dict:
        im = self.image_ok & view.masks["images"]
        g_taxa = self._taxa([lab for lab, k in zip(self.image_labels, im) if k])
        text = self.teacher_text(view.species)
        return {"text_to_image": protocols.retrieval(text, self._taxa([sp.id for sp in view.species]), self.image_vec[im],
                                                     g_taxa, self.cfg.ranks, self.cfg.retrieval_ks)}

    def _query_vs_images(self, name: str, view: View):
        q, q_labels, _ = self._select(self.space(name, view), "query", view)
        im = self.image_ok & view.masks["images"]
        g_labels = [lab for lab, k in zip(self.image_labels, im) if k]
        return protocols.similarity(q, self.image_vec[im]), q_labels, g_labels

    def pr_curve(self, name: str, view: View) -> dict:
        s, ql, gl = self._query_vs_images(name, view)
        recall, precision = precision_recall_curve(s, ql, gl)
        return {"recall": recall.tolist(), "precision": precision.tolist()}

    def plot_data(self, view: View) -> dict:
        """Similarity matrix of the headline method, queries and gallery sorted by species."""
        name = next((m for m in ("distilled", *self.cfg.methods) if m in self.spaces), None)
        if name is None:
            return {}
        s, ql, gl = self._query_vs_images(name, view)
        qo, go = np.argsort(ql, kind="stable"), np.argsort(gl, kind="stable")
        return {"similarity": {"method": name, "matrix": s[qo][:, go], "query_labels": [ql[i] for i in qo],
                               "gallery_labels": [gl[i] for i in go]}}

    def describe(self) -> dict:
        windows = {} if self.windows is None else {"windows": len(self.windows)}
        return {"device": self.device, "sets": {**{k: len(s.inputs) for k, s in self.sets.items()}, **windows},
                "n_images": len(self.image_labels), "clap_space_dim": int(self.clap["query"][0].shape[1]),
                "teacher_dim": int(self.teacher.dim), "spaces": sorted(self.spaces), "text_mappings": self.text_mappings,
                "n_skipped": {k: len(v) for k, v in self.skips.items()},
                **({"soundscape_windows": self.windows.describe()} if self.windows is not None else {})}

    def skips_summary(self) -> dict:
        coll = self.setting.eval_collection
        out = {k: {"n_skipped": len(v), "counts": v.counts(), "skipped": v.to_list()} for k, v in self.skips.items()}
        out["eval_collection_rows"] = {"n_skipped": len(coll.skips), "counts": coll.skips.counts()}
        return out
