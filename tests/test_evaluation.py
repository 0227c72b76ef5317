"""COCO mAP against pycocotools itself, the competition metric on hand-worked cases, the confusion matrix."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gluon_fashion.errors import UserError
from gluon_fashion.evaluation import ConfusionMatrix, evaluate_coco, format_per_class_table
from gluon_fashion.evaluation.coco import coco_from_dict
from gluon_fashion.evaluation.kaggle_metric import IOU_THRESHOLDS, kaggle_evaluate, kaggle_score, match_scores
from gluon_fashion.evaluation.plots import plot_coco_metrics
from gluon_fashion.labels import CATEGORIES
from gluon_fashion.rle import mask_to_coco

ROOT = Path(__file__).resolve().parents[1]
SIZES = {1: (48, 64), 2: (40, 40), 3: (56, 36)}  # image id -> (height, width)


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _rect(h, w, y0, y1, x0, x1):
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _categories():
    return [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]} for c in CATEGORIES]


def _gt_document(masks_by_image):
    """COCO GT from {image_id: [(category_id, mask), ...]} laid out like the converter's output."""
    images, annotations = [], []
    for image_id, items in masks_by_image.items():
        h, w = items[0][1].shape if items else SIZES[image_id]
        images.append({"id": image_id, "file_name": f"img{image_id}.jpg", "height": h, "width": w})
        for cat, mask in items:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "segmentation": mask_to_coco(mask), "area": int(mask.sum()), "bbox": _bbox(mask),
                                "iscrowd": 0, "attribute_ids": []})
    return {"images": images, "annotations": annotations, "categories": _categories()}


def _result(image_id, cat, mask, score):
    return {"image_id": image_id, "category_id": cat, "bbox": _bbox(mask), "score": score,
            "segmentation": mask_to_coco(mask)}


@pytest.fixture(scope="module")
def scene():
    """Three images, eight objects; category 0 (a valid id) included, several classes with two instances."""
    rng = np.random.default_rng(7)
    gt = {}
    for image_id, (h, w) in SIZES.items():
        items = []
        for cat in ([0, 0, 5] if image_id == 1 else [5, 23, 23] if image_id == 2 else [0, 31]):
            y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
            items.append((cat, _rect(h, w, y0, y0 + rng.integers(6, h // 2), x0, x0 + rng.integers(6, w // 2))))
        gt[image_id] = items
    return gt


@pytest.fixture(scope="module")
def gt_path(scene, tmp_path_factory):
    path = tmp_path_factory.mktemp("gt") / "gt.json"
    path.write_text(json.dumps(_gt_document(scene)))
    return path


def _perfect(scene):
    return [_result(i, c, m, 0.9) for i, items in scene.items() for c, m in items]


def _partial(scene):
    """Some objects missed, the rest shifted by a few pixels, plus one spurious detection."""
    out = []
    for i, items in scene.items():
        for n, (c, m) in enumerate(items):
            if n == 1:
                continue
            out.append(_result(i, c, np.roll(m, n + 1, axis=1), 0.3 + 0.2 * n))
    out.append(_result(2, 5, _rect(40, 40, 0, 10, 0, 10), 0.95))
    return out


def _duplicates(scene):
    perfect = _perfect(scene)
    return perfect + [dict(r, score=0.5) for r in perfect[:3]]


def _wrong_class(scene):
    return [_result(i, (c + 1) % 46, m, 0.8) for i, items in scene.items() for c, m in items]


def _pycocotools_stats(gt_path, results, iou_type):
    """The reference: pycocotools called by hand on the same input (mask-only results for segm)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        dets = copy.deepcopy(results)
        if iou_type == "segm":
            for d in dets:
                d.pop("bbox")
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _single_class_ap(gt_path, results, iou_type, cat_id):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        dets = copy.deepcopy(results)
        if iou_type == "segm":
            for d in dets:
                d.pop("bbox")
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
        ev.params.catIds = [cat_id]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


@pytest.mark.parametrize("make_results", [_perfect, _partial, _duplicates, _wrong_class])
def test_evaluate_coco_equals_pycocotools(scene, gt_path, make_results, capsys):
    results = make_results(scene)
    metrics = evaluate_coco(gt_path, results)
    assert capsys.readouterr().out == ""  # pycocotools' chatter suppressed
    for iou_type in ("bbox", "segm"):
        reference = _pycocotools_stats(gt_path, results, iou_type)
        np.testing.assert_array_equal(metrics.stats[iou_type], reference)
        assert getattr(metrics, f"{iou_type}_mAP") == reference[0]
        assert getattr(metrics, f"{iou_type}_AP50") == reference[1]
        assert getattr(metrics, f"{iou_type}_AP75") == reference[2]
    # per-class rows agree with COCOeval restricted to that one class
    for row in metrics.per_class:
        if row.num_gt:
            assert row.segm_ap == pytest.approx(_single_class_ap(gt_path, results, "segm", row.category_id), abs=1e-12)
        else:
            assert math.isnan(row.segm_ap) and math.isnan(row.bbox_ap)


def test_perfect_and_wrong_class_known_values(scene, gt_path):
    perfect = evaluate_coco(gt_path, _perfect(scene))
    assert perfect.segm_mAP == pytest.approx(1.0) and perfect.bbox_mAP == pytest.approx(1.0)
    assert [r.category_id for r in perfect.per_class if r.num_gt] == [0, 5, 23, 31]
    assert all(r.segm_ap == pytest.approx(1.0) for r in perfect.per_class if r.num_gt)
    wrong = evaluate_coco(gt_path, _wrong_class(scene))
    assert wrong.segm_mAP == 0.0 and wrong.bbox_mAP == 0.0


def test_zero_detections_score_zero(scene, gt_path):
    metrics = evaluate_coco(gt_path, [])
    assert metrics.bbox_mAP == 0.0 and metrics.segm_mAP == 0.0
    rows = {r.category_id: r for r in metrics.per_class}
    assert rows[0].segm_ap == 0.0 and rows[0].num_gt == 3 and rows[0].num_dets == 0
    assert math.isnan(rows[1].segm_ap)
    as_dict = metrics.as_dict()
    assert as_dict["segm_mAP"] == 0.0 and as_dict["per_class"][1]["segm_AP"] is None
    json.dumps(as_dict)  # JSON-ready


def test_coco_from_dict_indexes_quietly_and_evaluates_like_the_file(scene, gt_path, capsys):
    dataset = json.loads(gt_path.read_text())
    coco = coco_from_dict(dataset)
    assert capsys.readouterr().out == ""
    assert coco.dataset is dataset and sorted(coco.getImgIds()) == sorted(im["id"] for im in dataset["images"])
    assert len(coco.getAnnIds(catIds=[0])) == 3
    from_dict, from_file = evaluate_coco(coco, _partial(scene)), evaluate_coco(gt_path, _partial(scene))
    assert from_dict.as_dict() == from_file.as_dict()
    assert capsys.readouterr().out == ""


def test_results_file_and_log(scene, gt_path, tmp_path):
    path = tmp_path / "res.json"
    path.write_text(json.dumps(_partial(scene)))
    lines = []
    metrics = evaluate_coco(gt_path, str(path), iou_types=("segm",), log=lines.append)
    assert math.isnan(metrics.bbox_mAP) and metrics.iou_types == ["segm"]
    assert metrics.segm_mAP == _pycocotools_stats(gt_path, _partial(scene), "segm")[0]
    assert any("Average Precision" in line for line in lines)


def test_bad_inputs_raise_user_errors(scene, gt_path, tmp_path):
    good = _perfect(scene)
    with pytest.raises(UserError, match="not found"):
        evaluate_coco(tmp_path / "missing.json", good)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        evaluate_coco(gt_path, bad_json)
    with pytest.raises(UserError, match="image_id 99"):
        evaluate_coco(gt_path, good + [dict(good[0], image_id=99)])
    with pytest.raises(UserError, match="category_id 46"):
        evaluate_coco(gt_path, good + [dict(good[0], category_id=46)])
    with pytest.raises(UserError, match="lacks segmentation"):
        evaluate_coco(gt_path, [{k: v for k, v in good[0].items() if k != "segmentation"}])
    with pytest.raises(UserError, match="mask size"):
        evaluate_coco(gt_path, [dict(good[0], segmentation=mask_to_coco(np.ones((5, 5), np.uint8)))])


def test_per_class_table_and_pr_curves(scene, gt_path, tmp_path):
    metrics = evaluate_coco(gt_path, _partial(scene))
    table = format_per_class_table(metrics, extra={"kaggle": {0: 0.25}})
    lines = table.splitlines()
    assert len(lines) == 2 + 46 + 2
    assert lines[0].split() == ["id", "name", "#GT", "#det", "bbox", "AP", "segm", "AP", "kaggle"]
    row0 = lines[2].split()
    assert row0[0] == "0" and row0[-1] == "25.0" and row0[-2] == f"{100 * metrics.per_class[0].segm_ap:.1f}"
    assert lines[3].split()[-3:] == ["-", "-", "-"]  # category 1 has no GT
    # numbers right-aligned under their headers
    assert len({len(line) for line in (lines[0], lines[2])}) == 1
    precision = metrics.precision["segm"]
    assert precision.shape == (10, 101, 46, 4, 3)
    curve = metrics.pr_curve("segm", 0.5)
    assert curve.shape == (101,) and np.all((curve >= 0) & (curve <= 1))
    out = tmp_path / "plots" / "coco.png"
    plot_coco_metrics(metrics, out)
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 500 and image.shape[1] > 1000


# --------------------------------------------------------------------------------------------------
# The competition metric. Masks live on the 512 x 512 grid unless a test says otherwise.

def _k(y1, x1=100, y0=0, x0=0, size=(512, 512)):
    return _rect(*size, y0, y1, x0, x1)


def _kaggle(gt_items, preds, tmp_path=None):
    """gt_items: {image_id: [(cat, mask)]}; preds: [(image_id, cat, mask, score)]."""
    gt = _gt_document(gt_items)
    return kaggle_evaluate(COCO_from(gt), [_result(i, c, m, s) for i, c, m, s in preds], progress=False)


def COCO_from(document):
    coco = COCO()
    coco.dataset = copy.deepcopy(document)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_kaggle_one_match_one_false_positive():
    # GT: 100x100 square. Pred A (score .9): its top 80 rows -> IoU 8000/10000 = 0.8. Pred B (.5): elsewhere.
    # t = .50 .55 .60 .65 .70 .75: A matches (0.8 > t): TP=1, FP=1 (B), FN=0 -> 1/2.
    # t = .80 (0.8 is not > .8) .85 .90 .95: TP=0, FP=2, FN=1 -> 0/3 = 0.
    # Mean over thresholds: 6 * 0.5 / 10 = 0.3.
    result = _kaggle({1: [(3, _k(100))]}, [(1, 3, _k(80), 0.9), (1, 3, _k(450, 500, 400, 400), 0.5)])
    assert result.score == pytest.approx(0.3)
    assert result.per_class == {3: pytest.approx(0.3)} and result.num_pairs == 1


def test_kaggle_greedy_by_score_and_single_use_of_gt():
    # GT: 100x100. P1 (score .9) rows 0-59 -> IoU .6; P2 (score .8) rows 0-89 -> IoU .9.
    # t = .50, .55: P1 (first by score) takes the GT; P2 finds it taken -> TP=1, FP=1 -> 1/2.
    # t = .60 ... .85 (6 thresholds): P1's .6 is not > t, so P2 takes it -> TP=1, FP=1 -> 1/2.
    # t = .90, .95: nobody matches -> 0/(0+2+1) = 0. Mean: 8 * 0.5 / 10 = 0.4.
    result = _kaggle({1: [(0, _k(100))]}, [(1, 0, _k(90), 0.8), (1, 0, _k(60), 0.9)])
    assert result.score == pytest.approx(0.4)


def test_kaggle_iou_equal_to_threshold_does_not_match():
    # IoU exactly 0.75 (rows 0-74 of the 100x100 GT): matches at .50 .55 .60 .65 .70 (score 1 each),
    # not at .75 (strictly greater needed) and above (0/(0+1+1) = 0). Mean 5/10 = 0.5 (with >= it would be 0.6).
    assert kaggle_score(COCO_from(_gt_document({1: [(7, _k(100))]})), [_result(1, 7, _k(75), 0.7)]) == pytest.approx(0.5)


def test_kaggle_wrong_class_and_pairs_without_anything():
    # Image 1: GT class 0, prediction of the same mask as class 1 -> pair (1,0) is a miss (0), pair (1,1)
    # a false positive (0). Image 2: a perfect class-0 prediction -> 1. Image 3 has nothing: no pair.
    # Mean over the three pairs: 1/3. Class 0: pairs (1,0)=0 and (2,0)=1 -> 0.5; class 1: 0.
    gt = {1: [(0, _k(100))], 2: [(0, _k(200, 50))], 3: []}
    result = _kaggle(gt, [(1, 1, _k(100), 0.9), (2, 0, _k(200, 50), 0.9)])
    assert result.score == pytest.approx(1 / 3)
    assert result.per_class == {0: pytest.approx(0.5), 1: 0.0}
    assert result.pairs_per_class == {0: 2, 1: 1}


def test_kaggle_masks_compared_at_512():
    # GT at 1024 x 768: a block that maps exactly onto rows 0-127, cols 0-255 of the 512 grid
    # (nearest rule: row r samples 2r + 1, col c samples floor((c + .5) * 1.5)).
    # A prediction given at 512 x 512 of that block scores 1; so does one at full size.
    full = _rect(1024, 768, 0, 256, 0, 384)
    small = _rect(512, 512, 0, 128, 0, 256)
    gt = COCO_from(_gt_document({1: [(4, full)]}))
    assert kaggle_score(gt, [_result(1, 4, small, 0.9)]) == pytest.approx(1.0)
    assert kaggle_score(gt, [_result(1, 4, full, 0.9)]) == pytest.approx(1.0)
    # A prediction covering half the block's rows at 512: IoU .5 -> matches nowhere -> 0.
    assert kaggle_score(gt, [_result(1, 4, _rect(512, 512, 0, 64, 0, 256), 0.9)]) == 0.0


def test_kaggle_score_threshold_drops_low_scores():
    gt = COCO_from(_gt_document({1: [(2, _k(100))]}))
    preds = [_result(1, 2, _k(100), 0.9), _result(1, 2, _k(450, 500, 400, 400), 0.1)]
    assert kaggle_score(gt, preds) == pytest.approx(0.5)  # TP=1, FP=1 at every threshold
    assert kaggle_score(gt, preds, score_threshold=0.5) == pytest.approx(1.0)


def test_match_scores_takes_best_unmatched_gt():
    # One prediction, two GTs with IoU .6 and .9: it takes the .9 one. TP=1, FN=1 while .9 > t (8 thresholds)
    # -> 1/2; at .90, .95: 0/(0+1+2). Mean 0.4.
    np.testing.assert_allclose(match_scores([[0.6, 0.9]], [0.5]), [0.5] * 8 + [0, 0])
    np.testing.assert_array_equal(match_scores(np.zeros((0, 2)), []), np.zeros(10))
    np.testing.assert_array_equal(match_scores(np.zeros((2, 0)), [0.3, 0.2]), np.zeros(10))
    assert list(IOU_THRESHOLDS) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


# --------------------------------------------------------------------------------------------------

def _loop_iou(pred, label, num_classes, ignore):
    keep = label != ignore
    pred, label = pred[keep], label[keep]
    out = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (label == c))
        union = np.sum((pred == c) | (label == c))
        out.append(tp / union if union else np.nan)
    return np.array(out), np.mean(pred == label)


def test_confusion_matrix_matches_direct_loop():
    rng = np.random.default_rng(3)
    cm = ConfusionMatrix(6, ignore_index=255)
    preds, labels = [], []
    for _ in range(3):
        label = rng.integers(0, 5, size=(2, 17, 23))  # class 5 never in labels...
        pred = np.where(rng.random(label.shape) < 0.6, label, rng.integers(0, 5, size=label.shape))
        label[rng.random(label.shape) < 0.1] = 255
        cm.update(pred, label)
        preds.append(pred.ravel())
        labels.append(label.ravel())
    expected_iou, expected_acc = _loop_iou(np.concatenate(preds), np.concatenate(labels), 6, 255)
    np.testing.assert_allclose(cm.iou_per_class(), expected_iou)
    assert np.isnan(cm.iou_per_class()[5])  # ...nor in predictions: NaN, left out of the mean
    assert cm.mean_iou() == pytest.approx(np.nanmean(expected_iou))
    assert cm.pixel_accuracy() == pytest.approx(expected_acc)
    names = ["bg", "a", "b", "c", "d", "e"]
    as_dict = cm.as_dict(names)
    assert as_dict["iou_per_class"]["e"] is None and as_dict["mIoU"] == pytest.approx(cm.mean_iou())
    table = cm.table(names).splitlines()
    assert table[2].split() == ["0", "bg", str(int(np.sum(np.concatenate(labels) == 0))),
                                f"{100 * expected_iou[0]:.1f}"]
    assert table[7].split()[-1] == "-"
    cm.reset()
    assert math.isnan(cm.pixel_accuracy()) and math.isnan(cm.mean_iou())


def test_confusion_matrix_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="label value 3"):
        cm.update(np.zeros(2, int), np.array([0, 3]))
    with pytest.raises(ValueError, match="fractional"):
        cm.update(np.array([0.5, 1.0]), np.array([0, 1]))
    cm.update(np.array([2, 1]), np.array([-1, 1]))  # default ignore_index -1 skips the first pixel
    assert cm.pixel_accuracy() == 1.0 and cm.matrix.sum() == 1
    cm.update(np.array([[0.0, 2.0]], np.float32), np.array([[0, 1]]))  # argmax output comes as floats
    assert cm.matrix[0, 0] == 1 and cm.matrix[1, 2] == 1 and cm.matrix.sum() == 3


# --------------------------------------------------------------------------------------------------

def test_evaluate_cli_writes_json(scene, gt_path, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_partial(scene)))
    out = tmp_path / "metrics.json"
    plot = tmp_path / "pr.png"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), "--annotations", str(gt_path),
                           "--results", str(results), "--json-out", str(out), "--plot", str(plot)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    reference_segm = _pycocotools_stats(gt_path, _partial(scene), "segm")[0]
    assert metrics["segm_mAP"] == pytest.approx(reference_segm)
    assert metrics["bbox_mAP"] == pytest.approx(_pycocotools_stats(gt_path, _partial(scene), "bbox")[0])
    expected_kaggle = kaggle_score(str(gt_path), _partial(scene))
    assert metrics["kaggle_score"] == pytest.approx(expected_kaggle) and 0 <= expected_kaggle <= 1
    assert len(metrics["per_class"]) == 46
    assert "segm mAP" in proc.stdout and "shirt, blouse" in proc.stdout
    assert cv2.imread(str(plot)) is not None
    # refuses to overwrite, and a results file naming an unknown image is one clear error line
    again = subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), "--annotations", str(gt_path),
                            "--results", str(results), "--json-out", str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr
    results.write_text(json.dumps([dict(_partial(scene)[0], image_id=42)]))
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), "--annotations", str(gt_path),
                          "--results", str(results)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "image_id 42" in bad.stderr
    assert "Traceback" not in bad.stderr


# --------------------------------------------------------------------------------------------------
# Malformed results: one error line naming the entry (index and image_id), never a traceback or a score.

def _bad_counts(result):
    """The entry's RLE with counts of a 5 x 5 mask: they do not decode to its 48 x 64 size."""
    return dict(result["segmentation"], counts=mask_to_coco(np.ones((5, 5), np.uint8))["counts"])


@pytest.mark.parametrize("change, message", [
    (lambda r: dict(r, bbox=[0, 0, -5, "a"]), r"bbox \[0, 0, -5, 'a'\] is not \[x, y, width, height\] of 4 finite"),
    (lambda r: dict(r, bbox=[1, 2]), r"bbox \[1, 2\] is not \[x, y, width, height\]"),
    (lambda r: dict(r, bbox=[1, 2, -3, 4]), r"bbox \[1, 2, -3, 4\] has a negative width or height"),
    (lambda r: {k: v for k, v in r.items() if k != "bbox"}, r"lacks bbox"),
    (lambda r: dict(r, score=float("nan")), r"score nan is not a finite number"),
    (lambda r: dict(r, score="0.5"), r"score '0.5' is not a finite number"),
    (lambda r: dict(r, segmentation=_bad_counts(r)), r"'counts' decode to 25 pixels, not the 3072 of its size"),
    (lambda r: dict(r, segmentation=dict(r["segmentation"], counts="0a")), r"'counts'"),
    (lambda r: dict(r, segmentation=dict(r["segmentation"], counts=[3000, -10, 82])), r"negative run length"),
    (lambda r: dict(r, category_id=[0]), r"category_id \[0\] is not a ground-truth category"),
])
def test_malformed_results_name_the_entry(scene, gt_path, change, message):
    good = _perfect(scene)
    assert good[1]["image_id"] == 1
    results = good[:1] + [change(good[1])] + good[2:]
    with pytest.raises(UserError, match=r"^results: entry 1 \(image_id 1\): .*" + message):
        evaluate_coco(gt_path, results)


def test_kaggle_metric_checks_counts_but_needs_no_bbox(scene, gt_path):
    good = _perfect(scene)
    without_boxes = [{k: v for k, v in r.items() if k != "bbox"} for r in good]
    assert kaggle_score(gt_path, without_boxes) == pytest.approx(1.0)
    with pytest.raises(UserError, match=r"entry 0 \(image_id 1\): .*'counts' decode to 25 pixels"):
        kaggle_score(gt_path, [dict(good[0], segmentation=_bad_counts(good[0]))])


def test_evaluate_cli_malformed_entry_is_one_line(scene, gt_path, tmp_path):
    results = tmp_path / "results.json"
    entries = _perfect(scene)
    entries[2] = dict(entries[2], bbox=[0, 0, -5, "a"])
    results.write_text(json.dumps(entries))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), "--annotations", str(gt_path),
                           "--results", str(results)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {results}: entry 2 (image_id {entries[2]['image_id']}): bbox [0, 0, -5, 'a'] is not "
        "[x, y, width, height] of 4 finite numbers"]


def test_classes_score_only_a_models_categories(scene, gt_path, tmp_path):
    """A model of categories 0 and 5 found all of theirs: 1.0 over its own categories, as validation scores it;
    over every ground-truth category the two it cannot predict (23, 31) count 0, and the tool says so."""
    from gluon_fashion.evaluation import evaluate_files

    results = tmp_path / "results.json"
    results.write_text(json.dumps([r for r in _perfect(scene) if r["category_id"] in (0, 5)]))
    said = []
    own = evaluate_files(gt_path, results, kaggle=False, categories=[0, 5], echo=said.append)
    assert own["segm_mAP"] == pytest.approx(1.0) and [r["category_id"] for r in own["per_class"]] == [0, 5]
    assert not any(line.startswith("note:") for line in said)
    said.clear()
    every = evaluate_files(gt_path, results, kaggle=False, echo=said.append)
    assert every["segm_mAP"] == pytest.approx(0.5)
    assert any(line.startswith("note: 2 ground-truth categories have no detection (23, 31)") for line in said)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "tools" / "evaluate.py"),
                           "--annotations", str(gt_path), "--results", str(results), "--classes", "0,5",
                           "--no-kaggle"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "segm mAP 100.0" in proc.stdout, proc.stdout + proc.stderr
