"""Training batches: decoded, resampled, randomly cropped clips with their species index.

A bad file never kills a worker: ``__getitem__`` returns a skip record instead of a
clip, the collate function separates them, and the LightningModule adds them to the
run's :class:`~birdbridge.errors.SkipLog`, which is written next to the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.audio import crop_or_pad, load_audio
from ..data.records import AudioItem, Collection
from ..errors import BadInputError


@dataclass
class SkippedItem:
    path: str
    reason: str
    detail: str = ""


class AudioClipDataset(Dataset):
    """``(wave[n_samples], label)``; random crops are drawn from ``(seed, epoch, index)``.

    Seeding per item (not per worker) makes a crop independent of worker count and of
    where a resumed run restarts, so runs are reproducible from the config.
    """

    def __init__(
        self,
        collection: Collection,
        items: Sequence[AudioItem],
        sample_rate: int,
        n_samples: int,
        *,
        crop: str = "random",
        seed: int = 0,
        cache_decoded: bool = False,
    ):
        self.collection = collection
        self.items = list(items)
        self.sample_rate = sample_rate
        self.n_samples = n_samples
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self.cache_decoded = cache_decoded
        self._cache: dict[int, np.ndarray] = {}
        self.labels = [collection.label_index(it.species_id) for it in self.items]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        it = self.items[i]
        wave = load_audio(self.collection.resolve(it.path), self.sample_rate, start_s=it.start_s, end_s=it.end_s)
        if self.cache_decoded:
            self._cache[i] = wave
        return wave

    def __getitem__(self, i: int):
        try:
            wave = self._decode(i)
        except BadInputError as err:
            return SkippedItem(self.items[i].path, err.reason, err.detail)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        # short clips are tiled like CLAP's "repeatpad" so the model sees song, not silence
        wave = crop_or_pad(wave, self.n_samples, self.crop, rng, pad="repeat")
        return torch.from_numpy(wave), self.labels[i]


def collate_clips(batch):
    """Stack good clips; bad ones become skip records.

    The batch keeps its size: skipped slots are refilled by repeating good clips. Under
    DDP every rank must contribute equally sized tensors to the loss's all-gather, and a
    repeated clip only adds a positive pair of its own species, which the multi-positive
    loss handles (the skip itself is still counted and reported)."""
    good = [b for b in batch if not isinstance(b, SkippedItem)]
    skipped = [b for b in batch if isinstance(b, SkippedItem)]
    if not good:
        return {"waves": None, "labels": None, "skipped": skipped}
    good = [good[i % len(good)] for i in range(len(batch))]
    waves = torch.stack([w for w, _ in good])
    labels = torch.tensor([l for _, l in good], dtype=torch.long)
    return {"waves": waves, "labels": labels, "skipped": skipped}
