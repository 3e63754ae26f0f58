"""The model ids birdbridge knows by name (a leaf module: tables only, no imports).

:mod:`.registry` turns them into the ``birdbridge models`` table; :mod:`.hub` offers the
closest of them when a typed id names nothing.
"""

from __future__ import annotations

BIRDNET_ID = "birdnet"
# the defaults, here so a config can name them without importing the encoders (torch, open_clip)
DEFAULT_STUDENT = "davidrrobinson/BioLingual"
DEFAULT_TEACHER = "hf-hub:imageomics/bioclip-2"
BUILTIN_IDS = (BIRDNET_ID,)

KNOWN_STUDENTS = {
    "davidrrobinson/BioLingual": "BioLingual: CLAP (HTSAT-tiny audio, RoBERTa text, 512-d), bioacoustic captions",
    "laion/clap-htsat-unfused": "LAION CLAP, HTSAT-tiny, unfused (general audio)",
    "laion/clap-htsat-fused": "LAION CLAP, HTSAT-tiny, fused (refused: needs 4-channel fusion features)",
}
KNOWN_TEACHERS = {
    "hf-hub:imageomics/bioclip-2": "BioCLIP-2 (ViT-L/14, 768-d), trained on TreeOfLife-200M",
    "hf-hub:imageomics/bioclip": "BioCLIP (ViT-B/16, 512-d), trained on TreeOfLife-10M",
}


def known_ids() -> list[str]:
    """Every id a user may type for a known model (teachers with and without ``hf-hub:``)."""
    teachers = [t for tid in KNOWN_TEACHERS for t in (tid, tid.split(":", 1)[1])]
    return [*KNOWN_STUDENTS, *BUILTIN_IDS, *teachers]
