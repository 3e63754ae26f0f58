"""The one resolver for model ids, and the one error message for weights that cannot be had.

A model id is, in this order: ``local-dir:PATH`` or ``hf-hub:ORG/NAME`` (explicit); a path
that exists; a built-in name (``birdnet``); ``ORG/NAME`` (a Hugging Face hub id, unless
``ORG`` is a folder here, which makes it a path); anything else is a path. Local paths are
resolved first and made absolute, so an id names the same folder from any directory.

A path that does not exist fails at once with "no such model folder" and the closest
names (sibling folders, known ids: ``birdnett`` -> ``birdnet``); it is never sent to the
hub. A hub id that is not in the local cache needs the hub: offline (``HF_HUB_OFFLINE``)
or when a quick reachability check fails, it fails at once instead of spending ~30 s in
``huggingface_hub``'s retry loop, and says which way out there is.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotAvailableError
from .ids import BUILTIN_IDS, known_ids

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
# "org/name" as the hub spells repo ids; anything with more slashes is a path
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
REACH_TIMEOUT_S = 3.0
_MAX_LISTED = 5000  # entries of one folder read for "did you mean" (a photo folder can hold 100k)


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "0") in ("1", "true", "True")


def _local(path: str) -> str:
    return str(Path(path).expanduser().resolve())


@dataclass(frozen=True)
class ModelRef:
    """A model id parsed once: ``kind`` in ``local`` (``ref``: an absolute path), ``hub``
    (``org/name``), ``builtin``; ``given`` is what the user wrote (for messages). Loaders take a
    ``ModelRef`` or a string and call :func:`parse`, which hands a ``ModelRef`` back unchanged, so
    an id is read once at the entry point and never re-split (with new file-system checks) below it.
    """

    given: str
    kind: str
    ref: str

    def __str__(self) -> str:
        return self.given

    @property
    def normalised(self) -> str:
        """``local-dir:/abs/path``, ``hf-hub:org/name`` or the built-in name."""
        return {"local": LOCAL_DIR_PREFIX, "hub": HF_HUB_PREFIX}.get(self.kind, "") + self.ref


def parse(model_id: "str | Path | ModelRef") -> ModelRef:
    """The :class:`ModelRef` of ``model_id``. Syntax and the file system only: no network, and no
    error for a path that is missing."""
    if isinstance(model_id, ModelRef):
        return model_id
    s = str(model_id)
    if s.startswith(LOCAL_DIR_PREFIX):
        return ModelRef(s, "local", _local(s[len(LOCAL_DIR_PREFIX):]))
    if s.startswith(HF_HUB_PREFIX):
        return ModelRef(s, "hub", s[len(HF_HUB_PREFIX):])
    if Path(s).expanduser().exists():
        return ModelRef(s, "local", _local(s))
    if s.lower() in BUILTIN_IDS:
        return ModelRef(s, "builtin", s.lower())
    if _REPO_ID.match(s) and not Path(s.split("/", 1)[0]).is_dir():
        return ModelRef(s, "hub", s)
    return ModelRef(s, "local", _local(s))


def split_model_id(model_id: "str | ModelRef") -> tuple[str, str]:
    """``(kind, ref)`` of :func:`parse`."""
    m = parse(model_id)
    return m.kind, m.ref


def normalise_model_id(model_id: "str | ModelRef | None") -> str:
    """``local-dir:/abs/path``, ``hf-hub:org/name`` or a built-in name; ``""`` for none."""
    return parse(model_id).normalised if model_id else ""


def anchored(model_id: str, base: str | Path) -> str:
    """``model_id`` with a relative path read from ``base`` (a config file's folder) when it names
    a folder there, as ``local-dir:/abs/path``; anything else unchanged."""
    s = str(model_id)
    raw = s.removeprefix(LOCAL_DIR_PREFIX)
    if s.startswith(HF_HUB_PREFIX) or Path(raw).expanduser().is_absolute() or raw.startswith("~"):
        return s
    there = Path(base) / raw
    return LOCAL_DIR_PREFIX + str(there.resolve()) if there.is_dir() else s


def local_folder(model_id: "str | ModelRef", what: str = "model", *, required: tuple[str, ...] = ()) -> Path:
    """The folder a local id names; "no such model folder" (with close matches) when it is missing."""
    m = parse(model_id)
    if m.kind != "local":
        raise ValueError(f"{m.given!r} is not a local model id")
    path = Path(m.ref)
    if not path.is_dir():
        raise missing_folder(m.given, path, what)
    for name in required:
        if not (path / name).is_file():
            raise ModelNotAvailableError(f"{what} {m.given!r}: no {name} in folder {path}")
    return path


def missing_folder(model_id: str, path: Path, what: str = "model") -> ModelNotAvailableError:
    given = str(model_id).removeprefix(LOCAL_DIR_PREFIX)
    msg = f"no such {what} folder: {given}" + (f" ({path})" if given != str(path) else "")
    hints = close_matches(given, path)
    if hints:
        msg += f"; did you mean {' or '.join(hints)}?"
    elif _REPO_ID.match(given):  # ORG/NAME taken for a path because a folder ORG is here
        msg += f" (for the Hugging Face hub id, write hf-hub:{given})"
    return ModelNotAvailableError(msg)


def close_matches(given: str, path: Path, n: int = 3) -> list[str]:
    """Known ids and existing folders close to a mistyped id, written the way the user wrote it."""
    out = difflib.get_close_matches(given, known_ids(), n=n, cutoff=0.75)
    for found in _near_paths(path):
        shown = str(found) if Path(given).expanduser().is_absolute() else os.path.relpath(found)
        if shown not in out:
            out.append(shown)
    return out[:n]


def _near_paths(path: Path) -> list[Path]:
    """Existing folders one typo away per missing path component, nearest existing ancestor first."""
    anc, missing = path, []
    while not anc.exists() and anc != anc.parent:
        missing.insert(0, anc.name)
        anc = anc.parent
    found = [anc]
    for name in missing:
        step = []
        for folder in found:
            try:
                subs = [e.name for _, e in zip(range(_MAX_LISTED), os.scandir(folder)) if e.is_dir() and e.name[0] != "."]
            except OSError:
                continue
            step += [folder / m for m in difflib.get_close_matches(name, subs, n=3, cutoff=0.6)]
        found = step[:6]
    return [f for f in found if f.is_dir()][:3] if missing else []


# --------------------------------------------------------------------------- the hub


def is_cached(repo_id: str, filename: str) -> bool:
    """True when ``filename`` of ``repo_id`` is in the local HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, filename)
        return isinstance(path, str) and Path(path).exists()
    except Exception:  # noqa: BLE001 - a malformed id is simply "not cached"
        return False


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> str | None:
    """Why the hub cannot be reached (one short try, through the user's proxies), or None."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=REACH_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - DNS, refused, timeout, TLS: all mean "cannot reach it"
        text = str(err).splitlines()[0][:120] if str(err) else ""
        return f"{type(err).__name__}{': ' + text if text else ''}"
    return None


def hub_lacks(repo_id: str) -> str | None:
    """``"the hub has no model ORG/NAME"`` when the (reachable) hub says it has no such repo, else None
    (found, or any other answer: the loader then has the last word)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=REACH_TIMEOUT_S)
    except GatedRepoError:  # there, behind an access request: the loader says what to do
        return None
    except RepositoryNotFoundError:
        return f"the hub has no model {repo_id} (or it is private and no token is set here)"
    except Exception:  # noqa: BLE001 - a slow or odd answer is not "missing"
        return None
    return None


def not_found(model_id: str, repo_id: str, *, unreachable: str | None = None, lacking: str | None = None,
              what: str = "model") -> ModelNotAvailableError:
    """An id that is neither a folder here nor a hub model to be had (offline, the hub ``unreachable``,
    or ``lacking`` it): an id written without ``hf-hub:`` may be a mistyped path, so both are said."""
    explicit = str(model_id).startswith(HF_HUB_PREFIX)
    if lacking:
        msg = f"{what} {model_id!r} is not available: {lacking}"
    else:
        msg = str(not_available(model_id, repo_id, unreachable=unreachable))
    if explicit:
        return ModelNotAvailableError(msg)
    msg = f"no such {what} folder: {model_id}, and as a Hugging Face hub id: {msg}"
    hints = [h for h in close_matches(model_id, Path(_local(model_id))) if h != model_id and h not in msg]
    if hints:
        msg += f" Did you mean {' or '.join(hints)}?"
    return ModelNotAvailableError(msg)


def _go_offline() -> None:
    # The cache is all there is: no library may spend its retry loop on the network.
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"


def prepare_hub(model_id: str, repo_id: str, probe: str) -> None:
    """Call before loading ``repo_id`` from the hub; ``probe`` is a file every copy of it has.

    Cached: fine (offline or not). Not cached: offline, or the hub does not answer within
    :data:`REACH_TIMEOUT_S`, raises :func:`not_available` at once.
    """
    cached = is_cached(repo_id, probe)
    if is_offline():
        if not cached:
            raise not_available(model_id, repo_id)
        return
    why = hub_unreachable()
    if why is None:
        return
    _go_offline()
    if not cached:
        raise not_available(model_id, repo_id, unreachable=why)


def not_available(model_id: str, repo_id: str | None = None, cause: BaseException | None = None,
                  unreachable: str | None = None) -> ModelNotAvailableError:
    from huggingface_hub import constants

    repo = repo_id or model_id
    if unreachable:
        why = f"the hub ({constants.ENDPOINT}) cannot be reached from here ({unreachable})"
    elif is_offline():
        why = "network access is disabled (HF_HUB_OFFLINE)"
    else:
        why = "it could not be downloaded"
    msg = (
        f"model {model_id!r} is not available: its weights are not in the Hugging Face cache "
        f"({hf_cache_dir()}) and {why}. Ways out: (1) on a machine with network, download it "
        f"(`hf download {repo}`, then copy the cache or set HF_HOME), or (2) pass a local "
        f"directory holding the model instead of the hub id."
    )
    near = [m for m in difflib.get_close_matches(model_id, known_ids(), n=2, cutoff=0.75) if m != model_id]
    if near:
        msg += f" Did you mean {' or '.join(near)}?"
    if cause is not None:
        msg += f" [cause: {type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}]"
    return ModelNotAvailableError(msg)
