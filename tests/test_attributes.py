"""Attributes (issue 17): the Fashionpedia metric and per-attribute AP/F1 on crafted cases, the attribute targets
of sampled RoIs, training with --attributes, checkpoints with and without attributes, predictions and 2020
submissions that carry them."""
from __future__ import annotations

import json
import math
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from gluon_fashion.evaluation.attributes import (F1_THRESHOLDS, attribute_f1, average_precision,
                                                 evaluate_attributes)
from gluon_fashion.rle import mask_to_coco

SIZE = 64


def _square(x0: int, y0: int, side: int) -> dict:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    return mask_to_coco(mask)


def _gt(annotations) -> dict:
    """One image, categories 0 and 23, the given (category, square, attribute ids) annotations."""
    anns = []
    for number, (category, square, attributes) in enumerate(annotations, start=1):
        x0, y0, side = square
        anns.append({"id": number, "image_id": 1, "category_id": category, "segmentation": _square(x0, y0, side),
                     "area": side * side, "bbox": [x0, y0, side, side], "iscrowd": 0, "attribute_ids": attributes})
    return {"images": [{"id": 1, "width": SIZE, "height": SIZE, "file_name": "a.jpg"}], "annotations": anns,
            "categories": [{"id": 0, "name": "shirt"}, {"id": 23, "name": "shoe"}],
            "attributes": [{"id": i, "name": f"attr{i}"} for i in range(10)]}


def _det(category, square, score, attributes, scores=None) -> dict:
    x0, y0, side = square
    det = {"image_id": 1, "category_id": category, "score": score, "segmentation": _square(x0, y0, side),
           "bbox": [x0, y0, side, side], "attribute_ids": attributes}
    if scores is not None:
        det["attribute_scores"] = {str(a): p for a, p in scores.items()}
    return det


# ------------------------------------------------------------------------------------------- metric
def test_attribute_f1_is_the_mean_of_present_and_absent_f1():
    assert attribute_f1({1, 2}, {1, 2}, 10) == 1.0
    assert attribute_f1(set(), set(), 10) == 1.0  # only absent attributes, all agreed
    # one wrong attribute out of 10: present F1 0, absent F1 2*8/(2*8+2) = 0.889
    assert attribute_f1({1}, {2}, 10) == pytest.approx(0.5 * (0 + 16 / 18))
    assert attribute_f1({1, 2}, {1}, 10) == pytest.approx(0.5 * (2 / 3 + 16 / 17))


def test_perfect_mask_with_wrong_attributes_misses_and_a_perfect_pair_hits():
    gt = _gt([(0, (8, 8, 30), [1])])
    wrong = evaluate_attributes(gt, [_det(0, (8, 8, 30), 0.9, [2])])
    right = evaluate_attributes(gt, [_det(0, (8, 8, 30), 0.9, [1])])
    assert F1_THRESHOLDS[0] == 0.5
    assert wrong.fashionpedia_ap_iou50_f150 == 0.0 and wrong.fashionpedia_ap == 0.0
    assert right.fashionpedia_ap_iou50_f150 == pytest.approx(1.0) and right.fashionpedia_ap == pytest.approx(1.0)
    # The mask alone is perfect: without the F1 gate both would be hits (the per-attribute pairs say so).
    assert wrong.num_pairs == right.num_pairs == 1


def test_partly_right_attributes_hit_at_low_f1_thresholds_only():
    # ground truth {1, 2}, predicted {1}: pair F1 = (2/3 + 16/17) / 2 = 0.804 -> hit for t_F1 <= 0.80
    gt = _gt([(0, (8, 8, 30), [1, 2])])
    metrics = evaluate_attributes(gt, [_det(0, (8, 8, 30), 0.9, [1])])
    hits = [t for t, ap in zip(F1_THRESHOLDS, metrics.grid[0]) if ap > 0.99]
    assert hits == [t for t in F1_THRESHOLDS if t <= 0.80]
    assert metrics.grid[0, -1] == 0.0


def test_fashionpedia_metric_needs_the_mask_iou_too():
    gt = _gt([(0, (8, 8, 30), [1])])
    shifted = evaluate_attributes(gt, [_det(0, (26, 8, 30), 0.9, [1])])  # IoU 12*30 / (48*30) = 0.25
    assert shifted.fashionpedia_ap_iou50_f150 == 0.0 and shifted.num_pairs == 0


def test_categories_without_attributes_are_left_out_of_the_fashionpedia_metric():
    gt = _gt([(0, (8, 8, 20), [1]), (23, (40, 40, 20), [])])
    metrics = evaluate_attributes(gt, [_det(0, (8, 8, 20), 0.9, [1])])  # the shoe is missed
    assert metrics.attributed_categories == [0]
    assert metrics.fashionpedia_ap == pytest.approx(1.0)


def test_per_attribute_ap_ranks_matched_detections_by_probability():
    gt = _gt([(0, (0, 0, 20), [1]), (0, (22, 0, 20), []), (0, (0, 22, 20), [1, 3]), (0, (22, 22, 20), [3])])
    dets = [_det(0, (0, 0, 20), 0.9, [1], {1: 0.9, 3: 0.1}),
            _det(0, (22, 0, 20), 0.8, [1], {1: 0.7, 3: 0.2}),    # a false "1" above a true one
            _det(0, (0, 22, 20), 0.7, [3], {1: 0.4, 3: 0.8}),
            _det(0, (22, 22, 20), 0.6, [3], {1: 0.05, 3: 0.6})]
    metrics = evaluate_attributes(gt, dets)
    rows = {r.attribute_id: r for r in metrics.per_attribute}
    assert metrics.num_pairs == 4
    # attribute 1: ranking 0.9 (pos), 0.7 (neg), 0.4 (pos) -> AP (1 + 2/3) / 2
    assert rows[1].ap == pytest.approx((1 + 2 / 3) / 2)
    assert rows[3].ap == pytest.approx(1.0)  # 0.8 and 0.6 are the two positives, above 0.2 and 0.1
    assert rows[1].num_positive == 2 and rows[3].num_positive == 2
    # predicted sets: "1" on dets 1, 2 (one right of two said; one of two found); "3" on dets 3, 4 (both right)
    assert (rows[1].precision, rows[1].recall, rows[1].f1) == (0.5, 0.5, 0.5)
    assert (rows[3].precision, rows[3].recall, rows[3].f1) == (1.0, 1.0, 1.0)
    assert metrics.mean_attribute_ap == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)
    # a threshold re-derives the predicted sets from the probabilities: at 0.75 only det 1 says "1"
    high = evaluate_attributes(gt, dets, attribute_threshold=0.75)
    assert {r.attribute_id: r.precision for r in high.per_attribute}[1] == 1.0


def test_average_precision():
    assert average_precision([0.9, 0.8, 0.7], [True, False, True]) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(average_precision([0.5], [False]))
