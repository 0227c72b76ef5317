"""Batch samplers: order from (seed, epoch) alone, exact mid-epoch resume, per-worker parts, aspect-ratio batches.

Workers' shares over many dataset, batch and job sizes are tested beside the distributed job (test_distributed.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from gluon_fashion.data.samplers import AspectRatioBatchSampler, EpochBatchSampler, EpochTaggedBatches
from gluon_fashion.errors import UserError


def test_epoch_batch_sampler_resumes_exactly():
    sampler = EpochBatchSampler(23, batch_size=4, shuffle=True, seed=3)
    assert len(sampler) == 5  # short final batch discarded
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == 5 and all(len(b) == 4 for b in full) and len({i for b in full for i in b}) == 20
    sampler.set_epoch(2, skip=3)
    assert list(sampler) == full[3:]
    sampler.set_epoch(3)
    assert list(sampler) != full
    again = EpochBatchSampler(23, batch_size=4, shuffle=True, seed=3)
    again.set_epoch(2)
    assert list(again) == full
    keep = EpochBatchSampler(23, batch_size=4, shuffle=False, last_batch="keep")
    assert len(keep) == 6 and list(keep)[-1] == [20, 21, 22]


def test_epoch_tagged_batches_carry_the_epoch_in_each_index():
    sampler = EpochBatchSampler(23, batch_size=4, shuffle=True, seed=3)
    tagged = EpochTaggedBatches(sampler, 23)
    tagged.set_epoch(2, skip=1)
    batches = list(tagged)
    assert len(tagged) == len(sampler) == 5 and len(batches) == 4
    assert [[divmod(i, 23) for i in b] for b in batches] == [[(2, i) for i in b] for b in list(sampler)]
    tagged.set_epoch(0)
    assert list(tagged) == list(sampler)  # epoch 0 leaves indices as they are


def test_epoch_batch_sampler_parts_are_equal_and_disjoint():
    parts = [EpochBatchSampler(11, batch_size=2, seed=1, num_parts=2, part_index=i) for i in range(2)]
    batches = [list(p) for p in parts]
    assert len(batches[0]) == len(batches[1]) == len(parts[0]) == 2
    flat = [set(i for b in part for i in b) for part in batches]
    assert not flat[0] & flat[1]
    with pytest.raises(UserError, match="--batch-size"):
        EpochBatchSampler(3, batch_size=4)


def test_aspect_ratio_batches_depend_on_seed_and_epoch_only_and_group_similar_ratios():
    ratios = np.random.RandomState(0).uniform(0.5, 2.0, 23)
    sampler = AspectRatioBatchSampler(ratios, batch_size=2, seed=5, bucket_mult=4)
    sampler.set_epoch(3)
    order = list(sampler)
    assert len(order) == len(sampler) == 11 and all(len(b) == 2 for b in order)
    flat = [i for b in order for i in b]
    assert len(set(flat)) == len(flat)
    again = AspectRatioBatchSampler(ratios, batch_size=2, seed=5, bucket_mult=4)
    again.set_epoch(3, skip=4)
    assert list(again) == order[4:]
    again.set_epoch(4)
    assert list(again) != order
    # within each bucket of 8 images, a batch holds neighbours in aspect-ratio order
    permutation = sampler._indices()[:22]  # the 23rd image does not fill a batch
    for start in range(0, 22, 8):
        bucket = sorted(permutation[start:start + 8], key=lambda i: ratios[i])
        pairs = {tuple(bucket[k:k + 2]) for k in range(0, len(bucket), 2)}
        assert pairs <= {tuple(b) for b in order}
