"""One distillation step at the real model sizes: birdbridge's pipeline vs the naive one.

Both train the same student -- a random-init ``ClapModel(ClapConfig())`` audio tower
(BioLingual's shape: HTSAT-tiny, 512-d projection) plus a linear head onto 768-d --
with forward + backward + AdamW step on ``batch`` clips of 10 s at 48 kHz:

* ours: the species text embeddings come from the cache (a row lookup), mel features
  from the batched torch :class:`~birdbridge.encoders.frontend.ClapFrontend`;
* naive: the teacher's text tower (open_clip ``ViT-L-14``, random weights, 768-d) runs
  on the batch's prompts every step, and ``ClapFeatureExtractor`` runs per clip on CPU.

Steps are interleaved (ours, naive, ours, ...) so load from other processes hits both
alike; medians are reported. The components (front ends, text tower, the student's
forward and forward+backward) are timed too, so the ratio can be explained.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

SR = 48_000


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(out_dim: int = 768, seed: int = 0):
    """Real-size student (random weights), its extractor, and the ViT-L-14 text tower + tokenizer."""
    import open_clip
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel
    from transformers.utils import logging as hf_logging

    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    clap = ClapModel(ClapConfig())
    fe = ClapFeatureExtractor(truncation="rand_trunc")
    student = AudioStudent.from_clap(clap, fe, HeadSpec(kind="linear", out_dim=out_dim)).train()
    del clap.text_model  # the student never uses CLAP's text tower
    teacher = open_clip.create_model("ViT-L-14", pretrained=None).eval().requires_grad_(False)
    del teacher.visual  # only the text tower runs in the naive step
    tokenizer = open_clip.get_tokenizer("ViT-L-14")
    return student, fe, teacher, tokenizer


def prompts_for(labels: list[int]) -> list[str]:
    return [f"a photo of Animalia Chordata Aves Passeriformes Parulidae Setophaga species{l} with common name Warbler {l}."
            for l in labels]


def run(batch: int = 4, steps: int = 3, n_species: int = 200, seed: int = 0) -> dict:
    from birdbridge.distill.loss import LogitScale, build_loss

    student, fe, teacher, tokenizer = build(seed=seed)
    rng = np.random.default_rng(seed)
    clips = [(0.1 * rng.standard_normal(10 * SR)).astype(np.float32) for _ in range(batch)]
    waves = torch.from_numpy(np.stack(clips))
    labels = torch.from_numpy(rng.integers(n_species, size=batch))
    text_table = torch.nn.functional.normalize(torch.randn(n_species, 768), dim=-1)  # the cache
    loss_fn = build_loss("infonce", positives="multi")
    scale = LogitScale(0.07)
    opt = torch.optim.AdamW([*student.parameters(), *scale.parameters()], lr=1e-5)

    def hf_features() -> torch.Tensor:
        return torch.cat([fe(c, sampling_rate=SR, return_tensors="pt").input_features for c in clips])

    def teacher_text() -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.normalize(teacher.encode_text(tokenizer(prompts_for(labels.tolist()))), dim=-1)

    def step(features: torch.Tensor, text: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(student.embed_features(features), text, labels, scale())
        loss.backward()
        opt.step()

    def ours() -> None:
        step(student.features(waves, crop="start"), text_table[labels])

    def naive() -> None:
        step(hf_features(), teacher_text())

    ours(), naive()  # warm-up: allocator, lazy init, FFT plans
    t_ours, t_naive = [], []
    for _ in range(steps):
        for fn, acc in ((ours, t_ours), (naive, t_naive)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    ours_s, naive_s = statistics.median(t_ours), statistics.median(t_naive)

    feats = student.features(waves, crop="start").detach()

    def fwd_only() -> None:
        with torch.no_grad():
            student.embed_features(feats)

    comp = {
        "step_frontend_ours_s": _median_time(lambda: student.features(waves, crop="start"), 3),
        "step_frontend_hf_s": _median_time(hf_features, 3),
        "step_teacher_text_s": _median_time(teacher_text, 3),
        "step_student_forward_s": _median_time(fwd_only, 2),
        "step_student_fwd_bwd_opt_s": _median_time(lambda: step(feats, text_table[labels]), 2),
    }
    # Derived, not measured: the same ratio with a frozen encoder (head-only training),
    # where the student's backward pass disappears and the fixed costs weigh more.
    frozen_ours = comp["step_frontend_ours_s"] + comp["step_student_forward_s"]
    frozen_naive = comp["step_frontend_hf_s"] + comp["step_teacher_text_s"] + comp["step_student_forward_s"]
    result = {
        "step_batch": batch,
        "step_clip_s": 10.0,
        "step_steps": steps,
        "step_ours_s": ours_s,
        "step_naive_s": naive_s,
        "step_ours_samples_per_s": batch / ours_s,
        "step_naive_samples_per_s": batch / naive_s,
        "step_speedup": naive_s / ours_s,
        "step_ours_times_s": t_ours,
        "step_naive_times_s": t_naive,
        **comp,
        "step_speedup_frozen_encoder_derived": frozen_naive / frozen_ours,
        "step_student_params": sum(p.numel() for p in student.parameters()),
        "step_teacher_text_params": sum(p.numel() for p in teacher.parameters()),
    }
    print(f"step: ours {ours_s:.2f} s, naive {naive_s:.2f} s per batch of {batch} -> {result['step_speedup']:.2f}x; "
          + ", ".join(f"{k[5:]} {v:.3f}" for k, v in comp.items()))
    return result


if __name__ == "__main__":
    run()
