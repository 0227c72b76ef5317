"""Attribute metrics of instance predictions: per-attribute AP and F1, and the Fashionpedia metric.

Detections (COCO results) carry ``attribute_ids`` (the attributes predicted, at a probability threshold) and,
from this project's models, ``attribute_scores`` (``{"id": probability}`` of every attribute); ground-truth
annotations carry ``attribute_ids``.

* **Fashionpedia metric** (the Fashionpedia paper and its API's ``FPEval``): a detection matches a ground truth
  only when their mask IoU >= t_IoU **and** the F1 of their attribute sets >= t_F1; AP is COCO's, averaged over
  t_IoU = 0.50:0.05:0.95 and t_F1 = 0.50:0.05:0.95. The F1 of a pair is the API's "binary macro" F1: both
  attribute sets as 0/1 vectors over the attribute vocabulary, the F1 of the 1s and the F1 of the 0s averaged
  (only the 0s when neither set has any attribute). The F1 gate applies to the categories that carry
  attributes in the ground truth, and the AP is averaged over those categories (a category without attributes
  has nothing for the gate to test). Matching is pycocotools' own: its IoU matrix with the pairs below t_F1
  struck out (:class:`_F1GatedEval`).
* **Per-attribute AP and F1**: over the detections that pycocotools matches to a ground truth of an attributed
  category at mask IoU 0.5 (attributes of missed garments are the detection metrics' concern), the
  detections ranked by the attribute's probability against whether their ground truth has it (AP), and the
  predicted ``attribute_ids`` against it (precision, recall, F1). The mean attribute AP averages the attributes
  that at least one matched ground truth has (the visible ones).
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np
from pycocotools.cocoeval import COCOeval

from ..errors import UserError
from .coco import GroundTruth, Results, _results_coco, coco_from_dict, load_coco_gt, load_results

#: t_F1 of the Fashionpedia metric (as its API: 0.50, 0.55, ..., 0.95).
F1_THRESHOLDS = tuple(float(t) for t in np.round(np.linspace(0.5, 0.95, 10), 2))


def check_attribute_threshold(value: Optional[float], flag: str = "--attribute-threshold") -> None:
    """UserError naming ``flag`` unless ``value`` is None or a probability in [0, 1]."""
    if value is not None and not 0.0 <= float(value) <= 1.0:
        raise UserError(f"{flag} must lie in [0, 1], got {value}")


def attribute_f1(truth: Set[int], predicted: Set[int], vocabulary_size: int) -> float:
    """Fashionpedia's F1 of one detection-ground truth pair: the mean of the F1 of the attributes present
    and the F1 of those absent, over a vocabulary of ``vocabulary_size`` attributes (only the absent ones count
    when neither set has any)."""
    tp = len(truth & predicted)
    fp, fn = len(predicted - truth), len(truth - predicted)
    tn = vocabulary_size - len(truth | predicted)
    scores = []
    if truth or predicted:  # some attribute is present in one of the two vectors
        scores.append(2 * tp / (2 * tp + fp + fn))
    if len(truth) < vocabulary_size or len(predicted) < vocabulary_size:  # some attribute is absent in one
        scores.append(2 * tn / (2 * tn + fp + fn))
    return float(np.mean(scores)) if scores else 1.0


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Mean, over the positives, of the precision at each positive's rank (scores descending, ties in input
    order); NaN without positives."""
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return math.nan
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


@dataclass
class AttributeRow:
    """Per-attribute figures over the matched pairs: positives (ground truths with it), AP, precision, recall, F1."""
    attribute_id: int
    name: str
    num_positive: int
    ap: float
    precision: float
    recall: float
    f1: float


@dataclass
class AttributeMetrics:
    """What :func:`evaluate_attributes` measures (see the module docstring)."""
    #: COCO AP (segm) with the F1 gate, averaged over t_IoU and t_F1
    fashionpedia_ap: float
    #: the same at t_IoU = 0.5, t_F1 = 0.5
    fashionpedia_ap_iou50_f150: float
    #: AP by [t_IoU index, t_F1 index] (COCO's t_IoU 0.50:0.95 by :data:`F1_THRESHOLDS`)
    grid: np.ndarray
    mean_attribute_ap: float
    num_pairs: int
    attributed_categories: List[int]
    per_attribute: List[AttributeRow] = field(default_factory=list)

    def as_dict(self) -> Dict:
        """JSON-ready (NaN as None)."""
        def clean(value: float) -> Optional[float]:
            return None if value is None or math.isnan(value) else float(value)

        return {"fashionpedia_AP": clean(self.fashionpedia_ap),
                "fashionpedia_AP_iou50_f150": clean(self.fashionpedia_ap_iou50_f150),
                "fashionpedia_AP_grid": [[clean(v) for v in row] for row in self.grid],
                "attribute_mAP": clean(self.mean_attribute_ap), "attribute_pairs": self.num_pairs,
                "attributed_categories": list(self.attributed_categories),
                "per_attribute": [{"attribute_id": r.attribute_id, "name": r.name, "num_positive": r.num_positive,
                                   "AP": clean(r.ap), "precision": clean(r.precision), "recall": clean(r.recall),
                                   "F1": clean(r.f1)} for r in self.per_attribute]}


class _F1GatedEval(COCOeval):
    """pycocotools' COCOeval whose IoU of a pair is struck out (-1) when the pair's attribute F1 is below
    ``f1_threshold`` (None: plain COCOeval); the raw IoUs are computed once and shared through ``cache``."""

    def __init__(self, coco_gt, coco_dt, f1_threshold: Optional[float], vocabulary_size: int,
                 predicted: Mapping[int, Set[int]], cache: Dict):
        super().__init__(coco_gt, coco_dt, "segm")
        self.f1_threshold, self.vocabulary_size = f1_threshold, vocabulary_size
        self.predicted, self.cache = predicted, cache

    def computeIoU(self, imgId, catId):
        key = (imgId, catId)
        if key not in self.cache:
            self.cache[key] = super().computeIoU(imgId, catId)
        ious = self.cache[key]
        if self.f1_threshold is None or len(ious) == 0:
            return ious
        # The same detection order as COCOeval.computeIoU: by score, at most maxDets[-1].
        dts = self._dts[imgId, catId]
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")[:self.params.maxDets[-1]]
        gts = self._gts[imgId, catId]
        f1 = np.array([[attribute_f1(set(g.get("attribute_ids") or ()), self.predicted[dts[d]["id"]],
                                     self.vocabulary_size) for g in gts] for d in order]).reshape(len(order), len(gts))
        return np.where(f1 >= self.f1_threshold, ious, -1.0)


def _run(evaluator: COCOeval, category_ids: Sequence[int]) -> COCOeval:
    evaluator.params.catIds = list(category_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _ap_by_iou(evaluator: COCOeval) -> np.ndarray:
    """COCO AP at each IoU threshold (all areas, 100 detections), averaged over categories with ground truth."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K)
    out = np.full(precision.shape[0], math.nan)
    for t in range(precision.shape[0]):
        values = precision[t][precision[t] > -1]
        if values.size:
            out[t] = float(values.mean())
    return out


def predicted_ids(det: Mapping, threshold: Optional[float] = None) -> Set[int]:
    """A detection's predicted attributes: its ``attribute_scores`` at ``threshold`` when both are given, else
    its ``attribute_ids`` (none when it has neither)."""
    if threshold is not None and det.get("attribute_scores"):
        return {int(a) for a, p in det["attribute_scores"].items() if float(p) >= threshold}
    return {int(a) for a in det.get("attribute_ids") or ()}


def evaluate_attributes(gt: Union[GroundTruth, Dict], results: Results, attribute_threshold: Optional[float] = None,
                        attribute_names: Optional[Mapping[int, str]] = None) -> AttributeMetrics:
    """The Fashionpedia metric and per-attribute AP/F1 of ``results`` (path or list) against ``gt`` (path, COCO
    or COCO dict).

    ``attribute_threshold``: re-derive each detection's predicted attributes from its ``attribute_scores``
    (default: its ``attribute_ids`` as written). The F1 vocabulary is the ground truth's ``attributes`` list, or
    where it has none every attribute id seen in it or in the results."""
    coco_gt = coco_from_dict(gt) if isinstance(gt, dict) else load_coco_gt(gt)
    dets = load_results(results, coco_gt, ("segm",))
    for number, det in enumerate(dets, start=1):
        det["id"] = number  # pycocotools numbers them the same way in loadRes
    predicted = {det["id"]: predicted_ids(det, attribute_threshold) for det in dets}
    anns = coco_gt.dataset["annotations"]
    attributed = sorted({a["category_id"] for a in anns if a.get("attribute_ids")})
    listed = coco_gt.dataset.get("attributes") or []
    names = {int(a["id"]): str(a.get("name", a["id"])) for a in listed}
    names.update(attribute_names or {})
    vocabulary = set(names) | {int(i) for a in anns for i in a.get("attribute_ids") or ()}
    vocabulary |= set().union(*predicted.values()) if predicted else set()
    thresholds_iou = np.round(np.linspace(0.5, 0.95, 10), 2)
    grid = np.full((len(thresholds_iou), len(F1_THRESHOLDS)), math.nan)
    if not attributed:
        return AttributeMetrics(math.nan, math.nan, grid, math.nan, 0, [])
    coco_dt = _results_coco(coco_gt, dets, "segm")
    cache: Dict = {}
    plain = _run(_F1GatedEval(coco_gt, coco_dt, None, len(vocabulary), predicted, cache), attributed)
    for j, f1_threshold in enumerate(F1_THRESHOLDS):
        gated = _run(_F1GatedEval(coco_gt, coco_dt, f1_threshold, len(vocabulary), predicted, cache), attributed)
        grid[:, j] = _ap_by_iou(gated)
    pairs = _matched_pairs(plain)
    rows = _per_attribute(pairs, {d["id"]: d for d in dets}, coco_gt, predicted, names)
    visible = [r.ap for r in rows if r.num_positive > 0]
    return AttributeMetrics(fashionpedia_ap=float(np.nanmean(grid)) if not np.isnan(grid).all() else math.nan,
                            fashionpedia_ap_iou50_f150=float(grid[0, 0]), grid=grid,
                            mean_attribute_ap=float(np.mean(visible)) if visible else math.nan,
                            num_pairs=len(pairs), attributed_categories=attributed, per_attribute=rows)


#: The attribute thresholds :func:`tune_attribute_threshold` tries by default.
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(2, 19))


def tune_attribute_threshold(gt: Union[GroundTruth, Dict], results: Results,
                             thresholds: Sequence[float] = THRESHOLD_GRID) -> Tuple[float, Dict[float, float]]:
    """The attribute probability threshold (for ``write_submission.py --attribute-threshold``) under which
    ``results`` (with ``attribute_scores``) score the best Fashionpedia AP against ``gt``, and the AP at each
    threshold tried (ties: the lowest threshold). The metric the 2020 competition ranked by is that AP, and
    the threshold decides each detection's attribute set, hence which pairs pass the F1 gate."""
    coco_gt = coco_from_dict(gt) if isinstance(gt, dict) else load_coco_gt(gt)
    dets = load_results(results, coco_gt, ("segm",))
    if not any(d.get("attribute_scores") for d in dets):
        raise UserError("the results carry no attribute_scores (predict with a checkpoint trained with "
                        "--attributes) to tune an attribute threshold on")
    for value in thresholds:
        check_attribute_threshold(value)
    scores = {}
    for value in thresholds:
        ap = evaluate_attributes(coco_gt, dets, attribute_threshold=float(value)).fashionpedia_ap
        scores[float(value)] = 0.0 if math.isnan(ap) else ap
    best = max(scores, key=lambda t: (scores[t], -t))
    return best, scores


def _matched_pairs(evaluator: COCOeval) -> List[Tuple[int, int]]:
    """(detection id, ground-truth id) pairs pycocotools matched at IoU 0.5 (all areas, 100 detections)."""
    all_areas = evaluator.params.areaRng[0]
    pairs = []
    for record in evaluator.evalImgs:
        if record is None or record["aRng"] != all_areas:
            continue
        for dt_id, gt_id in zip(record["dtIds"], record["dtMatches"][0]):
            if gt_id > 0:
                pairs.append((int(dt_id), int(gt_id)))
    return pairs


def _per_attribute(pairs: Sequence[Tuple[int, int]], dets: Mapping[int, Dict], coco_gt,
                   predicted: Mapping[int, Set[int]], names: Mapping[int, str]) -> List[AttributeRow]:
    truth = [set(coco_gt.anns[g].get("attribute_ids") or ()) for _, g in pairs]
    scores_of = [dets[d].get("attribute_scores") or {} for d, _ in pairs]
    said = [predicted[d] for d, _ in pairs]
    ids = sorted(set(names) | set().union(*truth, *said) if pairs else set(names))
    rows = []
    for a in ids:
        labels = [a in t for t in truth]
        # Without probabilities (another model's results), the predicted set is the ranking: 1 or 0.
        scores = [float(s.get(str(a), s.get(a, 1.0 if a in p else 0.0))) for s, p in zip(scores_of, said)]
        tp = sum(1 for t, p in zip(truth, said) if a in t and a in p)
        fp = sum(1 for t, p in zip(truth, said) if a not in t and a in p)
        fn = sum(1 for t, p in zip(truth, said) if a in t and a not in p)
        precision = tp / (tp + fp) if tp + fp else math.nan
        recall = tp / (tp + fn) if tp + fn else math.nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
        if not any(labels) and not tp + fp:
            continue  # neither in the ground truth nor predicted: nothing to report
        rows.append(AttributeRow(a, names.get(a, str(a)), sum(labels), average_precision(scores, labels),
                                 precision, recall, f1))
    return rows


def format_attribute_table(metrics: AttributeMetrics) -> str:
    """Per-attribute rows (positives, AP, precision, recall, F1) and the summary lines."""
    def pct(value: float) -> str:
        return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"

    lines = [f"{'id':>4}  {'attribute':<28} {'pos':>5} {'AP':>6} {'prec':>6} {'rec':>6} {'F1':>6}"]
    for r in metrics.per_attribute:
        lines.append(f"{r.attribute_id:>4}  {r.name[:28]:<28} {r.num_positive:>5} {pct(r.ap):>6} {pct(r.precision):>6}"
                     f" {pct(r.recall):>6} {pct(r.f1):>6}")
    lines.append(f"mean attribute AP {pct(metrics.mean_attribute_ap)} over {metrics.num_pairs} matched detections; "
                 f"Fashionpedia AP (IoU+F1) {pct(metrics.fashionpedia_ap)}, at IoU 0.5 / F1 0.5 "
                 f"{pct(metrics.fashionpedia_ap_iou50_f150)}")
    return "\n".join(lines)
