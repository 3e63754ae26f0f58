"""Parameter counts and inference throughput of the real-size models (random weights).

* student: ``ClapModel(ClapConfig())`` = BioLingual's shape (HTSAT-tiny audio tower +
  512-d projection; RoBERTa-base text tower, unused by birdbridge) + a linear head to 768;
* teacher: open_clip ``ViT-L-14`` with ``pretrained=None`` = BioCLIP-2's shape (768-d).

Throughput is measured under ``torch.no_grad()`` at small batches (what a 2-core CPU
allows in a few seconds): audio clips/s (10 s at 48 kHz, front end included), teacher
text prompts/s and teacher images/s (224 x 224).
"""

from __future__ import annotations

import time

import numpy as np
import torch


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _rate(fn, n_items: int, repeats: int = 2) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_items * repeats / (time.perf_counter() - t0)


def run(audio_batch: int = 4, text_batch: int = 16, image_batch: int = 2) -> dict:
    import open_clip
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel
    from transformers.utils import logging as hf_logging

    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    clap = ClapModel(ClapConfig())
    counts = {
        "params_clap_audio_tower": _count(clap.audio_model),
        "params_clap_audio_projection": _count(clap.audio_projection),
        "params_clap_text_tower": _count(clap.text_model) + _count(clap.text_projection),
    }
    student = AudioStudent.from_clap(clap, ClapFeatureExtractor(truncation="rand_trunc"), HeadSpec(out_dim=768)).eval()
    del clap
    counts["params_head_linear"] = _count(student.head)
    counts["params_student_trainable"] = _count(student)
    teacher = open_clip.create_model("ViT-L-14", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-L-14")
    counts["params_teacher_image_tower"] = _count(teacher.visual)
    counts["params_teacher_total"] = _count(teacher)
    counts["params_teacher_text_tower"] = counts["params_teacher_total"] - counts["params_teacher_image_tower"]

    waves = torch.from_numpy((0.1 * np.random.default_rng(0).standard_normal((audio_batch, 480_000))).astype(np.float32))
    texts = tokenizer([f"a photo of Aves species {i}." for i in range(text_batch)])
    images = torch.randn(image_batch, 3, 224, 224)
    with torch.no_grad():
        rates = {
            "audio_clips_per_s": _rate(lambda: student(waves), audio_batch),
            "text_prompts_per_s": _rate(lambda: teacher.encode_text(texts), text_batch),
            "images_per_s": _rate(lambda: teacher.encode_image(images), image_batch),
        }
    result = {**counts, **rates, "models_audio_batch": audio_batch, "models_text_batch": text_batch,
              "models_image_batch": image_batch}
    print("models: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v:,}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    run()
