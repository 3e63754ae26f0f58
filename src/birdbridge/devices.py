"""Devices named on the command line or in a config, checked before anything is loaded.

``--device cuda`` on a machine without a GPU must be one line saying so, not a traceback
from deep inside torch after a model has been loaded; the same for Lightning's
``accelerator``. Both checks ask torch only (no device is initialised beyond that).

Importing torch takes seconds, so a verb first asks :func:`precheck_device` /
:func:`precheck_accelerator`, which answer without torch where the answer is certain: the
spelling, ``CUDA_VISIBLE_DEVICES`` hiding every GPU, a CPU-only torch build (read from
torch's ``version.py`` without importing it), a Linux machine with no NVIDIA driver
(``/proc/driver/nvidia`` and ``/dev/nvidia*`` absent: CUDA cannot work without them), MPS
off macOS. Anything they cannot rule out is left to :func:`resolve_device` /
:func:`check_accelerator`, which ask torch and stay the final authority.
"""

from __future__ import annotations

import os
import re

from .errors import DeviceNotAvailableError

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps or auto"


def _no_cuda_cheaply() -> str | None:
    """Why CUDA certainly is not usable here, found without importing torch; None when it may be."""
    import glob
    import importlib.util
    import sys

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    try:
        spec = importlib.util.find_spec("torch")  # finds the package, does not import it
    except (ImportError, ValueError):
        spec = None
    version_py = os.path.join(os.path.dirname(spec.origin), "version.py") if spec and spec.origin else ""
    if version_py and os.path.isfile(version_py):
        with open(version_py, encoding="utf-8") as f:
            if re.search(r"^cuda\s*(?::[^=]*)?=\s*None\s*$", f.read(), re.M):
                return "this torch is a CPU-only build"
    if sys.platform == "darwin":
        return "macOS has no CUDA"
    if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia") and not glob.glob("/dev/nvidia[0-9]*"):
        return "no NVIDIA GPU or driver on this machine (no /proc/driver/nvidia, no /dev/nvidia*)"
    return None


def precheck_device(device: str | None) -> None:
    """The part of :func:`resolve_device` that needs no torch: the name, and CUDA/MPS certainly absent."""
    import sys

    d = (device or "auto").strip().lower()
    if d in ("auto", "cpu"):
        return
    if re.fullmatch(r"(?:cuda|gpu)(?::\d+)?", d):
        why = _no_cuda_cheaply()
        if why:
            raise DeviceNotAvailableError(f"device {device!r} is not available: {why}; use cpu (or auto)")
        return
    if d == "mps":
        if sys.platform != "darwin":
            raise DeviceNotAvailableError(f"device {device!r} is not available: Apple Metal (MPS) exists on macOS only; "
                                          "use cpu (or auto)")
        return
    raise DeviceNotAvailableError(f"device {device!r} is not a device: use {DEVICE_CHOICES}")


def precheck_accelerator(accelerator: str | None) -> None:
    """The part of :func:`check_accelerator` that needs no torch."""
    acc = (accelerator or "auto").strip().lower()
    if acc in ("gpu", "cuda"):
        why = _no_cuda_cheaply()
        if why:
            raise DeviceNotAvailableError(f"accelerator {accelerator!r} is not available: {why}; "
                                          "use accelerator cpu (or auto)")
    elif acc not in ("cpu", "auto", "mps"):
        raise DeviceNotAvailableError(f"accelerator {accelerator!r} is not supported: use cpu, gpu, mps or auto")


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
