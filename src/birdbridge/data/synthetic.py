"""A deterministic synthetic world: species with a taxonomy, names, looks and songs.

It is the offline stand-in for real birds. Everything is drawn from one seed. Traits
follow the taxonomy the way real ones loosely do, so that names, pictures and songs
share structure a model can learn:

* looks: the order sets the stripe colour (dark/light), the family the pattern
  (barred, streaked, checkered, spotted), genus + species the body colour; common
  names say the colour and the pattern ("Red Barred Warbler");
* songs: the order sets the sweep direction, the family the syllable rate, the genus
  the frequency band and the species the pitch within it plus harmonic content.
  Pitches sit more than one mel bin apart (see FACTS: closer pitches are inseparable
  for a tiny HTSAT).

The world writes WAV/PNG files and CSVs in the generic format, so the demo reads it
back through the same loaders users' data goes through.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np

from ..io import atomic_write_text
from ..taxonomy import Species

COLOURS = {  # name -> RGB
    "Red": (220, 40, 40),
    "Orange": (240, 140, 20),
    "Yellow": (235, 220, 40),
    "Green": (40, 170, 60),
    "Blue": (40, 90, 220),
    "Purple": (150, 50, 190),
}
PATTERNS = ("Barred", "Streaked", "Checkered", "Spotted")
STRIPES = ((25, 25, 25), (245, 245, 245))  # per order
GROUP_WORDS = ("Warbler", "Finch", "Thrush", "Sparrow", "Tanager", "Wren", "Vireo", "Pipit", "Lark", "Bunting", "Kinglet", "Shrike")
_SYL = ("ca", "lo", "mi", "ra", "te", "vo", "su", "ne", "phi", "da", "go", "ri", "sa", "tu", "be", "xo", "ly", "ze", "ko", "pa")


@dataclass(frozen=True)
class SongTraits:
    f0: float  # Hz, centre pitch
    sweep: float  # +1 rising, -1 falling
    rate: float  # syllables per second
    harmonic: float  # relative amplitude of the 2nd harmonic
    syllable_s: float  # syllable duration


@dataclass(frozen=True)
class LookTraits:
    body: tuple[int, int, int]
    stripe: tuple[int, int, int]
    pattern: str


class SyntheticWorld:
    def __init__(self, seed: int = 0, n_orders: int = 2, n_families: int = 2, n_genera: int = 3, n_species: int = 2, sample_rate: int = 16000):
        if n_families > len(PATTERNS) or n_genera * n_species > len(COLOURS) or n_orders > len(STRIPES):
            raise ValueError("synthetic world too large for its trait tables")
        self.seed = seed
        self.sample_rate = sample_rate
        rng = np.random.default_rng(seed)
        words = list(_SYL)
        self.species: list[Species] = []
        self.songs: dict[str, SongTraits] = {}
        self.looks: dict[str, LookTraits] = {}
        n_genera_total = n_orders * n_families * n_genera
        # genus bands evenly spaced on the mel scale between 900 and 6800 Hz
        mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
        imel = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
        bands = imel(np.linspace(mel(900), mel(6800), n_genera_total))
        group_words = list(GROUP_WORDS)
        rng.shuffle(group_words)
        g_index = 0
        for o in range(n_orders):
            order_root = _name(rng, words, 2).capitalize()
            order = f"{order_root}iformes"
            for f in range(n_families):
                fam_root = _name(rng, words, 2).capitalize()
                family = f"{fam_root}idae"
                rate = 3.0 + 2.5 * f
                for g in range(n_genera):
                    genus = fam_root + _name(rng, words, 1) + ("ornis" if g % 2 == 0 else "ella")
                    group = group_words[g_index % len(group_words)]
                    for s in range(n_species):
                        epithet = _name(rng, words, 2) + ("us", "a", "is")[s % 3]
                        colour = list(COLOURS)[g * n_species + s]
                        pattern = PATTERNS[f]
                        sid = f"syn{len(self.species):03d}"
                        sp = Species(
                            id=sid,
                            scientific_name=f"{genus} {epithet}",
                            common_name=f"{colour} {pattern} {group}",
                            kingdom="Animalia",
                            phylum="Chordata",
                            class_="Aves",
                            order=order,
                            family=family,
                            genus=genus,
                            epithet=epithet,
                        )
                        self.species.append(sp)
                        # sister species: one a bit lower and pure, one higher and harmonic-rich
                        f0 = float(bands[g_index] * (0.93 if s == 0 else 1.08))
                        self.songs[sid] = SongTraits(
                            f0=f0, sweep=1.0 if o == 0 else -1.0, rate=rate,
                            harmonic=0.0 if s == 0 else 0.6, syllable_s=0.09 if s == 0 else 0.06,
                        )
                        self.looks[sid] = LookTraits(body=COLOURS[colour], stripe=STRIPES[o], pattern=pattern)
                    g_index += 1

    # --- media ---------------------------------------------------------------
    def render_audio(self, species_id: str, rng: np.random.Generator, duration_s: float = 1.5) -> np.ndarray:
        t = self.songs[species_id]
        sr = self.sample_rate
        n = int(duration_s * sr)
        out = np.zeros(n, dtype=np.float64)
        f0 = t.f0 * rng.uniform(0.97, 1.03)
        rate = t.rate * rng.uniform(0.9, 1.1)
        period = 1.0 / rate
        start = rng.uniform(0, period)
        syl_n = int(t.syllable_s * sr)
        tt = np.arange(syl_n) / sr
        # a linear chirp spanning +-12% of f0 in the order's direction
        inst_f = f0 * (1 + t.sweep * 0.12 * (tt / t.syllable_s - 0.5))
        phase = 2 * np.pi * np.cumsum(inst_f) / sr
        env = np.hanning(syl_n)
        syllable = env * (np.sin(phase) + t.harmonic * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))
        onset = start
        while onset < duration_s:
            i = int(onset * sr)
            seg = syllable[: max(0, min(syl_n, n - i))]
            out[i : i + len(seg)] += seg * rng.uniform(0.7, 1.0)
            onset += period * rng.uniform(0.95, 1.05)
        out /= max(1e-9, np.abs(out).max())
        snr_db = rng.uniform(8, 20)
        noise = rng.standard_normal(n)
        noise *= np.sqrt(np.mean(out**2) / 10 ** (snr_db / 10)) / max(1e-9, noise.std())
        wave = (out + noise) * rng.uniform(0.2, 0.7)
        return np.clip(wave, -1, 1).astype(np.float32)

    def render_image(self, species_id: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
        look = self.looks[species_id]
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        bg = rng.uniform(90, 170, size=3) * np.array([0.8, 1.0, 0.8])  # leafy-grey backgrounds
        img = np.ones((size, size, 3), np.float32) * bg
        img += rng.normal(0, 12, size=(size, size, 3))
        cy, cx = rng.uniform(0.35, 0.65, size=2) * size
        ry, rx = rng.uniform(0.22, 0.34, size=2) * size
        body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        period = rng.uniform(4.5, 6.0)
        if look.pattern == "Barred":
            mark = ((yy / period) % 1.0) < 0.4
        elif look.pattern == "Streaked":
            mark = ((xx / period) % 1.0) < 0.4
        elif look.pattern == "Checkered":
            mark = (((yy // (period / 1.5)) + (xx // (period / 1.5))) % 2) == 0
        else:  # Spotted
            mark = ((((yy % period) - period / 2) ** 2 + ((xx % period) - period / 2) ** 2) <= (period / 4) ** 2)
        colour = np.array(look.body, np.float32) * rng.uniform(0.85, 1.1)
        img[body] = colour + rng.normal(0, 8, size=(int(body.sum()), 3))
        img[body & mark] = np.array(look.stripe, np.float32) + rng.normal(0, 8, size=(int((body & mark).sum()), 3))
        return np.clip(img, 0, 255).astype(np.uint8)

    # --- files ---------------------------------------------------------------
    def write(
        self,
        root: str | Path,
        audio_per_species: dict[str, int] | None = None,
        images_per_species: dict[str, int] | None = None,
        duration_s: float = 1.5,
        image_size: int = 32,
    ) -> Path:
        """Write ``world.csv`` (generic CSV format, audio and image rows) with WAV/PNG media."""
        import soundfile as sf
        from PIL import Image

        root = Path(root)
        audio_per_species = audio_per_species or {"train": 16, "test": 6}
        images_per_species = images_per_species or {"train": 16, "test": 6}
        (root / "audio").mkdir(parents=True, exist_ok=True)
        (root / "images").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([self.seed, 1])
        cols = ["path", "species_id", "scientific_name", "common_name", "kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet", "split"]

        def row(sp: Species, path: str, split: str) -> list:
            return [path, sp.id, sp.scientific_name, sp.common_name, sp.kingdom, sp.phylum, sp.class_, sp.order, sp.family, sp.genus, sp.epithet, split]

        audio_rows, image_rows = [], []
        for sp in self.species:
            for split, n in audio_per_species.items():
                for k in range(n):
                    rel = f"audio/{sp.id}_{split}_{k:03d}.wav"
                    sf.write(root / rel, self.render_audio(sp.id, rng, duration_s), self.sample_rate, subtype="PCM_16")
                    audio_rows.append(row(sp, rel, split))
            for split, n in images_per_species.items():
                for k in range(n):
                    rel = f"images/{sp.id}_{split}_{k:03d}.png"
                    Image.fromarray(self.render_image(sp.id, rng, image_size)).save(root / rel)
                    image_rows.append(row(sp, rel, split))
        table = StringIO(newline="")
        w = csv.writer(table)
        w.writerow(cols)
        w.writerows(audio_rows + image_rows)
        atomic_write_text(root / "world.csv", table.getvalue())
        return root / "world.csv"

    def captions(self, species_id: str, known: bool = True) -> list[str]:
        """Audio captions for pretraining the stand-in CLAP (BioLingual was trained on such).

        ``known=False``: captions that never name the species, only its order and family
        and "a bird" -- like the many recordings a real CLAP hears labelled above species
        level ("Passeriformes sp.", "bird song"). Its audio still trains the audio tower
        and the family/order words keep their meaning, but the species' names are never
        paired with its sound, so CLAP cannot pick them out zero-shot.
        """
        sp = next(s for s in self.species if s.id == species_id)
        if not known:
            return [
                "a bird singing",
                f"the song of a bird of the family {sp.family}",
                f"a recording of a bird in {sp.order}",
                f"{sp.family} sp. calling",
            ]
        return [
            f"the song of a {sp.common_name}",
            f"{sp.common_name} calling",
            f"a recording of {sp.scientific_name}",
            f"{sp.scientific_name} ({sp.common_name}) singing",
        ]

    def clap_known_species(self, fraction: float, seed: int | None = None) -> set[str]:
        """The ``round(fraction * n)`` species whose names the stand-in CLAP hears in pretraining.

        Drawn from ``seed`` (default: the world's) with its own stream, independent of
        every other draw (which species a distillation sees is drawn elsewhere, from the
        unseen split's seed)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"clap_known_fraction must lie in [0, 1], got {fraction}")
        import random

        ids = sorted(sp.id for sp in self.species)
        rng = random.Random(f"clap-known-{self.seed if seed is None else seed}")
        return set(rng.sample(ids, int(round(fraction * len(ids)))))


def _name(rng: np.random.Generator, syllables: list[str], n: int) -> str:
    return "".join(syllables[int(rng.integers(len(syllables)))] for _ in range(n))


WORLD_FILE = "world.csv"
_WORLD_DEPTH = 3  # world.csv sits in the root; its media are in audio/ and images/ under it


def in_synthetic_world(path: str | Path) -> bool:
    """True when ``path`` lies in a written world: a ``world.csv`` in its folder or one of the
    folders above it (:data:`_WORLD_DEPTH` levels), as :meth:`SyntheticWorld.write` leaves it."""
    import os

    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(_WORLD_DEPTH):
        if os.path.isfile(os.path.join(folder, WORLD_FILE)):
            return True
        folder = os.path.dirname(folder)
    return False


def load_world(root: str | Path):
    """The collection a written world holds, read by the generic CSV loader users' data uses."""
    from .generic import load_csv

    return load_csv(Path(root) / WORLD_FILE, name="synthetic")
