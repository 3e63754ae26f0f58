"""The student on ONNX Runtime, int8: ``--runtime onnx`` of ``detect``.

The mel front end stays in torch (:mod:`.frontend`, fp32); the graph handed to ONNX Runtime
is the rest of the student -- CLAP audio tower, its projection, the head and both
normalisations: mel features ``[B, 1, T, F]`` -> unit rows ``[B, D]``. It is exported once
(``torch.onnx.export(dynamo=True)``, opset 18, dynamic batch), its MatMul/Gemm weights
quantised to int8 by ONNX Runtime's dynamic quantisation (activations quantised on the fly),
and cached under ``~/.cache/birdbridge/onnx/<key>/`` (``BIRDBRIDGE_ONNX_CACHE`` overrides the
root), ``key`` a hash of the exported weights and the torch / onnxruntime versions, so a
changed checkpoint never reuses a stale graph and a moved one reuses its own.

Parity with torch fp32 is bounded, not exact: docs/PERFORMANCE.md gives the measured
max |Δ score| on the real-size student, and tests/test_runtime_speed.py asserts a bound.
Checkpoints that carry a zero-shot ``combination`` are not exported (torch only).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelNotAvailableError

FORMAT = 1  # bump when the exported graph or its quantisation changes
DEFAULT_CACHE_DIR = "~/.cache/birdbridge/onnx"
CACHE_ENV = "BIRDBRIDGE_ONNX_CACHE"
INSTALL_HINT = "pip install 'birdbridge[onnx]'"
GRAPH_NAME = "student_int8.onnx"


def import_onnxruntime():
    """``onnxruntime``, or one clear error naming the extra."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ModelNotAvailableError(f"--runtime onnx needs onnxruntime (and onnx, onnxscript to export the student): "
                                     f"{INSTALL_HINT}") from err
    return onnxruntime


class _Tower(nn.Module):
    """Mel features -> teacher-space unit rows: the student without its front end."""

    def __init__(self, model):
        super().__init__()
        self.audio_model, self.audio_projection, self.head = model.audio_model, model.audio_projection, model.head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.audio_model(input_features=features).pooler_output
        clap = F.normalize(self.audio_projection(pooled), dim=-1)
        return F.normalize(self.head(clap), dim=-1)


def cache_key(model) -> str:
    """A hash of the exported weights (content, not path) and the exporting/quantising versions."""
    import onnxruntime

    h = hashlib.sha256(f"v{FORMAT} torch {torch.__version__} ort {onnxruntime.__version__}".encode())
    tower = _Tower(model)
    for name, t in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def export_int8(model, target: Path) -> Path:
    """Export the student's tower to ``target`` (a folder made atomically): ``student_int8.onnx``."""
    import warnings

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..io import atomic_dir
    from ..quiet import native_stderr

    tower = _Tower(model).eval().float().cpu()
    with torch.no_grad():  # example input: the front end's features of two noise windows
        x = model.features([0.1 * torch.randn(model.window_samples, generator=torch.Generator().manual_seed(0))] * 2)
    with atomic_dir(target) as tmp, warnings.catch_warnings(), native_stderr():
        warnings.simplefilter("ignore")
        fp32, pre = tmp / "student_fp32.onnx", tmp / "student_pre.onnx"
        with torch.inference_mode(False), torch.no_grad():
            batch = torch.export.Dim("batch", min=1, max=1024)
            prog = torch.onnx.export(tower, (x,), dynamo=True, opset_version=18, input_names=["features"],
                                     output_names=["embedding"], dynamic_shapes={"features": {0: batch}},
                                     optimize=True, verbose=False)
            prog.save(str(fp32))
        # symbolic shape inference fails on the dynamo graph (an Expand): the ONNX one is enough
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(tmp / GRAPH_NAME), weight_type=QuantType.QInt8, per_channel=False,
                         op_types_to_quantize=["MatMul", "Gemm"])
        for p in tmp.iterdir():
            if p.name != GRAPH_NAME:
                p.unlink()
    return target / GRAPH_NAME


def int8_graph(model, cache_dir: str | Path | None = None) -> Path:
    """The cached int8 graph of ``model``, exported on first use."""
    folder = (Path(cache_dir).expanduser() if cache_dir else cache_root()) / cache_key(model)
    graph = folder / GRAPH_NAME
    return graph if graph.is_file() else export_int8(model, folder)


class OnnxEmbedder:
    """A distilled checkpoint whose tower runs on ONNX Runtime (CPU, int8); same interface as the torch embedder."""

    runtime = "onnx"
    precision = "int8"

    def __init__(self, model, name: str, *, threads: int | None = None, cache_dir: str | Path | None = None):
        ort = import_onnxruntime()
        if getattr(model, "combination", None) is not None:
            raise ConfigError(f"{name}: --runtime onnx does not run checkpoints with a zero-shot combination; "
                              "use --runtime torch")
        self.model = model.eval().float().cpu()
        self.name = name
        self.space = "teacher"
        self.sample_rate = model.sample_rate
        self.window_samples = model.window_samples
        self.device = "cpu"
        self.dim = model.dim
        meta = getattr(model, "meta", {})
        self.provenance = {k: meta[k] for k in ("student_id", "teacher_id", "teacher_fingerprint", "prompt_recipe")
                           if meta.get(k) is not None}
        self.graph = int8_graph(model, cache_dir)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning collapses on a shared CPU
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.graph), so, providers=["CPUExecutionProvider"])

    @torch.inference_mode()
    def embed_windows(self, waves: list[np.ndarray]) -> np.ndarray:
        feats = self.model.features([torch.from_numpy(np.asarray(w, np.float32)) for w in waves], crop="start")
        return np.asarray(self.session.run(None, {"features": feats.float().numpy()})[0], np.float32)
