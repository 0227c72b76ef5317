"""Batch samplers whose order depends only on ``(seed, epoch)``: exact mid-epoch resume and distributed shares.

A checkpoint records how many batches of its epoch were done (``engine.checkpoint``); resuming skips that many
batches of the same epoch. That is exact only because a sampler here rebuilds the epoch's order from
``(seed, epoch)`` alone (seeded with :func:`~gluon_fashion.engine.context.epoch_seed`), and it skips indices,
not decoded images, so resuming costs nothing. ``num_parts``/``part_index`` give each distributed worker its
own, equally long share of the same permutation.
"""
from __future__ import annotations

from typing import Iterator, List, Sequence

import numpy as np

from ..engine.context import epoch_seed
from ..errors import UserError


class EpochBatchSampler:
    """Batches of dataset indices whose order depends only on ``(seed, epoch)``; resumable mid-epoch.

    Use as ``DataLoader(dataset, batch_sampler=sampler, ...)`` and call ``set_epoch(epoch, skip=k)``
    before iterating an epoch: the first ``k`` batches are skipped without loading any image.
    ``last_batch``: "discard" drops a short final batch (fixed per-device batch sizes), "keep" yields it.
    ``num_parts``/``part_index`` give each distributed worker its own slice of the same permutation.
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 last_batch: str = "discard", num_parts: int = 1, part_index: int = 0):
        if last_batch not in ("discard", "keep"):
            raise ValueError(f"last_batch must be 'discard' or 'keep', got {last_batch!r}")
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        self.length, self.batch_size, self.shuffle, self.seed = int(length), int(batch_size), shuffle, int(seed)
        self.last_batch, self.num_parts, self.part_index = last_batch, int(num_parts), int(part_index)
        self.epoch, self.skip = 0, 0
        if len(self) == 0:
            raise UserError(f"{self.length} training sample(s) make no batch of --batch-size {batch_size}"
                            + (f" across {self.num_parts} workers" if self.num_parts > 1 else ""))

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order and how many leading batches to skip (resume)."""
        self.epoch, self.skip = int(epoch), int(skip)

    def _indices(self) -> np.ndarray:
        order = (np.random.RandomState(epoch_seed(self.seed, self.epoch)).permutation(self.length)
                 if self.shuffle else np.arange(self.length))
        # Every part gets the same number of samples, or distributed workers would wait on each other.
        usable = (self.length // self.num_parts) * self.num_parts
        return order[:usable][self.part_index::self.num_parts]

    def __iter__(self) -> Iterator[List[int]]:
        indices = self._indices()
        for batch in range(self.skip, len(self)):
            yield indices[batch * self.batch_size:(batch + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        """Batches in a full epoch (skipping does not change it, so iteration counts stay aligned)."""
        per_part = self.length // self.num_parts
        full, rest = divmod(per_part, self.batch_size)
        return full + (1 if rest and self.last_batch == "keep" else 0)


class AspectRatioBatchSampler(EpochBatchSampler):
    """``EpochBatchSampler`` whose batches group images of similar aspect ratio (less padding).

    The epoch's seeded permutation is cut into buckets of ``batch_size * bucket_mult`` images; each bucket
    is sorted by aspect ratio and cut into batches, and the batches are shuffled. Order depends only on
    ``(seed, epoch)``, so ``set_epoch(epoch, skip=k)`` resumes exactly.
    """

    def __init__(self, aspect_ratios: Sequence[float], batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_mult: int = 32, num_parts: int = 1, part_index: int = 0):
        super().__init__(len(aspect_ratios), batch_size, shuffle=shuffle, seed=seed, last_batch="discard",
                         num_parts=num_parts, part_index=part_index)
        self.aspect_ratios = np.asarray(aspect_ratios, dtype=np.float64)
        self.bucket_mult = max(1, int(bucket_mult))

    def _batches(self) -> List[List[int]]:
        indices = self._indices()[: len(self) * self.batch_size]
        bucket = self.batch_size * self.bucket_mult
        batches = []
        for start in range(0, len(indices), bucket):
            chunk = indices[start:start + bucket]
            chunk = chunk[np.argsort(self.aspect_ratios[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            order = np.random.RandomState(epoch_seed(self.seed + 1, self.epoch)).permutation(len(batches))
            batches = [batches[i] for i in order]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        yield from self._batches()[self.skip:]


class EpochTaggedBatches:
    """Wrap an :class:`EpochBatchSampler`: each index ``i`` of epoch ``e`` becomes ``e * length + i``.

    The sampler's order, skipping and length are unchanged; only the epoch travels with the index, so a
    dataset (``length`` items) can seed each sample's augmentation from ``(seed, epoch, index)`` and loader
    worker processes need no shared state: a resumed run draws the same augmentation as an unbroken one.
    """

    def __init__(self, sampler: EpochBatchSampler, length: int):
        self.sampler = sampler
        self.length = int(length)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Forwarded to the wrapped sampler."""
        self.sampler.set_epoch(epoch, skip)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[List[int]]:
        offset = self.sampler.epoch * self.length
        for batch in self.sampler:
            yield [offset + i for i in batch]
