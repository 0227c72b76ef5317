"""Mask R-CNN inference tuned for the competition: test-time augmentation, checkpoint ensembles and
post-processing whose thresholds are searched on the competition metric (``tools/tune_postprocess.py``; the
``--postprocess``, ``--tta`` and several ``--weights`` of tools/predict.py and tools/write_submission.py).

One rule per image, the same in the tuner, predict.py and write_submission.py:

1. **Passes.** Every checkpoint (an ensemble) x every test scale (the checkpoint's own short side, or the
   ``--tta-scales`` short sides, the long-side cap scaled alike) x, with ``--tta flip``, the image and its
   mirror image. A pass gives the network's detections (after GluonCV's own per-class NMS at IoU 0.5 and
   its cap on detections) with their soft M x M mask probabilities; mirrored passes are mapped back (boxes
   mirrored, masks flipped) and every box is put in the photo's pixel frame. Detections scoring under
   :data:`SCORE_FLOOR` are not kept.
2. **Merge** (only with more than one pass). Per category, detections are visited best first; each joins
   the first cluster whose leader's box overlaps its box with IoU > :data:`MERGE_IOU` and which has no
   detection of its pass yet, or starts one. A cluster becomes one detection: its box the score-weighted
   mean of its boxes, its score the sum of its scores over the number of passes (weighted box fusion's
   rule: agreement between passes counts; the tuned score threshold absorbs the scale), its mask the mean
   of its soft masks, each resampled into the merged box, its attribute probabilities (a model with
   attributes) the score-weighted mean of its detections'. A detection found by one pass alone survives,
   with its score divided by the number of passes.
3. **Post-processing** (:class:`PostprocessSettings`): greedy NMS by box IoU within a category, then
   across categories (both optional), then the mask threshold and minimum mask area (pixels of the mask
   pasted on the 512 x 512 competition grid), the score threshold (one, or one per category), and the best
   ``max_detections`` survivors. Masks are pasted into their boxes on the output grid by the one rule of
   ``models.mask_rcnn`` (``paste_mask``).

With one pass and the default settings this is exactly what predict.py did without these options.

**The search** (:class:`MetricCache`, :func:`search`). The tuner predicts the val images once and keeps
step 1-2's detections (boxes, scores, categories, soft masks as float16 M x M maps: 1.6 KB a detection).
For each mask threshold it pastes every detection once, and keeps its area and its IoU with every
ground-truth mask of its (image, category) pair. The competition's greedy matching visits predictions best
first, so one matching of all surviving predictions gives, by cumulative sums, the score of every score
threshold and detection limit (``evaluation.kaggle_metric.greedy_true_positives``): a setting costs a few
vectorised passes over the detections, and the metric equals ``kaggle_evaluate`` on the same predictions
written out (checked by the tests and at the end of every tuning run). A model with attributes then gets
its attribute threshold tuned on the Fashionpedia AP (``evaluation.attributes``) under the tuned settings.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import UserError
from .fileio import atomic_write_json

PathLike = Union[str, Path]
log = logging.getLogger(__name__)

SCHEMA = "gluon_fashion.postprocess/1"
KAGGLE_GRID = (512, 512)
#: Detections under this score are dropped when a pass is read (no tuned threshold goes this low).
SCORE_FLOOR = 0.01
#: Box IoU above which detections of two passes are taken for one instance.
MERGE_IOU = 0.55
TTA_CHOICES = ("flip",)


# ------------------------------------------------------------------------------------------- settings
@dataclass
class PostprocessSettings:
    """What is done to an image's detections before they are written (module docstring, step 3)."""

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_detections: int = 100
    #: greedy NMS by box IoU within a category; None: only the network's own (IoU 0.5)
    nms_iou: Optional[float] = None
    #: greedy NMS by box IoU across categories; None: none
    cross_class_nms_iou: Optional[float] = None
    #: masks with fewer pixels on the 512 x 512 grid are dropped
    min_mask_area: int = 0
    #: category id -> its own score threshold (replaces ``score_threshold`` for that category)
    class_score_thresholds: Dict[int, float] = field(default_factory=dict)
    #: attribute probability from which a detection has an attribute (a model with attributes; None: not tuned,
    #: write_submission.py's default)
    attribute_threshold: Optional[float] = None

    def check(self, source: str = "settings") -> "PostprocessSettings":
        """UserError naming ``source`` and the key for any value out of range; returns self."""
        def bad(key, value, wanted):
            raise UserError(f"{source}: {key} {value!r} must be {wanted}")

        if not 0.0 <= self.score_threshold <= 1.0:
            bad("score_threshold", self.score_threshold, "in [0, 1]")
        if not 0.0 < self.mask_threshold < 1.0:
            bad("mask_threshold", self.mask_threshold, "strictly between 0 and 1")
        if int(self.max_detections) < 1:
            bad("max_detections", self.max_detections, ">= 1")
        for key in ("nms_iou", "cross_class_nms_iou"):
            value = getattr(self, key)
            if value is not None and not 0.0 < value <= 1.0:
                bad(key, value, "in (0, 1] or null")
        if int(self.min_mask_area) < 0:
            bad("min_mask_area", self.min_mask_area, ">= 0")
        for cid, value in self.class_score_thresholds.items():
            if not 0.0 <= value <= 1.0:
                bad(f"class_score_thresholds[{cid}]", value, "in [0, 1]")
        if self.attribute_threshold is not None and not 0.0 < self.attribute_threshold < 1.0:
            bad("attribute_threshold", self.attribute_threshold, "strictly between 0 and 1, or null")
        return self

    def threshold_for(self, category_ids: np.ndarray) -> np.ndarray:
        """The score threshold of each detection of ``category_ids``."""
        out = np.full(len(category_ids), self.score_threshold, dtype=np.float64)
        for cid, value in self.class_score_thresholds.items():
            out[np.asarray(category_ids) == cid] = value
        return out

    def as_dict(self) -> Dict:
        """JSON-ready form (category ids as string keys)."""
        return {"score_threshold": self.score_threshold, "mask_threshold": self.mask_threshold,
                "max_detections": int(self.max_detections), "nms_iou": self.nms_iou,
                "cross_class_nms_iou": self.cross_class_nms_iou, "min_mask_area": int(self.min_mask_area),
                "class_score_thresholds": {str(k): v for k, v in sorted(self.class_score_thresholds.items())},
                "attribute_threshold": self.attribute_threshold}

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "settings") -> "PostprocessSettings":
        """Settings from :meth:`as_dict`'s form; UserError naming ``source`` and the key when malformed."""
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: settings must be an object, got {type(data).__name__}")
        known = set(cls().as_dict())
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        kwargs = {}
        try:
            for key in ("score_threshold", "mask_threshold"):
                if key in data:
                    kwargs[key] = float(data[key])
            for key in ("max_detections", "min_mask_area"):
                if key in data:
                    if isinstance(data[key], bool) or float(data[key]) != int(data[key]):
                        raise ValueError(key)
                    kwargs[key] = int(data[key])
            for key in ("nms_iou", "cross_class_nms_iou", "attribute_threshold"):
                if key in data:
                    kwargs[key] = None if data[key] is None else float(data[key])
            if "class_score_thresholds" in data:
                kwargs["class_score_thresholds"] = {int(k): float(v)
                                                    for k, v in dict(data["class_score_thresholds"]).items()}
        except (TypeError, ValueError) as exc:
            raise UserError(f"{source}: malformed setting ({exc}): {dict(data)}") from None
        return cls(**kwargs).check(source)


@dataclass
class Tta:
    """Test-time augmentation: ``scales`` (short sides; empty: the checkpoint's own) and a mirrored pass."""

    flip: bool = False
    scales: Tuple[int, ...] = ()

    def as_dict(self) -> Dict:
        return {"flip": self.flip, "scales": list(self.scales)}

    @classmethod
    def from_flags(cls, tta: Optional[Sequence[str]] = None, scales: Optional[str] = None) -> "Tta":
        """From ``--tta flip`` (a list of choices) and ``--tta-scales 600,800`` (UserError when malformed)."""
        tta = [t for item in (tta or []) for t in str(item).split(",") if t]
        unknown = [t for t in tta if t not in TTA_CHOICES]
        if unknown:
            raise UserError(f"--tta {','.join(unknown)}: unknown augmentation; choices: {', '.join(TTA_CHOICES)}")
        parsed: List[int] = []
        for token in (scales or "").split(","):
            token = token.strip()
            if not token:
                continue
            try:
                value = int(token)
            except ValueError:
                raise UserError(f"--tta-scales {scales}: {token!r} is not a whole number of pixels") from None
            if value < 32:
                raise UserError(f"--tta-scales {scales}: short side {value} is too small (at least 32 pixels)")
            parsed.append(value)
        if len(set(parsed)) != len(parsed):
            raise UserError(f"--tta-scales {scales}: a short side is repeated")
        return cls("flip" in tta, tuple(parsed))


@dataclass
class PostprocessFile:
    """What ``postprocess.json`` holds: the settings and how they were tuned."""

    settings: PostprocessSettings
    tta: Tta = field(default_factory=Tta)
    weights: List[Dict] = field(default_factory=list)
    scores: Dict = field(default_factory=dict)
    search: Dict = field(default_factory=dict)
    path: Optional[str] = None

    def as_dict(self) -> Dict:
        return {"schema": SCHEMA, "settings": self.settings.as_dict(), "tta": self.tta.as_dict(),
                "weights": self.weights, "scores": self.scores, "search": self.search}


def write_postprocess(path: PathLike, record: PostprocessFile) -> None:
    """Write ``record`` to ``path`` (atomically)."""
    atomic_write_json(path, record.as_dict(), indent=2)


def read_postprocess(path: PathLike) -> PostprocessFile:
    """Read a file written by :func:`write_postprocess`; UserError naming the file and what is wrong."""
    path = Path(path)
    source = f"--postprocess {path}"
    if not path.is_file():
        raise UserError(f"{source}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{source}: not a JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f"{source}: not a postprocess file (its \"schema\" should be {SCHEMA!r}, as "
                        "tools/tune_postprocess.py writes)")
    if "settings" not in data:
        raise UserError(f"{source}: no \"settings\"")
    settings = PostprocessSettings.from_dict(data["settings"], source)
    tta_data = data.get("tta") or {}
    try:
        tta = Tta(bool(tta_data.get("flip", False)), tuple(int(s) for s in tta_data.get("scales", ())))
    except (TypeError, ValueError, AttributeError):
        raise UserError(f"{source}: malformed \"tta\": {tta_data!r}") from None
    return PostprocessFile(settings, tta, list(data.get("weights") or []), dict(data.get("scores") or {}),
                           dict(data.get("search") or {}), str(path))


def checkpoint_sha1(weights: PathLike) -> str:
    """sha1 of a checkpoint's ``.params`` (as recorded in its ``.json`` when it is there, else computed)."""
    from .engine.checkpoint import checkpoint_base, read_checkpoint_meta

    params = checkpoint_base(str(weights)) + ".params"
    recorded = ((read_checkpoint_meta(params).get("files") or {}).get("params") or {}).get("sha1")
    if recorded:
        return str(recorded)
    digest = hashlib.sha1()
    with open(params, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def warn_if_tuned_elsewhere(record: PostprocessFile, weights: Sequence[PathLike], tta: Tta) -> None:
    """Log a warning when ``record`` was tuned for other checkpoints or another augmentation."""
    tuned = sorted(str(w.get("sha1")) for w in record.weights)
    given = sorted(checkpoint_sha1(w) for w in weights)
    if tuned and tuned != given:
        log.warning("--postprocess %s was tuned for other checkpoint(s) (%s) than --weights; its thresholds may "
                    "not suit these", record.path, ", ".join(str(w.get("path")) for w in record.weights))
    if record.tta != tta:
        log.warning("--postprocess %s was tuned with test-time augmentation %s, not the %s given: merged scores "
                    "differ in scale, so its thresholds may not suit", record.path, record.tta.as_dict(),
                    tta.as_dict())


def add_inference_flags(parser, postprocess: bool = True) -> None:
    """The flags of tools/predict.py, tools/write_submission.py (and, without --postprocess,
    tools/tune_postprocess.py) that this module reads: --postprocess, --tta, --tta-scales, and the Mask R-CNN
    test-time budgets (absent: the checkpoint's)."""
    from .models.mask_rcnn import add_test_budget_flags

    if postprocess:
        parser.add_argument("--postprocess", default=None,
                            help="Mask R-CNN: settings file of tools/tune_postprocess.py (replaces --score-threshold, "
                                 "--mask-threshold and --max-detections)")
    parser.add_argument("--tta", nargs="*", default=[], choices=list(TTA_CHOICES),
                        help="Mask R-CNN test-time augmentation: flip adds a mirrored pass")
    parser.add_argument("--tta-scales", default=None,
                        help="Mask R-CNN: test short sides, e.g. 600,800,1000, one pass each (default: the checkpoint's)")
    add_test_budget_flags(parser)


def inference_options(args) -> Dict:
    """Keyword arguments for ``predict.predict_to_folder``/``write_submission_from_checkpoint`` from parsed
    flags: the thresholds (their defaults where not given), ``postprocess``, ``tta`` and ``test_budgets``. UserError when a
    threshold flag is given together with --postprocess, which sets them all."""
    from .predict import DEFAULT_MASK_THRESHOLD, DEFAULT_MAX_DETECTIONS, DEFAULT_SCORE_THRESHOLD

    flags = (("--score-threshold", "score_threshold", DEFAULT_SCORE_THRESHOLD),
             ("--mask-threshold", "mask_threshold", DEFAULT_MASK_THRESHOLD),
             ("--max-detections", "max_detections", DEFAULT_MAX_DETECTIONS))
    given = [flag for flag, key, _ in flags if getattr(args, key) is not None]
    if args.postprocess and given:
        raise UserError(f"{', '.join(given)} and --postprocess {args.postprocess} both set the thresholds: "
                        "give one or the other")
    options = {key: default if getattr(args, key) is None else getattr(args, key) for _, key, default in flags}
    from .models.mask_rcnn import test_budgets_from

    options.update(postprocess=args.postprocess, tta=Tta.from_flags(args.tta, args.tta_scales),
                   test_budgets=test_budgets_from(args))
    return options


# ----------------------------------------------------------------------------------------- detections
@dataclass
class Detections:
    """One image's detections before post-processing, best first, boxes in the photo's pixel frame ``size``."""

    size: Tuple[int, int]
    category_ids: np.ndarray  # (N,) int64, Kaggle ids
    scores: np.ndarray  # (N,) float32
    boxes: np.ndarray  # (N, 4) float64, x1 y1 x2 y2
    masks: np.ndarray  # (N, M, M) mask probabilities inside each box (float32; float16 in a MetricCache)
    #: (N, A) attribute probabilities of a model with attributes (columns: ``attribute_ids``), else None
    attributes: Optional[np.ndarray] = None
    attribute_ids: Tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> "Detections":
        return Detections(self.size, self.category_ids[index], self.scores[index], self.boxes[index],
                          self.masks[index], None if self.attributes is None else self.attributes[index],
                          self.attribute_ids)

    def attributes_of(self, i: int) -> Optional[Dict[int, float]]:
        """``{attribute id: probability}`` of detection ``i`` (None without attributes)."""
        if self.attributes is None:
            return None
        return {a: float(p) for a, p in zip(self.attribute_ids, self.attributes[i])}

    def sorted(self) -> "Detections":
        """Best first (ties keep their order), the order every step and the metric visit them in."""
        return self.take(np.argsort(-self.scores.astype(np.float64), kind="stable"))

    @classmethod
    def empty(cls, size: Tuple[int, int], mask_size: int = 28) -> "Detections":
        return cls(tuple(size), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4)),
                   np.zeros((0, mask_size, mask_size), np.float32))


def detections_from_outputs(ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray, masks: np.ndarray,
                            input_size: Tuple[int, int], image_size: Tuple[int, int],
                            category_ids: Sequence[int], flipped: bool = False,
                            attributes: Optional[np.ndarray] = None,
                            attribute_ids: Optional[Sequence[int]] = None) -> Detections:
    """One pass's network outputs (``models.mask_rcnn.decode_outputs``; boxes in the ``input_size`` frame,
    mirrored if ``flipped``; ``attributes`` (N, A) with the ids ``attribute_ids`` from a net with attributes)
    as :class:`Detections` in the photo's ``image_size`` frame."""
    in_h, in_w = input_size
    keep = np.flatnonzero(scores >= SCORE_FLOOR)
    boxes = boxes[keep].astype(np.float64)
    masks = masks[keep]
    if flipped:  # a pixel column x of the mirrored input is column in_w - x of the input
        boxes = np.stack([in_w - boxes[:, 2], boxes[:, 1], in_w - boxes[:, 0], boxes[:, 3]], axis=1)
        masks = masks[:, :, ::-1]
    scale = np.array([image_size[1] / in_w, image_size[0] / in_h] * 2)
    boxes = boxes.reshape(-1, 4) * scale
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, image_size[1])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, image_size[0])
    table = np.asarray(category_ids, dtype=np.int64)
    kept_attributes = None if attributes is None else np.asarray(attributes, np.float32)[keep]
    return Detections(tuple(image_size), table[ids[keep].astype(np.int64)], scores[keep].astype(np.float32),
                      boxes, np.ascontiguousarray(masks, dtype=np.float32), kept_attributes,
                      tuple(int(a) for a in attribute_ids or ())).sorted()


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (K, 4), boxes as x1 y1 x2 y2."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms_keep(boxes: np.ndarray, category_ids: np.ndarray, iou: Optional[float],
             across_classes: bool = False) -> np.ndarray:
    """Greedy NMS of detections given best first: bool keep mask. A detection is dropped when a kept one
    before it (of its category, or of any with ``across_classes``) overlaps its box with IoU > ``iou``."""
    keep = np.ones(len(boxes), dtype=bool)
    if iou is None or len(boxes) < 2:
        return keep
    groups = [np.arange(len(boxes))] if across_classes else [np.flatnonzero(category_ids == c)
                                                              for c in np.unique(category_ids)]
    for members in groups:
        if len(members) < 2:
            continue
        overlaps = box_iou(boxes[members], boxes[members]) > iou
        alive = np.ones(len(members), dtype=bool)
        for i in range(len(members)):
            if alive[i]:
                alive[i + 1:] &= ~overlaps[i, i + 1:]
        keep[members] = alive
    return keep


def _interpolation_matrix(src: Tuple[float, float], dst: Tuple[float, float], size: int) -> np.ndarray:
    """(size x size) weights that resample a 1-D mask spanning ``src`` (lo, hi) onto ``size`` cells spanning
    ``dst``: linear between cell centres, zero outside the source span."""
    centres = dst[0] + (np.arange(size) + 0.5) * (dst[1] - dst[0]) / size
    extent = max(src[1] - src[0], 1e-6)
    u = (centres - src[0]) / extent * size - 0.5  # position in source cells
    weights = np.zeros((size, size))
    low = np.floor(u).astype(np.int64)
    frac = u - low
    inside = (u > -0.5) & (u < size - 0.5)
    for index, weight in ((low, 1 - frac), (low + 1, frac)):
        ok = inside & (index >= 0) & (index < size)
        weights[np.flatnonzero(ok), index[ok]] += weight[ok]
    return weights


def resample_mask(mask: np.ndarray, src_box: Sequence[float], dst_box: Sequence[float]) -> np.ndarray:
    """An M x M probability map of ``src_box`` resampled into ``dst_box`` (bilinear; zero outside ``src_box``)."""
    size = mask.shape[0]
    rows = _interpolation_matrix((src_box[1], src_box[3]), (dst_box[1], dst_box[3]), size)
    cols = _interpolation_matrix((src_box[0], src_box[2]), (dst_box[0], dst_box[2]), size)
    return rows @ mask.astype(np.float64) @ cols.T


def merge_passes(passes: Sequence[Detections], iou: float = MERGE_IOU) -> Detections:
    """The detections of several passes over one image merged into one set (module docstring, step 2)."""
    if not passes:
        raise ValueError("merge_passes needs at least one pass")
    if len(passes) == 1:
        return passes[0]
    size = passes[0].size
    cats = np.concatenate([p.category_ids for p in passes])
    scores = np.concatenate([p.scores for p in passes]).astype(np.float64)
    boxes = np.concatenate([p.boxes for p in passes]).astype(np.float64)
    masks = np.concatenate([p.masks for p in passes])
    attribute_ids = passes[0].attribute_ids
    # Attributes survive only when every pass has the same ones (check_ensemble refuses mixed checkpoints).
    with_attributes = all(p.attributes is not None and p.attribute_ids == attribute_ids for p in passes)
    attributes = np.concatenate([p.attributes for p in passes]) if with_attributes else None
    origin = np.concatenate([np.full(len(p), k) for k, p in enumerate(passes)])
    merged_cats, merged_scores, merged_boxes, merged_masks, merged_attributes = [], [], [], [], []
    for category in np.unique(cats):
        members = np.flatnonzero(cats == category)
        members = members[np.argsort(-scores[members], kind="stable")]
        overlaps = box_iou(boxes[members], boxes[members])
        clusters: List[List[int]] = []  # positions in members; the first is the leader
        for i in range(len(members)):
            home = None
            for cluster in clusters:
                if overlaps[cluster[0], i] > iou and origin[members[i]] not in {origin[members[j]] for j in cluster}:
                    home = cluster
                    break
            if home is None:
                clusters.append([i])
            else:
                home.append(i)
        for cluster in clusters:
            index = members[cluster]
            weight = scores[index]
            box = (boxes[index] * weight[:, None]).sum(axis=0) / weight.sum()
            mask = np.mean([resample_mask(masks[j], boxes[j], box) for j in index], axis=0)
            merged_cats.append(category)
            merged_scores.append(min(weight.sum() / len(passes), 1.0))
            merged_boxes.append(box)
            merged_masks.append(mask)
            if attributes is not None:  # weighted as the box: a confident pass says more about the garment
                merged_attributes.append((attributes[index] * weight[:, None]).sum(axis=0) / weight.sum())
    if not merged_cats:
        empty = Detections.empty(size, passes[0].masks.shape[-1])
        if attributes is not None:
            empty.attributes, empty.attribute_ids = np.zeros((0, len(attribute_ids)), np.float32), attribute_ids
        return empty
    return Detections(size, np.asarray(merged_cats, np.int64), np.asarray(merged_scores, np.float32),
                      np.asarray(merged_boxes, np.float64), np.asarray(merged_masks, np.float32),
                      None if attributes is None else np.asarray(merged_attributes, np.float32),
                      attribute_ids if attributes is not None else ()).sorted()


def _grid_boxes(boxes: np.ndarray, frame: Tuple[int, int], grid: Tuple[int, int]) -> np.ndarray:
    """Boxes of the ``frame`` (h, w) pixel frame on the ``grid`` (h, w), clipped to it."""
    scale = np.array([grid[1] / frame[1], grid[0] / frame[0]] * 2)
    out = np.asarray(boxes, np.float64).reshape(-1, 4) * scale
    out[:, 0::2] = np.clip(out[:, 0::2], 0, grid[1])
    out[:, 1::2] = np.clip(out[:, 1::2], 0, grid[0])
    return out


def _paste(mask: np.ndarray, box: np.ndarray, grid: Tuple[int, int], mask_threshold: float) -> Dict:
    from .models.mask_rcnn import paste_mask

    return paste_mask(mask.astype(np.float32), box, grid[0], grid[1], mask_threshold)[0]


def structural_keep(det: Detections, settings: PostprocessSettings) -> np.ndarray:
    """NMS within and across categories (module docstring, step 3), before any threshold."""
    keep = nms_keep(det.boxes, det.category_ids, settings.nms_iou)
    if settings.cross_class_nms_iou is not None:
        kept = np.flatnonzero(keep)
        keep[kept] = nms_keep(det.boxes[kept], det.category_ids[kept], settings.cross_class_nms_iou,
                              across_classes=True)
    return keep


def apply_postprocess(det: Detections, settings: PostprocessSettings, grid: Tuple[int, int]) -> list:
    """The instances (``models.mask_rcnn.Instance``, best first) that ``settings`` keep of ``det``, boxes and
    masks on the ``grid`` (h, w)."""
    from pycocotools import mask as coco_mask

    from .models.mask_rcnn import Instance

    grid = (int(grid[0]), int(grid[1]))
    keep = structural_keep(det, settings) & (det.scores >= settings.threshold_for(det.category_ids))
    on_grid = _grid_boxes(det.boxes, det.size, grid)
    at_kaggle = on_grid if grid == KAGGLE_GRID else _grid_boxes(det.boxes, det.size, KAGGLE_GRID)
    out = []
    for i in np.flatnonzero(keep):
        if len(out) >= settings.max_detections:
            break
        rle = _paste(det.masks[i], on_grid[i], grid, settings.mask_threshold)
        if settings.min_mask_area:
            kaggle_rle = rle if grid == KAGGLE_GRID else _paste(det.masks[i], at_kaggle[i], KAGGLE_GRID,
                                                                  settings.mask_threshold)
            if int(coco_mask.area(kaggle_rle)) < settings.min_mask_area:
                continue
        out.append(Instance(int(det.category_ids[i]), float(det.scores[i]), on_grid[i], rle, det.attributes_of(i)))
    return out


# ----------------------------------------------------------------------------------------- prediction
def check_ensemble(metas: Sequence[Tuple[str, Mapping]], tta: Tta) -> None:
    """Refuse an ensemble (or augmentation) this module cannot merge: tasks other than Mask R-CNN, and
    checkpoints of different class sets (naming both)."""
    several = len(metas) > 1 or tta.flip or bool(tta.scales)
    for weights, meta in metas:
        if meta.get("task") != "mask_rcnn" and several:
            raise UserError(f"--weights {weights}: a {meta.get('task')} checkpoint; several --weights, --tta and "
                            "--tta-scales are for Mask R-CNN checkpoints")
    first_weights, first = metas[0]
    first_attributes = _attribute_ids_of(first)
    for weights, meta in metas[1:]:
        if _attribute_ids_of(meta) != first_attributes:
            raise UserError(f"--weights: {first_weights} and {weights} predict different attributes "
                            f"({len(first_attributes or [])} and {len(_attribute_ids_of(meta) or [])}; none means "
                            "trained without --attributes); an ensemble needs checkpoints with the same ones")
    first_ids = sorted(int(c["id"]) for c in first.get("classes") or [] if isinstance(c, Mapping))
    for weights, meta in metas[1:]:
        ids = sorted(int(c["id"]) for c in meta.get("classes") or [] if isinstance(c, Mapping))
        if ids != first_ids:
            only_first = sorted(set(first_ids) - set(ids))
            only_other = sorted(set(ids) - set(first_ids))
            raise UserError(f"--weights: {first_weights} and {weights} predict different class sets (only in the "
                            f"first: {only_first or 'none'}; only in the second: {only_other or 'none'}); an "
                            "ensemble needs checkpoints of one class set")


def _attribute_ids_of(meta: Mapping) -> Optional[List[int]]:
    table = meta.get("attributes")
    return None if not table else [int(a["id"]) for a in table if isinstance(a, Mapping)]


def pass_plan(model, tta: Tta) -> List[Tuple[int, int, bool]]:
    """(short, max_size, flipped) of every pass of one loaded Mask R-CNN checkpoint."""
    short, max_size = model.scale["short"], model.scale["max_size"]
    scales = [(s, max(s, int(round(max_size * s / short)))) for s in tta.scales] or [(short, max_size)]
    return [(s, m, flip) for s, m in scales for flip in ((False, True) if tta.flip else (False,))]


def predict_detections(models: Sequence, pending: Sequence[Tuple[Path, np.ndarray]],
                       tta: Tta) -> List[Detections]:
    """Merged detections of each (path, image) of ``pending`` (at most one image per context of the first
    model): every pass of every image is started before any result is read back."""
    import mxnet as mx

    from .models.mask_rcnn import decode_outputs, net_attribute_ids, read_network_input, run_network

    started = []
    for slot, (path, image) in enumerate(pending):
        runs = []
        for model in models:
            ctx = model.contexts[slot % len(model.contexts)]
            for short, max_size, flipped in pass_plan(model, tta):
                data = read_network_input(path, short, max_size, image.shape[:2], full_image=image,
                                          source="its full decode")
                if flipped:
                    data = np.ascontiguousarray(data[:, :, ::-1])
                runs.append((model, data.shape[1:], flipped, run_network(model.net, mx.nd.array(data[None], ctx=ctx))))
        started.append((image.shape[:2], runs))
    out = []
    for size, runs in started:
        passes = []
        for model, input_size, flipped, outputs in runs:
            decoded = decode_outputs(outputs)
            passes.append(detections_from_outputs(*decoded[:4], input_size, size, model.category_ids, flipped,
                                                  decoded[4] if len(decoded) > 4 else None,
                                                  net_attribute_ids(model.net)))
        out.append(merge_passes(passes))
    return out


# ------------------------------------------------------------------------------------ metric and search
@dataclass
class _MaskStats:
    ious: np.ndarray  # (D, max GT per pair) IoU with each GT of the pair, -1 padding
    area: np.ndarray  # (D,) pixels on the 512 x 512 grid


class MetricCache:
    """Detections of many images with their ground truth, ready to be scored under any settings fast
    (masks kept as float16).

    ``detections``: image id -> :class:`Detections`; ``gt``: COCO ground truth (a path or pycocotools COCO;
    its categories are the ones scored, detections of others are left out, as predict.py does). Masks are
    pasted on each GT image's grid and compared as ``kaggle_evaluate`` compares them (at 512 x 512).
    """

    def __init__(self, detections: Mapping[int, Detections], gt, progress: bool = False):
        from .evaluation.coco import load_coco_gt
        from .evaluation.kaggle_metric import _at_kaggle_size

        self.coco = load_coco_gt(gt)
        self.progress = progress
        cats = set(self.coco.getCatIds())
        self.image_ids = sorted(int(i) for i in detections)
        missing = sorted(set(self.image_ids) - set(self.coco.imgs))
        if missing:
            raise UserError(f"detections for image id(s) {missing[:5]} that the ground truth lacks")
        gt_by_pair: Dict[Tuple[int, int], List[Dict]] = {}
        wanted = set(self.image_ids)
        for ann in self.coco.dataset["annotations"]:
            if ann["image_id"] in wanted and not ann.get("iscrowd", 0):
                gt_by_pair.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
        rows = []  # (image index, det index) in image order, each image best first
        self.dets = []
        for k, image_id in enumerate(self.image_ids):
            det = detections[image_id]
            kept = np.flatnonzero(np.isin(det.category_ids, list(cats)))
            det = det.take(kept) if len(kept) != len(det) else det
            # float16 halves the memory; a probability within 2.4e-4 of the mask threshold may binarise
            # differently from the float32 maps of predict.py/write_submission.py.
            self.dets.append(Detections(det.size, det.category_ids, det.scores, det.boxes,
                                        det.masks.astype(np.float16), det.attributes, det.attribute_ids))
            rows.append(np.full(len(det), k))
        self.image = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self.category = np.concatenate([d.category_ids for d in self.dets]) if self.dets else np.zeros(0, np.int64)
        self.scores = np.concatenate([d.scores for d in self.dets]).astype(np.float64) if self.dets else np.zeros(0)
        self.offset = np.r_[0, np.cumsum([len(d) for d in self.dets])]
        pair_keys = sorted(set(zip((self.image_ids[i] for i in self.image), self.category.tolist())) | set(gt_by_pair))
        self.pair_index = {key: p for p, key in enumerate(pair_keys)}
        position = {image_id: k for k, image_id in enumerate(self.image_ids)}
        self.pair_image = np.array([position[k[0]] for k in pair_keys], dtype=np.int64)
        self.pair = np.array([self.pair_index[(self.image_ids[i], int(c))] for i, c in zip(self.image, self.category)],
                             dtype=np.int64)
        self.gt_count = np.array([len(gt_by_pair.get(key, ())) for key in pair_keys], dtype=np.int64)
        self._gt_rles = {key: [_at_kaggle_size(self.coco.annToRLE(a)) for a in anns]
                         for key, anns in gt_by_pair.items()}
        self._grids = {image_id: (int(self.coco.imgs[image_id]["height"]), int(self.coco.imgs[image_id]["width"]))
                       for image_id in self.image_ids}
        self._stats: Dict[float, _MaskStats] = {}
        self._keep: Dict[Tuple, np.ndarray] = {}
        self._matching: Dict[Tuple, Tuple[np.ndarray, np.ndarray]] = {}
        self._results: Dict[Tuple, List[Dict]] = {}
        self.mask_seconds = 0.0

    def __len__(self) -> int:
        return len(self.scores)

    # -- per mask threshold: areas and IoUs (one paste per detection)
    def mask_stats(self, mask_threshold: float) -> _MaskStats:
        key = round(float(mask_threshold), 6)
        if key in self._stats:
            return self._stats[key]
        from pycocotools import mask as coco_mask

        from .engine.progress import progress as progress_bar
        from .evaluation.kaggle_metric import _at_kaggle_size

        started = time.perf_counter()
        width = max(int(self.gt_count.max()) if len(self.gt_count) else 0, 1)
        ious = np.full((len(self), width), -1.0, dtype=np.float32)
        area = np.zeros(len(self), dtype=np.int64)
        for k in progress_bar(range(len(self.image_ids)), desc=f"masks at {key}", unit="img",
                              disable=None if self.progress else True, leave=False):
            det, image_id = self.dets[k], self.image_ids[k]
            grid = self._grids[image_id]
            on_grid = _grid_boxes(det.boxes, det.size, grid)
            at_kaggle = on_grid if grid == KAGGLE_GRID else _grid_boxes(det.boxes, det.size, KAGGLE_GRID)
            for j in range(len(det)):
                d = self.offset[k] + j
                rle = _paste(det.masks[j], on_grid[j], grid, key)
                kaggle_rle = rle if grid == KAGGLE_GRID else _paste(det.masks[j], at_kaggle[j], KAGGLE_GRID, key)
                area[d] = int(coco_mask.area(kaggle_rle))
                gts = self._gt_rles.get((image_id, int(det.category_ids[j])))
                if gts:
                    ious[d, :len(gts)] = np.asarray(coco_mask.iou([_at_kaggle_size(rle)], gts, [0] * len(gts)))[0]
        self.mask_seconds += time.perf_counter() - started
        self._stats[key] = _MaskStats(ious, area)
        return self._stats[key]

    # -- per NMS setting: which detections survive NMS
    def nms_keep(self, nms_iou: Optional[float], cross_class_nms_iou: Optional[float]) -> np.ndarray:
        key = (nms_iou, cross_class_nms_iou)
        if key not in self._keep:
            probe = PostprocessSettings(nms_iou=nms_iou, cross_class_nms_iou=cross_class_nms_iou)
            self._keep[key] = np.concatenate([structural_keep(d, probe) for d in self.dets]) if self.dets else \
                np.zeros(0, bool)
        return self._keep[key]

    def matching(self, settings: PostprocessSettings) -> Tuple[np.ndarray, np.ndarray]:
        """(eligible detections, cumulative TP table) for the settings' structure: the greedy matching of
        every detection that survives NMS and the area limit, as if no score threshold or limit applied."""
        key = (round(settings.mask_threshold, 6), settings.nms_iou, settings.cross_class_nms_iou,
               int(settings.min_mask_area))
        if key in self._matching:
            return self._matching[key]
        from .evaluation.kaggle_metric import greedy_true_positives

        stats = self.mask_stats(settings.mask_threshold)
        eligible = self.nms_keep(settings.nms_iou, settings.cross_class_nms_iou) & (stats.area >= settings.min_mask_area)
        rows = np.flatnonzero(eligible)
        order = rows[np.argsort(self.pair[rows], kind="stable")]  # by pair, best first within a pair
        hits = greedy_true_positives(stats.ious[order], self.pair[order])
        # table[start[p] + p + n] = TP count of pair p's first n eligible detections (a zero row per pair first)
        counts = np.bincount(self.pair[order], minlength=len(self.gt_count))
        start = np.r_[0, np.cumsum(counts)[:-1]]
        table = np.zeros((len(order) + len(counts), hits.shape[1]), dtype=np.int32)
        cum = np.cumsum(hits, axis=0, dtype=np.int32)
        before = np.zeros_like(cum)
        pair_sorted = self.pair[order]
        first = start[pair_sorted]
        nonzero = first > 0
        before[nonzero] = cum[first[nonzero] - 1]
        table[np.arange(len(order)) + pair_sorted + 1] = cum - before
        self._matching[key] = (eligible, table)
        if len(self._matching) > 64:  # bounded memory over a long search
            self._matching.pop(next(iter(self._matching)))
        return eligible, table

    def score(self, settings: PostprocessSettings, images: Optional[np.ndarray] = None) -> float:
        """The competition score of ``settings`` on the cached images (or the image indices ``images``)."""
        eligible, table = self.matching(settings)
        survive = eligible & (self.scores >= settings.threshold_for(self.category))
        cum = np.cumsum(survive)
        before_image = np.r_[0, cum][self.offset[:-1]][self.image] if len(self.image) else cum
        survive &= (cum - survive - before_image) < settings.max_detections
        kept = np.bincount(self.pair[survive], minlength=len(self.gt_count))
        counts = np.bincount(self.pair[eligible], minlength=len(self.gt_count))
        start = np.r_[0, np.cumsum(counts)[:-1]]
        tp = table[start + np.arange(len(counts)) + kept].astype(np.float64)  # (pairs, thresholds)
        counted = (kept + self.gt_count) > 0
        if images is not None:
            counted &= np.isin(self.pair_image, images)
        if not counted.any():
            return math.nan
        denominator = (kept + self.gt_count)[:, None] - tp
        per_pair = (tp / np.where(denominator > 0, denominator, 1)).mean(axis=1)
        return float(per_pair[counted].mean())

    def results(self, settings: PostprocessSettings, images: Optional[Sequence[int]] = None) -> List[Dict]:
        """COCO results (each on its GT image's grid) of ``settings`` on the cached images (or ``images``,
        indices), for ``evaluate_coco``/``kaggle_evaluate``. The last few are kept: the tuner scores the same
        settings' results for the mask metrics and again for the attribute threshold."""
        from .models.mask_rcnn import to_coco_results

        chosen = None if images is None else tuple(int(k) for k in images)
        key = (json.dumps(settings.as_dict(), sort_keys=True), chosen)
        if key not in self._results:
            out: List[Dict] = []
            for k in (range(len(self.image_ids)) if images is None else images):
                image_id = self.image_ids[k]
                out += to_coco_results(image_id, apply_postprocess(self.dets[k], settings, self._grids[image_id]))
            self._results[key] = out
            if len(self._results) > 4:  # bounded memory: the masks of a whole val set per entry
                self._results.pop(next(iter(self._results)))
        return copy.deepcopy(self._results[key])  # callers (pycocotools' loadRes) add keys to the entries

    def ground_truth(self, images: Optional[Sequence[int]] = None):
        """The ground truth restricted to the cached images (or ``images``, indices)."""
        from .evaluation.coco import coco_from_dict

        wanted = {self.image_ids[k] for k in (range(len(self.image_ids)) if images is None else images)}
        data = self.coco.dataset
        return coco_from_dict({"images": [im for im in data["images"] if im["id"] in wanted],
                               "annotations": [a for a in data["annotations"] if a["image_id"] in wanted],
                               "categories": data["categories"]})


@dataclass
class SearchSpace:
    """Values the search tries (module docstring); None for an NMS means none beyond the network's own."""

    score_thresholds: Tuple[float, ...] = tuple(np.round(np.arange(0.0, 0.96, 0.025), 3))
    mask_thresholds: Tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)
    max_detections: Tuple[int, ...] = (5, 10, 15, 20, 30, 50, 100)
    nms_ious: Tuple[Optional[float], ...] = (None, 0.3, 0.35, 0.4, 0.45)
    cross_class_nms_ious: Tuple[Optional[float], ...] = (None, 0.5, 0.7, 0.9)
    min_mask_areas: Tuple[int, ...] = (0, 10, 25, 50, 100, 200, 400)
    per_class: bool = False
    rounds: int = 3

    def as_dict(self) -> Dict:
        return {"score_thresholds": [float(x) for x in self.score_thresholds],
                "mask_thresholds": list(self.mask_thresholds), "max_detections": list(self.max_detections),
                "nms_ious": list(self.nms_ious), "cross_class_nms_ious": list(self.cross_class_nms_ious),
                "min_mask_areas": list(self.min_mask_areas), "per_class": self.per_class, "rounds": self.rounds}


@dataclass
class SearchResult:
    settings: PostprocessSettings
    score: float
    evaluated: int
    seconds: float


def search(cache: MetricCache, space: SearchSpace = SearchSpace(), images: Optional[np.ndarray] = None,
           start: Optional[PostprocessSettings] = None) -> SearchResult:
    """The settings of ``space`` with the best competition score on ``cache`` (or its image indices ``images``).

    Coordinate ascent from ``start`` (default: the defaults): for each structural knob in turn (mask
    threshold, NMS within and across categories, minimum area), every value is tried with every score
    threshold x detection limit, and the best kept; rounds repeat until nothing improves (at most
    ``space.rounds``). With ``space.per_class``, each category's own threshold is then searched the same way.
    Only a strictly better score replaces the current settings, so ties keep the earlier (default) values.
    """
    started = time.perf_counter()
    best = PostprocessSettings(**{k: v for k, v in vars(start or PostprocessSettings()).items()})
    best_score = cache.score(best, images)
    evaluated = 1

    def sweep(base: PostprocessSettings) -> Tuple[PostprocessSettings, float, int]:
        top, top_score, count = None, -math.inf, 0
        for threshold, limit in itertools.product(space.score_thresholds, space.max_detections):
            trial = _replace(base, score_threshold=float(threshold), max_detections=int(limit))
            value = cache.score(trial, images)
            count += 1
            if value > top_score:
                top, top_score = trial, value
        return top, top_score, count

    knobs = (("mask_threshold", space.mask_thresholds), ("nms_iou", space.nms_ious),
             ("cross_class_nms_iou", space.cross_class_nms_ious), ("min_mask_area", space.min_mask_areas))
    for _ in range(max(space.rounds, 1)):
        improved = False
        for name, values in knobs:
            for value in values:
                trial, value_score, count = sweep(_replace(best, **{name: value}))
                evaluated += count
                if value_score > best_score + 1e-12:
                    best, best_score, improved = trial, value_score, True
        if not improved:
            break
    if space.per_class:
        categories = sorted(set(cache.category.tolist()))
        for _ in range(max(space.rounds, 1)):
            improved = False
            for category in categories:
                for threshold in space.score_thresholds:
                    own = {**best.class_score_thresholds, int(category): float(threshold)}
                    trial = _replace(best, class_score_thresholds=own)
                    value = cache.score(trial, images)
                    evaluated += 1
                    if value > best_score + 1e-12:
                        best, best_score, improved = trial, value, True
            if not improved:
                break
        # A category's threshold equal to the global one says nothing.
        best.class_score_thresholds = {c: t for c, t in best.class_score_thresholds.items()
                                       if t != best.score_threshold}
    return SearchResult(best, best_score, evaluated, time.perf_counter() - started)


def _replace(settings: PostprocessSettings, **changes) -> PostprocessSettings:
    values = dict(vars(settings))
    values["class_score_thresholds"] = dict(settings.class_score_thresholds)
    values.update(changes)
    return PostprocessSettings(**values)


def split_halves(count: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of ``count`` image indices (seeded shuffle): (tuning half, held-out half)."""
    order = np.random.RandomState(seed).permutation(count)
    half = count // 2
    return np.sort(order[:half]), np.sort(order[half:])


# ------------------------------------------------------------------------------- tools/tune_postprocess.py
def load_ensemble(weights: Sequence[PathLike], contexts: Optional[Sequence] = None, tta: Tta = Tta(),
                  test_budgets: Optional[Mapping[str, Optional[int]]] = None) -> list:
    """The checkpoints of ``weights`` loaded (``predict.load_model``, with ``test_budgets``) after
    :func:`check_ensemble`."""
    from .predict import load_model, read_meta

    if not weights:
        raise UserError("--weights: give at least one checkpoint")
    check_ensemble([(str(w), read_meta(w)) for w in weights], tta)
    return [load_model(w, contexts, test_budgets=test_budgets) for w in weights]


def iter_detections(models: Sequence, reader, tta: Tta, bar=None) -> Iterator[Tuple[Path, np.ndarray, Detections]]:
    """(path, image, merged detections) of every readable image of ``reader`` (``predict.ImageReader``), in
    order, one image per context of the first model at a time (:func:`predict_detections`); ``bar``, a
    progress bar, advances once per image, unreadable ones included."""
    batch = len(models[0].contexts)
    pending: List[Tuple[Path, np.ndarray]] = []
    for path, image in itertools.chain(reader, [(None, None)]):
        if image is not None:
            pending.append((path, image))
        elif path is not None and bar is not None:
            bar.update(1)
        if pending and (len(pending) == batch or path is None):
            for (done, done_image), det in zip(pending, predict_detections(models, pending, tta)):
                if bar is not None:
                    bar.update(1)
                yield done, done_image, det
            pending = []


def predict_all(models: Sequence, paths: Sequence[Path], tta: Tta = Tta(),
                progress: bool = True) -> Tuple[Dict[Path, Detections], List[Path]]:
    """Merged detections of every readable image of ``paths`` (:func:`iter_detections`), and the unreadable
    paths (skipped with a warning)."""
    from .engine.progress import progress as progress_bar
    from .predict import ImageReader

    reader = ImageReader(paths)
    bar = progress_bar(total=len(paths), desc="predicting", unit="img", disable=None if progress else True)
    try:
        detections = {path: det for path, _, det in iter_detections(models, reader, tta, bar)}
    finally:
        bar.close()
    return detections, list(reader.skipped)


@dataclass
class TuningReport:
    """What :func:`tune_postprocess` found, measured and wrote."""

    record: PostprocessFile
    predict_seconds: float
    mask_seconds: float
    search_seconds: float
    settings_evaluated: int
    table: str

    def __str__(self) -> str:
        return self.table


def _exact_scores(cache: MetricCache, settings: PostprocessSettings, images: Optional[np.ndarray]) -> Dict:
    """The competition score (``kaggle_evaluate``) and mask/box mAP (``evaluate_coco``) of ``settings``
    written out as COCO results: the slow, exact path the fast metric must agree with."""
    from .evaluation.coco import evaluate_coco
    from .evaluation.kaggle_metric import kaggle_evaluate

    gt = cache.ground_truth(images)
    results = cache.results(settings, images)
    coco = evaluate_coco(gt, results)
    kaggle = kaggle_evaluate(gt, results, progress=False)
    return {"kaggle_score": kaggle.score, "segm_mAP": coco.segm_mAP, "bbox_mAP": coco.bbox_mAP,
            "detections": len(results), "fast_kaggle_score": cache.score(settings, images)}


def _number(value: Optional[float]) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _describe(settings: PostprocessSettings) -> str:
    text = (f"score >= {settings.score_threshold:g}, mask > {settings.mask_threshold:g}, "
            f"<= {settings.max_detections} per image, NMS {settings.nms_iou or '-'}, "
            f"cross-class NMS {settings.cross_class_nms_iou or '-'}, min area {settings.min_mask_area}")
    if settings.class_score_thresholds:
        text += ", per category " + " ".join(f"{c}:{t:g}" for c, t in sorted(settings.class_score_thresholds.items()))
    if settings.attribute_threshold is not None:
        text += f", attributes >= {settings.attribute_threshold:g}"
    return text


def tune_postprocess(weights: Sequence[PathLike], dataset_root: PathLike, output: PathLike,
                     contexts: Optional[Sequence] = None, tta: Tta = Tta(), space: SearchSpace = SearchSpace(),
                     annotations: Optional[PathLike] = None, images: Optional[PathLike] = None, seed: int = 0,
                     max_images: Optional[int] = None, overwrite: bool = False, progress: bool = True,
                     echo: Callable[[str], None] = print,
                     test_budgets: Optional[Mapping[str, Optional[int]]] = None) -> TuningReport:
    """What tools/tune_postprocess.py does: predict the val images once, search the settings on one half,
    report default vs tuned on the other half, refit on all of them and write ``output`` (postprocess.json).

    ``annotations`` defaults to ``<dataset_root>/annotations/resize_rle_instances_val.json`` (the 512 x 512
    grid the competition scored) and ``images`` to ``<dataset_root>/val``; the ground truth is restricted to
    the checkpoints' categories, as validation restricts it.
    """
    from .predict import _expected_size, _read_ground_truth
    from .evaluation.coco import validation_ground_truth

    output = Path(output)
    if output.exists() and not overwrite:
        raise UserError(f"--output {output} exists; pass --overwrite to replace it")
    root = Path(dataset_root)
    annotations = Path(annotations) if annotations else root / "annotations" / "resize_rle_instances_val.json"
    image_dir = Path(images) if images else root / "val"
    if not annotations.is_file():
        raise UserError(f"--dataset-root {root}: {annotations} not found (convert the dataset first: "
                        "tools/convert_imaterialist_to_coco.py)")
    if not image_dir.is_dir():
        raise UserError(f"--dataset-root {root}: no image folder {image_dir}")
    models = load_ensemble(weights, contexts, tta, test_budgets)
    gt_images = _read_ground_truth(annotations)
    records = sorted(gt_images.by_name.values(), key=lambda r: r["id"])[:max_images or None]
    if len(records) < 2:
        raise UserError(f"{annotations}: {len(records)} image(s); tuning needs at least two (one per half)")
    paths = [image_dir / Path(str(r["file_name"])).name for r in records]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise UserError(f"{annotations} lists {len(absent)} image(s) not in {image_dir}, e.g. {absent[0]}")
    id_of = {path: int(r["id"]) for path, r in zip(paths, records)}
    gt = validation_ground_truth(annotations, models[0].category_ids, list(id_of.values()))

    started = time.perf_counter()
    by_path, skipped = predict_all(models, paths, tta, progress)
    detections = {id_of[path]: det for path, det in by_path.items()}
    for path in skipped:  # unreadable: scored as an image without detections, as a submission would be
        detections[id_of[path]] = Detections.empty(_expected_size(gt_images.by_name[path.name]))
    predict_seconds = time.perf_counter() - started

    cache = MetricCache(detections, gt, progress=progress)
    tune_half, held_out = split_halves(len(cache.image_ids), seed)
    default = PostprocessSettings()
    half = search(cache, space, images=tune_half)
    full = search(cache, space)
    search_seconds = half.seconds + full.seconds - cache.mask_seconds
    held = {"default": _exact_scores(cache, default, held_out), "tuned": _exact_scores(cache, half.settings, held_out)}
    all_val = {"default": _exact_scores(cache, default, None), "tuned": _exact_scores(cache, full.settings, None)}
    for name, scores in itertools.chain(held.items(), all_val.items()):
        if not math.isclose(scores["kaggle_score"], scores["fast_kaggle_score"], abs_tol=1e-9):
            log.warning("fast metric %.6f and kaggle_evaluate %.6f disagree on the %s settings",
                        scores["fast_kaggle_score"], scores["kaggle_score"], name)
    attribute_scores = None
    if any(det.attributes is not None for det in cache.dets) and any(
            a.get("attribute_ids") for a in cache.coco.dataset["annotations"]):
        attribute_scores = _tune_attribute_threshold(cache, half.settings, full.settings, tune_half, held_out)
        full.settings.attribute_threshold = attribute_scores["written"]
    weights_info = [{"path": str(w), "sha1": checkpoint_sha1(w)} for w in weights]
    record = PostprocessFile(full.settings, tta, weights_info, scores={
        "metric": "competition score (tools/evaluate.py) and segm mAP on the 512 x 512 val annotations",
        "annotations": str(annotations), "images": len(cache.image_ids), "split_seed": seed,
        "tuning_half": {"images": len(tune_half), "settings": half.settings.as_dict(), "score": half.score},
        "held_out_half": dict(held, images=len(held_out)), "all_val": all_val,
        **({"attributes": attribute_scores} if attribute_scores else {})},
        search=dict(space.as_dict(), settings_evaluated=half.evaluated + full.evaluated,
                    search_seconds=round(search_seconds, 2), mask_seconds=round(cache.mask_seconds, 2),
                    predict_seconds=round(predict_seconds, 2)))
    write_postprocess(output, record)
    table = _report_table(record, half.settings, full.settings, predict_seconds, cache.mask_seconds,
                          search_seconds, half.evaluated + full.evaluated, output)
    echo(table)
    return TuningReport(record, predict_seconds, cache.mask_seconds, search_seconds,
                        half.evaluated + full.evaluated, table)


def _tune_attribute_threshold(cache: MetricCache, half: PostprocessSettings, full: PostprocessSettings,
                              tune_half: np.ndarray, held_out: np.ndarray) -> Dict:
    """The attribute threshold of the best Fashionpedia AP (``evaluation.attributes``), tuned on one half under
    the half's settings and scored on the other (default 0.5 vs tuned), then refit on all under ``full``."""
    from .evaluation.attributes import evaluate_attributes, tune_attribute_threshold
    from .models.mask_rcnn import ATTRIBUTE_THRESHOLD

    def best(gt, results: List[Dict]) -> Tuple[float, Dict[float, float]]:
        if not results:  # nothing survives the tuned settings: every threshold scores alike
            return ATTRIBUTE_THRESHOLD, {}
        return tune_attribute_threshold(gt, results)

    def fashionpedia_ap(gt, results: List[Dict], threshold: float) -> float:
        return evaluate_attributes(gt, results, attribute_threshold=threshold).fashionpedia_ap if results else math.nan

    tuned, _ = best(cache.ground_truth(tune_half), cache.results(half, tune_half))
    held_gt, held_results = cache.ground_truth(held_out), cache.results(half, held_out)
    held = {name: fashionpedia_ap(held_gt, held_results, value)
            for name, value in (("default", ATTRIBUTE_THRESHOLD), ("tuned", tuned))}
    all_gt, all_results = cache.ground_truth(), cache.results(full)
    written, _ = best(all_gt, all_results)
    return {"metric": "Fashionpedia AP (mask IoU and attribute F1)", "default_threshold": ATTRIBUTE_THRESHOLD,
            "tuning_half_threshold": tuned, "held_out_half": held, "written": written,
            "all_val": {"default": fashionpedia_ap(all_gt, all_results, ATTRIBUTE_THRESHOLD),
                        "tuned": fashionpedia_ap(all_gt, all_results, written)}}


def _report_table(record: PostprocessFile, half: PostprocessSettings, full: PostprocessSettings,
                  predict_seconds: float, mask_seconds: float, search_seconds: float, evaluated: int,
                  output: Path) -> str:
    held, all_val = record.scores["held_out_half"], record.scores["all_val"]
    lines = [f"{'':40s} {'competition':>11s} {'segm mAP':>9s} {'detections':>10s}"]
    for label, scores in ((f"held-out half ({held['images']} images): default", held["default"]),
                          ("held-out half: tuned on the other half", held["tuned"]),
                          (f"all val ({record.scores['images']} images): default", all_val["default"]),
                          ("all val: tuned on all (written)", all_val["tuned"])):
        lines.append(f"{label:40s} {scores['kaggle_score']:11.4f} {scores['segm_mAP']:9.4f} {scores['detections']:10d}")
    attributes = record.scores.get("attributes")
    if attributes:
        lines.append(f"{'':40s} {'Fashionpedia AP':>15s} {'attribute threshold':>20s}")
        for label, ap, value in (
                ("held-out half: default", attributes["held_out_half"]["default"], attributes["default_threshold"]),
                ("held-out half: tuned on the other half", attributes["held_out_half"]["tuned"],
                 attributes["tuning_half_threshold"]),
                ("all val: default", attributes["all_val"]["default"], attributes["default_threshold"]),
                ("all val: tuned on all (written)", attributes["all_val"]["tuned"], attributes["written"])):
            lines.append(f"{label:40s} {_number(ap):>15s} {value:20.2f}")
    lines += ["", f"tuned on the tuning half: {_describe(half)}", f"written ({output}): {_describe(full)}",
              f"test-time augmentation: {record.tta.as_dict()}; checkpoints: "
              + ", ".join(Path(w['path']).name for w in record.weights),
              f"time: prediction pass {predict_seconds:.1f} s, mask pastes and IoUs {mask_seconds:.1f} s, "
              f"search {search_seconds:.1f} s ({evaluated} settings, {evaluated / max(search_seconds, 1e-9):.0f}/s)"]
    return "\n".join(lines)
