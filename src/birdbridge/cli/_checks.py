"""A verb's inputs checked up front, before torch, transformers, Lightning, open_clip or FAISS load.

Importing those takes seconds (6-7 s on a busy 2-core machine); a typo must be answered in
about the time ``--help`` takes. So every verb first runs its :class:`Preflight`: config
files parsed with their strict keys, every path argument, the device (without torch where
the answer is certain, :func:`birdbridge.devices.precheck_device`) and option values. Every
wrong input is collected and reported at once, as one line (``error: 3 inputs are wrong:
(1) ... (2) ... (3) ...``); one wrong input keeps its own message. Nothing here imports a heavy
library; the verb's real loaders stay the final authority (a model folder that exists may
still not hold a model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..errors import BirdbridgeError, ConfigError


class Preflight:
    """Collects what is wrong with a verb's inputs; :meth:`done` raises once for all of it."""

    def __init__(self) -> None:
        self.problems: list[BirdbridgeError] = []

    def attempt(self, check: Callable, *args, **kwargs):
        """``check(*args, **kwargs)``; its :class:`BirdbridgeError` is kept (and None returned) instead of raised."""
        try:
            return check(*args, **kwargs)
        except BirdbridgeError as err:
            self.problems.append(err)
            return None

    def device(self, device: str | None) -> None:
        from ..devices import precheck_device

        self.attempt(precheck_device, device)

    def accelerator(self, accelerator: str | None) -> None:
        from ..devices import precheck_accelerator

        self.attempt(precheck_accelerator, accelerator)

    def model(self, model_id: str | None, what: str = "model") -> None:
        """A model id that names a local folder must name one that exists (hub ids and built-ins: the loader's)."""
        if model_id:
            self.attempt(check_model, model_id, what)

    def index(self, path: str | Path | None) -> None:
        if path is not None:
            from ..retrieval.index_format import check_index_dir

            self.attempt(check_index_dir, path)

    def file(self, path: str | Path | None, what: str) -> None:
        """``path`` (when given) must be an existing file."""
        if path is not None and not Path(path).is_file():
            self.problems.append(ConfigError(f"{what} {path}: " + ("a folder, not a file" if Path(path).is_dir()
                                                                   else "no such file")))

    def exists(self, path: str | Path | None, what: str) -> None:
        """``path`` (when given) must exist, as a file or a folder."""
        if path is not None and not Path(path).exists():
            self.problems.append(ConfigError(f"{what} {path}: no such file or folder"))

    def choice(self, value: str, allowed: Sequence[str], option: str) -> None:
        if value not in allowed:
            self.problems.append(ConfigError(f"{option} must be one of {', '.join(allowed)}, not {value!r}"))

    def engine(self, engine: str) -> None:
        """``--engine`` local or ray; ray needs the ray extra (looked up, not imported: that is seconds)."""
        import importlib.util

        from ..retrieval.ray_engine import ENGINES, RAY_MISSING

        self.choice(engine, ENGINES, "--engine")
        if engine != "ray":
            return
        try:
            found = importlib.util.find_spec("ray") is not None
        except (ImportError, ValueError):  # a finder that refuses it, a half-removed install
            found = False
        if not found:  # (a ray that is found but fails to import: the verb's real import says so, as one line too)
            self.problems.append(ConfigError(RAY_MISSING))

    def inputs(self, args: Sequence[str], kind: str) -> tuple[list[str], list[dict]]:
        """Media arguments (files, folders, @lists, CSVs) expanded; every wrong one collected."""
        from ..retrieval.embed import expand_labelled_inputs

        return expand_labelled_inputs(args, kind, self.problems)

    def done(self) -> None:
        """Raise one error naming everything wrong (the error itself when there is one)."""
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems:
            raise ConfigError(f"{len(self.problems)} inputs are wrong: "
                              + " ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1)))


def check_model(model_id: str, what: str = "model") -> None:
    """"no such model folder" (with close matches) for an id that is a missing local path. A hub id
    (:func:`birdbridge.encoders.hub.parse` is the one rule) with nothing of it in the HF cache:
    offline, "not available"; online, the hub is asked now (one short request, as the loader would),
    so ``runs/modle`` -- a path mistyped where no ``runs/`` folder is here, shaped like ``org/name`` --
    is reported up front with the other wrong inputs, as a missing folder and a missing hub model."""
    from ..encoders import hub

    ref = hub.parse(model_id)
    if ref.kind == "local" and not Path(ref.ref).exists():
        raise hub.missing_folder(ref.given, Path(ref.ref), what)
    # the cache's own folder layout (huggingface_hub: models--ORG--NAME); no file of it is opened
    if ref.kind != "hub" or (Path(hub.hf_cache_dir()) / ("models--" + ref.ref.replace("/", "--"))).is_dir():
        return
    if hub.is_offline():
        raise hub.not_found(ref.given, ref.ref, what=what)
    unreachable = hub.hub_unreachable()
    lacking = None if unreachable else hub.hub_lacks(ref.ref)
    if unreachable or lacking:
        raise hub.not_found(ref.given, ref.ref, unreachable=unreachable, lacking=lacking, what=what)
