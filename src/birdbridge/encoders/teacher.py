"""The frozen image-text teacher (BioCLIP-2 by default), loaded through open_clip.

The teacher defines the space audio is distilled into: its text tower embeds species
prompts (once, into the text-embedding cache) and its image tower embeds the photo
gallery. It is never trained, so it is loaded in eval mode with gradients off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadInputError, ModelNotAvailableError
from . import hub
from .ids import DEFAULT_TEACHER, KNOWN_TEACHERS  # noqa: F401 - re-exported: the known teachers, the default
from .text import TEXT_BATCH, encode_in_batches

# BioCLIP's authors (pybioclip's TreeOfLife classifier) resize photos to 224x224
# without cropping, so a bird near the frame edge is not cut away; open_clip's default
# (resize shortest side + centre crop) is right for models trained that way.
SQUASH_RESIZE_MODELS = ("imageomics/bioclip", "imageomics/bioclip-2")


def _resize_mode_for(model_id: "str | hub.ModelRef") -> str | None:
    m = hub.parse(model_id)
    if m.kind == "hub" and m.ref in SQUASH_RESIZE_MODELS:
        return "squash"
    if m.kind == "local":
        cfg = Path(m.ref) / "open_clip_config.json"
        if cfg.exists():
            pre = json.loads(cfg.read_text()).get("preprocess_cfg", {})
            return pre.get("resize_mode")
    return None


class Teacher:
    """A frozen open_clip model: ``encode_text`` and ``encode_images`` return unit rows."""

    space = "teacher"

    def __init__(self, model, preprocess, tokenizer, model_id: str, device: str | torch.device = "cpu"):
        self.model = model.eval().requires_grad_(False).to(device)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = torch.device(device)
        self.text_calls = 0  # counted so tests can prove the cache skips the text tower

    @classmethod
    def load(cls, model_id: "str | hub.ModelRef" = DEFAULT_TEACHER, device: str = "cpu") -> "Teacher":
        import open_clip

        m = hub.parse(model_id)  # read once: open_clip gets the explicit local-dir:/hf-hub: form
        kind, ref, model_id = m.kind, m.ref, m.normalised
        if kind == "builtin":
            raise ModelNotAvailableError(f"{m.given!r} is not an open_clip teacher")
        if kind == "local":
            ref = str(hub.local_folder(m, "teacher"))
            if not (Path(ref) / "open_clip_config.json").exists():
                raise ModelNotAvailableError(
                    f"teacher {model_id!r}: no open_clip_config.json in {ref} (an open_clip local-dir "
                    f"needs open_clip_config.json and open_clip_model.safetensors)"
                )
            # open_clip only logs a warning for a local-dir without weights; say so plainly.
            if not any(next(Path(ref).glob(pat), None) for pat in ("*.safetensors", "*.bin", "*.pth")):
                raise ModelNotAvailableError(
                    f"teacher {model_id!r}: {ref} has open_clip_config.json but no weights "
                    f"(open_clip_model.safetensors); refusing to use random weights"
                )
        elif kind == "hub":
            hub.prepare_hub(model_id, ref, "open_clip_config.json")
        try:
            # require_pretrained: open_clip otherwise only *warns* when a download fails
            # and hands back random weights, which would silently poison every number.
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_id, require_pretrained=True, image_resize_mode=_resize_mode_for(m)
            )
            tokenizer = open_clip.get_tokenizer(model_id)
        except (OSError, RuntimeError, ValueError) as err:
            if kind == "local":
                raise ModelNotAvailableError(f"teacher {model_id!r} could not be loaded: {err}") from err
            raise hub.not_available(model_id, ref if kind == "hub" else None, err) from err
        return cls(model, preprocess, tokenizer, model_id, device)

    @property
    def dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if proj is not None:
            return proj.shape[1] if isinstance(proj, torch.Tensor) else proj.out_features
        return int(self.model.visual.output_dim)

    def identity(self):
        """What this teacher is (:mod:`.identity`): its weights' fingerprint and normalised id."""
        from .identity import identify

        return identify(self.model_id)

    def encode_text(self, texts: Sequence[str], batch_size: int = TEXT_BATCH, *, progress: bool = False) -> torch.Tensor:
        """Unit rows in the teacher's space, ``batch_size`` texts per forward pass (a text encoder, :mod:`.text`)."""
        self.text_calls += 1

        @torch.no_grad()
        def forward(chunk: list[str]) -> np.ndarray:
            tokens = self.tokenizer(chunk).to(self.device)
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu().numpy()

        return encode_in_batches(forward, texts, batch_size=batch_size, progress=progress, space=self.space)

    @torch.no_grad()
    def encode_image_tensors(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixels.to(self.device)).float(), dim=-1).cpu()

    def encode_images(self, images: Iterable, batch_size: int = 64) -> torch.Tensor:
        """Embed PIL images (already decoded, RGB) with the teacher's own preprocessing."""
        batch, out = [], []
        for img in images:
            batch.append(self.preprocess(img))
            if len(batch) == batch_size:
                out.append(self.encode_image_tensors(torch.stack(batch)))
                batch = []
        if batch:
            out.append(self.encode_image_tensors(torch.stack(batch)))
        if not out:
            raise BadInputError("no_images", detail="nothing to embed")
        return torch.cat(out)


def load_teacher(model_id: str = DEFAULT_TEACHER, device: str = "cpu") -> Teacher:
    return Teacher.load(model_id, device)

