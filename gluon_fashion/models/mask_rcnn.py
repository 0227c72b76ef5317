"""Mask R-CNN: GluonCV COCO models re-headed for fashion categories, loading from checkpoints, inference.

Building never lets GluonCV touch its model store: the COCO-shaped network is always constructed with
``pretrained=False, pretrained_base=False`` and the COCO weights (found offline by
``models.pretrained.require_pretrained``, or given as a file) are copied in before ``reset_class`` swaps the
80 COCO classes for the fashion ones, reusing the rows of COCO classes that are the same thing
(``labels.COCO_CLASS_FOR_CATEGORY``).

Inference returns one :class:`Instance` per detection with its mask as a compressed COCO RLE on the
requested grid (the original image by default): masks are pasted one at a time into their box, so a
100-detection prediction on an 8688x5792 photo never holds more than one box-sized mask.

One rule for every grid. The network sees the photo as validation sees it (:func:`read_network_input`:
JPEGs decoded at the smallest 1/2^k DCT scale that covers the input size, then :func:`network_input`).
Its boxes are scaled from the input to the wanted grid, and each M x M mask probability map is pasted
straight into its scaled box on that grid (:func:`paste_mask`: bilinear, thresholded at ``mask_threshold``)
by :func:`instances_from_outputs`. Validation (the 512 x 512 grid of ``resize_rle_instances_val.json``),
tools/predict.py (the photo's grid for overlays, an ``--annotations`` file's grid for results) and
tools/write_submission.py (the format's grid: 512 x 512 for 2019) all go through it, so tools/evaluate.py
on predict.py's results reproduces the mAP the trainer logged for the same checkpoint. Pasting at the
photo's own size and resizing the masks afterwards would cost a full-size paste per detection and give
different (blockier) masks.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from PIL import Image

from ..compat import (RpnBudgets, add_attribute_output, feature_strides, replace_fpn_roi_pooling, rpn_budgets,
                      set_rpn_budgets)
from ..engine.checkpoint import load_checkpoint_weights, read_checkpoint_meta
from ..errors import UserError
from ..images import PathLike, read_rgb_at_least
from ..labels import CATEGORY_NAMES, COCO_CLASS_FOR_CATEGORY, NUM_CATEGORIES
from ..rle import runs_to_coco
from ..transforms.instance import MaskRCNNValTransform, scaled_size
from .initialization import initialize_params
from .pretrained import load_state_matching, require_pretrained

TASK = "mask_rcnn"
#: Knobs that bound RPN/RoI counts (``None`` keeps the zoo model's value); recorded in checkpoints.
LIMIT_KEYS = ("rpn_train_pre_nms", "rpn_train_post_nms", "rcnn_num_sample", "rpn_test_pre_nms",
              "rpn_test_post_nms", "rcnn_max_dets", "max_num_gt", "rcnn_pos_ratio")
#: The budgets of inference (validation, prediction, submissions, the server); flags of the same names.
TEST_BUDGET_KEYS = ("rpn_test_pre_nms", "rpn_test_post_nms", "rcnn_max_dets")
#: The trainers' test-time budgets (recorded in the checkpoints they write), chosen by measurement
#: (benchmarks/bench_inference.py, BENCHMARKS.md "Test-time budgets"); GluonCV's are 6000 / 1000 / 1000.
DEFAULT_TEST_BUDGETS = {"rpn_test_pre_nms": 1000, "rpn_test_post_nms": 300, "rcnn_max_dets": 100}
MASK_THRESHOLD = 0.5
_TEST_BUDGET_HELP = {"rpn_test_pre_nms": "proposals kept before the RPN's NMS at test time",
                     "rpn_test_post_nms": "proposals kept after the RPN's NMS at test time",
                     "rcnn_max_dets": "detections per image whose masks are computed at test time"}
# The training-only target generator's box-encoder statistics sit in every net and checkpoint; inference never
# uses them, and MXNet warns about it on the first forward of a hybridised net.
_UNUSED_TARGET_PARAMS = (r"Parameter normalizedperclassboxcenterencoder\d*_(means|stds)"
                         r"(, normalizedperclassboxcenterencoder\d*_(means|stds))* is not used by any computation")
log = logging.getLogger(__name__)

Context = Union[mx.Context, Sequence[mx.Context], None]
ClassSpec = Union[int, Mapping]


class Instance(NamedTuple):
    """One detection: Kaggle category id, score, box ``x1, y1, x2, y2`` and binary mask (COCO RLE), both
    on the output grid; ``attributes``: ``{attribute id: probability}`` of a model with attributes, else None."""

    category_id: int
    score: float
    box: np.ndarray
    rle: Dict
    attributes: Optional[Dict[int, float]] = None


#: Probability from which a detection is said to have an attribute (predict.py, submissions, the server).
ATTRIBUTE_THRESHOLD = 0.5


def zoo_name(network: str, use_fpn: bool = False) -> str:
    """GluonCV model name of the COCO Mask R-CNN with this backbone, e.g. ``mask_rcnn_fpn_resnet50_v1b_coco``."""
    name = f"mask_rcnn_{'fpn_' if use_fpn else ''}{network}_coco"
    from gluoncv.model_zoo.model_zoo import get_model_list
    if name not in get_model_list():
        known = sorted(n[len("mask_rcnn_"):-len("_coco")] for n in get_model_list()
                       if n.startswith("mask_rcnn_") and n.endswith("_coco") and "syncbn" not in n)
        raise UserError(f"--network {network}{' --use-fpn' if use_fpn else ''}: GluonCV has no {name}; "
                        f"available: {', '.join(known)}")
    return name


def attribute_table(attributes: Iterable[ClassSpec]) -> List[Dict]:
    """``[{"id": attribute id, "name": ...}]`` from attribute ids or dicts (as stored in checkpoint meta)."""
    table = [{"id": int(a["id"]), "name": str(a.get("name", a["id"]))} if isinstance(a, Mapping)
             else {"id": int(a), "name": str(a)} for a in attributes]
    if len({a["id"] for a in table}) != len(table):
        raise UserError(f"attribute list repeats an id: {[a['id'] for a in table]}")
    return table


class AttributeHead(mx.gluon.HybridBlock):
    """Multi-label attribute logits of RoI features ``(R, C, h, w)`` -> ``(R, A)``.

    The features are those of the mask head's input. A 1x1 convolution narrows the channels and a hidden layer
    sees the whole (7x7) grid rather than its average: sleeve and garment lengths are geometry, where in the
    box the garment reaches, which a global average pool would wash out. BatchNorm after the convolution keeps
    the logits in range whatever the scale of the features (those of a randomly initialised FPN are large:
    without it the first attribute losses were ~30 and the run diverged)."""

    GRID = 7

    def __init__(self, num_attributes: int, channels: int = 64, hidden: int = 256, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.reduce = mx.gluon.nn.HybridSequential()
            self.reduce.add(mx.gluon.nn.Conv2D(channels, 1, use_bias=False), mx.gluon.nn.BatchNorm(),
                            mx.gluon.nn.Activation("relu"))
            self.hidden = mx.gluon.nn.Dense(hidden, activation="relu")
            # Attributes are rare: start every probability near 1% so the first steps are not spent unlearning 0.5.
            self.out = mx.gluon.nn.Dense(num_attributes, bias_initializer=mx.init.Constant(-4.6))

    def hybrid_forward(self, F, x):
        x = F.contrib.AdaptiveAvgPooling2D(x, output_size=self.GRID)
        return self.out(self.hidden(self.reduce(x)))


def class_table(classes: Iterable[ClassSpec]) -> List[Dict]:
    """``[{"id": category id, "name": ...}]`` from category ids or dicts (as stored in checkpoint meta)."""
    table = []
    for entry in classes:
        if isinstance(entry, Mapping):
            table.append({"id": int(entry["id"]), "name": str(entry.get("name", entry["id"]))})
        else:
            cid = int(entry)
            table.append({"id": cid, "name": CATEGORY_NAMES[cid] if 0 <= cid < NUM_CATEGORIES else str(cid)})
    if not table:
        raise UserError("Mask R-CNN needs at least one class")
    if len({c["id"] for c in table}) != len(table):
        raise UserError(f"class list repeats a category id: {[c['id'] for c in table]}")
    return table


def coco_reuse_map(category_ids: Sequence[int]) -> Dict[int, int]:
    """``{new class index: COCO class index}`` for categories whose COCO counterpart's weights are reused.

    Integer keys on purpose: GluonCV's ``reset_class`` pops string keys while iterating the dict, which
    raises on Python 3.8+.
    """
    from gluoncv.data import COCODetection
    coco = list(COCODetection.CLASSES)
    return {index: coco.index(COCO_CLASS_FOR_CATEGORY[cid])
            for index, cid in enumerate(category_ids) if cid in COCO_CLASS_FOR_CATEGORY}


def apply_limits(net, rpn_train_pre_nms: Optional[int] = None, rpn_train_post_nms: Optional[int] = None,
                 rcnn_num_sample: Optional[int] = None, rpn_test_pre_nms: Optional[int] = None,
                 rpn_test_post_nms: Optional[int] = None, rcnn_max_dets: Optional[int] = None,
                 max_num_gt: Optional[int] = None, rcnn_pos_ratio: Optional[float] = None) -> Dict[str, float]:
    """Bound the proposal and RoI counts of a freshly built (not yet run) GluonCV Mask R-CNN.

    The zoo builders hard-code these (12000/2000 proposals, 128-512 RoIs), which is what makes a CPU or
    small-memory run slow; GluonCV has no API to change them (``compat.set_rpn_budgets``). ``rcnn_pos_ratio``:
    the largest fraction of the sampled RoIs that may be positives (GluonCV's ``pos_ratio``, 0.25); the
    positives are also the RoIs the mask head trains on. Returns the values in effect.
    """
    for flag, value in (("--rpn-train-pre-nms", rpn_train_pre_nms), ("--rpn-train-post-nms", rpn_train_post_nms),
                        ("--rcnn-num-sample", rcnn_num_sample), ("--rpn-test-pre-nms", rpn_test_pre_nms),
                        ("--rpn-test-post-nms", rpn_test_post_nms), ("--rcnn-max-dets", rcnn_max_dets),
                        ("--max-num-gt", max_num_gt)):
        if value is not None and int(value) < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if rcnn_pos_ratio is not None and not 0.0 < float(rcnn_pos_ratio) <= 1.0:
        raise UserError(f"--rcnn-pos-ratio must be in (0, 1], got {rcnn_pos_ratio}")
    current = rpn_budgets(net)
    train_pre = current.rpn_train_pre_nms if rpn_train_pre_nms is None else int(rpn_train_pre_nms)
    train_post = min(current.rpn_train_post_nms if rpn_train_post_nms is None else int(rpn_train_post_nms),
                     train_pre)
    num_sample = current.rcnn_num_sample if rcnn_num_sample is None else int(rcnn_num_sample)
    pos_ratio = (current.rcnn_max_pos / float(current.rcnn_num_sample) if rcnn_pos_ratio is None
                 else float(rcnn_pos_ratio))
    if num_sample > train_post:
        raise UserError(f"--rcnn-num-sample {num_sample} RoIs cannot be drawn from "
                        f"{train_post} proposals (--rpn-train-post-nms): raise the proposals or "
                        "lower the RoIs")
    test_pre = current.rpn_test_pre_nms if rpn_test_pre_nms is None else int(rpn_test_pre_nms)
    test_post = min(current.rpn_test_post_nms if rpn_test_post_nms is None else int(rpn_test_post_nms), test_pre)
    max_dets = min(current.rcnn_max_dets if rcnn_max_dets is None else int(rcnn_max_dets), test_post)
    set_rpn_budgets(net, RpnBudgets(
        rpn_train_pre_nms=train_pre, rpn_train_post_nms=train_post, rpn_test_pre_nms=test_pre,
        rpn_test_post_nms=test_post, rcnn_num_sample=num_sample,
        rcnn_max_pos=max(1, int(round(num_sample * pos_ratio))),
        max_num_gt=current.max_num_gt if max_num_gt is None else int(max_num_gt), rcnn_max_dets=max_dets))
    budgets = rpn_budgets(net)
    return {"rpn_train_pre_nms": budgets.rpn_train_pre_nms, "rpn_train_post_nms": budgets.rpn_train_post_nms,
            "rcnn_num_sample": budgets.rcnn_num_sample, "rpn_test_pre_nms": budgets.rpn_test_pre_nms,
            "rpn_test_post_nms": budgets.rpn_test_post_nms, "rcnn_max_dets": budgets.rcnn_max_dets,
            "max_num_gt": budgets.max_num_gt, "rcnn_pos_ratio": budgets.rcnn_max_pos / float(budgets.rcnn_num_sample)}


#: Channels x bins of the smallest RoI output an FPN Mask R-CNN pools (256 x 7 x 7 for the box head): the most
#: RoIs one pooling call may hold before the stray writes of MXNet's CPU ``ROIAlign`` (below) pass the anchor RoI.
FPN_MAX_ROIS_PER_CALL = 256 * 7 * 7 - 1


def _pyramid_roi_align(F, features, rpn_rois, roi_size, strides, min_stage: int, max_stage: int,
                       roi_canonical_scale: float = 224.0, sampling_ratio: int = 2, eps: float = 1e-6):
    """FPN RoIAlign as GluonCV's ``FasterRCNN._pyramid_roi_feats``, for CPU contexts
    (installed by ``compat.replace_fpn_roi_pooling``): each RoI is pooled once, at its own level.

    GluonCV gives the RoIs of other levels batch index -1 so that ``ROIAlign`` skips them, and on CPU that
    skip saves the work (measured: a quarter of the RoIs valid takes 0.28x the time of all valid). But MXNet
    1.9.1's CPU kernel then leaves the skipped RoIs' outputs uninitialised (garbage, NaN, 1e34) and writes a
    stray 0 at flat output index i for each skipped RoI i, i.e. into the first RoIs' features. So each level's
    call gets one always-valid anchor RoI in front, whose output absorbs the stray zeros (it holds
    channels x bins values, more than the RoIs of any call: ``FPN_MAX_ROIS_PER_CALL``) and is dropped, and
    ``where`` keeps only the RoIs of the level (NaN-safe, unlike a multiplication). The gradient is that of
    pooling each RoI at its level (tests/test_fpn_pooling.py).
    """
    max_stage = max_stage - 1 if max_stage > 5 else max_stage  # P6 is for the RPN only
    batch_ids, x1, y1, x2, y2 = F.split(rpn_rois, axis=-1, num_outputs=5)
    scale = F.sqrt((x2 - x1 + 1) * (y2 - y1 + 1))
    roi_level = F.clip(F.floor(4 + F.log2(scale / roi_canonical_scale + eps)), min_stage, max_stage)
    anchor = F.zeros_like(F.slice_axis(rpn_rois, axis=0, begin=0, end=1))  # batch 0, box (0, 0, 0, 0)
    skipped = F.ones_like(batch_ids) * -1
    pooled = []
    for i, level in enumerate(range(min_stage, max_stage + 1)):
        at_level = roi_level == level
        level_rois = F.concat(anchor, F.concat(F.where(at_level, batch_ids, skipped), x1, y1, x2, y2, dim=-1),
                              dim=0)
        feat = F.contrib.ROIAlign(features[i], level_rois, roi_size, 1.0 / strides[i], sample_ratio=sampling_ratio)
        feat = F.slice_axis(feat, axis=0, begin=1, end=None)
        pooled.append(F.where(F.squeeze(at_level, axis=-1), feat, F.zeros_like(feat)))
    return F.ElementWiseSum(*pooled)


def _contexts(ctx: Context) -> List[mx.Context]:
    if ctx is None:
        return [mx.cpu()]
    return list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]


def build_mask_rcnn(model_name: str, classes: Iterable[ClassSpec], pretrained: bool = True, ctx: Context = None,
                    per_device_batch_size: int = 1, pretrained_weights: Optional[str] = None,
                    root: Optional[str] = None, verify_weights: bool = True,
                    attributes: Optional[Iterable[ClassSpec]] = None, **limits) -> mx.gluon.HybridBlock:
    """A GluonCV Mask R-CNN (``model_name`` of the zoo, e.g. ``mask_rcnn_resnet50_v1b_coco``) for ``classes``.

    ``classes``: Kaggle category ids (or ``{"id", "name"}`` dicts) in label order. ``pretrained``: start from
    the COCO weights of GluonCV's model store (UserError naming the file when absent; nothing is downloaded);
    ``pretrained_weights``: a COCO ``.params`` file to use instead. Without either, random initialisation
    (:class:`models.initialization.ScratchInit` where GluonCV sets no initialiser of its own).
    ``verify_weights``: check the model-store file's sha1 (GluonCV's own check, which would otherwise try a
    download). ``limits``: see :func:`apply_limits`. The net gets ``category_ids`` and ``limits`` attributes.
    ``attributes``: attribute ids (or ``{"id", "name"}``) to predict per detection (:class:`AttributeHead`,
    ``compat.add_attribute_output``); the net's ``attributes`` is that table, or None.
    """
    from gluoncv.model_zoo import get_model

    table = class_table(classes)
    contexts = _contexts(ctx)
    unknown = set(limits) - set(LIMIT_KEYS)
    if unknown:
        raise TypeError(f"unknown Mask R-CNN limits {sorted(unknown)}; known: {LIMIT_KEYS}")
    weights = None
    if pretrained_weights:
        weights = Path(pretrained_weights)
        if not weights.is_file():
            raise UserError(f"--pretrained-weights {weights}: no such file")
    elif pretrained:
        weights = require_pretrained([model_name], root=root, verify=verify_weights)[0]
    try:
        net = get_model(model_name, pretrained=False, pretrained_base=False,
                        per_device_batch_size=int(per_device_batch_size))
    except ValueError as exc:
        raise UserError(f"cannot build {model_name}: {exc}") from None
    in_effect = apply_limits(net, **limits)
    if net.num_stages > 1 and any(c.device_type == "cpu" for c in contexts):
        per_call = int(per_device_batch_size) * max(in_effect["rcnn_num_sample"], in_effect["rpn_test_post_nms"])
        if per_call > FPN_MAX_ROIS_PER_CALL:
            raise UserError(f"an FPN Mask R-CNN on CPU pools at most {FPN_MAX_ROIS_PER_CALL} RoIs per device at "
                            f"once; {per_device_batch_size} image(s) per device x {per_call // per_device_batch_size} "
                            "RoIs is more: lower --batch-size, --rcnn-num-sample or --rpn-test-post-nms")
        replace_fpn_roi_pooling(net, _pyramid_roi_align)
    initialize_params(net.collect_params(), contexts, force=False)
    reuse = None
    if weights is not None:
        copied, skipped = load_state_matching(net, str(weights), contexts, log=log.info)
        if not copied or len(skipped) > len(copied) // 10:
            raise UserError(f"{weights} does not hold {model_name} weights: only {len(copied)} of "
                            f"{len(copied) + len(skipped)} parameters match by name and shape")
        reuse = coco_reuse_map([c["id"] for c in table])
        log.info("COCO weights %s; class rows reused: %s", weights.name,
                 ", ".join(f"{table[k]['name']} <- {net.classes[v]}" for k, v in reuse.items()) or "none")
    net.reset_class([c["name"] for c in table], reuse_weights=reuse or None)
    _ = net.target_generator  # created lazily by GluonCV; create it now so checkpoints always hold its params
    net.attributes = None
    if attributes is not None:
        net.attributes = attribute_table(attributes)
        if not net.attributes:
            raise UserError("an attribute model needs at least one attribute")
        add_attribute_output(net, lambda: AttributeHead(len(net.attributes)))
        net.attribute.initialize(mx.init.Xavier(), ctx=contexts)
    net.collect_params().reset_ctx(contexts)
    net.category_ids = tuple(c["id"] for c in table)
    net.limits = in_effect
    return net


def attribute_targets(gt_attributes: mx.nd.NDArray, matches: mx.nd.NDArray, cls_targets: mx.nd.NDArray,
                      indices: mx.nd.NDArray) -> Tuple[mx.nd.NDArray, mx.nd.NDArray]:
    """Targets of the attribute output in training: per image, the RoIs at ``indices`` (those the mask and
    attribute heads see) get the multi-hot of the ground truth they were matched to.

    ``gt_attributes`` (B, M, A): each ground truth's multi-hot (the label's columns after the class, padded rows
    -1); ``matches`` (B, N) and ``cls_targets`` (B, N): the network's training outputs for its N sampled RoIs
    (matched ground truth; class, 0 background, -1 ignored); ``indices`` (B, P). Returns targets (B, P, A) and
    weights (B, P, 1): 1 for a foreground RoI, 0 for a background one (whose match means nothing)."""
    targets, weights = [], []
    for i in range(indices.shape[0]):
        chosen = indices[i]
        matched = mx.nd.relu(mx.nd.take(matches[i], chosen))  # -1 (no match) -> 0: weighted out below
        targets.append(mx.nd.take(gt_attributes[i], matched))
        weights.append((mx.nd.take(cls_targets[i], chosen) > 0).expand_dims(-1))
    return mx.nd.stack(*targets), mx.nd.stack(*weights)


def trainable_params(net, pretrained: bool):
    """The parameters to train: GluonCV's fine-tuning set (``collect_train_params``: stem, first stage and
    BatchNorm frozen) when starting from weights, plus the attribute head if any (new, so never frozen);
    every parameter for random initialisation, where frozen layers would stay random for good (the trainer then
    also lets BatchNorm learn its statistics: ``models.batchnorm.learn_batchnorm_statistics``)."""
    if not pretrained:
        return net.collect_params()
    params = net.collect_train_params()
    if getattr(net, "attributes", None):
        params.update(net.attribute.collect_params())
    return params


def checkpoint_meta(model_name: str, classes: Iterable[ClassSpec], short: int, max_size: int,
                    limits: Mapping[str, float], **extra) -> Dict:
    """The description stored beside every checkpoint, from which :func:`load_mask_rcnn` rebuilds the net."""
    meta = {"task": TASK, "model": model_name, "classes": class_table(classes),
            "build_kwargs": {k: (float(v) if k == "rcnn_pos_ratio" else int(v))
                             for k, v in limits.items() if k in LIMIT_KEYS and v is not None},
            "image_scale": {"short": int(short), "max_size": int(max_size)}}
    meta.update(extra)
    return meta


def add_test_budget_flags(group, defaults: Optional[Mapping[str, int]] = None) -> None:
    """``--rpn-test-pre-nms``, ``--rpn-test-post-nms``, ``--rcnn-max-dets`` on an argparse parser or group.

    ``defaults``: the trainers' (``DEFAULT_TEST_BUDGETS``, recorded in the checkpoints they write); None for the
    tools that load a checkpoint, where an absent flag keeps the checkpoint's value."""
    for key in TEST_BUDGET_KEYS:
        default = None if defaults is None else int(defaults[key])
        group.add_argument("--" + key.replace("_", "-"), type=int, default=default,
                           help=_TEST_BUDGET_HELP[key] + ("" if default is not None else "; absent: the checkpoint's"))


def test_budgets_from(args) -> Dict[str, Optional[int]]:
    """The test-time budget flags of parsed ``args`` (None where absent), for ``load_mask_rcnn``/``load_model``."""
    return {key: getattr(args, key, None) for key in TEST_BUDGET_KEYS}


def load_mask_rcnn(params_path: str, ctx: Context = None, hybridize: bool = True,
                   test_budgets: Optional[Mapping[str, Optional[int]]] = None) -> Tuple[mx.gluon.HybridBlock, Dict]:
    """Network and checkpoint description from a checkpoint alone (``.params`` with its ``.json``).

    A checkpoint whose description lists ``attributes`` gives a net that predicts them (``net.attributes``);
    one without (every checkpoint before issue 17) a net without (``net.attributes`` None).

    The test-time budgets are the checkpoint's; ``test_budgets`` overrides any of ``TEST_BUDGET_KEYS``
    (None: keep)."""
    meta = read_checkpoint_meta(params_path)
    if meta.get("task") != TASK:
        raise UserError(f"{params_path} is a {meta.get('task')!r} checkpoint, not a Mask R-CNN one")
    limits = {k: v for k, v in (meta.get("build_kwargs") or {}).items() if k in LIMIT_KEYS}
    unknown = set(test_budgets or {}) - set(TEST_BUDGET_KEYS)
    if unknown:
        raise TypeError(f"unknown test-time budgets {sorted(unknown)}; known: {TEST_BUDGET_KEYS}")
    limits.update({k: int(v) for k, v in (test_budgets or {}).items() if v is not None})
    net = build_mask_rcnn(meta["model"], meta["classes"], pretrained=False, ctx=ctx,
                          attributes=meta.get("attributes"), **limits)
    load_checkpoint_weights(net, params_path, ctx=_contexts(ctx), meta=meta)
    if hybridize:
        net.hybridize()
    return net, meta


def image_scale(meta: Mapping) -> Tuple[int, int]:
    """(short, max_size) a checkpoint was trained at."""
    scale = meta.get("image_scale") or {}
    return int(scale.get("short", 800)), int(scale.get("max_size", 1333))


# ----------------------------------------------------------------------------------------------- inference
def network_input(image_rgb: np.ndarray, short: int, max_size: int,
                  orig_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Normalised float32 ``3 x h x w`` network input of an RGB image at the test scale ``short``/``max_size``.

    ``orig_size``: (h, w) of the photo when ``image_rgb`` is a reduced decode of it; the input size always
    follows the photo's size (:func:`transforms.instance.scaled_size`).
    """
    return MaskRCNNValTransform(short, max_size)(image_rgb, orig_size=orig_size)


def read_network_input(path: PathLike, short: int, max_size: int, size: Tuple[int, int],
                       full_image: Optional[np.ndarray] = None, source: str = "the annotations") -> np.ndarray:
    """:func:`network_input` of the image file ``path`` of ``size`` (h, w), decoded as validation decodes it:
    a JPEG at the smallest 1/2^k DCT scale covering the input size (``images.read_rgb_at_least``).

    ``full_image``: the file's full decode, if the caller holds it, used where no reduced decode applies.
    UserError when the file's pixels are not ``size`` (as ``source`` records it).
    """
    in_h, in_w = scaled_size(size[0], size[1], short, max_size)
    image = read_rgb_at_least(path, size[0], size[1], in_h, in_w, source=source, full=full_image)
    return network_input(image, short, max_size, orig_size=size)


def anchor_count(net, height: int, width: int) -> int:
    """RPN anchors of a GluonCV (Mask/Faster) R-CNN on an ``height x width`` input: every feature cell
    (``ceil(side / stride)`` per level, C4 or FPN) times the anchors per cell. The RPN keeps at most this many
    proposals, so ``rpn_*_post_nms`` above it cannot be met by an input of that size."""
    strides = feature_strides(net)
    generators = net.rpn.anchor_generator
    generators = list(generators) if isinstance(generators, mx.gluon.nn.HybridSequential) else [generators]
    return sum(math.ceil(height / stride) * math.ceil(width / stride) * generator.num_depth
               for stride, generator in zip(strides, generators))


def padded_for_proposals(net, height: int, width: int, proposals: int) -> Tuple[int, int]:
    """The smallest input size, growing ``height x width`` at the bottom and right by the coarsest stride,
    whose anchors are at least ``proposals``."""
    step = max(feature_strides(net))
    while anchor_count(net, height, width) < proposals:
        height, width = height + step, width + step
    return height, width


def run_network(net, batch: mx.nd.NDArray):
    """Start inference on normalised images ``(N, 3, h, w)`` and return the raw outputs without waiting for
    them (MXNet runs asynchronously: start every device before reading any back with :func:`decode_outputs`).

    An input with fewer anchors than the RPN keeps proposals (``rpn_test_post_nms``; a small ``--short``)
    would make GluonCV's RPN fail; it is padded with zeros at the bottom and right instead, which leaves the
    image's pixel coordinates, and so every box, as they are.
    """
    height, width = batch.shape[2:]
    padded_h, padded_w = padded_for_proposals(net, height, width, net.rpn.get_test_post_nms())
    if (padded_h, padded_w) != (height, width):
        batch = mx.nd.pad(batch, mode="constant", constant_value=0,
                          pad_width=(0, 0, 0, 0, 0, padded_h - height, 0, padded_w - width))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_UNUSED_TARGET_PARAMS, category=UserWarning)
        return net(batch)


def forward(net, batch: mx.nd.NDArray) -> Tuple[np.ndarray, ...]:
    """Inference on one normalised image ``(1, 3, h, w)``: see :func:`decode_outputs`."""
    return decode_outputs(run_network(net, batch))


def decode_outputs(outputs) -> Tuple[np.ndarray, ...]:
    """Network outputs for one image -> ids (N,), scores (N,), boxes (N, 4) in input pixels, mask
    probabilities (N, M, M) and, from a net with attributes, attribute probabilities (N, A), as NumPy, padded
    rows (id -1) removed."""
    ids, scores, boxes, masks = outputs[:4]
    ids, scores = ids[0, :, 0].asnumpy(), scores[0, :, 0].asnumpy()
    keep = np.flatnonzero(ids >= 0)
    decoded = (ids[keep].astype(np.int64), scores[keep], boxes[0].asnumpy()[keep], masks[0].asnumpy()[keep])
    if len(outputs) > 4:
        decoded += (outputs[4][0].asnumpy()[keep],)
    return decoded


def paste_mask(prob: np.ndarray, box: Sequence[float], out_height: int, out_width: int,
               mask_threshold: float = MASK_THRESHOLD) -> Tuple[Dict, np.ndarray]:
    """Paste an M x M mask probability map into its box on an ``out_height x out_width`` grid.

    As GluonCV's ``mask.fill``: the map is padded by one pixel and the box enlarged to match, resized
    bilinearly and kept where the probability exceeds ``mask_threshold`` (GluonCV: 0.5). Returns (COCO RLE,
    clipped integer box of the pasted region). Only the box region is ever allocated.
    """
    m_h, m_w = prob.shape
    padded = np.pad(prob.astype(np.float32), 1)
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w = (x2 - x1) / 2 * (m_w + 2) / m_w
    half_h = (y2 - y1) / 2 * (m_h + 2) / m_h
    bx1, by1 = int(round(cx - half_w)), int(round(cy - half_h))
    bx2, by2 = int(round(cx + half_w)), int(round(cy + half_h))
    width, height = max(bx2 - bx1 + 1, 1), max(by2 - by1 + 1, 1)
    # PIL's bilinear filter (antialiased when shrinking) is what GluonCV's fill uses.
    resized = np.asarray(Image.fromarray(padded, mode="F").resize((width, height), Image.BILINEAR)) > mask_threshold
    cx1, cy1 = max(bx1, 0), max(by1, 0)
    cx2, cy2 = min(bx1 + width, out_width), min(by1 + height, out_height)
    if cx2 > cx1 and cy2 > cy1:
        region = resized[cy1 - by1:cy2 - by1, cx1 - bx1:cx2 - bx1]
    else:  # box entirely off the grid
        region = np.zeros((0, 0), dtype=bool)
    return _region_rle(region, cy1, cx1, out_height, out_width), np.array([cx1, cy1, cx2, cy2])


def _region_rle(region: np.ndarray, top: int, left: int, height: int, width: int) -> Dict:
    """COCO RLE of an ``height x width`` mask that is zero outside ``region`` placed at (top, left)."""
    rows, cols = region.shape
    if region.size == 0 or not region.any():
        return runs_to_coco(np.zeros(0, np.int64), np.zeros(0, np.int64), height, width)
    # A zero row under each column keeps runs from spanning two columns of the region.
    flat = np.zeros((rows + 1, cols), dtype=np.int8)
    flat[:rows] = region
    flat = flat.ravel(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    starts, ends = edges[0::2], edges[1::2]
    col, row = np.divmod(starts, rows + 1)
    full_starts = (left + col).astype(np.int64) * height + top + row
    return runs_to_coco(full_starts, (ends - starts).astype(np.int64), height, width)


def instances_from_outputs(ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray, masks: np.ndarray,
                           input_size: Tuple[int, int], out_size: Tuple[int, int], category_ids: Sequence[int],
                           score_threshold: float = 0.05, max_detections: int = 100,
                           mask_threshold: float = MASK_THRESHOLD, attribute_probs: Optional[np.ndarray] = None,
                           attribute_ids: Optional[Sequence[int]] = None) -> List[Instance]:
    """Network outputs on an ``input_size`` (h, w) image -> instances on the ``out_size`` (h, w) grid.

    The one rule for every grid (module docstring): boxes scaled to ``out_size``, mask probabilities pasted
    straight into them there. Detections scoring ``>= score_threshold``, best first, at most ``max_detections``.
    ``attribute_probs`` (N, A) with the ``attribute_ids`` of its columns: each instance's ``attributes``.
    """
    in_h, in_w = input_size
    out_h, out_w = out_size
    scale = np.array([out_w / in_w, out_h / in_h, out_w / in_w, out_h / in_h], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= score_threshold][:max_detections]
    results = []
    for i in order:
        box = boxes[i].astype(np.float64) * scale
        box[0::2] = np.clip(box[0::2], 0, out_w)
        box[1::2] = np.clip(box[1::2], 0, out_h)
        rle, _ = paste_mask(masks[i], box, out_h, out_w, mask_threshold)
        attributes = (None if attribute_probs is None else
                      {int(a): float(p) for a, p in zip(attribute_ids, attribute_probs[i])})
        results.append(Instance(int(category_ids[int(ids[i])]), float(scores[i]), box, rle, attributes))
    return results


def net_attribute_ids(net) -> Optional[List[int]]:
    """Attribute ids a net predicts, in its output order; None for a net without attributes."""
    table = getattr(net, "attributes", None)
    return None if table is None else [a["id"] for a in table]


def outputs_to_instances(net, outputs: Sequence[np.ndarray], input_size: Tuple[int, int], out_size: Tuple[int, int],
                         category_ids: Optional[Sequence[int]] = None, **options) -> List[Instance]:
    """:func:`decode_outputs` of ``net`` -> :func:`instances_from_outputs`, with attributes when it has them."""
    if category_ids is None:
        category_ids = getattr(net, "category_ids", None) or tuple(range(len(net.classes)))
    ids, scores, boxes, masks = outputs[:4]
    attribute_probs = outputs[4] if len(outputs) > 4 else None
    return instances_from_outputs(ids, scores, boxes, masks, input_size, out_size, category_ids,
                                  attribute_probs=attribute_probs, attribute_ids=net_attribute_ids(net), **options)


def predict_instances(net, image_rgb: np.ndarray, short: int, max_size: int, ctx: Optional[mx.Context] = None,
                      score_threshold: float = 0.05, out_size: Optional[Tuple[int, int]] = None,
                      max_detections: int = 100, category_ids: Optional[Sequence[int]] = None,
                      mask_threshold: float = MASK_THRESHOLD) -> List[Instance]:
    """Detect garments in one (fully decoded) RGB image, resized to ``short``/``max_size`` for the network.

    Boxes and masks are on the original image's grid, or on ``out_size`` (h, w) if given (e.g. (512, 512)
    for the resized validation annotations). Sorted by score, at most ``max_detections``.
    """
    data = network_input(image_rgb, short, max_size)
    outputs = forward(net, mx.nd.array(data[None], ctx=ctx or mx.cpu()))
    return outputs_to_instances(net, outputs, data.shape[1:], out_size or image_rgb.shape[:2], category_ids,
                                score_threshold=score_threshold, max_detections=max_detections,
                                mask_threshold=mask_threshold)


def to_coco_results(image_id: int, instances: Iterable[Instance],
                    attribute_threshold: float = ATTRIBUTE_THRESHOLD) -> List[Dict]:
    """COCO results entries (bbox as x, y, w, h) of one image's instances. An instance with attributes also
    gets ``attribute_ids`` (those of probability >= ``attribute_threshold``) and ``attribute_scores``
    (``{"id": probability}`` of every attribute, which the attribute metrics rank)."""
    results = []
    for inst in instances:
        entry = {"image_id": int(image_id), "category_id": inst.category_id, "score": round(inst.score, 5),
                 "bbox": [round(float(inst.box[0]), 2), round(float(inst.box[1]), 2),
                          round(float(inst.box[2] - inst.box[0]), 2), round(float(inst.box[3] - inst.box[1]), 2)],
                 "segmentation": inst.rle}
        if inst.attributes is not None:  # the ids from the written probabilities, so the file agrees with itself
            entry["attribute_scores"] = {str(a): round(p, 4) for a, p in inst.attributes.items()}
            entry["attribute_ids"] = predicted_attributes(entry["attribute_scores"], attribute_threshold)
        results.append(entry)
    return results


def predicted_attributes(probabilities: Mapping, threshold: float = ATTRIBUTE_THRESHOLD) -> List[int]:
    """Sorted attribute ids whose probability (``{id: p}``, ids as int or str) is at least ``threshold``."""
    return sorted(int(a) for a, p in probabilities.items() if float(p) >= threshold)
