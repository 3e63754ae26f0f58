"""Training batches: randomly cropped, decoded, resampled clips with their species index.

A bad file never kills a worker: ``__getitem__`` returns a skip record instead of a
clip, the collate function separates them, and the LightningModule adds them to the
run's :class:`~birdbridge.errors.SkipLog`, which is written next to the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..data.audio import TRAINING_PAD, crop_or_pad, load_audio
from ..data.crop import load_crop
from ..data.records import AudioItem, Collection
from ..data.shards import PCM16_SCALE
from ..errors import BadInputError


@dataclass
class SkippedItem:
    path: str
    reason: str
    detail: str = ""


class AudioClipDataset(Dataset):
    """``(wave[n_samples], label)``; random crops are drawn from ``(seed, epoch, index)``.

    Seeding per item (not per worker) makes a crop independent of worker count and of
    where a resumed run restarts, so runs are reproducible from the config. The key may
    be an index (the epoch is then ``set_epoch``'s) or an ``(epoch, index)`` pair from
    :class:`EpochShuffleSampler`: the epoch then travels with the index into worker
    processes, which copied the dataset before any ``set_epoch`` could reach them.
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

    def _crop(self, i: int, rng: np.random.Generator) -> np.ndarray:
        it = self.items[i]
        path = self.collection.resolve(it.path)
        # short clips: TRAINING_PAD, HF CLAP's "repeatpad" (whole copies, then zeros), the rule the
        # student's front end pads by at evaluation (checked when training starts: train.check_padding)
        if not self.cache_decoded:  # decode only the crop (data.crop): the same crop, less work
            return load_crop(path, self.sample_rate, self.n_samples, self.crop, rng, start_s=it.start_s,
                             end_s=it.end_s, pad=TRAINING_PAD)
        if i not in self._cache:
            self._cache[i] = load_audio(path, self.sample_rate, start_s=it.start_s, end_s=it.end_s)
        return crop_or_pad(self._cache[i], self.n_samples, self.crop, rng, pad=TRAINING_PAD)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng([self.seed, epoch, i])
        try:
            wave = self._crop(i, rng)
        except BadInputError as err:
            return SkippedItem(self.items[i].path, err.reason, err.detail)
        return torch.from_numpy(wave), self.labels[i]


class ShardClipDataset(AudioClipDataset):
    """:class:`AudioClipDataset` reading prepared shards (``data: {kind: shards}``) instead of files.

    Same keys, same ``(seed, epoch, index)`` crops: a shard stored at the model's rate is
    the whole-file resample the file path crops from, so the crops are the file path's
    (to int16 rounding). Files that could not be decoded were skipped by ``data prepare``.
    """

    def __init__(self, collection: Collection, items: Sequence[AudioItem], sample_rate: int, n_samples: int, *,
                 crop: str = "random", seed: int = 0, cache_decoded: bool = False):
        from ..data.shards import ShardReader

        super().__init__(collection, items, sample_rate, n_samples, crop=crop, seed=seed)
        self.reader = ShardReader(collection.meta["shards"], collection.meta.get("cache_dir"))
        self.index = [int(it.extra["shard_index"]) for it in self.items]

    def _crop(self, i: int, rng: np.random.Generator) -> np.ndarray:
        return self.reader.crop(self.index[i], self.sample_rate, self.n_samples, self.crop, rng, pad=TRAINING_PAD)

    def __getitems__(self, keys: list) -> "ClipBatch":
        """A whole batch, each crop written straight into its row of one preallocated tensor.

        Shards stored as 16-bit PCM at the student's rate (what ``data prepare`` writes by
        default) give an int16 batch: half the bytes to write, share between processes and
        copy to the GPU, where :func:`waves_as_float` turns it into the float32 the other
        paths give, bit for bit. Filling the batch in place saves a copy of every clip
        (``benchmarks/bench_loader.py``); any other sample makes the whole batch float32."""
        keyed = [key if isinstance(key, tuple) else (self.epoch, key) for key in keys]
        labels = torch.tensor([self.labels[i] for _, i in keyed], dtype=torch.long)
        waves = _batch_tensor(len(keys), self.n_samples, torch.int16)
        rows = waves.numpy()
        if all(self.reader.crop_into_pcm16(rows[r], self.index[i], self.sample_rate, self.crop,
                                           np.random.default_rng([self.seed, e, i])) for r, (e, i) in enumerate(keyed)):
            return ClipBatch(waves, labels)
        waves = _batch_tensor(len(keys), self.n_samples)
        rows = waves.numpy()
        for r, (e, i) in enumerate(keyed):
            self.reader.crop_into(rows[r], self.index[i], self.sample_rate, self.crop, np.random.default_rng([self.seed, e, i]),
                                  pad=TRAINING_PAD)
        return ClipBatch(waves, labels)


def waves_as_float(waves: torch.Tensor) -> torch.Tensor:
    """A batch as float32 in [-1, 1): int16 batches (pcm16 shards) scaled by 1/32768, exactly as
    libsndfile reads 16-bit PCM; float batches unchanged. Runs where the batch is, so on the GPU."""
    if waves.dtype == torch.int16:
        return waves.to(torch.float32) * (1.0 / PCM16_SCALE)
    return waves


def _batch_tensor(b: int, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An empty ``[b, n]`` batch; in a loader worker, in shared memory, as ``default_collate``
    allocates it: the batch then reaches the main process without being copied there."""
    elem = torch.empty(0, dtype=dtype)
    if torch.utils.data.get_worker_info() is None:
        return elem.new_empty((b, n))
    return elem.new(elem._typed_storage()._new_shared(b * n, device=elem.device)).resize_(b, n)


@dataclass
class ClipBatch:
    """A batch a dataset assembled itself (``__getitems__``); :func:`collate_clips` passes it through."""

    waves: torch.Tensor
    labels: torch.Tensor


def clip_dataset(collection: Collection, items: Sequence[AudioItem], sample_rate: int, n_samples: int,
                 **kw) -> AudioClipDataset:
    """The clip dataset for ``collection``: shards when it came from ``data prepare``, else files."""
    cls = ShardClipDataset if collection.meta.get("format") == "shards" else AudioClipDataset
    return cls(collection, items, sample_rate, n_samples, **kw)


class EpochShuffleSampler(Sampler):
    """This rank's share of a seeded per-epoch shuffle, as ``(epoch, index)`` keys; resumable mid-epoch.

    Epoch ``e``'s order is a permutation drawn from ``(seed, e)`` alone -- not from a
    generator whose state runs on across epochs -- so a resumed run recomputes exactly the
    order the unbroken run used. Under DDP the permutation is padded by wrapping (as
    ``DistributedSampler`` does) and dealt round-robin, so every rank yields
    ``ceil(n / world)`` keys. :meth:`resume` makes the next iteration start after the
    batches an interrupted epoch already trained on, so no clip is seen twice and none is
    missed.
    """

    def __init__(self, n: int, *, seed: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if n < 1 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler arguments n={n} batch_size={batch_size} rank={rank} world_size={world_size}")
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._skip_batches = 0

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch (and again for the epoch a resume lands in)."""
        if epoch != self.epoch:
            self.epoch, self._skip_batches = epoch, 0

    def resume(self, epoch: int, batches_done: int) -> None:
        """The next iteration is epoch ``epoch`` without its first ``batches_done`` batches."""
        self.epoch, self._skip_batches = epoch, max(0, batches_done)

    def order(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch``, in the order they are trained on."""
        idx = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        total = len(self) * self.world_size
        idx = np.resize(idx, total)  # wrap-around padding, like DistributedSampler(drop_last=False)
        return idx[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, self._skip_batches * self.batch_size
        self._skip_batches = 0  # a skip applies to one iteration only
        for i in self.order(epoch)[skip:]:
            yield epoch, int(i)


def collate_clips(batch):
    """Stack good clips; bad ones become skip records.

    The batch keeps its size: skipped slots are refilled by repeating good clips. Under
    DDP every rank must contribute equally sized tensors to the loss's all-gather, and a
    repeated clip only adds a positive pair of its own species, which the multi-positive
    loss handles (the skip itself is still counted and reported)."""
    if isinstance(batch, ClipBatch):
        return {"waves": batch.waves, "labels": batch.labels, "skipped": []}
    good = [b for b in batch if not isinstance(b, SkippedItem)]
    skipped = [b for b in batch if isinstance(b, SkippedItem)]
    if not good:
        return {"waves": None, "labels": None, "skipped": skipped}
    good = [good[i % len(good)] for i in range(len(batch))]
    waves = torch.stack([w for w, _ in good])
    labels = torch.tensor([l for _, l in good], dtype=torch.long)
    return {"waves": waves, "labels": labels, "skipped": skipped}
