"""Batched torch log-mel front end, numerically equal to transformers' CLAP extractor.

``ClapFeatureExtractor`` computes its STFT with a Python loop over frames in float64
numpy, one clip at a time: tens of milliseconds per 10 s clip on a CPU, and it cannot
run on a GPU. Distillation and embedding feed thousands of clips through it, so this
module re-implements the *non-fusion* path (``truncation="rand_trunc"``) as a
batched torch STFT (``torch.fft.rfft`` over framed clips), on any device.

Everything that shapes the features is read from the extractor itself, so a model
whose ``preprocessor_config.json`` differs from the class defaults (LAION's unfused
CLAP ships ``frequency_min=50``, the class default is 0) is reproduced without code
changes:

* ``nb_max_samples`` (``max_length_s * sampling_rate``), ``hop_length``,
  ``fft_window_size`` (n_fft = window length), ``padding`` mode;
* the mel bank: the extractor's own ``mel_filters_slaney`` matrix (slaney scale, slaney
  area norm; the one HF uses for ``rand_trunc``).

What HF does, step by step, and what we mirror:

1. Long clip (``T > nb_max_samples``): crop ``[i, i + nb_max_samples)`` with
   ``i ~ U{0..T - nb_max_samples}``. We draw ``i`` from a torch generator instead of
   numpy's global RNG, or take the start / centre deterministically.
2. Short clip: ``repeatpad`` tiles the clip ``nb_max_samples // T`` whole times and then
   zero-pads; ``repeat`` tiles one extra time and cuts; anything else zero-pads.
3. Periodic Hann window of length n_fft, ``center=True`` with *reflect* padding of
   n_fft // 2 on both sides, one-sided FFT, power 2.
4. ``max(1e-10, power @ mel)``, then ``10 * log10(max(x, 1e-10))`` with reference 1.0.
   HF never passes ``top_db`` into ``spectrogram()``, so no dynamic-range clipping
   happens whatever the config says; we do the same.

Precision: float64 (``dtype=torch.float64``) matches HF to ~1e-7 relative
(max|ours-hf| / max|hf|). The float32 default matches to ~1e-5 relative: float32 STFT
rounding leaks ~1e-7 of a frame's amplitude into every bin, which moves cells far below
their frame's energy (by up to 0.1 dB at 110 dB below it), so frames with a cell more than
``EXACT_RANGE_DB`` below the frame's energy are detected from the float32 result and
redone in float64 (12-16% of frames on real recordings; ``exact_range_db=None`` turns this
off: pure float32, up to ~1e-3 relative, all of it within a few dB of the -100 dB floor).

Fusion (``truncation="fusion"``) is refused: it needs a different (htk) mel bank, three
random crops plus a bilinear-shrunk full spectrogram and an ``is_longer`` flag, and
birdbridge only uses non-fused HTSAT models (BioLingual). ``check_truncation`` catches
a fusion extractor paired with a non-fused model at load time, where the mistake would
otherwise silently produce 4-channel features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from birdbridge.errors import ConfigError

Crop = Literal["random", "start", "center"]

# HF's spectrogram() defaults for the CLAP call; the extractor does not expose them.
_MEL_FLOOR = 1e-10
_DB_MIN_VALUE = 1e-10
_DB_REFERENCE = 1.0

# float32 frames with a mel cell more than this many dB below the frame's energy are redone in float64 (see
# ClapFrontend._redo_wide_range_frames); None turns the check off (pure float32).
EXACT_RANGE_DB = 75.0

_REDO_BLOCK = 512  # frames per float64 redo block on CPU (~4 MB of float64 frames)

_FUSION_MSG = "fused CLAP models need 4-channel fusion features; not supported by the fast front end"


def _unwrap(fe: Any) -> Any:
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
    fe = _unwrap(fe)
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


class ClapFrontend(torch.nn.Module):
    """Waveforms at the extractor's rate -> ``[B, 1, frames, n_mels]`` log-mel (dB).

    Identical in layout and (to rounding) in value to
    ``ClapFeatureExtractor(truncation="rand_trunc")(..., return_tensors="pt").input_features``.
    Runs on the device of the module's buffers (``.to("cuda")``) in ``dtype``
    (float32 default, float64 for exact parity); the output has that dtype.
    """

    def __init__(
        self,
        *,
        sampling_rate: int,
        n_fft: int,
        hop_length: int,
        max_samples: int,
        mel_filters: np.ndarray | torch.Tensor,
        padding: str = "repeatpad",
        dtype: torch.dtype = torch.float32,
        chunk_size: int | None = None,
        exact_range_db: float | None = EXACT_RANGE_DB,
    ):
        super().__init__()
        mel = torch.as_tensor(np.asarray(mel_filters), dtype=torch.float64)
        if mel.ndim != 2 or mel.shape[0] != n_fft // 2 + 1:
            raise ConfigError(f"mel filter bank must be (n_fft//2+1={n_fft // 2 + 1}, n_mels), got {tuple(mel.shape)}")
        if hop_length <= 0 or max_samples <= 0:
            raise ConfigError(f"hop_length and max_samples must be positive, got {hop_length}, {max_samples}")
        if max_samples <= n_fft // 2:
            # Reflect padding cannot be wider than the signal (numpy refuses it too).
            raise ConfigError(f"max_samples ({max_samples}) must exceed n_fft // 2 ({n_fft // 2})")
        self.sampling_rate = int(sampling_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.max_samples = int(max_samples)
        self.padding = padding
        self.n_mels = int(mel.shape[1])
        self.n_frames = self.max_samples // self.hop_length + 1
        if dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        # Derived from the config, so not persistent: checkpoints stay config-only and
        # .to(device) still moves them. Kept in float64 and cast per call (a few kB):
        # a float32-rounded window alone leaks ~1e-7 of the frame energy into every bin,
        # which is 0.02 dB at bins near the -100 dB floor, so the float64 path must not
        # inherit rounded buffers. hann_window(periodic=True) equals HF's
        # window_function(n, "hann") = np.hanning(n + 1)[:-1].
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("mel_filters", mel, persistent=False)
        support = torch.nonzero(mel.abs().sum(1) > 0).flatten()
        if support.numel() == 0:
            raise ConfigError("mel filter bank is all zeros")
        self._bin_lo, self._bin_hi = int(support[0]), int(support[-1]) + 1
        pairs = mel[self._bin_lo : self._bin_hi].repeat_interleave(2, dim=0).contiguous()
        self.register_buffer("_mel_pairs", pairs, persistent=False)
        self.chunk_size = chunk_size
        self.exact_range_db = exact_range_db
        self._exact_ratio = None if exact_range_db is None else float(10.0 ** (exact_range_db / 10.0))

    @classmethod
    def from_feature_extractor(
        cls, fe: Any, dtype: torch.dtype = torch.float32, chunk_size: int | None = None,
        exact_range_db: float | None = EXACT_RANGE_DB,
    ) -> ClapFrontend:
        """Build from a ``ClapFeatureExtractor`` (or ``ClapProcessor``); refuses fusion.

        ``dtype`` is the compute precision: float32 (fast; worst error ~0.1 dB, only in
        cells within a few dB of the -100 dB floor) or float64 (matches HF to ~1e-5 dB).
        ``chunk_size`` clips go through the STFT together (None: 2 on CPU, all on GPU).
        """
        fe = _unwrap(fe)
        check_truncation(fe)
        n_fft = int(fe.fft_window_size)
        mel = getattr(fe, "mel_filters_slaney", None)
        if mel is None:  # an extractor object restored without its derived attributes
            from transformers.audio_utils import mel_filter_bank

            mel = mel_filter_bank(
                num_frequency_bins=n_fft // 2 + 1,
                num_mel_filters=int(fe.feature_size),
                min_frequency=fe.frequency_min,
                max_frequency=fe.frequency_max,
                sampling_rate=fe.sampling_rate,
                norm="slaney",
                mel_scale="slaney",
            )
        if np.asarray(mel).shape[1] != int(fe.feature_size):
            raise ConfigError(f"mel bank has {np.asarray(mel).shape[1]} bins but feature_size is {fe.feature_size}")
        return cls(
            sampling_rate=int(fe.sampling_rate),
            n_fft=n_fft,
            hop_length=int(fe.hop_length),
            # nb_max_samples is what _get_input_mel uses (max_length_s * sampling_rate).
            max_samples=int(fe.nb_max_samples),
            mel_filters=mel,
            padding=fe.padding,
            dtype=dtype,
            chunk_size=chunk_size,
            exact_range_db=exact_range_db,
        )

    def extra_repr(self) -> str:
        return (
            f"sampling_rate={self.sampling_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"max_samples={self.max_samples}, n_mels={self.n_mels}, padding={self.padding!r}, dtype={self.dtype}"
        )

    # ---------------------------------------------------------------- cropping / padding
    def crop_starts(
        self, lengths: Sequence[int], crop: Crop = "random", generator: torch.Generator | None = None
    ) -> list[int]:
        """Start sample of the kept window for clips of ``lengths`` (0 for short clips).

        One draw per *long* clip, in order, from ``generator`` (the global torch RNG if
        None), so a seeded call is reproducible whether clips come as a list or a tensor.
        """
        if crop not in ("random", "start", "center"):
            raise ValueError(f"crop must be 'random', 'start' or 'center', got {crop!r}")
        device = generator.device if generator is not None else torch.device("cpu")
        starts = []
        for n in lengths:
            overflow = int(n) - self.max_samples
            if overflow <= 0 or crop == "start":
                starts.append(0)
            elif crop == "center":
                starts.append(overflow // 2)
            else:  # rand_trunc: np.random.randint(0, overflow + 1), i.e. U{0..overflow}
                starts.append(int(torch.randint(0, overflow + 1, (), generator=generator, device=device)))
        return starts

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Bring ``[B, T]`` with ``T <= max_samples`` to ``[B, max_samples]`` like HF."""
        t = x.shape[-1]
        if t == self.max_samples:
            return x
        if t == 0:
            raise ValueError("cannot featurise an empty waveform")
        if self.padding == "repeat":
            x = x.repeat(1, self.max_samples // t + 1)[:, : self.max_samples]
        elif self.padding == "repeatpad":
            x = x.repeat(1, self.max_samples // t)
        return F.pad(x, (0, self.max_samples - x.shape[-1]))

    def fix_length(
        self,
        waveforms: torch.Tensor | Sequence[torch.Tensor | np.ndarray],
        crop: Crop = "random",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Crop / pad waveforms to ``[B, max_samples]`` on the module's device, compute dtype."""
        dtype, device = self.dtype, self.window.device
        if isinstance(waveforms, torch.Tensor):
            if waveforms.ndim == 1:
                waveforms = waveforms[None]
            if waveforms.ndim != 2:
                raise ValueError(f"expected waveforms [B, T] or a list of 1-D clips, got shape {tuple(waveforms.shape)}")
            x = waveforms.to(device=device, dtype=dtype)
            b, t = x.shape
            if b == 0:
                raise ValueError("empty batch")
            if t > self.max_samples:
                starts = torch.tensor(self.crop_starts([t] * b, crop, generator), device=device)
                idx = starts[:, None] + torch.arange(self.max_samples, device=device)
                return torch.gather(x, 1, idx)
            return self._pad(x)
        clips = [torch.as_tensor(w).to(device=device, dtype=dtype).reshape(-1) for w in waveforms]
        if not clips:
            raise ValueError("empty batch")
        starts = self.crop_starts([c.shape[0] for c in clips], crop, generator)
        rows = [self._pad(c[s : s + self.max_samples][None]) for c, s in zip(clips, starts)]
        return torch.cat(rows, 0)

    # ---------------------------------------------------------------- features
    def _chunk(self, batch: int) -> int:
        if self.chunk_size is not None:
            return max(1, int(self.chunk_size))
        # On CPU a 10 s clip's frames and spectrum are ~4 MB each; a few clips at a time
        # stay in cache and ran ~4x faster than one huge batch (the work is memory-bound).
        # Accelerators want the whole batch at once.
        return 2 if self.window.device.type == "cpu" else batch

    def _reflect_index(self, t: int, frame_idx: torch.Tensor) -> torch.Tensor:
        """Sample positions of frames ``frame_idx`` in a length-``t`` clip, reflect-padded
        by n_fft // 2 on both sides (``center=True``, ``pad_mode="reflect"``)."""
        pos = frame_idx[:, None] * self.hop_length - self.n_fft // 2 + torch.arange(self.n_fft, device=frame_idx.device)
        pos = torch.where(pos < 0, -pos, pos)  # mirror without repeating the edge sample
        return torch.where(pos >= t, 2 * (t - 1) - pos, pos)

    def _inner_frames(self, t: int) -> tuple[int, int]:
        """First and last frame lying wholly inside a length-``t`` clip (no padding needed)."""
        h, hop = self.n_fft // 2, self.hop_length
        return -(-h // hop), min(t // hop, (t + h - self.n_fft) // hop)

    def _raw_frames(self, x: torch.Tensor, ci: torch.Tensor, fi: torch.Tensor) -> torch.Tensor:
        """Unwindowed samples of frames ``fi`` of clips ``ci``: ``[k, n_fft]``."""
        t = x.shape[1]
        first, last = self._inner_frames(t)
        out = x.new_empty(len(fi), self.n_fft)
        inner = (fi >= first) & (fi <= last)
        if last >= first:
            h, hop = self.n_fft // 2, self.hop_length
            view = x[:, first * hop - h : last * hop - h + self.n_fft].unfold(1, self.n_fft, hop)
            out[inner] = view[ci[inner], fi[inner] - first]
        edge = ~inner if last >= first else torch.ones_like(inner)
        if bool(edge.any()):
            out[edge] = x[ci[edge][:, None], self._reflect_index(t, fi[edge])]
        return out

    def _windowed_frames(self, x: torch.Tensor) -> torch.Tensor:
        """``[c, t]`` -> ``[c, t // hop + 1, n_fft]`` windowed frames of the centred, reflect-padded clip.

        Frames that lie inside the clip are read straight from it (``unfold`` is a view,
        the window multiply writes the only copy); only the few frames that overhang an
        end are gathered through reflected indices. Building the padded signal first
        cost ~15% of the front end's time on one CPU thread, for two frames per end.
        """
        c, t = x.shape
        n, hop, h = self.n_fft, self.hop_length, self.n_fft // 2
        n_frames, (first, last) = t // hop + 1, self._inner_frames(t)
        window = self.window.to(x.dtype)
        out = x.new_empty(c, n_frames, n)
        if last >= first:
            inner = x[:, first * hop - h : last * hop - h + n].unfold(1, n, hop)
            torch.mul(inner, window, out=out[:, first : last + 1])
            edges = list(range(first)) + list(range(last + 1, n_frames))
        else:
            edges = list(range(n_frames))
        if edges:
            idx = self._reflect_index(t, torch.tensor(edges, device=x.device))  # [e, n]
            out[:, edges] = x[:, idx] * window
        return out

    def _mel_power_chunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[c, max_samples]`` -> (mel power ``[c, frames, n_mels]``, floored; frame energy ``[c, frames]``
        when the float32 redo check is on, else None).

        Written out instead of ``torch.stft`` (which gives the same numbers): windowing
        the frames ourselves straight from the clip and keeping frames-major layout for
        the mel matmul touches the data fewer times (faster on one CPU thread).
        """
        frames = self._windowed_frames(x)  # [c, frames, n_fft]
        # [c, frames, 2F] as (re, im) pairs. Bins outside the mel bank's support (above
        # frequency_max: ~40% of them at the defaults) only ever meet zero weights;
        # dropping them is exact and saves time.
        spec = torch.view_as_real(torch.fft.rfft(frames, dim=-1)).flatten(2)
        spec = spec[:, :, 2 * self._bin_lo : 2 * self._bin_hi]
        # |X|^2 @ mel == (re^2, im^2) @ (mel rows repeated twice): the matmul adds the
        # pairs, which beats gathering strided re/im halves (~20% of the time otherwise).
        mel = torch.matmul(spec.square(), self._mel_pairs.to(x.dtype))  # [c, frames, n_mels]
        # HF: max(mel_floor, mel), then power_to_db clips at min_value; both 1e-10.
        mel = mel.clamp_min(max(_MEL_FLOOR, _DB_MIN_VALUE))
        check = x.dtype == torch.float32 and self.exact_range_db is not None
        energy = torch.linalg.vector_norm(frames, dim=-1).square() if check else None  # time-domain, windowed
        return mel, energy

    def redo_mask(self, mel: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """``[..., frames]`` True where a floored mel cell lies more than ``exact_range_db`` below the frame's energy."""
        return mel.amin(-1) * self._exact_ratio < energy

    def _redo_wide_range_frames(self, x: torch.Tensor, energy: torch.Tensor, mel: torch.Tensor) -> None:
        """Recompute, in float64, the frames whose float32 mel cells are not exact enough.

        float32 STFT rounding leaks ~1e-7 of a frame's amplitude into every bin (~1e-14 of
        its energy), so a mel cell far below its frame's energy moves: by up to 0.1 dB at
        110 dB below it. The error is set by that distance, which float32 measures well, so
        the frames at risk are found from the float32 result itself: any frame with a cell
        more than ``exact_range_db`` below the frame's windowed energy (in-band or not: a
        loud tone above ``frequency_max`` leaks just the same). On the 70 phoebe recordings
        (MP3s: loud low-frequency noise beside an empty top band) 75 dB flags 12-16% of
        frames and leaves at most ~0.002 dB error elsewhere (1e-4 relative is 0.01 dB).
        """
        redo = self.redo_mask(mel, energy)
        if not bool(redo.any()):
            return
        ci, fi = redo.nonzero(as_tuple=True)
        # Blocks of frames small enough to stay in cache: one float64 pass over thousands of
        # frames at once spent more time faulting in fresh 40 MB buffers than computing.
        block = _REDO_BLOCK if x.device.type == "cpu" else len(ci)
        mel_bank = self.mel_filters[self._bin_lo : self._bin_hi]
        for s in range(0, len(ci), block):
            c, f = ci[s : s + block], fi[s : s + block]
            frames = self._raw_frames(x, c, f) * self.window  # exact float32 samples x float64 window -> float64
            spec = torch.fft.rfft(frames, dim=-1)[:, self._bin_lo : self._bin_hi]
            exact = (spec.real.square() + spec.imag.square()) @ mel_bank
            mel[c, f] = exact.clamp_min(max(_MEL_FLOOR, _DB_MIN_VALUE)).to(mel.dtype)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` fixed-length audio -> ``[B, 1, frames, n_mels]`` dB log-mel."""
        step = self._chunk(x.shape[0])
        # Training steps may run under autocast; a bf16 mel matmul would cost ~0.02 dB
        # everywhere, so the front end always runs in its own dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            parts = [self._mel_power_chunk(x[i : i + step]) for i in range(0, x.shape[0], step)]
            mel = parts[0][0] if len(parts) == 1 else torch.cat([m for m, _ in parts])
            if parts[0][1] is not None:
                energy = parts[0][1] if len(parts) == 1 else torch.cat([e for _, e in parts])
                self._redo_wide_range_frames(x, energy, mel)
            db = 10.0 * torch.log10(mel)
            if _DB_REFERENCE != 1.0:
                db = db - 10.0 * float(np.log10(_DB_REFERENCE))
            return db.unsqueeze(1)

    def forward(
        self,
        waveforms: torch.Tensor | Sequence[torch.Tensor | np.ndarray],
        crop: Crop = "random",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Clips (``[B, T]`` tensor or list of 1-D clips of any lengths) -> ``[B, 1, frames, n_mels]``.

        ``crop`` applies to clips longer than ``max_samples``: ``"random"`` is HF's
        ``rand_trunc`` (uniform start, drawn from ``generator``), ``"start"`` and
        ``"center"`` are deterministic (for evaluation).
        """
        return self.log_mel(self.fix_length(waveforms, crop=crop, generator=generator))
