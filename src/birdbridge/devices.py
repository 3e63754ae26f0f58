"""Devices named on the command line or in a config, checked before anything is loaded.

``--device cuda`` on a machine without a GPU must be one line saying so, not a traceback
from deep inside torch after a model has been loaded; the same for Lightning's
``accelerator``. Both checks ask torch only (no device is initialised beyond that).
"""

from __future__ import annotations

import os
import re

from .errors import DeviceNotAvailableError

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps or auto"


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _no_cuda_why() -> str:
    import torch

    if torch.version.cuda is None:
        return "this torch is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return f"torch sees no CUDA GPU (CUDA_VISIBLE_DEVICES={visible!r})"
    return "torch sees no CUDA GPU (no GPU or driver on this machine)"


def _mps_ok() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` or ``cpu``; ``cpu``/``cuda``/``cuda:N``/``mps`` checked to exist here."""
    d = (device or "auto").strip().lower()
    if d == "auto":
        return "cuda" if _cuda_count() else "cpu"
    if d == "cpu":
        return d
    m = re.fullmatch(r"(?:cuda|gpu)(?::(\d+))?", d)
    if m:
        n = _cuda_count()
        if n == 0:
            raise DeviceNotAvailableError(f"device {device!r} is not available: {_no_cuda_why()}; use cpu (or auto)")
        if m.group(1) is not None and int(m.group(1)) >= n:
            raise DeviceNotAvailableError(f"device {device!r} is not available: torch sees {n} CUDA GPU(s), "
                                          f"cuda:0 to cuda:{n - 1}")
        return "cuda" + (f":{m.group(1)}" if m.group(1) is not None else "")
    if d == "mps":
        if not _mps_ok():
            raise DeviceNotAvailableError(f"device {device!r} is not available: torch has no Apple Metal (MPS) "
                                          "backend here; use cpu (or auto)")
        return d
    raise DeviceNotAvailableError(f"device {device!r} is not a device: use {DEVICE_CHOICES}")


def check_accelerator(accelerator: str | None, devices: int | str | list | None = None) -> None:
    """Lightning's ``accelerator`` (+ ``devices``) must exist here: ``gpu``/``cuda`` needs CUDA GPUs
    (as many as an integer ``devices`` asks for), ``mps`` Apple's Metal; ``cpu`` and ``auto`` always do."""
    acc = (accelerator or "auto").strip().lower()
    if acc in ("cpu", "auto"):
        return
    if acc in ("gpu", "cuda"):
        n = _cuda_count()
        if n == 0:
            raise DeviceNotAvailableError(f"accelerator {accelerator!r} is not available: {_no_cuda_why()}; "
                                          "use accelerator cpu (or auto)")
        if isinstance(devices, int) and devices > n:
            raise DeviceNotAvailableError(f"accelerator {accelerator!r} with devices={devices}: torch sees only {n} CUDA GPU(s)")
        return
    if acc == "mps":
        if not _mps_ok():
            raise DeviceNotAvailableError("accelerator 'mps' is not available: torch has no Apple Metal (MPS) "
                                          "backend here; use accelerator cpu (or auto)")
        return
    raise DeviceNotAvailableError(f"accelerator {accelerator!r} is not supported: use cpu, gpu, mps or auto")
