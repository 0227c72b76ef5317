"""The iMaterialist (Fashion) 2019 competition metric, computed locally.

How the score is computed (README-ready):

1. Every mask, ground truth and prediction alike, is compared on the competition's 512 x 512 grid; masks
   of any other size are resized with the project's one nearest-neighbour rule (``rle.resize_coco_rle``).
2. The unit of scoring is an (image, class) pair that has at least one ground-truth mask or one predicted
   mask of that class in that image. Pairs with neither do not count.
3. For each pair and each IoU threshold t in 0.50, 0.55, ..., 0.95, predictions are visited in descending
   score (ties keep their input order). Each takes the still-unmatched ground-truth mask of the same class
   with the highest IoU, and is a true positive if that IoU is strictly greater than t (the competition
   says "IoU above the threshold"; an IoU exactly equal to t does not match). A ground-truth mask is
   matched at most once. Unmatched predictions are false positives, unmatched ground-truth masks false
   negatives, and the pair scores TP / (TP + FP + FN) at t.
4. A pair's score is the mean over the ten thresholds; the final score is the mean over all pairs.
   The per-class breakdown averages the pairs of each class.

Every prediction passed in counts: unlike mAP, a low-score false positive lowers the score, so feed it
what you would submit (after the score threshold and overlap removal).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

from ..rle import CocoRLE, resize_coco_rle
from .coco import GroundTruth, Results, load_coco_gt, load_results

KAGGLE_SIZE = 512
#: Rounded so that thresholds equal the doubles 0.55, 0.6, ... exactly (``0.5 + 0.05 * k`` drifts).
IOU_THRESHOLDS = np.round(0.5 + 0.05 * np.arange(10), 2)


@dataclass
class KaggleScore:
    """The competition score and its breakdown by class (mean over that class's (image, class) pairs)."""

    score: float
    per_class: Dict[int, float] = field(default_factory=dict)
    pairs_per_class: Dict[int, int] = field(default_factory=dict)
    num_pairs: int = 0

    def as_dict(self) -> Dict:
        return {
            "kaggle_score": self.score,
            "num_pairs": self.num_pairs,
            "per_class": {str(c): {"score": s, "pairs": self.pairs_per_class[c]} for c, s in self.per_class.items()},
        }


def match_scores(ious: np.ndarray, scores: Sequence[float],
                 thresholds: Sequence[float] = IOU_THRESHOLDS) -> np.ndarray:
    """TP / (TP + FP + FN) at each threshold for one (image, class) pair.

    ``ious`` is predictions x ground truths; ``scores`` orders the predictions (see the module docstring).
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[0] != len(scores):
        raise ValueError(f"ious must be predictions x ground truths ({len(scores)} rows), got shape {ious.shape}")
    num_pred, num_gt = ious.shape
    if num_pred + num_gt == 0:
        raise ValueError("a pair with neither predictions nor ground truth has no score")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = greedy_true_positives(ious[order], np.zeros(num_pred, dtype=np.int64), thresholds).sum(axis=0)
    return tp / (num_pred + num_gt - tp)  # = TP / (TP + FP + FN)


def greedy_true_positives(ious: np.ndarray, pairs: np.ndarray,
                          thresholds: Sequence[float] = IOU_THRESHOLDS) -> np.ndarray:
    """The matching rule of the module docstring (step 3), for many (image, class) pairs at once.

    ``ious``: one row per prediction, its IoU with each ground-truth mask of its pair, padded with -1 where
    the pair has fewer masks than there are columns; ``pairs``: the pair of each row, the rows of one pair
    consecutive and in the order the rule visits them (descending score). Returns a bool array (rows x
    thresholds): whether each prediction is a true positive at each threshold.

    Greedy matching visits predictions in order, so a prediction's outcome depends only on the ones before
    it: the pair's TP count when only its first n predictions are kept is the sum of its first n rows, which
    is what lets ``postprocess`` score every score threshold and detection limit from one matching. The
    loop runs over positions within a pair (at most the largest pair's length), vectorised over pairs and
    thresholds.
    """
    ious = np.asarray(ious, dtype=np.float64)
    pairs = np.asarray(pairs)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    rows = len(pairs)
    out = np.zeros((rows, len(thresholds)), dtype=bool)
    if rows == 0 or ious.ndim != 2 or ious.shape[1] == 0:
        return out
    starts = np.flatnonzero(np.r_[True, pairs[1:] != pairs[:-1]])
    group = np.cumsum(np.r_[True, pairs[1:] != pairs[:-1]]) - 1
    position = np.arange(rows) - starts[group]
    taken = np.zeros((len(starts), len(thresholds), ious.shape[1]), dtype=bool)
    by_position = np.argsort(position, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(position))]
    for k in range(len(bounds) - 1):
        sel = by_position[bounds[k]:bounds[k + 1]]
        g = group[sel]
        candidates = np.where(taken[g], -1.0, ious[sel][:, None, :])  # (rows at k, thresholds, columns)
        best = candidates.argmax(axis=2)
        hit = np.take_along_axis(candidates, best[..., None], axis=2)[..., 0] > thresholds
        r, t = np.nonzero(hit)
        taken[g[r], t, best[r, t]] = True
        out[sel] = hit
    return out


def _at_kaggle_size(rle: CocoRLE) -> CocoRLE:
    if list(rle["size"]) == [KAGGLE_SIZE, KAGGLE_SIZE]:
        return rle
    return resize_coco_rle(rle, KAGGLE_SIZE, KAGGLE_SIZE)


def kaggle_evaluate(gt: GroundTruth, results: Results, score_threshold: float = 0.0,
                    progress: bool = True) -> KaggleScore:
    """The competition metric of COCO ``results`` (with masks) against ``gt``, with a per-class breakdown.

    Predictions scoring below ``score_threshold`` are dropped first. Masks may be at any size.
    """
    coco_gt = load_coco_gt(gt)
    dets = load_results(results, coco_gt, iou_types=("segm",), check_mask_size=False)
    preds_by_pair: Dict[tuple, List[Dict]] = defaultdict(list)
    for det in dets:
        if det["score"] >= score_threshold:
            preds_by_pair[(det["image_id"], det["category_id"])].append(det)
    gts_by_pair: Dict[tuple, List[Dict]] = defaultdict(list)
    for ann in coco_gt.dataset["annotations"]:
        if not ann.get("iscrowd", 0):
            gts_by_pair[(ann["image_id"], ann["category_id"])].append(ann)
    pairs = sorted(set(preds_by_pair) | set(gts_by_pair))
    pair_scores: Dict[int, List[float]] = defaultdict(list)
    for pair in tqdm(pairs, desc="competition metric", unit="pair", disable=not progress, leave=False):
        preds, gts = preds_by_pair.get(pair, []), gts_by_pair.get(pair, [])
        if preds and gts:
            pred_rles = [_at_kaggle_size(d["segmentation"]) for d in preds]
            gt_rles = [_at_kaggle_size(a["segmentation"]) for a in gts]
            ious = np.asarray(coco_mask.iou(pred_rles, gt_rles, [0] * len(gt_rles)))
        else:
            ious = np.zeros((len(preds), len(gts)))
        scores = [d["score"] for d in preds]
        pair_scores[pair[1]].append(float(match_scores(ious, scores).mean()))
    all_scores = [s for values in pair_scores.values() for s in values]
    return KaggleScore(
        score=float(np.mean(all_scores)) if all_scores else math.nan,
        per_class={c: float(np.mean(v)) for c, v in sorted(pair_scores.items())},
        pairs_per_class={c: len(v) for c, v in sorted(pair_scores.items())},
        num_pairs=len(all_scores),
    )


def kaggle_score(gt: GroundTruth, results: Results, score_threshold: float = 0.0,
                 progress: bool = False) -> float:
    """The competition score (see the module docstring); NaN when neither GT nor predictions hold a mask."""
    return kaggle_evaluate(gt, results, score_threshold=score_threshold, progress=progress).score
