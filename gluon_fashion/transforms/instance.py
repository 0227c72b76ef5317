"""Mask R-CNN transforms: resize, flip, masks decoded at the working resolution, RPN targets in the workers.

GluonCV's ``MaskRCNNDefaultTrainTransform`` rasterises polygons at full size; iMaterialist masks are RLE
over photos of up to 8688x5792 pixels, where 40 dense instance masks take 2 GB. Here each RLE is sampled
straight into the resized grid (``rle.resize_runs_to_mask``), so memory is O(resized image) per instance.
Masks travel to the training loop as uint8 (4x less shared memory than GluonCV's float32) and are cast on
the device.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import mxnet as mx
import numpy as np
from gluoncv.data.transforms import bbox as tbbox

from ..rle import coco_to_runs, resize_runs_to_mask

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
Short = Union[int, Tuple[int, int]]


def scaled_size(height: int, width: int, short: int, max_size: int) -> Tuple[int, int]:
    """(height, width) after scaling the short side to ``short`` with the long side at most ``max_size``.

    The same rule as GluonCV's ``resize_short_within`` (no rounding base), shared by training, validation
    and prediction.
    """
    small, large = min(height, width), max(height, width)
    scale = float(short) / small
    if round(scale * large) > max_size:
        scale = float(max_size) / large
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def normalize_image(image: np.ndarray, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> np.ndarray:
    """uint8 H x W x 3 RGB -> float32 3 x H x W, scaled to [0, 1] then standardised per channel."""
    scale = np.float32(1.0 / 255)
    out = (image.astype(np.float32) * scale - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an H x W x 3 image (as GluonCV's presets)."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def decode_masks(segms: Sequence[Dict], height: int, width: int, out_height: int, out_width: int) -> np.ndarray:
    """COCO RLE masks of an ``height x width`` image -> uint8 (N, out_height, out_width), never at full size."""
    masks = np.zeros((len(segms), out_height, out_width), dtype=np.uint8)
    for i, rle in enumerate(segms):
        starts, lengths = coco_to_runs(rle)
        masks[i] = resize_runs_to_mask(starts, lengths, height, width, out_height, out_width)
    return masks


class MaskRCNNTrainTransform:
    """``(rgb, label (N, 5), [RLE] * N) -> (image, label, rpn cls targets, rpn box targets, rpn box masks,
    masks uint8 (N, h, w))``, the six elements ``gluoncv.data.batchify.MaskRCNNTrainBatchify`` takes.

    ``short`` may be a ``(low, high)`` range for multi-scale training. Random choices use NumPy's global
    generator, which ``FashionInstance`` seeds per sample and epoch. Without ``net`` only
    ``(image, label, masks)`` is returned.
    """

    def __init__(self, short: Short, max_size: int, net=None, flip_prob: float = 0.5,
                 mean: Sequence[float] = MEAN, std: Sequence[float] = STD, num_sample: int = 256,
                 pos_iou_thresh: float = 0.7, neg_iou_thresh: float = 0.3, pos_ratio: float = 0.5):
        self.short = short
        self.max_size = int(max_size)
        self.flip_prob = float(flip_prob)
        self.mean, self.std = tuple(mean), tuple(std)
        self._target_options = dict(num_sample=num_sample, pos_iou_thresh=pos_iou_thresh,
                                    neg_iou_thresh=neg_iou_thresh, pos_ratio=pos_ratio)
        self._target_generator = None
        self._anchors: Optional[List[mx.nd.NDArray]] = None
        self._feat_syms = None
        if net is not None:
            self._anchors, self._feat_syms = _anchor_maps(net)

    def _pick_short(self) -> int:
        if isinstance(self.short, (tuple, list)):
            return int(np.random.randint(self.short[0], self.short[1] + 1))
        return int(self.short)

    def pick_size(self, height: int, width: int) -> Tuple[int, int]:
        """Draw the training size (h, w) of a ``height x width`` image (random with a ``short`` range)."""
        return scaled_size(height, width, self._pick_short(), self.max_size)

    def __call__(self, src: np.ndarray, label: np.ndarray, segms: Sequence[Dict],
                 orig_size: Optional[Tuple[int, int]] = None, out_size: Optional[Tuple[int, int]] = None):
        """``orig_size``: (h, w) the labels and masks refer to, when ``src`` was decoded smaller (default: its
        shape); ``out_size``: a size from :meth:`pick_size` (default: drawn here)."""
        height, width = orig_size or src.shape[:2]
        out_h, out_w = out_size or self.pick_size(height, width)
        image = resize_image(src, out_h, out_w)
        bbox = tbbox.resize(label, (width, height), (out_w, out_h))
        masks = self.decode_masks(segms, height, width, out_h, out_w)
        if np.random.uniform() < self.flip_prob:
            image = image[:, ::-1]
            bbox = tbbox.flip(bbox, (out_w, out_h), flip_x=True)
            masks = masks[:, :, ::-1]
        image = mx.nd.array(normalize_image(image, self.mean, self.std))
        bbox = bbox.astype(np.float32)
        masks = mx.nd.array(np.ascontiguousarray(masks), dtype=np.uint8)
        if self._anchors is None:
            return image, bbox, masks
        cls_targets, box_targets, box_masks = self._rpn_targets(bbox[:, :4], out_h, out_w)
        return image, bbox, cls_targets, box_targets, box_masks, masks

    def decode_masks(self, segms: Sequence[Dict], height: int, width: int, out_height: int,
                     out_width: int) -> np.ndarray:
        """uint8 (N, out_height, out_width) masks of the instances (see the module function)."""
        return decode_masks(segms, height, width, out_height, out_width)

    def _rpn_targets(self, boxes: np.ndarray, height: int, width: int):
        """Per feature level (H_l, W_l, A) cls targets and (H_l, W_l, 4A) box targets/masks."""
        if self._target_generator is None:
            from gluoncv.model_zoo.rcnn.rpn.rpn_target import RPNTargetGenerator
            self._target_generator = RPNTargetGenerator(**self._target_options)
        shapes, anchors = [], []
        for anchor_map, feat_sym in zip(self._anchors, self._feat_syms):
            _, _, feat_h, feat_w = feat_sym.infer_shape(data=(1, 3, height, width))[1][0]
            level = anchor_map[:, :, :feat_h, :feat_w, :]
            shapes.append(level.shape)
            anchors.append(level.reshape((-1, 4)))
        cls_target, box_target, box_mask = self._target_generator(
            mx.nd.array(boxes), mx.nd.concat(*anchors, dim=0), width, height)
        cls_targets, box_targets, box_masks = [], [], []
        start = 0
        for shape in shapes:
            size = shape[2] * shape[3] * (shape[4] // 4)
            cls_targets.append(cls_target[start:start + size].reshape(shape[2], shape[3], -1))
            box_targets.append(box_target[start:start + size].reshape(shape[2], shape[3], -1))
            box_masks.append(box_mask[start:start + size].reshape(shape[2], shape[3], -1))
            start += size
        return cls_targets, box_targets, box_masks


def _anchor_maps(net) -> Tuple[List[mx.nd.NDArray], list]:
    """Pre-computed anchors of each RPN level (sliced per image later) and each level's feature symbol.

    Mirrors GluonCV's preset: anchors of an ``ashape x ashape`` map at the first level, halving (down to 16)
    at each further FPN level.
    """
    generators = copy.deepcopy(net.rpn.anchor_generator)
    generators.collect_params().reset_ctx(None)
    feat_syms = list(net.features(mx.sym.var(name="data")))  # one symbol per output (FPN level)
    ashape = int(net.ashape)
    anchors = []
    if len(feat_syms) > 1:
        for generator in generators:
            anchors.append(generator(mx.nd.zeros((1, 3, ashape, ashape))).reshape((1, 1, ashape, ashape, -1)))
            ashape = max(ashape // 2, 16)
    else:
        anchors.append(generators(mx.nd.zeros((1, 3, ashape, ashape))).reshape((1, 1, ashape, ashape, -1)))
    return anchors, feat_syms[: len(anchors)]


class MaskRCNNValTransform:
    """``rgb -> float32 3 x h x w`` image at the test scale; masks and boxes are mapped back later."""

    def __init__(self, short: int, max_size: int, mean: Sequence[float] = MEAN, std: Sequence[float] = STD):
        self.short, self.max_size = int(short), int(max_size)
        self.mean, self.std = tuple(mean), tuple(std)

    def pick_size(self, height: int, width: int) -> Tuple[int, int]:
        """Network input size (h, w) of a ``height x width`` image."""
        return scaled_size(height, width, self.short, self.max_size)

    def __call__(self, src: np.ndarray, orig_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """``orig_size``: (h, w) of the photo when ``src`` was decoded smaller (default: its shape)."""
        out_h, out_w = self.pick_size(*(orig_size or src.shape[:2]))
        return normalize_image(resize_image(src, out_h, out_w), self.mean, self.std)
