"""What a teacher *is*: a fingerprint of its weights and config, plus a normalised id.

A distilled model and an image index each record the teacher whose space they live in.
They must agree wherever they are opened from and after their folder is moved, so the
record is what the teacher is, not where it was: a fingerprint of the config and the
weight file open_clip loads (content only: no path, no mtime), and beside it the
normalised id (``local-dir:/abs/path`` or ``hf-hub:org/name``) for people to read, and
for a local teacher its path relative to the artefact (found again after the whole
folder moved). Two records name the same teacher when their fingerprints are equal;
records without one (hub teachers never cached where they were used, older files) fall
back to the normalised ids.

Weight files over :data:`WHOLE_BELOW` bytes are fingerprinted from their size, their
first and last MiB (a safetensors header lists every tensor's name, shape and offset)
and 16 evenly spaced 64 KiB blocks: a 1.7 GB BioCLIP-2 costs a few ms instead of
seconds, and two trainings cannot share all those bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import hub

SCHEME = "w1"  # prefix of fingerprints made here; older unprefixed ones hashed the path too
WHOLE_BELOW = 32 * 2**20
_EDGE, _BLOCK, _N_BLOCKS = 2**20, 64 * 2**10, 16
_CONFIGS = ("open_clip_config.json", "config.json")
# open_clip's own order for picking the checkpoint of a local-dir (factory._find_checkpoint_in_dir)
_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
            "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


@dataclass(frozen=True)
class TeacherRecord:
    """A teacher as recorded by an artefact: ``id`` (normalised), ``fingerprint`` (or None)."""

    id: str
    fingerprint: str | None = None
    path: Path | None = None  # where its folder is now, when it is local and found

    def to_meta(self, anchor: str | Path | None = None) -> dict:
        """The fields an artefact stores; ``anchor`` is the artefact's folder (for the relative path)."""
        meta = {"teacher_id": self.id, "teacher_fingerprint": self.fingerprint}
        if self.path is not None and anchor is not None:
            meta["teacher_relpath"] = os.path.relpath(self.path, Path(anchor).resolve())
        return meta


def weights_fingerprint(folder: str | Path) -> str | None:
    """``w1:<hex>`` from the folder's config and the weight file open_clip would load; None without weights."""
    folder = Path(folder)
    weights = next((folder / n for n in _WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        found = sorted(f for pat in ("*.safetensors", "*.bin", "*.pth") for f in folder.glob(pat))
        weights = found[0] if found else None
    if weights is None:
        return None
    h = hashlib.sha256()
    config = next((folder / n for n in _CONFIGS if (folder / n).is_file()), None)
    if config is not None:
        try:  # the config's meaning, not its whitespace
            h.update(json.dumps(json.loads(config.read_text()), sort_keys=True).encode())
        except (OSError, ValueError):
            h.update(config.read_bytes())
    _hash_weights(h, weights)
    return f"{SCHEME}:{h.hexdigest()[:24]}"


def _hash_weights(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{size}\x00".encode())
    with open(path, "rb") as fh:
        if size <= WHOLE_BELOW:
            h.update(fh.read())
            return
        offsets = [0, *(_EDGE + i * (size - 2 * _EDGE) // _N_BLOCKS for i in range(_N_BLOCKS)), size - _EDGE]
        for off in offsets:
            fh.seek(off)
            h.update(fh.read(_EDGE if off in (0, size - _EDGE) else _BLOCK))


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "open_clip_config.json")
    except Exception:  # noqa: BLE001 - not cached, or a malformed id
        return None
    return Path(found).parent if isinstance(found, str) else None


def identify(model_id: str) -> TeacherRecord:
    """The record of the teacher ``model_id`` names now (no network; a hub id is fingerprinted from the cache)."""
    m = hub.parse(model_id)
    kind, ref, norm = m.kind, m.ref, m.normalised
    if kind == "local":
        folder = Path(ref)
        return TeacherRecord(norm, weights_fingerprint(folder) if folder.is_dir() else None,
                             folder if folder.is_dir() else None)
    if kind == "hub":
        snap = _cached_snapshot(ref)
        return TeacherRecord(norm, weights_fingerprint(snap) if snap is not None else None)
    return TeacherRecord(norm)


def recorded(meta: dict, anchor: str | Path | None = None) -> TeacherRecord | None:
    """The teacher an artefact's stored fields name (None when it names none).

    A fingerprint of this scheme is taken as stored. Otherwise (an older artefact, whose
    relative id was taken against the directory it was made in) the teacher's folder is
    looked for where it was, beside the artefact, then under each folder above it, and
    fingerprinted if found.
    """
    tid, fp = meta.get("teacher_id"), meta.get("teacher_fingerprint")
    if not tid:
        return None
    folder = locate(meta, anchor)
    if not (isinstance(fp, str) and fp.startswith(SCHEME + ":")):
        fp = weights_fingerprint(folder) if folder is not None else None
    norm = hub.LOCAL_DIR_PREFIX + str(folder) if folder is not None else hub.normalise_model_id(tid)
    return TeacherRecord(norm, fp, folder)


def locate(meta: dict, anchor: str | Path | None = None) -> Path | None:
    """The local teacher folder an artefact names, wherever it is now; None for hub ids or when gone."""
    tid = str(meta.get("teacher_id") or "")
    if not tid or tid.startswith(hub.HF_HUB_PREFIX) or hub.split_model_id(tid)[0] == "builtin":
        return None
    raw = Path(tid.removeprefix(hub.LOCAL_DIR_PREFIX)).expanduser()
    candidates = [raw]
    if anchor is not None:
        anchor = Path(anchor).resolve()
        if meta.get("teacher_relpath"):
            candidates.insert(0, anchor / meta["teacher_relpath"])
        if not raw.is_absolute():  # older artefacts stored the id as typed, relative to where they were made
            candidates += [a / raw for a in (anchor, *anchor.parents)]
    found = list(dict.fromkeys(c.resolve() for c in candidates if c.is_dir()))
    fp = meta.get("teacher_fingerprint")
    if len(found) > 1 and isinstance(fp, str) and fp.startswith(SCHEME + ":"):
        # a path may now hold other weights; prefer the folder that still matches
        for c in found:
            if weights_fingerprint(c) == fp:
                return c
    return found[0] if found else None


def same_teacher(a: TeacherRecord | None, b: TeacherRecord | None) -> bool:
    """Fingerprints decide when both have one; else the normalised ids."""
    if a is None or b is None:
        return a is b
    if a.fingerprint and b.fingerprint:
        return a.fingerprint == b.fingerprint
    return a.id == b.id
