"""Single-process tests of birdbridge.distill.loss against hand computations and open_clip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from birdbridge.distill.loss import (
    DistillContrastiveLoss,
    LogitScale,
    SpeciesSoftmaxLoss,
    build_loss,
    gather_features,
)
from birdbridge.errors import ConfigError

DT = torch.float64  # hand computations are in python floats; compare at ~1e-10


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=DT), dim=1)


def _dot(u, v) -> float:
    return sum(x * y for x, y in zip(u, v))


def _lse(xs) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def hand_multi(a, t, labels, s) -> float:
    """Symmetric InfoNCE, targets uniform over same-species columns, in plain python."""
    a, t, labels = a.tolist(), t.tolist(), labels.tolist()
    n = len(a)
    a2t = t2a = 0.0
    for i in range(n):
        pos = [j for j in range(n) if labels[j] == labels[i]]
        row = [s * _dot(a[i], t[j]) for j in range(n)]  # audio i vs every text
        a2t += -sum((row[j] - _lse(row)) / len(pos) for j in pos)
        row = [s * _dot(t[i], a[j]) for j in range(n)]  # text i vs every audio
        t2a += -sum((row[j] - _lse(row)) / len(pos) for j in pos)
    return (a2t / n + t2a / n) / 2


def hand_dedup(a, t, labels, s) -> float:
    """a→t: hard softmax over unique species (first-occurrence text); t→a: one row per species."""
    a, t, labels = a.tolist(), t.tolist(), labels.tolist()
    n = len(a)
    species = sorted(set(labels))
    text_of = {c: t[labels.index(c)] for c in species}
    a2t = 0.0
    for i in range(n):
        row = [s * _dot(a[i], text_of[c]) for c in species]
        a2t += -(row[species.index(labels[i])] - _lse(row))
    t2a = 0.0
    for c in species:
        pos = [j for j in range(n) if labels[j] == c]
        row = [s * _dot(text_of[c], a[j]) for j in range(n)]
        t2a += -sum((row[j] - _lse(row)) / len(pos) for j in pos)
    return (a2t / n + t2a / len(species)) / 2


LABELS_DUP = torch.tensor([3, 1, 3, 0, 1, 3])


@pytest.mark.parametrize(
    ("positives", "hand"), [("multi", hand_multi), ("dedup", hand_dedup)]
)
@pytest.mark.parametrize("same_text", [True, False], ids=["one-text-per-species", "varied-text"])
def test_matches_hand_computation_with_duplicates(positives, hand, same_text):
    a = _unit(6, 4, 0)
    t = _unit(6, 4, 1)
    if same_text:  # the real setup: one frozen embedding per species
        t = t[[0, 1, 0, 3, 1, 0]]
    s = 7.5
    got = DistillContrastiveLoss(positives)(a, t, LABELS_DUP, torch.tensor(s, dtype=DT))
    assert got.item() == pytest.approx(hand(a, t, LABELS_DUP, s), rel=1e-10, abs=1e-12)


def test_output_dict_components():
    a, t = _unit(6, 4, 0), _unit(6, 4, 1)
    out = DistillContrastiveLoss("multi")(a, t, LABELS_DUP, 5.0, output_dict=True)
    assert set(out) == {"contrastive_loss", "loss_a2t", "loss_t2a"}
    assert out["contrastive_loss"].item() == pytest.approx((out["loss_a2t"] + out["loss_t2a"]).item() / 2)


def test_multi_positive_same_species_clips_are_not_negatives():
    # Varied text rows per species (e.g. prompt-template augmentation): which clip of a
    # species is paired with which of its text rows must not matter under "multi"...
    a, t = _unit(6, 4, 0), _unit(6, 4, 1)
    swap = torch.tensor([2, 1, 0, 3, 4, 5])  # swap audio of clips 0 and 2 (both species 3)
    loss = DistillContrastiveLoss("multi")
    assert loss(a[swap], t, LABELS_DUP, 5.0).item() == pytest.approx(loss(a, t, LABELS_DUP, 5.0).item(), rel=1e-12)
    # ...whereas CLIP's one-hot targets make clip 2 a negative of text row 0.
    clip = ClipLoss()
    assert clip(a[swap], t, 5.0).item() != pytest.approx(clip(a, t, 5.0).item(), rel=1e-6)


def test_multi_and_dedup_floors_at_perfect_alignment():
    # Audio == its species' text, huge scale: only same-species columns keep mass.
    protos = _unit(4, 8, 2)
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 3])
    a = t = protos[labels]
    s = torch.tensor(1e4, dtype=DT)
    counts = torch.bincount(labels).to(DT)
    # multi: each row's soft-target entropy log k is the floor, in both directions
    multi = DistillContrastiveLoss("multi")(a, t, labels, s, output_dict=True)
    expect = torch.log(counts[labels]).mean().item()
    assert multi["loss_a2t"].item() == pytest.approx(expect, abs=1e-9)
    assert multi["loss_t2a"].item() == pytest.approx(expect, abs=1e-9)
    # dedup: a→t is a hard softmax over unique species, so it reaches 0
    dedup = DistillContrastiveLoss("dedup")(a, t, labels, s, output_dict=True)
    assert dedup["loss_a2t"].item() == pytest.approx(0.0, abs=1e-9)
    assert dedup["loss_t2a"].item() == pytest.approx(torch.log(counts).mean().item(), abs=1e-9)


@pytest.mark.parametrize("positives", ["multi", "dedup"])
@pytest.mark.parametrize("labels", ["distinct", "none"])
def test_equals_open_clip_when_labels_distinct(positives, labels):
    a, t = _unit(7, 5, 3), _unit(7, 5, 4)
    scale = torch.tensor(1 / 0.07, dtype=DT)
    lab = torch.tensor([9, 2, 5, 0, 11, 3, 7]) if labels == "distinct" else None
    ours = DistillContrastiveLoss(positives)(a, t, lab, scale)
    ref = ClipLoss()(a, t, scale)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)


def test_multi_equals_clip_with_one_text_per_species():
    # Identical text columns cannot be told apart by a softmax, so with one frozen
    # embedding per species "multi" is numerically CLIP's loss, duplicates or not.
    a = _unit(6, 4, 0)
    t = _unit(6, 4, 1)[[0, 1, 0, 3, 1, 0]]
    ours = DistillContrastiveLoss("multi")(a, t, LABELS_DUP, 5.0)
    assert ours.item() == pytest.approx(ClipLoss()(a, t, 5.0).item(), rel=1e-12)


def test_species_softmax_matches_hand_computation():
    a = _unit(5, 4, 5)
    species = _unit(9, 4, 6)
    labels = torch.tensor([0, 8, 3, 3, 5])
    s = 12.0
    got = SpeciesSoftmaxLoss(species)(a, labels, torch.tensor(s, dtype=DT))
    hand = 0.0
    for i, y in enumerate(labels.tolist()):
        row = [s * _dot(a[i].tolist(), species[k].tolist()) for k in range(9)]
        hand += -(row[y] - _lse(row))
    assert got.item() == pytest.approx(hand / 5, rel=1e-10)
    assert got.item() == pytest.approx(F.cross_entropy(s * a @ species.T, labels).item(), rel=1e-12)


def test_species_softmax_label_smoothing_and_per_call_table():
    a, species = _unit(5, 4, 5), _unit(9, 4, 6)
    labels = torch.tensor([0, 8, 3, 3, 5])
    eps, s = 0.1, 12.0
    got = SpeciesSoftmaxLoss(label_smoothing=eps)(a, labels, s, species_text=species)
    hand = 0.0
    for i, y in enumerate(labels.tolist()):
        row = [s * _dot(a[i].tolist(), species[k].tolist()) for k in range(9)]
        logp = [x - _lse(row) for x in row]
        hand += -(1 - eps) * logp[y] - eps * sum(logp) / 9
    assert got.item() == pytest.approx(hand / 5, rel=1e-10)
    with pytest.raises(ValueError, match="species_text"):
        SpeciesSoftmaxLoss()(a, labels, s)


def test_species_softmax_buffer_not_persistent():
    mod = SpeciesSoftmaxLoss(_unit(3, 4, 0))
    assert "species_text" not in mod.state_dict()
    assert mod.species_text.shape == (3, 4)


def test_logit_scale_init_and_clamp_at_100():
    ls = LogitScale()
    assert ls().item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert ls.temperature == pytest.approx(0.07, rel=1e-6)
    with torch.no_grad():
        ls.log_scale.fill_(math.log(1000.0))
    # forward clamps the value, and no gradient pushes it further past the bound
    out = ls()
    assert out.item() == pytest.approx(100.0, rel=1e-6)
    out.backward()
    assert ls.log_scale.grad.item() == 0.0
    # the parameter itself is clamped only by clamp_ (open_clip's post-step clamp)
    assert ls.log_scale.item() == pytest.approx(math.log(1000.0))
    ls.clamp_()
    assert ls.log_scale.item() == pytest.approx(math.log(100.0))
    with torch.no_grad():
        ls.log_scale.fill_(-3.0)
    ls.clamp_()
    assert ls().item() == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        LogitScale(init_temperature=0.001)
    assert not LogitScale(learnable=False).log_scale.requires_grad


@pytest.mark.parametrize("positives", ["multi", "dedup"])
def test_gradients_flow_only_into_inputs_requiring_grad(positives):
    a = _unit(6, 4, 0).requires_grad_()
    t = _unit(6, 4, 1)  # frozen teacher text
    ls = LogitScale().double()
    loss = DistillContrastiveLoss(positives)(a, t, LABELS_DUP, ls())
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert t.grad is None and not t.requires_grad
    assert ls.log_scale.grad is not None and ls.log_scale.grad.abs() > 0

    a2 = _unit(5, 4, 5).requires_grad_()
    species = _unit(9, 4, 6)
    mod = SpeciesSoftmaxLoss(species)
    mod(a2, torch.tensor([0, 8, 3, 3, 5]), 10.0).backward()
    assert a2.grad.abs().sum() > 0
    assert mod.species_text.grad is None and not mod.species_text.requires_grad


def test_dedup_text_grad_goes_to_first_occurrence():
    a = _unit(6, 4, 0)
    t = _unit(6, 4, 1)[[0, 1, 0, 3, 1, 0]].clone().requires_grad_()
    DistillContrastiveLoss("dedup")(a, t, LABELS_DUP, 5.0).backward()
    nonzero = (t.grad.abs().sum(1) > 0).tolist()
    assert nonzero == [True, True, False, True, False, False]


def test_half_precision_inputs_give_float32_loss():
    a, t = _unit(6, 4, 0).to(torch.bfloat16), _unit(6, 4, 1).to(torch.bfloat16)
    loss = DistillContrastiveLoss()(a, t, LABELS_DUP, 5.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_input_validation():
    loss = DistillContrastiveLoss(check_normalized=True)
    a, t = _unit(6, 4, 0), _unit(6, 4, 1)
    with pytest.raises(ValueError, match="L2"):
        loss(a * 2, t, LABELS_DUP, 5.0)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        loss(a, t[:5], LABELS_DUP, 5.0)
    with pytest.raises(ValueError, match="labels"):
        loss(a, t, LABELS_DUP.float(), 5.0)
    with pytest.raises(ConfigError):
        DistillContrastiveLoss("soft")


def test_build_loss_and_single_process_gather():
    assert isinstance(build_loss("infonce", positives="dedup"), DistillContrastiveLoss)
    assert isinstance(build_loss("species_softmax", label_smoothing=0.1), SpeciesSoftmaxLoss)
    with pytest.raises(ConfigError, match="unknown loss"):
        build_loss("triplet")
    with pytest.raises(ConfigError, match="bad arguments"):
        build_loss("infonce", temperature=0.07)
    a, t = _unit(3, 2, 0), _unit(3, 2, 1)
    lab = torch.arange(3)
    out = gather_features(a, t, lab)
    assert out[0] is a and out[1] is t and out[2] is lab
