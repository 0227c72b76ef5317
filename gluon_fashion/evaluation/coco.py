"""COCO box and mask mAP through pycocotools' COCOeval, with per-class rows and the PR arrays kept for plots.

The figures are exactly COCOeval's (default parameters: IoU .50:.05:.95, 101 recall points, maxDets 100);
this module only adds input checks, quiet output, the zero-detection case and a per-class breakdown.
For the ``segm`` run the results are loaded without their ``bbox`` so that pycocotools takes each
detection's area from its mask; this only affects the small/medium/large split, never AP, AP50 or AP75.
Every detection is checked first (:func:`load_results`): pycocotools would crash on some malformed entries
and silently score others (a NaN score, a negative box, RLE counts that do not cover the mask's size).
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco_json import is_finite_number, is_integer, read_coco_json, read_coco_results, rle_shape_problem
from ..errors import UserError
from ..rle import coco_counts

IOU_TYPES = ("bbox", "segm")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

LogFn = Union[Callable[[str], None], logging.Logger, None]
GroundTruth = Union[str, Path, COCO]
Results = Union[str, Path, List[Dict]]


@dataclass
class ClassAP:
    """AP@[.5:.95] of one category; NaN where the category has no ground truth."""

    category_id: int
    name: str
    num_gt: int
    num_dets: int
    bbox_ap: float = math.nan
    segm_ap: float = math.nan


@dataclass
class CocoMetrics:
    """COCOeval results for box and/or mask. Figures of an IoU type that was not evaluated are NaN."""

    bbox_mAP: float = math.nan
    bbox_AP50: float = math.nan
    bbox_AP75: float = math.nan
    segm_mAP: float = math.nan
    segm_AP50: float = math.nan
    segm_AP75: float = math.nan
    per_class: List[ClassAP] = field(default_factory=list)
    #: iou_type -> COCOeval.stats (12 numbers, order of STAT_NAMES; -1 where COCOeval has nothing to average)
    stats: Dict[str, List[float]] = field(default_factory=dict)
    #: iou_type -> COCOeval.eval["precision"], shape (T IoUs, R recall points, K classes, A areas, M maxDets)
    precision: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    iou_thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    recall_thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    #: category id of each K index of ``precision``
    category_ids: List[int] = field(default_factory=list)
    num_images: int = 0
    num_detections: int = 0

    @property
    def iou_types(self) -> List[str]:
        return [t for t in IOU_TYPES if t in self.stats]

    def pr_curve(self, iou_type: str, iou: float, category_id: Optional[int] = None) -> np.ndarray:
        """Precision at each recall threshold (area 'all', maxDets 100), for one class or averaged over classes.

        Recall points a class never reaches hold precision 0; classes without ground truth are left out.
        """
        precision = self.precision[iou_type]
        t = int(np.argmin(np.abs(self.iou_thresholds - iou)))
        curves = precision[t, :, :, 0, -1]  # R x K
        if category_id is not None:
            curves = curves[:, [self.category_ids.index(category_id)]]
        valid = curves[0] > -1
        if not valid.any():
            return np.full(len(self.recall_thresholds), np.nan)
        return curves[:, valid].mean(axis=1)

    def as_dict(self) -> Dict:
        """JSON-ready summary (NaN becomes None): headline figures, COCOeval stats by name, per-class rows."""
        out: Dict = {}
        for name in ("bbox_mAP", "bbox_AP50", "bbox_AP75", "segm_mAP", "segm_AP50", "segm_AP75"):
            out[name] = _json_float(getattr(self, name))
        out["stats"] = {t: dict(zip(STAT_NAMES, map(_json_float, s))) for t, s in self.stats.items()}
        out["num_images"] = self.num_images
        out["num_detections"] = self.num_detections
        out["per_class"] = [
            {"category_id": c.category_id, "name": c.name, "num_gt": c.num_gt, "num_dets": c.num_dets,
             "bbox_AP": _json_float(c.bbox_ap), "segm_AP": _json_float(c.segm_ap)}
            for c in self.per_class
        ]
        return out


def _json_float(value: float) -> Optional[float]:
    value = float(value)
    return None if math.isnan(value) else value


def load_coco_gt(gt: GroundTruth) -> COCO:
    """A pycocotools COCO from a path (quietly; UserError for a missing or malformed file) or as given."""
    if isinstance(gt, COCO):
        return gt
    dataset = read_coco_json(gt, "ground-truth annotation file", keys=("images", "annotations", "categories"))
    return coco_from_dict(dataset)


def coco_from_dict(dataset: Dict) -> COCO:
    """A pycocotools COCO indexing ``dataset`` (a COCO dict, used as it is, not copied), without the
    lines pycocotools prints while indexing."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_results(results: Results, coco_gt: COCO, iou_types: Sequence[str] = IOU_TYPES,
                 source: str = "results", check_mask_size: bool = True) -> List[Dict]:
    """Read and check COCO results against ``coco_gt``; returns a deep copy (pycocotools mutates its input).

    UserError naming the entry (its index in the results and its image_id), in one line, when it is not an
    object; lacks a key the IoU types need (``bbox`` for box mAP, ``segmentation`` for mask mAP); has an
    image_id or category_id that is not an integer of the ground truth; a score that is not a finite number;
    a bbox that is not ``[x, y, width, height]`` of finite numbers with width and height >= 0; or a mask that
    is not a compressed RLE whose counts decode to exactly its ``size`` (with ``check_mask_size``, also its
    image's size).
    """
    if isinstance(results, (str, Path)):
        source = str(results)
        results = read_coco_results(results)
    elif not isinstance(results, list):
        raise UserError(f"{source}: results must be a JSON list of detections, got {type(results).__name__}")
    needed = {"image_id", "category_id", "score"} | {_NEEDED_KEY[iou_type] for iou_type in iou_types}
    checked = []
    for i, det in enumerate(results):
        if not isinstance(det, dict):
            raise UserError(f"{source}: entry {i} is not an object: {det!r:.60}")
        entry = f"entry {i} (image_id {det.get('image_id')!r:.40})"
        problem = _detection_problem(det, needed, coco_gt, check_mask_size)
        if problem:
            raise UserError(f"{source}: {entry}: {problem}")
        checked.append(copy.deepcopy(det))
    return checked


#: The key each IoU type reads from a detection.
_NEEDED_KEY = {"bbox": "bbox", "segm": "segmentation"}


def _detection_problem(det: Dict, needed: set, coco_gt: COCO, check_mask_size: bool) -> Optional[str]:
    """What is wrong with one detection (None when nothing is); see :func:`load_results`."""
    missing = needed - set(det)
    if missing:
        return f"lacks {', '.join(sorted(missing))}"
    image_id, category_id, score = det["image_id"], det["category_id"], det["score"]
    if not is_integer(image_id) or image_id not in coco_gt.imgs:
        return f"image_id {image_id!r:.40} is not in the ground truth"
    if not is_integer(category_id) or category_id not in coco_gt.cats:
        return f"category_id {category_id!r:.40} is not a ground-truth category"
    if not is_finite_number(score):
        return f"score {score!r:.40} is not a finite number"
    if "bbox" in det:
        box = det["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)):
            return f"bbox {box!r:.60} is not [x, y, width, height] of 4 finite numbers"
        if box[2] < 0 or box[3] < 0:
            return f"bbox {box!r:.60} has a negative width or height"
    if "segmentation" in det:
        image = coco_gt.imgs[image_id]
        return _mask_problem(det["segmentation"], (image["height"], image["width"]) if check_mask_size else None)
    return None


def _mask_problem(segm, image_size: Optional[Tuple[int, int]]) -> Optional[str]:
    """Why ``segm`` is not a compressed RLE whose counts decode to its size (and ``image_size``, if given)."""
    if not isinstance(segm, dict):
        return f"segmentation must be a compressed RLE {{'size', 'counts'}}, got {segm!r:.60}"
    problem = rle_shape_problem(segm, image_size)
    if problem:
        return problem
    try:
        counts = coco_counts(segm)
    except (IndexError, ValueError, TypeError):  # a compressed string cut inside a count, or a non-integer
        return "segmentation 'counts' is not a valid RLE"
    height, width = segm["size"]
    if counts.size and counts.min() < 0:
        return "segmentation 'counts' holds a negative run length"
    if int(counts.sum()) != height * width:
        return (f"segmentation 'counts' decode to {int(counts.sum())} pixels, not the {height * width} of its "
                f"size {[height, width]}")
    return None


def _results_coco(coco_gt: COCO, dets: List[Dict], iou_type: str) -> COCO:
    """pycocotools' loadRes, plus the empty case it cannot take (its loader reads ``anns[0]``)."""
    if iou_type == "segm":
        dets = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    else:
        dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    if dets:
        return coco_gt.loadRes(dets)
    return coco_from_dict({"images": list(coco_gt.dataset["images"]), "annotations": [],
                           "categories": copy.deepcopy(coco_gt.dataset["categories"])})


def _emit(log: LogFn, text: str) -> None:
    if log is None or not text.strip():
        return
    if isinstance(log, logging.Logger):
        log.info(text.rstrip())
    else:
        log(text.rstrip())


def _class_ap(precision: np.ndarray, k: int) -> float:
    values = precision[:, :, k, 0, -1]
    values = values[values > -1]
    return float(values.mean()) if values.size else math.nan


def evaluate_coco(gt: GroundTruth, results: Results, iou_types: Sequence[str] = IOU_TYPES,
                  log: LogFn = None) -> CocoMetrics:
    """Box and/or mask mAP of ``results`` against ``gt`` with pycocotools' COCOeval.

    ``log`` (a callable or Logger) receives pycocotools' printed summary; without it nothing is printed.
    No detections at all gives 0.0 for every class that has ground truth.
    """
    unknown = set(iou_types) - set(IOU_TYPES)
    if unknown or not iou_types:
        raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {tuple(iou_types)}")
    coco_gt = load_coco_gt(gt)
    dets = load_results(results, coco_gt, iou_types)
    cat_ids = sorted(coco_gt.getCatIds())
    metrics = CocoMetrics(category_ids=cat_ids, num_images=len(coco_gt.imgs), num_detections=len(dets))
    num_dets = {c: 0 for c in cat_ids}
    for det in dets:
        num_dets[det["category_id"]] += 1
    rows = {c: ClassAP(c, coco_gt.cats[c].get("name", str(c)), len(coco_gt.getAnnIds(catIds=[c])), num_dets[c])
            for c in cat_ids}
    for iou_type in IOU_TYPES:
        if iou_type not in iou_types:
            continue
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            coco_dt = _results_coco(coco_gt, dets, iou_type)
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.params.catIds = cat_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        _emit(log, f"COCOeval ({iou_type}):\n{captured.getvalue()}")
        stats = [float(s) for s in evaluator.stats]
        precision = evaluator.eval["precision"]
        metrics.stats[iou_type] = stats
        metrics.precision[iou_type] = precision
        metrics.iou_thresholds = np.asarray(evaluator.params.iouThrs)
        metrics.recall_thresholds = np.asarray(evaluator.params.recThrs)
        for name, index in (("mAP", 0), ("AP50", 1), ("AP75", 2)):
            setattr(metrics, f"{iou_type}_{name}", stats[index] if stats[index] > -1 else math.nan)
        for k, cat_id in enumerate(cat_ids):
            setattr(rows[cat_id], f"{iou_type}_ap", _class_ap(precision, k))
    metrics.per_class = [rows[c] for c in cat_ids]
    return metrics


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def format_per_class_table(metrics: CocoMetrics, extra: Optional[Dict[str, Dict[int, float]]] = None) -> str:
    """Aligned text table: id, name, #GT, #det, bbox AP, segm AP (in %; '-' where a class has no GT).

    ``extra`` adds columns: {column title: {category_id: value in [0, 1]}}.
    """
    extra = extra or {}
    header = ["id", "name", "#GT", "#det"] + [f"{t} AP" for t in metrics.iou_types] + list(extra)
    lines = []
    for row in metrics.per_class:
        cells = [str(row.category_id), row.name, str(row.num_gt), str(row.num_dets)]
        cells += [_fmt(getattr(row, f"{t}_ap")) for t in metrics.iou_types]
        cells += [_fmt(column.get(row.category_id, math.nan)) for column in extra.values()]
        lines.append(cells)
    summary = ["", "mean", str(sum(r.num_gt for r in metrics.per_class)), str(metrics.num_detections)]
    summary += [_fmt(getattr(metrics, f"{t}_mAP")) for t in metrics.iou_types]
    summary += ["" for _ in extra]  # a mean over classes of an extra column need not be its overall figure
    widths = [max(len(cells[i]) for cells in [header, summary] + lines) for i in range(len(header))]

    def render(cells: List[str]) -> str:
        return "  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(render(header))
    return "\n".join([render(header), rule] + [render(c) for c in lines] + [rule, render(summary)])


def validation_ground_truth(annotation_file, category_ids: Sequence[int], image_ids: Optional[Sequence[int]] = None):
    """COCO ground truth restricted to the trained categories and the validated images (None: all of them), as
    the trainers' validation scores a model: categories the model cannot predict do not count."""
    coco = load_coco_gt(annotation_file)
    wanted_cats = set(category_ids)
    wanted_images = set(coco.getImgIds()) if image_ids is None else set(image_ids)
    if wanted_cats >= set(coco.getCatIds()) and wanted_images >= set(coco.getImgIds()):
        return coco
    data = coco.dataset
    subset = {
        "images": [im for im in data["images"] if im["id"] in wanted_images],
        "annotations": [a for a in data["annotations"]
                        if a["category_id"] in wanted_cats and a["image_id"] in wanted_images],
        "categories": [c for c in data["categories"] if c["id"] in wanted_cats],
        "attributes": data.get("attributes") or [],  # the attribute metrics' F1 vocabulary
    }
    return coco_from_dict(subset)
