"""DistillContrastiveLoss across 2 gloo CPU processes == single-process full batch.

One spawn runs every configuration (spawning and importing torch dominates the cost);
each rank saves its losses and gradients to a file, and the tests compare them with a
single-process run on the concatenated batch.

Convention checked (see DistillContrastiveLoss docstring): DDP averages parameter
gradients over ranks, so "equal" means

- loss: every rank's loss == full loss (local_loss=False), or mean over ranks == full
  loss (local_loss=True); the loss is never multiplied by world_size;
- gather_with_grad=True: mean over ranks of the projection-head gradients == full-batch
  gradient, i.e. a rank's feature gradient == world_size * full-batch feature gradient;
- gather_with_grad=False, local_loss=False (open_clip's default): a rank's feature
  gradient == full-batch gradient, so the DDP mean is full-batch gradient / world_size;
- logit-scale gradient: mean over ranks == full-batch gradient in every mode.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from birdbridge.distill.loss import DistillContrastiveLoss

WORLD = 2
N, D_IN, D = 8, 6, 5
B = N // WORLD
TOL = 1e-5
TIMEOUT_S = 90
# duplicates within and across ranks; in "rank1_dups" every species of rank 1 first
# occurs on rank 0, so under dedup+local_loss rank 1 owns no text rows
LABEL_SETS = {
    "mixed": [0, 1, 2, 0, 1, 3, 0, 4],
    "rank1_dups": [0, 1, 2, 3, 3, 2, 1, 0],
}
CONFIGS = [
    (positives, gather_with_grad, local_loss, label_set)
    for positives in ("multi", "dedup")
    for gather_with_grad in (True, False)
    for local_loss in (False, True)
    for label_set in LABEL_SETS
]


def _cfg_id(cfg) -> str:
    positives, gwg, local, label_set = cfg
    return f"{positives}-{'gwg' if gwg else 'nograd'}-{'local' if local else 'global'}-{label_set}"


def _problem():
    """Fixed global batch: raw audio features, a projection head, varied text rows."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    text = F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    head = nn.Linear(D_IN, D).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(D, D_IN, generator=g, dtype=torch.float64))
        head.bias.copy_(torch.randn(D, generator=g, dtype=torch.float64))
    return x, text, head


def _step(cfg, x, text, labels, rank, world_size):
    """One forward/backward; returns the loss and every gradient we compare."""
    positives, gwg, local, _ = cfg
    _, _, head = _problem()  # same init on every rank, as DDP guarantees
    text = text.clone().requires_grad_()
    log_scale = torch.tensor(2.3, dtype=torch.float64, requires_grad=True)
    audio = F.normalize(head(x), dim=1)
    audio.retain_grad()
    loss_fn = DistillContrastiveLoss(
        positives, local_loss=local, gather_with_grad=gwg, rank=rank, world_size=world_size
    )
    loss = loss_fn(audio, text, labels, log_scale.exp())
    loss.backward()
    return {
        "loss": loss.detach(),
        "audio": audio.grad,
        "text": text.grad,
        "scale": log_scale.grad,
        "weight": head.weight.grad,
        "bias": head.bias.grad,
    }


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # 2 shared cores; the tensors are tiny
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=TIMEOUT_S // 2),
    )
    try:
        x, text, _ = _problem()
        sl = slice(rank * B, (rank + 1) * B)
        results = {}
        for cfg in CONFIGS:
            labels = torch.tensor(LABEL_SETS[cfg[3]])
            results[_cfg_id(cfg)] = _step(cfg, x[sl], text[sl], labels[sl], rank, world_size)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_loss")
    ctx = mp.start_processes(
        _worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        # join() re-raises a child's exception (with its traceback) and kills the rest
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:  # only our own children, by handle
            if p.is_alive():
                p.kill()
                p.join(5)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def full_batch():
    x, text, _ = _problem()
    return {
        _cfg_id(cfg): _step(cfg, x, text, torch.tensor(LABEL_SETS[cfg[3]]), rank=0, world_size=1)
        for cfg in CONFIGS
    }


def _close(got, want):
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
def test_distributed_matches_full_batch(cfg, per_rank, full_batch):
    _, gwg, local, _ = cfg
    key = _cfg_id(cfg)
    ranks = [r[key] for r in per_rank]
    ref = full_batch[key]

    losses = torch.stack([r["loss"] for r in ranks])
    if local:
        _close(losses.mean(), ref["loss"])
    else:
        for loss in losses:
            _close(loss, ref["loss"])

    # logit scale: DDP's mean over ranks is exact in every mode
    _close(torch.stack([r["scale"] for r in ranks]).mean(), ref["scale"])

    if gwg:
        # rank feature grads carry every rank's loss: world_size * full gradient...
        _close(torch.cat([r["audio"] for r in ranks]) / WORLD, ref["audio"])
        _close(torch.cat([r["text"] for r in ranks]) / WORLD, ref["text"])
        # ...so DDP's mean of the parameter grads is the full-batch gradient
        for p in ("weight", "bias"):
            _close(torch.stack([r[p] for r in ranks]).mean(0), ref[p])
    elif not local:
        # open_clip default: exact local gradient, DDP mean = full gradient / world_size
        _close(torch.cat([r["audio"] for r in ranks]), ref["audio"])
        _close(torch.cat([r["text"] for r in ranks]), ref["text"])
        for p in ("weight", "bias"):
            _close(torch.stack([r[p] for r in ranks]).mean(0), ref[p] / WORLD)
    # gather_with_grad=False with local_loss=True drops cross-rank gradient paths by
    # design (as in open_clip); only its loss and logit-scale gradient are exact.


def test_workers_ran_with_duplicates_across_ranks(per_rank):
    assert len(per_rank) == WORLD and all(len(r) == len(CONFIGS) for r in per_rank)
    mixed = LABEL_SETS["mixed"]
    assert set(mixed[:B]) & set(mixed[B:])
