"""The CPU FPN RoI pooling (models.mask_rcnn._pyramid_roi_align) against its definition: each RoI pooled once,
at its own pyramid level, with ROIAlign over only that level's RoIs. Forward values and gradients, imperative
and hybridised, with NaN-poisoned memory around (MXNet's CPU kernel leaves skipped RoIs' outputs
uninitialised and writes stray zeros at the front of its output)."""
from __future__ import annotations

import gluon_fashion  # noqa: F401  (numpy aliases MXNet needs)
import mxnet as mx
import numpy as np
import pytest

from gluon_fashion.models.mask_rcnn import _pyramid_roi_align

STRIDES = (4, 8, 16, 32)
MIN_STAGE, MAX_STAGE = 2, 6  # P6 is for the RPN only: pooling uses P2-P5
ROI_SIZE = (7, 7)
SIDE = 512


def _case(seed: int = 0, channels: int = 3):
    rng = np.random.RandomState(seed)
    maps = [rng.standard_normal((2, channels, SIDE // s, SIDE // s)).astype(np.float32) for s in STRIDES]
    # sizes spanning the four levels (224 px is level 4), two images, shuffled so no level is contiguous
    sizes = rng.permutation(np.concatenate([rng.uniform(8, 40, 12), rng.uniform(120, 200, 12),
                                            rng.uniform(250, 400, 12), rng.uniform(460, 500, 12)]))
    x1, y1 = rng.uniform(0, SIDE - sizes), rng.uniform(0, SIDE - sizes)
    batch = rng.randint(0, 2, len(sizes)).astype(np.float32)
    rois = np.stack([batch, x1, y1, x1 + sizes - 1, y1 + sizes - 1], axis=1).astype(np.float32)
    return maps, rois


def _levels(rois: np.ndarray) -> np.ndarray:
    w, h = rois[:, 3] - rois[:, 1] + 1, rois[:, 4] - rois[:, 2] + 1
    return np.clip(np.floor(4 + np.log2(np.sqrt(w * h) / 224.0 + 1e-6)), MIN_STAGE, MAX_STAGE - 1).astype(int)


def _reference(maps, rois: np.ndarray, head: np.ndarray):
    """Pooled features and d(sum(pooled * head))/d(maps), pooling each level's RoIs alone."""
    features = [mx.nd.array(m) for m in maps]
    for f in features:
        f.attach_grad()
    levels = _levels(rois)
    out = np.zeros((len(rois), maps[0].shape[1]) + ROI_SIZE, np.float32)
    with mx.autograd.record():
        total = 0
        for i, level in enumerate(range(MIN_STAGE, MAX_STAGE)):
            index = np.flatnonzero(levels == level)
            if not len(index):
                continue
            pooled = mx.nd.contrib.ROIAlign(features[i], mx.nd.array(rois[index]), ROI_SIZE, 1.0 / STRIDES[i],
                                            sample_ratio=2)
            out[index] = pooled.asnumpy()
            total = total + (pooled * mx.nd.array(head[index])).sum()
    total.backward()
    return out, [f.grad.asnumpy() for f in features]


class _Pooling(mx.gluon.HybridBlock):
    def hybrid_forward(self, F, rois, p2, p3, p4, p5):
        return _pyramid_roi_align(F, [p2, p3, p4, p5], rois, ROI_SIZE, STRIDES, MIN_STAGE, MAX_STAGE)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_each_roi_is_pooled_once_at_its_level_with_the_gradient_of_that(hybridize):
    maps, rois = _case()
    head = np.random.RandomState(1).standard_normal((len(rois), maps[0].shape[1]) + ROI_SIZE).astype(np.float32)
    assert len(set(_levels(rois).tolist())) == 4, "the case should cover every level"
    expected, expected_grads = _reference(maps, rois, head)
    block = _Pooling()
    if hybridize:
        block.hybridize()
    # Poison MXNet's memory pool so uninitialised outputs read as NaN, not as lucky zeros.
    mx.nd.full((len(rois) * 4, maps[0].shape[1]) + ROI_SIZE, np.nan).wait_to_read()
    features = [mx.nd.array(m) for m in maps]
    for f in features:
        f.attach_grad()
    with mx.autograd.record():
        pooled = block(mx.nd.array(rois), *features)
        (pooled * mx.nd.array(head)).sum().backward()
    np.testing.assert_allclose(pooled.asnumpy(), expected, rtol=1e-5, atol=1e-6)
    for level, (f, grad) in enumerate(zip(features, expected_grads)):
        np.testing.assert_allclose(f.grad.asnumpy(), grad, rtol=1e-5, atol=1e-6, err_msg=f"P{level + 2} gradient")


def test_the_first_roi_survives_the_kernels_stray_writes():
    # The kernel writes a 0 at flat output index i for each skipped RoI i. With 1 channel and 7x7 bins (49
    # values per RoI) the 40 large RoIs skipped at level 2 would zero most of the first small RoI's features;
    # the anchor in front absorbs those writes (its 49 values outnumber the 43 RoIs of the call).
    maps, rois = _case(seed=2, channels=1)
    small = rois[_levels(rois) == 2][:2]
    large = np.repeat(rois[_levels(rois) == 5][:1], 40, axis=0)
    rois = np.concatenate([small, large])
    expected, _ = _reference(maps, rois, np.zeros((len(rois), 1) + ROI_SIZE, np.float32))
    pooled = _pyramid_roi_align(mx.nd, [mx.nd.array(m) for m in maps], mx.nd.array(rois), ROI_SIZE, STRIDES,
                                MIN_STAGE, MAX_STAGE).asnumpy()
    np.testing.assert_allclose(pooled[:2], expected[:2], rtol=1e-5, atol=1e-6)
