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
   zero-pads; ``repeat`` tiles one extra time and cuts; anything else zero-pads. This is
   :func:`birdbridge.data.audio.pad_to_length`, which training batches use too.
3. Periodic Hann window of length n_fft, ``center=True`` with *reflect* padding of
   n_fft // 2 on both sides, one-sided FFT, power 2.
4. ``max(1e-10, power @ mel)``, then ``10 * log10(max(x, 1e-10))`` with reference 1.0.
   HF never passes ``top_db`` into ``spectrogram()``, so no dynamic-range clipping
   happens whatever the config says; we do the same.

Precision: float64 (``dtype=torch.float64``) matches HF to ~1e-7 relative
(max|ours-hf| / max|hf|). The float32 default matches to ~3e-5 relative: float32 STFT
rounding leaks ~1e-7 of a frame's amplitude into every bin, which moves cells far below
their frame's energy (by up to 0.1 dB at 110 dB below it), so frames with a cell more than
``EXACT_RANGE_DB`` below the frame's energy are detected from the float32 result and
redone in float64 (8-14% of frames on real recordings; ``exact_range_db=None`` turns this
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

from birdbridge.data.audio import pad_to_length
from birdbridge.errors import ConfigError

from .clap_features import band_blocks, check_truncation, slaney_mel_bank, unwrap_extractor

__all__ = ["ClapFrontend", "check_truncation", "EXACT_RANGE_DB"]

Crop = Literal["random", "start", "center"]

# HF's spectrogram() defaults for the CLAP call; the extractor does not expose them.
_MEL_FLOOR = 1e-10
_DB_MIN_VALUE = 1e-10
_DB_REFERENCE = 1.0
_FLOOR = max(_MEL_FLOOR, _DB_MIN_VALUE)  # HF: max(mel_floor, mel), then power_to_db clips at min_value

# float32 frames with a mel cell more than this many dB below the frame's energy (each cell weighted by its
# filter's peak) are redone in float64 (see ClapFrontend._redo_wide_range_frames for how it was chosen); None
# turns the check off (pure float32).
EXACT_RANGE_DB = 82.0

_REDO_BLOCK = 512  # frames per float64 redo block on CPU (~4 MB of float64 frames)

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
        self.register_buffer("_mel_pairs32", pairs.float(), persistent=False)
        self._bands = band_blocks(mel[self._bin_lo : self._bin_hi])
        # redo criterion: cell m counts as (its filter's peak / the bank's largest peak) times its distance below
        # the frame's energy; an empty filter only ever gives an exact zero, so it never asks for a redo
        peak = mel.amax(0)
        scale = torch.where(peak > 0, peak.max() / peak, torch.inf).float()
        self.register_buffer("_redo_scale", scale, persistent=False)
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
        ``chunk_size`` clips go through the STFT together (None: 1 on CPU, all on GPU).
        """
        fe = unwrap_extractor(fe)
        check_truncation(fe)
        n_fft = int(fe.fft_window_size)
        mel = slaney_mel_bank(fe)
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
        if x.shape[-1] == 0:
            raise ValueError("cannot featurise an empty waveform")
        return pad_to_length(x, self.max_samples, self.padding)

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
    def _clips_per_block(self, batch: int) -> int:
        if self.chunk_size is not None:
            return max(1, int(self.chunk_size))
        # On CPU one 10 s clip's frames and spectrum (~4 MB each) stay in cache from the window
        # multiply to the mel matmul. Per 32 clips on 2 cores (medians of 25 interleaved runs): 1 or 2
        # clips per block 70-71 ms, 4 clips 85 ms (spilling), 256-frame blocks 85 ms (per-op overhead).
        # Accelerators want the whole batch at once.
        return 1 if self.window.device.type == "cpu" else batch

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

    def _inner_view(self, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Frames ``first..last`` of every clip (those needing no padding) as a view of ``x``: ``[B, k, n_fft]``."""
        h, n, hop = self.n_fft // 2, self.n_fft, self.hop_length
        return x[:, first * hop - h : last * hop - h + n].unfold(1, n, hop)

    def _raw_frames(self, x: torch.Tensor, ci: torch.Tensor, fi: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Unwindowed samples of frames ``fi`` of clips ``ci`` into ``out`` ``[k, n_fft]``."""
        b, t = x.shape
        n, hop, h = self.n_fft, self.hop_length, self.n_fft // 2
        first, last = self._inner_frames(t)
        inner = (fi >= first) & (fi <= last)
        if last >= first and x.is_contiguous() and t % hop == 0 and bool(inner.all()):
            # Frame f of clip c starts at c*t + f*hop - h = hop*(c*t/hop + f) - h, so the inner frames
            # of every clip are rows of one strided view of the flat batch: index_select copies whole
            # rows (~10x faster than advanced indexing into an unfold view).
            s = t // hop
            rows = torch.as_strided(x, ((b - 1) * s + last - first + 1, n), (hop, 1), x.storage_offset() + first * hop - h)
            return torch.index_select(rows, 0, ci * s + fi - first, out=out)
        if last >= first:
            out[inner] = self._inner_view(x, first, last)[ci[inner], fi[inner] - first]
        edge = ~inner if last >= first else torch.ones_like(inner)
        if bool(edge.any()):
            out[edge] = x[ci[edge][:, None], self._reflect_index(t, fi[edge])]
        return out

    def _band_weights(self, dtype: torch.dtype) -> list[tuple[int, int, int, int, torch.Tensor]]:
        """``_bands`` with each block's weights in ``dtype``: sliced once per call, not once per block of frames
        (at ~40 blocks per batch, slicing was a visible share of the Python overhead)."""
        pairs = self._mel_pairs32 if dtype == torch.float32 else self._mel_pairs
        return [(m0, m1, r0, r1, pairs[r0:r1, m0:m1]) for m0, m1, r0, r1 in self._bands]

    def _power(
        self,
        frames: torch.Tensor,
        weights: list,
        mel_out: torch.Tensor,
        checks: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Windowed frames ``[..., n_fft]`` -> floored mel power into ``mel_out`` ``[..., n_mels]``, summed in
        the dtype of ``weights``. ``checks``: outputs ``[...]`` for the two sides of the redo criterion, taken
        while the block is in cache: the frames' windowed energy (a norm; squared by the caller) and the least
        floored mel cell scaled by ``_redo_scale``.

        ``|X|^2 @ mel`` is computed as (re^2, im^2) @ (mel rows repeated twice): the matmul adds the pairs, which
        beats gathering strided re/im halves. Bins outside the bank's support (above frequency_max: ~40% at the
        defaults) only meet zero weights and are dropped, and so are the zeros inside it: the bank is a band
        matrix, multiplied as a few dense blocks (``_bands``; 4.6x fewer multiply-adds at BioLingual's settings).
        """
        spec = torch.view_as_real(torch.fft.rfft(frames, dim=-1)).flatten(-2)
        # squared in place: the spectrum is ours to overwrite, and a fresh power tensor cost ~7% of a call;
        # BLAS reads the strided rows directly
        band, sum_dtype = spec[..., 2 * self._bin_lo : 2 * self._bin_hi], weights[0][-1].dtype
        if band.dtype != sum_dtype:  # the redo's float64 spectra, summed in float32 (cast, then square: 3x faster
            # than a mixed-dtype square(out=))
            band = torch.empty(band.shape, dtype=sum_dtype, device=band.device).copy_(band)
        power = band.square_().flatten(0, -2)
        # matmul(out=) needs a 2-D out; a block of several clips is a non-contiguous slice of the batch's mel
        out = mel_out if mel_out.is_contiguous() else torch.empty_like(mel_out)
        flat = out.view(-1, self.n_mels)
        for m0, m1, r0, r1, w in weights:
            torch.matmul(power[:, r0:r1], w, out=flat[:, m0:m1])
        out.clamp_min_(_FLOOR)
        if out is not mel_out:
            mel_out.copy_(out)
        if checks is not None:
            energy_out, headroom_out = checks  # strided outs are fine for reductions
            torch.linalg.vector_norm(frames, dim=-1, out=energy_out)
            torch.amin(out * self._redo_scale, dim=-1, out=headroom_out)

    def mel_power(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, max_samples]`` -> (floored mel power ``[B, frames, n_mels]`` in the compute dtype, frames whose
        float32 values are not exact enough ``[B, frames]`` when the float32 redo check is on, else None: a
        floored mel cell, scaled up by its filter's peak weight relative to the bank's largest, more than
        ``exact_range_db`` below the frame's energy). No float64 redo yet.

        Frames that lie inside the clip are windowed straight from an ``unfold`` view of it (the multiply
        writes the only copy); the few that overhang an end (two per end at the defaults) are gathered
        through reflected indices, for the whole batch in one block.
        """
        b, t = x.shape
        n_frames, (first, last) = t // self.hop_length + 1, self._inner_frames(t)
        window, weights = self.window.to(x.dtype), self._band_weights(x.dtype)
        check = x.dtype == torch.float32 and self.exact_range_db is not None
        mel = x.new_empty(b, n_frames, self.n_mels)
        energy, headroom = (x.new_empty(b, n_frames), x.new_empty(b, n_frames)) if check else (None, None)
        edges = [f for f in range(n_frames) if not first <= f <= last]
        if edges:
            frames = x[:, self._reflect_index(t, torch.tensor(edges, device=x.device))] * window  # [b, e, n]
            edge_mel = x.new_empty(b, len(edges), self.n_mels)
            edge_checks = (x.new_empty(b, len(edges)), x.new_empty(b, len(edges))) if check else None
            self._power(frames, weights, edge_mel, edge_checks)
            for whole, part in zip((mel, energy, headroom), (edge_mel, *(edge_checks or ()))):
                whole[:, edges] = part
        if last >= first:
            inner = self._inner_view(x, first, last)
            step = self._clips_per_block(b)
            buffer = x.new_empty(min(step, b), last - first + 1, self.n_fft)  # reused: fresh pages cost page faults
            for i in range(0, b, step):
                frames = torch.mul(inner[i : i + step], window, out=buffer[: min(step, b - i)])
                rows = (slice(i, i + step), slice(first, last + 1))
                self._power(frames, weights, mel[rows], (energy[rows], headroom[rows]) if check else None)
        if not check:
            return mel, None
        return mel, headroom.mul_(self._exact_ratio) < energy.square_()

    def _redo_wide_range_frames(self, x: torch.Tensor, at_risk: torch.Tensor, mel: torch.Tensor) -> None:
        """Recompute, in float64, the frames whose float32 mel cells are not exact enough.

        float32 STFT rounding leaks ~1e-7 of a frame's amplitude into every bin (~1e-14 of
        its energy), so a mel cell far below its frame's energy moves: by up to 0.1 dB at
        110 dB below it. The error is set by that distance, which float32 measures well, so
        the frames at risk are found from the float32 result itself: any frame with a cell
        more than ``exact_range_db`` below the frame's windowed energy (in-band or not: a
        loud tone above ``frequency_max`` leaks just the same). A cell is weighted by its
        filter's peak relative to the bank's largest: a narrow low filter sums the leak of
        one or two bins at full weight, a wide high one averages it over many bins at low
        weight. On the 70 phoebe recordings (MP3s whose lowest bands, below ~300 Hz, are
        near-empty beside loud song: most trigger cells are there), as the first 10 s /
        tiled to 10 s, the threshold trades redone frames for worst error (1e-4 relative
        is 0.01 dB):

        ==========  ==================  ==================  ================
        threshold   redone, unweighted  redone, weighted    max rel. error
        ==========  ==================  ==================  ================
        75 dB       12.1% / 21.5%       10.4% / 18.6%       1.5e-5 / 1.5e-5
        80 dB       9.4% / 16.9%        8.4% / 15.0%        3.0e-5 / 3.0e-5
        **82 dB**   8.6% / 15.5%        7.7% / 14.0%        3.0e-5 / 3.1e-5
        85 dB       7.5% / 13.6%        6.8% / 12.3%        3.6e-5 / 6.2e-5
        90 dB       5.8% / 10.7%        5.1% / 9.4%         7.2e-5 / 7.2e-5
        ==========  ==================  ==================  ================

        Weighted at 82 dB keeps the worst error of unweighted 80 dB (a 3x margin under
        1e-4) and redoes 18% fewer frames.
        """
        ci, fi = at_risk.nonzero(as_tuple=True)
        if not len(ci):
            return
        first, last = self._inner_frames(x.shape[1])
        inner = (fi >= first) & (fi <= last)  # inner frames first: their blocks take the index_select path
        ci, fi = torch.cat([ci[inner], ci[~inner]]), torch.cat([fi[inner], fi[~inner]])
        # Blocks of frames small enough to stay in cache: one float64 pass over thousands of
        # frames at once spent more time faulting in fresh 40 MB buffers than computing.
        block = _REDO_BLOCK if x.device.type == "cpu" else len(ci)
        # Buffers reused by every block: fresh ones cost a page fault per 4 kB.
        size = min(block, len(ci))
        raw, exact = x.new_empty(size, self.n_fft), x.new_empty(size, self.n_mels)
        frames64 = x.new_empty(size, self.n_fft, dtype=torch.float64)
        n_frames, flat_mel = mel.shape[1], mel.view(-1, self.n_mels)  # mel_power's fresh, contiguous output
        # Only the STFT needs float64: its rounding is what leaks into the quiet bins. Squares and mel sums add
        # non-negative terms, which float32 keeps to ~1e-7 relative (4e-7 dB).
        weights = self._band_weights(torch.float32)
        for s in range(0, len(ci), block):
            c, f = ci[s : s + block], fi[s : s + block]
            k = len(c)
            # exact float32 samples x float64 window; cast first: a mixed-dtype multiply took ~1.4x as long
            frames = frames64[:k].copy_(self._raw_frames(x, c, f, out=raw[:k])).mul_(self.window)
            self._power(frames, weights, exact[:k])
            flat_mel.index_copy_(0, c * n_frames + f, exact[:k])

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` fixed-length audio -> ``[B, 1, frames, n_mels]`` dB log-mel."""
        # Training steps may run under autocast; a bf16 mel matmul would cost ~0.02 dB
        # everywhere, so the front end always runs in its own dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            mel, at_risk = self.mel_power(x)
            if at_risk is not None:
                self._redo_wide_range_frames(x, at_risk, mel)
            db = mel.log10_().mul_(10.0)
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
