"""Where model weights come from, and the one error message for when they cannot.

Weights may come from the Hugging Face hub (``org/name`` or ``hf-hub:org/name``), a
local directory (``local-dir:/path`` or a plain path) or the HF cache. Offline, an
uncached hub id must fail at once with a message that says what was looked for,
where, and the two ways out.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelNotAvailableError

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "0") in ("1", "true", "True")


def split_model_id(model_id: str) -> tuple[str, str]:
    """Return ``(kind, ref)`` with kind in ``hub``, ``local``, ``builtin``."""
    if model_id.startswith(LOCAL_DIR_PREFIX):
        return "local", model_id[len(LOCAL_DIR_PREFIX):]
    if model_id.startswith(HF_HUB_PREFIX):
        return "hub", model_id[len(HF_HUB_PREFIX):]
    if Path(model_id).expanduser().exists():
        return "local", str(Path(model_id).expanduser())
    if model_id.startswith(("/", "./", "../", "~")) or model_id.count("/") > 1:
        # A path that does not exist (a hub id is exactly "org/name"): let the local
        # loader say "no such directory" instead of suggesting `hf download out/run/model`.
        return "local", str(Path(model_id).expanduser())
    if "/" in model_id:
        return "hub", model_id
    return "builtin", model_id


def is_cached(repo_id: str, filename: str) -> bool:
    """True when ``filename`` of ``repo_id`` is in the local HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, filename)
        return isinstance(path, str) and Path(path).exists()
    except Exception:  # noqa: BLE001 - a malformed id is simply "not cached"
        return False


def not_available(model_id: str, repo_id: str | None = None, cause: BaseException | None = None) -> ModelNotAvailableError:
    repo = repo_id or model_id
    why = "network access is disabled (HF_HUB_OFFLINE)" if is_offline() else "it could not be downloaded"
    msg = (
        f"model {model_id!r} is not available: its weights are not in the Hugging Face cache "
        f"({hf_cache_dir()}) and {why}. Ways out: (1) on a machine with network, download it "
        f"(`hf download {repo}`, then copy the cache or set HF_HOME), or (2) pass a local "
        f"directory holding the model instead of the hub id."
    )
    if cause is not None:
        msg += f" [cause: {type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}]"
    return ModelNotAvailableError(msg)
