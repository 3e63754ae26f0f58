"""Issue 22, items 3-4: detect's fast paths give the scores of the reference path, within a stated bound.

* runtime parity: ``--runtime onnx`` (int8 on ONNX Runtime) and ``--precision bf16`` against
  torch fp32, on real phoebe windows, as detect scores them (cosine with unit species rows).
  The bound measured on the real-size student is in docs/PERFORMANCE.md (benchmarks/bench_detect.py
  records it); the tiny replica's rows are noisier (64-d HTSAT, random weights, 16-d
  teacher space: fewer dimensions to average the rounding over), measured here at max |Δ|
  2e-3 (bf16) and 6e-3 (int8), so the test allows 1e-2 and 2e-2.
* cross-file batching and decoding in worker processes give the detections of file by file.
* a missing runtime is one clear line from the CLI, naming the extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

BIN = Path(sys.executable).with_name("birdbridge")
BOUND = {"bf16": 1e-2, "int8": 2e-2}  # tiny replica; the real-size bound is in docs/PERFORMANCE.md


@pytest.fixture(scope="module")
def windows(phoebe, tiny_distilled_dir):
    from birdbridge.data.stream import iter_spans
    from birdbridge.encoders.factory import load_audio_embedder

    m = load_audio_embedder(str(tiny_distilled_dir), precision="fp32")
    out = []
    for p in sorted((phoebe / "audio").glob("*.mp3"))[:4]:
        out += [w for _, _, w in iter_spans(p, m.sample_rate, m.window_samples / m.sample_rate, last="end")]
    assert len(out) >= 8
    return out


def test_onnx_int8_and_bf16_scores_match_torch_fp32_within_the_bound(tiny_distilled_dir, windows, tmp_path,
                                                                        monkeypatch):
    from birdbridge.encoders import onnx_runtime
    from birdbridge.encoders.factory import load_audio_embedder

    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(tmp_path / "onnx"))
    ref = load_audio_embedder(str(tiny_distilled_dir), precision="fp32")
    bf16 = load_audio_embedder(str(tiny_distilled_dir), precision="bf16")
    int8 = load_audio_embedder(str(tiny_distilled_dir), runtime="onnx")
    assert (ref.precision, bf16.precision, int8.precision) == ("fp32", "bf16", "int8")
    rng = np.random.default_rng(0)
    text = rng.standard_normal((40, ref.dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    want = ref.embed_windows(windows) @ text.T
    for emb in (bf16, int8):
        rows = emb.embed_windows(windows)
        assert rows.dtype == np.float32 and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-3)
        delta = np.abs(rows @ text.T - want).max()
        assert 0 < delta < BOUND[emb.precision], (emb.precision, delta)  # > 0: the fast path really ran
    # exported once, cached by the weights: a second load reuses the graph without exporting
    assert int8.graph.is_file() and int8.graph.parent.parent == tmp_path / "onnx"
    monkeypatch.setattr(onnx_runtime, "export_int8", lambda *a: pytest.fail("exported twice"))
    again = load_audio_embedder(str(tiny_distilled_dir), runtime="onnx")
    assert again.graph == int8.graph
    # the key is the weights': changed weights never reuse the stale graph
    import torch

    with torch.no_grad():
        ref.model.head.net.weight.add_(0.01)
    assert onnx_runtime.cache_key(ref.model) != int8.graph.parent.name


def test_batches_across_files_and_decode_workers_give_the_file_by_file_detections(phoebe, tiny_distilled_dir, tmp_path):
    from birdbridge.data.species_list import load_species_list
    from birdbridge.retrieval.detect import detect_audio, load_detect_model

    (tmp_path / "species.csv").write_text("scientific_name\nSayornis nigricans\nSpinus psaltria\nStrix varia\n")
    species = load_species_list(tmp_path / "species.csv")
    mp3 = sorted((phoebe / "audio").glob("*.mp3"))[:3]
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)  # read, then refused: silent
    paths = [mp3[0], tmp_path / "missing.wav", mp3[1], tmp_path / "silent.wav", mp3[2]]
    model = load_detect_model(str(tiny_distilled_dir))
    kw = dict(species=species, k=2, cache_dir=tmp_path / "cache", hop_s=0.7)
    one_by_one = [detect_audio(model, [p], batch_size=4, **kw)[0] for p in paths]
    ticks = []
    # batch 5 windows: batches straddle files; two decoding processes, files alternating between them
    together = detect_audio(model, paths, batch_size=5, workers=2, progress=ticks.append, **kw)
    assert [r.to_dict() for r in together] == [r.to_dict() for r in one_by_one]
    assert [r.ok for r in together] == [True, False, True, False, True] and sum(ticks) == len(paths)
    assert together[3].error == "silent" and sum(len(r.windows) for r in together) > 3 * 5


def test_a_missing_runtime_is_one_clear_line(tiny_distilled_dir, tmp_path):
    stub = tmp_path / "stub" / "onnxruntime"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    (tmp_path / "species.csv").write_text("scientific_name\nSayornis nigricans\n")
    sf.write(tmp_path / "a.wav", 0.1 * np.sin(np.arange(16000) / 5).astype(np.float32), 16000)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "stub"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    work = tmp_path / "elsewhere"
    work.mkdir()
    res = subprocess.run([str(BIN), "detect", "../a.wav", "--model", str(tiny_distilled_dir), "--species-list",
                          "../species.csv", "--runtime", "onnx"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 2 and "Traceback" not in out, out[-2000:]
    assert out.count("\n") == 0 and "onnxruntime" in out and "birdbridge[onnx]" in out, out
    res = subprocess.run([str(BIN), "detect", "../a.wav", "--model", str(tiny_distilled_dir), "--species-list",
                          "../species.csv", "--runtime", "tflite"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and "runtime must be one of torch, onnx" in res.stdout + res.stderr


def test_precision_auto_is_bf16_only_on_an_amx_cpu(monkeypatch):
    from birdbridge.encoders import factory
    from birdbridge.errors import ConfigError

    monkeypatch.setattr(factory, "cpu_has_fast_bf16", lambda: True)
    assert [factory.resolve_precision(p) for p in ("auto", "fp32", "bf16")] == ["bf16", "fp32", "bf16"]
    assert factory.resolve_precision("auto", "cuda:0") == "fp32"  # CUDA keeps its weights as they are
    monkeypatch.setattr(factory, "cpu_has_fast_bf16", lambda: False)
    assert factory.resolve_precision("auto") == "fp32"
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        factory.resolve_precision("fp16")
