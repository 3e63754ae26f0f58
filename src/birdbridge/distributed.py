"""Several processes, one result: rank helpers, input sharding and a deterministic merge.

Embedding a large collection (``embed-audio``, ``embed-images``, ``index``) is
embarrassingly parallel. Launched under ``torchrun`` (or ``srun``), every process reads
its rank from the environment, embeds one *contiguous* block of the inputs, and writes
its part next to the final output (``out.rank{r}.npy`` + ``.parquet`` + ``.json``). Rank
0 waits for every part, concatenates them in rank order -- which, because the blocks are
contiguous, is input order -- and writes ``out`` atomically. The merged file therefore
has the same rows in the same order as a one-process run.

Waiting uses ``torch.distributed`` barriers (gloo) when the launcher provides a
rendezvous (``MASTER_ADDR``/``MASTER_PORT``, as torchrun does), else a file barrier: each
rank writes ``out.rank{r}.done`` (or ``.failed`` with the error) after its part, and
rank 0 polls for them. Markers carry a token derived from the job (inputs, world size,
launcher job id), so markers left by a crashed earlier run of a *different* job are never
mistaken for this one's; rank 0 removes all parts and markers after merging.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .embeddings import Embeddings
from .errors import BirdbridgeError, SkipLog

# (rank, world) sources, most specific first: torchrun/Lightning, then SLURM, then MPI.
_RANK_ENVS = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"))


class ShardError(BirdbridgeError):
    """A rank failed or did not report within the timeout; the merged output was not written."""


def rank_world() -> tuple[int, int]:
    """This process's ``(rank, world_size)``: from an initialised process group, else the
    launcher's environment (torchrun ``RANK``/``WORLD_SIZE``, SLURM, Open MPI), else ``(0, 1)``."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    for r, w in _RANK_ENVS:
        if r in os.environ and w in os.environ:
            rank, world = int(os.environ[r]), int(os.environ[w])
            if not 0 <= rank < world:
                raise ShardError(f"bad rank environment: {r}={rank}, {w}={world}")
            return rank, world
    return 0, 1


def local_rank() -> int:
    for name in ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def local_world() -> int | None:
    """Processes on this node, when the launcher says (torchrun, SLURM, Open MPI)."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        v = os.environ.get(name, "").split("(")[0]  # SLURM may write "8(x2)"
        if v.isdigit():
            return int(v)
    return None


def rank_device(device: str, device_count: int | None = None) -> str:
    """The GPU this rank should use when ``device`` is ``cuda`` and several processes run.

    torchrun (and ``srun --gpus-per-node``) show every process all of the node's GPUs:
    ``cuda:LOCAL_RANK``. ``srun --gpus-per-task=N`` shows each task only its own N GPUs
    (``CUDA_VISIBLE_DEVICES``), numbered from 0 while ``SLURM_LOCALID`` runs on: fewer
    visible GPUs than local processes means the GPUs are per process, so ``cuda:0``.
    ``device_count`` defaults to ``torch.cuda.device_count()`` (which honours
    ``CUDA_VISIBLE_DEVICES``).
    """
    if device != "cuda" or rank_world()[1] <= 1:
        return device
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count()
    local, on_node = local_rank(), local_world()
    if device_count <= 1 or (on_node is not None and device_count < on_node):
        return "cuda:0"
    return f"cuda:{local % device_count}"


def is_main_process() -> bool:
    return rank_world()[0] == 0


def shard_indices(n: int, rank: int, world: int) -> range:
    """Contiguous block of ``range(n)`` for ``rank``; the first ``n % world`` ranks get one more.

    Blocks tile ``range(n)`` in rank order, so concatenating the ranks' outputs in rank
    order restores input order. Ranks beyond ``n`` get an empty block.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def part_path(out: str | Path, rank: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix or '.npy'}")


def _marker(out: Path, rank: int, kind: str) -> Path:
    return out.with_name(f"{out.stem}.rank{rank}.{kind}")


def job_token(inputs: Sequence, world: int, key: str = "") -> str:
    """Identifies one sharded job, so stale markers from another job never count."""
    h = hashlib.sha256(f"{world}\n{key}\n".encode())
    for env in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID"):
        h.update(f"{env}={os.environ.get(env, '')}\n".encode())
    for item in inputs:
        h.update(repr(item if not isinstance(item, Path) else str(item)).encode() + b"\n")
    return h.hexdigest()[:16]


# --- merging parts -------------------------------------------------------------------


def merge_embeddings(parts: Sequence[Embeddings]) -> Embeddings:
    """Concatenate per-rank :class:`Embeddings` in the given (rank) order."""
    dims = {p.vectors.shape[1] for p in parts if p.vectors.ndim == 2 and len(p.vectors)}
    if len(dims) > 1:
        raise ShardError(f"ranks produced different embedding sizes {sorted(dims)}")
    dim = dims.pop() if dims else (parts[0].vectors.shape[1] if parts and parts[0].vectors.ndim == 2 else 0)
    vectors = np.concatenate([p.vectors.reshape(-1, dim) for p in parts]).astype(np.float32) if parts else np.zeros((0, dim), np.float32)
    skips = SkipLog()
    rows: list[dict] = []
    for p in parts:
        rows.extend(p.rows)
        skips.skips.extend(p.skips.skips)
    meta = dict(parts[0].meta) if parts else {}
    meta["n_shards"] = len(parts)
    return Embeddings(vectors, rows, skips, meta)


# --- barriers ---------------------------------------------------------------------


@dataclass
class _Sync:
    """How ranks wait for each other: a gloo process group, or marker files."""

    out: Path
    rank: int
    world: int
    token: str
    timeout_s: float
    poll_s: float = 0.2
    group_owned: bool = False
    use_dist: bool = False

    @classmethod
    def start(cls, out: Path, rank: int, world: int, token: str, timeout_s: float) -> "_Sync":
        import torch.distributed as dist

        sync = cls(out, rank, world, token, timeout_s)
        if dist.is_available() and dist.is_initialized():
            sync.use_dist = True
        elif dist.is_available() and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
            dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
            sync.use_dist = sync.group_owned = True
        return sync

    def barrier(self) -> None:
        if self.use_dist:
            import torch.distributed as dist

            # a CPU (gloo) group even when the default group is NCCL: only files move here
            dist.monitored_barrier(timeout=timedelta(seconds=self.timeout_s)) if dist.get_backend() == "gloo" else dist.barrier()

    def agree(self, error: BaseException | None, when: str = "") -> None:
        """See :func:`agree`; with file barriers only this rank's own error is raised."""
        if self.use_dist:
            agree(self.rank, self.world, error, when)
        elif error is not None:
            raise error

    def report(self, ok: bool, message: str = "") -> None:
        from .io import atomic_write_text

        kind = "done" if ok else "failed"
        atomic_write_text(_marker(self.out, self.rank, kind), json.dumps({"token": self.token, "message": message}))

    def wait_for_all(self) -> None:
        """Rank 0: block until every rank reported ``done`` for this token; raise on ``failed``."""
        deadline = time.monotonic() + self.timeout_s
        pending = set(range(self.world))
        while pending:
            for r in sorted(pending):
                failed = self._read(_marker(self.out, r, "failed"))
                if failed is not None:
                    raise ShardError(f"rank {r} failed: {failed.get('message', '')}")
                if self._read(_marker(self.out, r, "done")) is not None:
                    pending.discard(r)
            if pending:
                if time.monotonic() > deadline:
                    raise ShardError(f"timed out after {self.timeout_s:.0f} s waiting for ranks {sorted(pending)} "
                                     f"to write their part of {self.out}")
                time.sleep(self.poll_s)

    def _read(self, marker: Path) -> dict | None:
        try:
            data = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if data.get("token") == self.token else None

    def close(self) -> None:
        if self.group_owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def agree(rank: int, world: int, error: BaseException | None, when: str = "") -> None:
    """Every rank says whether it can go on; all stop at once if one cannot.

    Under a process group each rank contributes ``None`` or its error message
    (``all_gather_object``). The failing rank re-raises its own error; every other rank
    raises :class:`ShardError` naming it -- instead of waiting in the next collective for a
    rank that has already exited (which only a timeout, hours later, would end). Without a
    process group (one process, or file barriers) this only re-raises ``error``.
    """
    import torch.distributed as dist

    if world > 1 and dist.is_available() and dist.is_initialized():
        msgs: list = [None] * world
        dist.all_gather_object(msgs, None if error is None else f"{type(error).__name__}: {error}")
        if error is None:
            failed = [(r, m) for r, m in enumerate(msgs) if m is not None]
            if failed:
                r, m = failed[0]
                raise ShardError(f"rank {r} failed{when}: {m}")
    if error is not None:
        raise error


@contextlib.contextmanager
def shared_group(rank: int, world: int, timeout_s: float = 24 * 3600.0) -> Iterator[None]:
    """One gloo process group for several :func:`run_sharded` calls in a row.

    Under a launcher rendezvous (``MASTER_ADDR``/``MASTER_PORT``) every :func:`run_sharded`
    call would otherwise create and destroy its own group; inside this block they share
    one. A no-op with one process, with file barriers, or when a group already exists.
    """
    sync = _Sync.start(Path("."), rank, world, "", timeout_s) if world > 1 else None
    try:
        yield
    finally:
        if sync is not None:
            sync.close()


def _clean(out: Path, world: int) -> None:
    for r in range(world):
        part = part_path(out, r)
        for p in (part, part.with_suffix(".parquet"), part.with_suffix(".json"),
                  _marker(out, r, "done"), _marker(out, r, "failed")):
            p.unlink(missing_ok=True)


def run_sharded(
    fn: Callable[[list], "object"],
    inputs: Sequence,
    out: str | Path,
    *,
    rank: int | None = None,
    world: int | None = None,
    key: str = "",
    timeout_s: float = 24 * 3600.0,
    save: bool = True,
):
    """Run ``fn`` (inputs -> :class:`Embeddings`) on this rank's block; rank 0 merges into ``out``.

    With one process this is ``fn(inputs).save(out)``. Returns the merged
    :class:`Embeddings` on rank 0 and ``None`` on other ranks. ``key`` should name what
    ``fn`` computes (model id, options), so that parts from a different job are never
    merged. A rank whose ``fn`` raises reports the error; rank 0 then raises
    :class:`ShardError` instead of writing a partial ``out``. With ``save=False`` nothing
    is written to ``out`` (it only names the parts): rank 0 returns the merge for the
    caller to store (``birdbridge index`` commits it as index shards).
    """
    out = Path(out)
    if rank is None or world is None:
        rank, world = rank_world()
    inputs = list(inputs)
    if world == 1:
        emb = fn(inputs)
        if save:
            emb.save(out)
        return emb
    out.parent.mkdir(parents=True, exist_ok=True)
    sync = _Sync.start(out, rank, world, job_token(inputs, world, key), timeout_s)
    try:
        if sync.use_dist and rank == 0:
            _clean(out, world)  # stale parts of an earlier crashed run go before anyone writes
        elif not sync.use_dist:
            for kind in ("done", "failed"):  # this rank's own markers of an earlier, failed try of this job
                _marker(out, rank, kind).unlink(missing_ok=True)
        sync.barrier()
        block = shard_indices(len(inputs), rank, world)
        try:
            part = fn([inputs[i] for i in block])
            part.meta = {**part.meta, "shard": {"rank": rank, "world": world, "start": block.start, "stop": block.stop}}
            part.save(part_path(out, rank))
        except BaseException as err:
            sync.report(False, f"{type(err).__name__}: {err}")
            sync.agree(err)  # under a process group the others learn now, not at a barrier rank 0 never reaches
            raise
        sync.report(True)
        sync.agree(None)  # raises ShardError when another rank failed
        if rank != 0:
            sync.barrier()  # rank 0 merges in between
            return None
        sync.wait_for_all()
        merged = merge_embeddings([Embeddings.load(part_path(out, r)) for r in range(world)])
        merged.meta.pop("shard", None)
        if save:
            merged.save(out)  # each file is written atomically
        _clean(out, world)
        sync.barrier()
        return merged
    finally:
        sync.close()
