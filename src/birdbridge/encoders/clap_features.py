"""What a ``ClapFeatureExtractor``'s config means for the fast front end (``frontend.py``).

The truncation check (fusion refused), the slaney mel bank HF applies, and how that bank is
split into dense blocks for the mel matmul.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from birdbridge.errors import ConfigError

_FUSION_MSG = "fused CLAP models need 4-channel fusion features; not supported by the fast front end"


def band_blocks(mel: torch.Tensor, max_bands: int = 4) -> list[tuple[int, int, int, int]]:
    """Split a mel bank ``[bins, n_mels]`` into at most ``max_bands`` runs of columns, each with the rows
    (in (re, im) pair units: 2 per bin) its filters touch: ``(m0, m1, r0, r1)`` with the fewest multiply-adds.

    A triangular bank is a band matrix: filter m only covers the bins between its neighbours' centres, so
    a dense ``power @ mel`` spends ~97% of its work on zeros. A few dense blocks keep BLAS efficient
    (4 blocks: 4.6x fewer multiply-adds at BioLingual's 64 x 298; more blocks measured slower: per-call
    overhead). Exact: the rows a block skips only hold zeros for its columns.
    """
    nz = mel != 0
    lo = [int(col.nonzero()[0]) if col.any() else None for col in nz.T]
    hi = [int(col.nonzero()[-1]) + 1 if col.any() else None for col in nz.T]
    n_mels = len(lo)
    span: dict[tuple[int, int], tuple[int, int]] = {}  # (a, b) -> pair rows the columns a..b-1 touch
    for a in range(n_mels):
        r0 = r1 = None
        for b in range(a + 1, n_mels + 1):
            if lo[b - 1] is not None:
                r0 = 2 * lo[b - 1] if r0 is None else min(r0, 2 * lo[b - 1])
                r1 = 2 * hi[b - 1] if r1 is None else max(r1, 2 * hi[b - 1])
            span[(a, b)] = (0, 0) if r0 is None else (r0, r1)

    def cost(a: int, b: int) -> int:
        r0, r1 = span[(a, b)]
        return (r1 - r0) * (b - a)

    # best[g][a]: (cost, cuts) covering columns a.. with g blocks; tiny (n_mels <= a few hundred)
    best = {(1, a): (cost(a, n_mels), [n_mels]) for a in range(n_mels)}
    for g in range(2, max_bands + 1):
        for a in range(n_mels):
            best[(g, a)] = min(
                ((cost(a, b) + best[(g - 1, b)][0], [b] + best[(g - 1, b)][1]) for b in range(a + 1, n_mels)),
                default=best[(1, a)],
            )
    bands, a = [], 0
    for b in min((best[(g, 0)] for g in range(1, max_bands + 1)), key=lambda r: r[0])[1]:
        bands.append((a, b, *span[(a, b)]))
        a = b
    return bands


def unwrap_extractor(fe: Any) -> Any:
    """Accept a ``ClapProcessor`` as well as its feature extractor."""
    return getattr(fe, "feature_extractor", fe)


def _model_is_fused(model: Any) -> bool | None:
    """``enable_fusion`` of a ClapModel / ClapConfig / ClapAudioConfig / bool, else None."""
    if model is None:
        return None
    if isinstance(model, bool):
        return model
    cfg = getattr(model, "config", model)
    cfg = getattr(cfg, "audio_config", cfg)
    fused = getattr(cfg, "enable_fusion", None)
    return None if fused is None else bool(fused)


def check_truncation(fe: Any, model: Any = None) -> None:
    """Raise :class:`ConfigError` unless ``fe`` produces non-fusion features for ``model``.

    ``model`` may be a ``ClapModel``, its config, its audio config, or a bool
    ``enable_fusion``; ``None`` means "non-fused", the only kind birdbridge supports.
    ``ClapFeatureExtractor()`` *defaults* to ``truncation="fusion"`` although most
    published non-fused checkpoints ship ``rand_trunc``; feeding fusion features to a
    non-fused model fails deep inside HTSAT (or, worse, silently uses channel 0).
    """
    fe = unwrap_extractor(fe)
    truncation = getattr(fe, "truncation", None)
    fused = _model_is_fused(model)
    if fused:
        raise ConfigError(f"model has enable_fusion=True: {_FUSION_MSG}")
    if truncation == "fusion":
        raise ConfigError(
            "feature extractor has truncation='fusion' but the CLAP model is non-fused; "
            "load it with ClapFeatureExtractor.from_pretrained(<id>, truncation='rand_trunc') "
            f"({_FUSION_MSG})"
        )
    if truncation != "rand_trunc":
        raise ConfigError(f"unsupported feature-extractor truncation {truncation!r}; expected 'rand_trunc'")


def slaney_mel_bank(fe: Any) -> np.ndarray:
    """The ``[n_fft // 2 + 1, feature_size]`` slaney mel bank HF uses for ``rand_trunc`` (slaney scale, slaney
    area norm), read from the extractor, or rebuilt from its config when it was restored without it."""
    mel = getattr(fe, "mel_filters_slaney", None)
    if mel is None:
        from transformers.audio_utils import mel_filter_bank

        mel = mel_filter_bank(
            num_frequency_bins=int(fe.fft_window_size) // 2 + 1,
            num_mel_filters=int(fe.feature_size),
            min_frequency=fe.frequency_min,
            max_frequency=fe.frequency_max,
            sampling_rate=fe.sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
    mel = np.asarray(mel)
    if mel.shape[1] != int(fe.feature_size):
        raise ConfigError(f"mel bank has {mel.shape[1]} bins but feature_size is {fe.feature_size}")
    return mel
