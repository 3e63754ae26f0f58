"""Distillation losses: audio embeddings onto frozen BioCLIP-2 species text embeddings.

Two objectives (pick with :func:`build_loss`):

``infonce`` (:class:`DistillContrastiveLoss`)
    Symmetric InfoNCE between projected audio ``a[B, D]`` and the text embedding of
    each clip's species ``t[B, D]``, CLIP style. Unlike image-caption pairs, a batch
    often holds several clips of one species, whose text rows are *identical*; treating
    them as negatives of each other would push a clip away from its own species.
    ``labels[B]`` (species indices) say which pairs are positives.

``species_softmax`` (:class:`SpeciesSoftmaxLoss`)
    Cross-entropy over *all* cached species text embeddings (a classifier whose weight
    matrix is the frozen teacher text space).

Distributed training follows open_clip's ``ClipLoss`` (``open_clip/loss.py``) exactly:
``local_loss``, ``gather_with_grad``, ``rank``, ``world_size`` have the same meaning,
and with ``gather_with_grad=True`` the DDP-averaged gradients equal the single-process
full-batch gradients (see :class:`DistillContrastiveLoss` for the convention).

The temperature lives in :class:`LogitScale`, owned by the LightningModule, and is
passed to the losses as ``logit_scale`` so both losses (and the logger) see one value.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn

from birdbridge.errors import ConfigError
from birdbridge.quiet import ALL_GATHER_DEPRECATED

__all__ = [
    "DistillContrastiveLoss",
    "LogitScale",
    "SpeciesSoftmaxLoss",
    "build_loss",
    "gather_features",
]

Positives = Literal["multi", "dedup"]
_POSITIVES = ("multi", "dedup")


# ---------------------------------------------------------------------------------
# temperature


class LogitScale(nn.Module):
    """Learnable CLIP temperature, stored as ``log(1 / T)`` like open_clip.

    ``forward()`` returns ``exp(clamp(log_scale, 0, log(max_scale)))``, so the scale
    used in the loss never exceeds ``max_scale`` (100, as in CLIP/open_clip) nor drops
    below 1. Clamping in the forward alone zeroes the gradient once the bound is hit,
    but an optimiser with momentum (Adam) can still drift the raw parameter past the
    bound, after which it must drift back before it learns again. open_clip therefore
    clamps the *parameter* in place after every optimiser step; call :meth:`clamp_`
    from the LightningModule (``on_train_batch_end`` / after ``optimizer.step``) to do
    the same. The parameter is 0-d: exclude it from weight decay (open_clip excludes
    every parameter with ``ndim < 2``).
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0, learnable: bool = True):
        super().__init__()
        if not (init_temperature > 0 and max_scale >= 1):
            raise ConfigError(f"need init_temperature > 0 and max_scale >= 1, got {init_temperature}, {max_scale}")
        if 1.0 / init_temperature > max_scale:
            raise ConfigError(f"1/init_temperature = {1 / init_temperature:.3g} exceeds max_scale = {max_scale}")
        self.max_log_scale = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learnable)

    def forward(self) -> Tensor:
        return self.log_scale.clamp(0.0, self.max_log_scale).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the stored log-scale into ``[0, log(max_scale)]`` (open_clip's post-step clamp)."""
        self.log_scale.clamp_(0.0, self.max_log_scale)

    @property
    def temperature(self) -> float:
        """Current (clamped) temperature ``1 / scale``, for logging."""
        return float(1.0 / self.forward().detach())


# ---------------------------------------------------------------------------------
# distributed gather


def _all_gather_with_grad(x: Tensor) -> Tensor:
    # torch marks torch.distributed.nn.functional.all_gather deprecated in favour of
    # functional collectives, whose autograd backward (reduce_scatter) gloo lacks; this
    # one works on gloo and NCCL alike, so keep it and silence the per-call warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ALL_GATHER_DEPRECATED, category=FutureWarning)
        return torch.cat(dist_nn.all_gather(x), dim=0)


def _all_gather_no_grad(x: Tensor, world_size: int) -> list[Tensor]:
    out = [torch.zeros_like(x) for _ in range(world_size)]
    dist.all_gather(out, x.contiguous())
    return out


def gather_features(
    audio: Tensor,
    text: Tensor,
    labels: Tensor | None = None,
    *,
    local_loss: bool = False,
    gather_with_grad: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """All-gather ``audio``, ``text`` (and ``labels``) across ranks, in rank order.

    Mirrors ``open_clip.loss.gather_features``:

    - ``gather_with_grad=True``: autograd all-gather; its backward sums every rank's
      gradient for a slice back onto the rank that owns it, so each rank's local
      features receive the gradient of *all* ranks' losses.
    - ``gather_with_grad=False``: plain all-gather (no grad); unless ``local_loss``,
      the local tensors are put back in their slot so at least the local rank's loss
      reaches its own features.

    Labels carry no gradient and are always gathered plainly. Every rank must pass the
    same batch size (all-gather needs equal shapes; use ``drop_last=True``).
    With ``world_size == 1`` the inputs are returned unchanged.
    """
    if world_size == 1:
        return audio, text, labels
    if gather_with_grad:
        all_audio = _all_gather_with_grad(audio)
        all_text = _all_gather_with_grad(text)
    else:
        gathered_audio = _all_gather_no_grad(audio, world_size)
        gathered_text = _all_gather_no_grad(text, world_size)
        if not local_loss:
            # ensure grads for the local rank when the gathered copies carry none
            gathered_audio[rank] = audio
            gathered_text[rank] = text
        all_audio = torch.cat(gathered_audio, dim=0)
        all_text = torch.cat(gathered_text, dim=0)
    all_labels = None if labels is None else torch.cat(_all_gather_no_grad(labels, world_size), dim=0)
    return all_audio, all_text, all_labels


# ---------------------------------------------------------------------------------
# losses


def _ce_dtype(x: Tensor) -> torch.dtype:
    # softmax over up to thousands of columns is poorly conditioned in half precision
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _soft_targets(row_labels: Tensor, col_labels: Tensor, dtype: torch.dtype) -> Tensor:
    """Row-stochastic targets: uniform over the columns sharing the row's species."""
    pos = (row_labels[:, None] == col_labels[None, :]).to(dtype)
    return pos / pos.sum(dim=1, keepdim=True)


class DistillContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with species-aware positives, distributed like open_clip's ClipLoss.

    ``forward(audio[B, D], text[B, D], labels[B], logit_scale)``: ``audio`` and ``text``
    must already be L2-normalised (the caller normalises, as in open_clip; the loss does
    not re-normalise because that would change the gradients the caller asked for, and
    checking norms costs a device sync per step — pass ``check_normalized=True`` while
    debugging). ``text[i]`` is the teacher embedding of species ``labels[i]``.
    ``labels=None`` means "all pairs distinct": plain CLIP InfoNCE.

    ``positives``:

    ``"multi"`` (default)
        Both directions use soft targets, uniform over every column of the same species:
        audio→text row ``i`` puts mass ``1/k`` on each of the ``k`` text columns of
        species ``labels[i]`` and text→audio likewise over audio columns. Default because
        it keeps both directions defined on the same ``B x B`` (or ``B x N``) logits,
        splits exactly like ClipLoss under ``local_loss``, and reduces *exactly* to
        CLIP's loss when all labels are distinct. Caveat: when every clip of a species
        carries the *same* text row (one frozen embedding per species), a softmax cannot
        tell the duplicate columns apart and "multi" is numerically equal to plain CLIP
        InfoNCE, duplicates or not (tested); it differs only when text rows of one
        species vary (e.g. several prompt templates per species). The audio→text term
        then has a floor of ``log k`` (target entropy), shifting the logged value only.
    ``"dedup"``
        Text rows are deduplicated by species over the (global) batch: audio→text is a
        standard hard-label softmax over the batch's *unique* species (floor 0), and
        text→audio has one row per unique species with soft targets over all its clips.
        This genuinely changes the objective with one text per species: negatives are
        no longer weighted by how often their species occurs in the batch, and each
        species (not each clip) counts once in the text→audio mean.
        Gradient w.r.t. duplicated text rows goes to the first occurrence only (text is
        frozen in distillation, so this rarely matters). Needs ``torch.unique``, i.e. a
        device sync per step.

    Distributed convention (``world_size > 1``, equal batch size ``B`` per rank,
    ``N = B * world_size``), identical to open_clip's:

    - ``local_loss=False``: each rank computes the full-batch loss over ``N x N``
      logits; every rank returns the same value ``L``.
    - ``local_loss=True``: each rank computes only its rows (``B x N``); per-rank
      losses ``L_r`` satisfy ``mean_r L_r = L`` (the value Lightning logs with
      ``sync_dist=True``).
    - ``gather_with_grad=True`` (either ``local_loss``): the gradient a rank's local
      features receive is ``world_size * dL/d(local)``, so after DDP's *mean*
      all-reduce of parameter gradients, the update equals single-process full-batch
      backprop of ``L``. Do **not** multiply the loss by ``world_size``.
    - ``gather_with_grad=False, local_loss=False``: a rank's features get exactly
      ``dL/d(local)`` (only through its own slot), so DDP's mean yields ``dL/dθ /
      world_size`` — open_clip's behaviour, effectively a learning rate scaled by
      ``1/world_size``.
    - ``gather_with_grad=False, local_loss=True``: gradients through the other ranks'
      rows are dropped; an approximation (as in open_clip). The loss value is exact.
    - The ``logit_scale`` gradient is exact (after DDP's mean) in every mode.
    """

    def __init__(
        self,
        positives: Positives = "multi",
        *,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        rank: int = 0,
        world_size: int = 1,
        check_normalized: bool = False,
    ):
        super().__init__()
        if positives not in _POSITIVES:
            raise ConfigError(f"positives must be one of {_POSITIVES}, got {positives!r}")
        if world_size < 1 or not (0 <= rank < world_size):
            raise ConfigError(f"bad rank/world_size: {rank}/{world_size}")
        self.positives = positives
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.rank = rank
        self.world_size = world_size
        self.check_normalized = check_normalized

    def _check(self, audio: Tensor, text: Tensor, labels: Tensor | None) -> None:
        if audio.ndim != 2 or audio.shape != text.shape:
            raise ValueError(f"audio and text must both be [B, D], got {tuple(audio.shape)} and {tuple(text.shape)}")
        if labels is not None and (labels.shape != audio.shape[:1] or labels.is_floating_point()):
            raise ValueError(f"labels must be integer [B={audio.shape[0]}], got {labels.dtype} {tuple(labels.shape)}")
        if self.check_normalized:
            for name, x in (("audio", audio), ("text", text)):
                norms = x.detach().float().norm(dim=1)
                if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
                    raise ValueError(f"{name} rows are not L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})")

    def forward(
        self,
        audio: Tensor,
        text: Tensor,
        labels: Tensor | None,
        logit_scale: Tensor | float,
        *,
        output_dict: bool = False,
    ) -> Tensor | dict[str, Tensor]:
        """Return the loss (or ``{"contrastive_loss", "loss_a2t", "loss_t2a"}``)."""
        self._check(audio, text, labels)
        batch = audio.shape[0]
        distributed = self.world_size > 1
        if labels is None:  # globally distinct ids == plain CLIP
            labels = torch.arange(batch, device=audio.device) + batch * (self.rank if distributed else 0)

        all_audio, all_text, all_labels = gather_features(
            audio,
            text,
            labels,
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
            rank=self.rank,
            world_size=self.world_size,
        )
        local = distributed and self.local_loss
        # rows this rank is responsible for; the *local* tensors in local mode, so the
        # no-grad-gather path still backpropagates into them (as ClipLoss does)
        if local:
            rows_audio, rows_text, rows_labels, offset = audio, text, labels, self.rank * batch
        else:
            rows_audio, rows_text, rows_labels, offset = all_audio, all_text, all_labels, 0

        if self.positives == "multi":
            loss_a2t, loss_t2a = self._multi(rows_audio, rows_text, rows_labels, all_audio, all_text, all_labels, logit_scale, local)
        else:
            loss_a2t, loss_t2a = self._dedup(rows_audio, rows_text, offset, all_audio, all_text, all_labels, logit_scale, local)
        loss = (loss_a2t + loss_t2a) / 2
        if output_dict:
            return {"contrastive_loss": loss, "loss_a2t": loss_a2t, "loss_t2a": loss_t2a}
        return loss

    @staticmethod
    def _multi(rows_audio, rows_text, rows_labels, all_audio, all_text, all_labels, logit_scale, local):
        dtype = _ce_dtype(rows_audio)
        logits_a2t = (logit_scale * rows_audio @ all_text.T).to(dtype)
        # Row i's audio and text share labels[i], so one mask serves both directions.
        targets = _soft_targets(rows_labels, all_labels, dtype)
        if local:
            logits_t2a = (logit_scale * rows_text @ all_audio.T).to(dtype)
        else:
            logits_t2a = logits_a2t.T  # full square: save the second matmul (mask is symmetric)
        return F.cross_entropy(logits_a2t, targets), F.cross_entropy(logits_t2a, targets)

    def _dedup(self, rows_audio, rows_text, offset, all_audio, all_text, all_labels, logit_scale, local):
        dtype = _ce_dtype(rows_audio)
        n_all = all_labels.numel()
        uniq, inverse = torch.unique(all_labels, sorted=True, return_inverse=True)
        n_uniq = uniq.numel()
        # index of each species' first occurrence in the global batch: the same on every
        # rank and in the single-process run, so distributed == full-batch exactly
        first = torch.full((n_uniq,), n_all, dtype=torch.long, device=all_labels.device)
        first = first.scatter_reduce(0, inverse, torch.arange(n_all, device=all_labels.device), reduce="amin")
        text_uniq = all_text[first]  # [U, D]

        n_rows = rows_audio.shape[0]
        logits_a2t = (logit_scale * rows_audio @ text_uniq.T).to(dtype)
        loss_a2t = F.cross_entropy(logits_a2t, inverse[offset : offset + n_rows])

        if local:
            # each unique species is owned by the rank holding its first occurrence; the
            # row sum is scaled by world_size / U so that mean over ranks == full loss
            owned = (first >= offset) & (first < offset + n_rows)
            t_rows, t_labels = rows_text[first[owned] - offset], uniq[owned]
            norm = n_uniq / self.world_size
        else:
            t_rows, t_labels, norm = text_uniq, uniq, n_uniq
        logits_t2a = (logit_scale * t_rows @ all_audio.T).to(dtype)
        targets = _soft_targets(t_labels, all_labels, dtype)
        loss_t2a = F.cross_entropy(logits_t2a, targets, reduction="sum") / norm
        return loss_a2t, loss_t2a


class SpeciesSoftmaxLoss(nn.Module):
    """Cross-entropy of ``logit_scale * a @ S.T`` against ``labels``.

    ``S[n_species, D]`` holds *all* cached (L2-normalised) species text embeddings, row
    ``k`` for species index ``k``; give it at construction (kept as a non-persistent
    buffer: it follows ``.to(device)`` but is not written into checkpoints, since the
    text cache can rebuild it) or per call via ``species_text=``.

    No all-gather is needed: each sample's loss depends only on its own embedding and
    the fixed ``S``, never on the rest of the batch, so the per-rank mean followed by
    DDP's gradient mean is already the global-batch mean (for equal per-rank batches).
    """

    def __init__(self, species_text: Tensor | None = None, *, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        if species_text is not None and species_text.ndim != 2:
            raise ValueError(f"species_text must be [n_species, D], got {tuple(species_text.shape)}")
        self.register_buffer(
            "species_text", None if species_text is None else species_text.detach().clone(), persistent=False
        )

    def forward(
        self,
        audio: Tensor,
        labels: Tensor,
        logit_scale: Tensor | float,
        *,
        species_text: Tensor | None = None,
        output_dict: bool = False,
    ) -> Tensor | dict[str, Tensor]:
        table = species_text if species_text is not None else self.species_text
        if table is None:
            raise ValueError("SpeciesSoftmaxLoss needs species_text (at construction or per call)")
        if audio.ndim != 2 or table.ndim != 2 or audio.shape[1] != table.shape[1]:
            raise ValueError(f"audio [B, D] and species_text [S, D] mismatch: {tuple(audio.shape)} vs {tuple(table.shape)}")
        logits = (logit_scale * audio @ table.to(audio.dtype).T).to(_ce_dtype(audio))
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return {"species_softmax_loss": loss} if output_dict else loss


_LOSSES: dict[str, type[nn.Module]] = {
    "infonce": DistillContrastiveLoss,
    "species_softmax": SpeciesSoftmaxLoss,
}


def build_loss(name: str, **kwargs) -> nn.Module:
    """Construct a loss by config name: ``"infonce"`` or ``"species_softmax"``.

    ``kwargs`` go to the constructor; unknown names or arguments raise ``ConfigError``.
    """
    try:
        cls = _LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of {sorted(_LOSSES)}") from None
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"bad arguments for loss {name!r}: {err}") from None
