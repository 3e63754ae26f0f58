"""Synthetic soundscapes: long recordings of the synthetic world, annotated like Cornell's.

Songs of the chosen species are rendered fresh (new random draws, so never a training
clip), laid end to end with stretches of pure background noise between them, and some
overlap a second song. The files are written with the Cornell/Zenodo ``annotations.csv``
(``Filename,Start Time (s),End Time (s),Low Freq (Hz),High Freq (Hz),Species eBird Code``)
and a ``taxonomy.csv`` (eBird-style codes = the world's species ids), so they load through
:func:`birdbridge.data.soundscapes.load_soundscape_annotations` exactly as real sets do.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Sequence

import numpy as np

from ..io import atomic_write_text
from .synthetic import SyntheticWorld

ANNOTATION_HEADER = ["Filename", "Start Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)", "Species eBird Code"]
TAXONOMY_HEADER = ["species_code", "scientific_name", "common_name", "order", "family", "genus", "specific_epithet"]


@dataclass(frozen=True)
class SoundscapeSpec:
    n_files: int = 4
    duration_s: float = 30.0
    song_s: tuple[float, float] = (1.0, 2.5)  # song length range
    gap_s: tuple[float, float] = (0.5, 3.0)  # pure-noise stretch between songs
    overlap_prob: float = 0.2  # chance that a second species sings over a song
    noise_rms: float = 0.01


def _band(world: SyntheticWorld, sid: str) -> tuple[float, float]:
    t = world.songs[sid]
    lo = t.f0 * 0.97 * (1 - 0.06)
    hi = t.f0 * 1.03 * (1 + 0.06) * (2 if t.harmonic > 0 else 1)
    return round(lo, 1), round(min(hi, world.sample_rate / 2), 1)


def write_synthetic_soundscapes(world: SyntheticWorld, species_ids: Sequence[str], out_dir: str | Path,
                                spec: SoundscapeSpec = SoundscapeSpec(), seed: int = 0) -> tuple[Path, Path]:
    """Write ``out_dir/soundscape_data/*.wav``, ``annotations.csv`` and ``taxonomy.csv``.

    Returns ``(annotations_csv, taxonomy_csv)``. Every file starts and ends with noise;
    songs never cross the file end.
    """
    import soundfile as sf

    if not species_ids:
        raise ValueError("need at least one species to sing in the soundscapes")
    unknown = [s for s in species_ids if s not in world.songs]
    if unknown:
        raise ValueError(f"species not in the synthetic world: {unknown[:5]}")
    out = Path(out_dir)
    (out / "soundscape_data").mkdir(parents=True, exist_ok=True)
    sr = world.sample_rate
    rng = np.random.default_rng([world.seed, seed, 7])
    rows: list[list] = []
    for k in range(spec.n_files):
        n = int(round(spec.duration_s * sr))
        wave = rng.standard_normal(n) * spec.noise_rms
        t = rng.uniform(*spec.gap_s)
        while True:
            dur = rng.uniform(*spec.song_s)
            if t + dur > spec.duration_s - 0.2:
                break
            singers = [species_ids[int(rng.integers(len(species_ids)))]]
            if rng.random() < spec.overlap_prob and len(species_ids) > 1:
                other = [s for s in species_ids if s != singers[0]]
                singers.append(other[int(rng.integers(len(other)))])
            for j, sid in enumerate(singers):
                start = t + (0.0 if j == 0 else rng.uniform(0, dur / 2))
                d = min(dur, spec.duration_s - 0.2 - start)
                song = world.render_audio(sid, rng, d)
                i = int(round(start * sr))
                wave[i : i + len(song)] += song
                lo, hi = _band(world, sid)
                rows.append([f"synthetic_{k:02d}.wav", round(start, 3), round(start + len(song) / sr, 3), lo, hi, sid])
            t += dur + rng.uniform(*spec.gap_s)
        sf.write(out / "soundscape_data" / f"synthetic_{k:02d}.wav", np.clip(wave, -1, 1).astype(np.float32), sr, subtype="PCM_16")
    ann = out / "annotations.csv"
    _write_csv(ann, ANNOTATION_HEADER, rows)
    tax = out / "taxonomy.csv"
    _write_csv(tax, TAXONOMY_HEADER, [[sp.id, sp.scientific_name, sp.common_name, sp.order, sp.family, sp.genus,
                                        sp.epithet] for sp in world.species])
    return ann, tax


def _write_csv(path: Path, header: Sequence[str], rows: list[list]) -> None:
    table = StringIO(newline="")
    w = csv.writer(table)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, table.getvalue())
