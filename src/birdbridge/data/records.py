"""The in-memory shape every dataset loader produces.

A :class:`Collection` is species (with taxonomy) plus audio and image items that point
at files on disk. Loaders for iNatSounds, SSW60, soundscapes, CSVs, folders and the
synthetic world all return one, so training, embedding and evaluation never branch on
where data came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import SkipLog
from ..taxonomy import Species, species_index


@dataclass
class AudioItem:
    path: str
    species_id: str | None = None
    split: str = ""
    start_s: float | None = None  # optional segment within the file
    end_s: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class ImageItem:
    path: str
    species_id: str | None = None
    split: str = ""
    extra: dict = field(default_factory=dict)  # author, licence, source, ...


@dataclass
class Collection:
    name: str
    species: list[Species]
    audio: list[AudioItem] = field(default_factory=list)
    images: list[ImageItem] = field(default_factory=list)
    root: str = ""
    # Rows a loader could not use (unknown species, missing fields), so none vanish silently.
    skips: SkipLog = field(default_factory=SkipLog)
    meta: dict = field(default_factory=dict)  # loader facts: source file, dataset info, ...

    def __post_init__(self) -> None:
        self._index = species_index(self.species)

    @property
    def species_by_id(self) -> dict[str, Species]:
        return {s.id: s for s in self.species}

    def label_index(self, species_id: str) -> int:
        return self._index[species_id]

    def audio_split(self, *splits: str) -> list[AudioItem]:
        return [a for a in self.audio if not splits or a.split in splits]

    def image_split(self, *splits: str) -> list[ImageItem]:
        return [i for i in self.images if not splits or i.split in splits]

    def subset_species(self, ids: Iterable[str]) -> "Collection":
        keep = set(ids)
        return Collection(
            name=self.name,
            species=[s for s in self.species if s.id in keep],
            audio=[a for a in self.audio if a.species_id in keep],
            images=[i for i in self.images if i.species_id in keep],
            root=self.root,
            skips=self.skips,
            meta=dict(self.meta),
        )

    def labelled(self) -> "Collection":
        """This collection without items that have no species (loose files of a folder); ``self`` if none."""
        if all(a.species_id for a in self.audio) and all(i.species_id for i in self.images):
            return self
        return Collection(name=self.name, species=self.species, audio=[a for a in self.audio if a.species_id],
                          images=[i for i in self.images if i.species_id], root=self.root, skips=self.skips,
                          meta=dict(self.meta))

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() or not self.root else Path(self.root) / p
