"""``--engine ray``: embedding on Ray Data, streamed into clip-retrieval's parts layout.

One job, the same on a laptop, a SLURM allocation (``ray start --head`` + ``--ray-address``)
or a Kubernetes Ray cluster::

    sorted inputs ─► Map(decode, 1 CPU each)          audio: the local engine's windows; photos: RGB pixels
                 ─► MapBatches(model actor) × workers  one model per actor, loaded once (GPUs: --gpus-per-worker)
                 ─► driver: part i complete ─► DIR/emb/part-i.npy + DIR/meta/part-i.parquet

Decoding runs in CPU tasks pipelined ahead of the actors (Ray Data's streaming executor), so a
GPU never waits on a decoder. Part ``i`` is the fixed block ``[i * part_size, (i + 1) * part_size)``
of the inputs sorted by path: a re-run of the same job (``job.json`` names it) computes only the
parts that are not complete on disk (:class:`~birdbridge.embedding_parts.EmbeddingParts`), so a
killed job resumes part by part. A bad file is skipped with the local engine's reason: decoding
uses the same readers (:func:`~birdbridge.retrieval.embed.recording_windows`,
:func:`~birdbridge.data.images.load_image`) and the same :class:`BadInputError` reasons.

The vectors are the local engine's (same model loader, same windows, same mean and
normalisation; only the grouping of windows into forward passes differs, which moves the
last bits: max |Δ| ≤ 1e-5), in sorted path order instead of input order.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..embedding_parts import EmbeddingParts
from ..errors import BadInputError, ConfigError, SkipLog

RAY_MISSING = "--engine ray needs Ray: pip install 'birdbridge[ray]'"
ENGINES = ("local", "ray")
JOB_FILE = "job.json"
DEFAULT_PART_SIZE = 1000


@dataclass
class RayOptions:
    """Where and how wide a Ray job runs (the CLI's ``--ray-address``, ``--workers``, ...)."""

    address: str | None = None  # None: RAY_ADDRESS, else a local Ray started and stopped here
    workers: int = 1  # model actors
    gpus_per_worker: float = 0.0
    part_size: int = DEFAULT_PART_SIZE
    num_cpus: int | None = None  # a local Ray only: its CPUs (default: all)
    verbose: bool = False  # Ray's own logs and progress bars


def ray_available() -> bool:
    """Whether ``import ray`` works (a real import: a broken install counts as missing)."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure means --engine ray cannot run
        return False
    return True


def require_ray() -> None:
    if not ray_available():
        raise ConfigError(RAY_MISSING)


@contextlib.contextmanager
def ray_session(opts: RayOptions) -> Iterator[None]:
    """Ray connected for the block: an already initialised Ray is used as it is; ``opts.address``
    or ``RAY_ADDRESS`` is joined; otherwise a local Ray is started and stopped here."""
    require_ray()
    import ray

    if ray.is_initialized():
        _configure_data(opts.verbose)
        yield
        return
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"include_dashboard": False, "log_to_driver": opts.verbose,
                    "logging_level": logging.INFO if opts.verbose else logging.WARNING}
    if address is None:
        # a private local cluster: Ray >= 2.5x asks for a token unless auth is off
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if opts.num_cpus:
            kwargs["num_cpus"] = opts.num_cpus
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {err}") from None
    try:
        _configure_data(opts.verbose)
        yield
    finally:
        ray.shutdown()


def _configure_data(verbose: bool) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    if not verbose:
        for name in ("ray.data", "ray"):
            logging.getLogger(name).setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------- the job
@dataclass
class JobSpec:
    """What a job computes: ``kind`` audio (``embed-audio``), image (``embed-images``, ``index``) or
    windows (``detect``), the model id, and what shapes its vectors."""

    kind: str
    model_id: str
    meta: dict  # the local engine's provenance (model, space, window, hop, ...)
    dim: int
    sample_rate: int = 0
    window_samples: int = 0
    hop_samples: int = 0
    per_window: bool = False
    batch_size: int = 32
    span_args: dict | None = None  # kind "windows": detect's iter_spans arguments
    load_args: dict | None = None  # the actors' model loader's options (detect: runtime, precision)

    def key(self, items: Sequence[tuple[str, dict]], part_size: int) -> dict:
        """What names the job in ``job.json``: the same key, the same parts (absolute inputs, their labels)."""
        listing = "\n".join(os.path.abspath(p) + "\t" + json.dumps(lab or {}, sort_keys=True, default=str) for p, lab in items)
        digest = hashlib.sha256(listing.encode()).hexdigest()[:16]
        return {"kind": self.kind, "model": portable_model_id(self.model_id), "hop_samples": self.hop_samples, "per_window": self.per_window,
                "span_args": self.span_args, "load_args": self.load_args,
                "part_size": part_size, "n_inputs": len(items), "inputs_sha256": digest}


def run_job(spec: JobSpec, items: Sequence[tuple[str, dict]], out_dir: str | Path, opts: RayOptions,
            progress: Callable[[int], None] | None = None) -> EmbeddingParts:
    """Embed ``items`` (path, labels) into the parts directory ``out_dir``; complete parts are kept.

    The manifest (``embeddings.json``) records the provenance, every skip with its reason, and
    this run's ``parts_computed`` / ``parts_reused``.
    """
    from ..io import atomic_write_json

    if opts.part_size < 1 or opts.workers < 1:
        raise ConfigError("--part-size and --workers must be at least 1")
    items = sorted(items, key=lambda it: str(it[0]))
    parts = EmbeddingParts(out_dir)
    key = spec.key(items, opts.part_size)
    job = Path(out_dir) / JOB_FILE
    if job.is_file():
        old = json.loads(job.read_text())
        if old != key:
            changed = ", ".join(k for k in key if old.get(k) != key[k])
            raise ConfigError(f"{out_dir} holds parts of another job (different {changed}); use a new directory")
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(job, key)
    blocks = [items[s : s + opts.part_size] for s in range(0, len(items), opts.part_size)]
    done = set(parts.complete_parts())
    todo = [i for i in range(len(blocks)) if i not in done]
    if progress and len(todo) < len(blocks):
        progress(sum(len(b) for i, b in enumerate(blocks) if i in done))
    if todo:
        with ray_session(opts):
            _run_parts(spec, blocks, todo, parts, opts, progress)
    parts.finish({**spec.meta, "engine": "ray", "part_size": opts.part_size, "n_inputs": len(items),
                  "parts_computed": len(todo), "parts_reused": len(blocks) - len(todo)})
    return parts


def _run_parts(spec: JobSpec, blocks, todo: list[int], parts: EmbeddingParts, opts: RayOptions, progress) -> None:
    import ray.data

    from ..quiet import native_stderr

    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < opts.workers + 1:  # each replica holds a CPU; with none left to decode, the job would wait forever
        raise ConfigError(f"--workers {opts.workers} needs at least {opts.workers + 1} CPUs on the Ray cluster (one per "
                          f"model replica and one to decode), it has {cpus}")
    # absolute paths: a worker of a cluster joined with --ray-address runs in another directory
    rows = [{"part": i, "pos": j, "path": os.path.abspath(blocks[i][j][0])} for i in todo for j in range(len(blocks[i]))]
    ds = ray.data.from_items(rows)
    # a ray_remote_args_fn keeps the decode tasks their own operator (Ray would fuse them into the actors)
    with warnings.catch_warnings():  # ... and is deprecated in Ray 2.6x
        warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.* is deprecated")
        ds, actor = _decode_stage(ds, spec)
    load = {"model_id": portable_model_id(spec.model_id), "gpus": opts.gpus_per_worker, "per_window": spec.per_window,
            "batch_size": spec.batch_size, **(spec.load_args or {})}
    ds = ds.map_batches(actor, fn_constructor_kwargs=load,
                        compute=ray.data.ActorPoolStrategy(size=opts.workers), num_gpus=opts.gpus_per_worker or None,
                        batch_size=spec.batch_size, batch_format="numpy")
    pending: dict[int, dict[int, dict]] = {}
    batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    # Ray's core worker notes the actor pool's restart policy on fd 2 as the pool starts, before the
    # first batch: held back there only, so progress lines afterwards are not delayed
    with native_stderr():
        first = next(batches, None)
    for batch in itertools.chain([first] if first is not None else [], batches):
        for r in range(len(batch["path"])):
            i, j = int(batch["part"][r]), int(batch["pos"][r])
            pending.setdefault(i, {})[j] = {k: batch[k][r] for k in ("path", "reason", "detail", "vec", "t0", "t1")}
            if len(pending[i]) == len(blocks[i]):
                _write_part(spec, parts, i, blocks[i], pending.pop(i))
                _test_pause()
        if progress:
            progress(len(batch["path"]))
    if pending:  # every row comes back exactly once; anything left is a bug, not a bad file
        raise RuntimeError(f"Ray returned incomplete parts {sorted(pending)}")


def _test_pause() -> None:
    """Test hook only: ``BIRDBRIDGE_TEST_PAUSE_S`` seconds after each part, so a test can kill a job
    between parts (tests/test_ray_engine.py); unset in real use."""
    pause = os.environ.get("BIRDBRIDGE_TEST_PAUSE_S")
    if pause:
        import time

        time.sleep(float(pause))


def portable_model_id(model_id: str) -> str:
    """A local model folder as an absolute path (``local-dir:`` kept): the actors may run elsewhere."""
    from ..encoders import hub

    ref = hub.parse(model_id)
    if ref.kind != "local":
        return model_id
    return hub.LOCAL_DIR_PREFIX + str(ref.ref) if str(model_id).startswith(hub.LOCAL_DIR_PREFIX) else str(ref.ref)


def _decode_args() -> dict:
    return {"num_cpus": 1}


def _decode_stage(ds, spec: JobSpec):
    """The CPU decode tasks (one CPU each) and the model actor class that follows them."""
    from . import ray_stages as st

    if spec.kind == "audio":
        ds = ds.map(st.decode_audio, fn_kwargs={"sr": spec.sample_rate, "n": spec.window_samples, "hop": spec.hop_samples},
                    ray_remote_args_fn=_decode_args)
        return ds, st.AudioModelActor
    if spec.kind == "windows":
        return ds.map(st.decode_spans, fn_kwargs={"span_args": spec.span_args}, ray_remote_args_fn=_decode_args), \
            st.WindowModelActor
    return ds.map(st.decode_image, ray_remote_args_fn=_decode_args), st.ImageModelActor


def _write_part(spec: JobSpec, parts: EmbeddingParts, i: int, block, got: dict[int, dict]) -> None:
    skips = SkipLog()
    vectors, rows = [], []
    for j, (path, labels) in enumerate(block):
        res = got[j]
        if res["reason"]:
            skips.add(str(path), str(res["reason"]), str(res["detail"]))
            continue
        v = np.frombuffer(res["vec"], np.float32).reshape(-1, spec.dim)
        vectors.append(v)
        if spec.kind == "image":
            rows.append({"input": str(path), **(labels or {})})
            continue
        t0, t1 = np.frombuffer(res["t0"], np.float64), np.frombuffer(res["t1"], np.float64)
        if spec.kind == "windows":  # detect's windows, already rounded as detect rounds them
            rows.extend({"input": str(path), "window_start_s": float(a), "window_end_s": float(b)} for a, b in zip(t0, t1))
        elif spec.per_window:
            rows.extend({"input": str(path), "window_start_s": round(float(a), 4), "window_end_s": round(float(b), 4),
                         **(labels or {})} for a, b in zip(t0, t1))
        else:
            rows.append({"input": str(path), "window_start_s": round(float(t0[0]), 4),
                         "window_end_s": round(float(t1[-1]), 4), "n_windows": len(t0), **(labels or {})})
    arr = np.concatenate(vectors) if vectors else np.zeros((0, spec.dim), np.float32)
    parts.write_part(i, arr, rows, skips)


# ---------------------------------------------------------------------------------- the verbs' jobs
def audio_spec(model_id: str, *, hop_s: float | None = None, per_window: bool = False, batch_size: int = 32) -> JobSpec:
    """The job of ``embed-audio``: the model loaded once here (CPU) for its window, hop and provenance."""
    from ..encoders.factory import load_audio_embedder
    from .embed import embed_audio

    embedder = load_audio_embedder(model_id, device="cpu")
    meta = embed_audio(embedder, [], hop_s=hop_s, per_window=per_window).meta  # the local engine's provenance
    return JobSpec("audio", model_id, meta, int(embedder.dim), sample_rate=meta["sample_rate"],
                   window_samples=meta["window_samples"], hop_samples=meta["hop_samples"], per_window=per_window,
                   batch_size=batch_size)


def image_spec(teacher_id: str, *, batch_size: int = 64) -> JobSpec:
    """The job of ``embed-images`` and ``index``: the teacher loaded once here (CPU) for its dim and id."""
    from ..encoders.teacher import Teacher
    from .embed import embed_images

    teacher = Teacher.load(teacher_id, device="cpu")
    meta = embed_images(teacher, []).meta
    return JobSpec("image", teacher_id, meta, int(teacher.dim), batch_size=batch_size)


def detect_spec(model_id: str, model, *, window_s: float | None = None, hop_s: float | None = None,
                runtime: str = "torch", precision: str = "fp32", batch_size: int = 32) -> JobSpec:
    """The job of ``detect``: each recording's windows (``model``, loaded by the verb, gives their sizes)."""
    from .search import window_span_args

    window_s = window_s or model.window_samples / model.sample_rate
    span_args = window_span_args(model, window_s, hop_s or window_s)  # detect's default hop: the window
    meta = {"model": getattr(model, "name", model_id), "space": model.space, "kind": "windows"}
    return JobSpec("windows", model_id, meta, int(model.dim), per_window=True, batch_size=batch_size,
                   span_args=span_args, load_args={"runtime": runtime, "precision": precision})


class WindowVectors:
    """A windows job's parts read back per recording, one part in memory at a time (``detect``'s input)."""

    def __init__(self, parts: EmbeddingParts):
        self.parts = parts
        self.part_of: dict[str, int] = {}
        for i in parts.complete_parts():
            for row in parts.read_rows(i):
                self.part_of.setdefault(row["input"], i)
        self.skipped = {s.input: s for s in parts.skips().skips}
        self._part, self._rows, self._vecs = None, [], None

    def windows(self, path: str) -> list[tuple[float, float, np.ndarray]]:
        """``[(start_s, end_s, unit vector)]`` of ``path``'s windows; its skip as a :class:`BadInputError`."""
        path = str(path)
        if path in self.skipped:
            s = self.skipped[path]
            raise BadInputError(s.reason, path, s.detail)
        i = self.part_of.get(path)
        if i is None:
            return []
        if self._part != i:
            self._part, self._rows, self._vecs = i, self.parts.read_rows(i), np.load(self.parts.emb_path(i))
        return [(r["window_start_s"], r["window_end_s"], self._vecs[j]) for j, r in enumerate(self._rows)
                if r["input"] == path]
