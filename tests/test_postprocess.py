"""Tuned post-processing, test-time augmentation and ensembles (gluon_fashion.postprocess).

The merge and the search are checked on crafted detections whose right answer is known; the tools on
randomly initialised checkpoints (their accuracy does not matter, only the plumbing).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from gluon_fashion.engine.checkpoint import CheckpointManager
from gluon_fashion.errors import UserError
from gluon_fashion.evaluation.coco import coco_from_dict
from gluon_fashion.evaluation.kaggle_metric import greedy_true_positives, kaggle_evaluate, match_scores
from gluon_fashion.models.mask_rcnn import build_mask_rcnn, checkpoint_meta, to_coco_results
from gluon_fashion.postprocess import (Detections, MetricCache, PostprocessFile, PostprocessSettings, SearchSpace,
                                       Tta, apply_postprocess, check_ensemble, detections_from_outputs,
                                       inference_options, merge_passes, nms_keep, read_postprocess, search,
                                       write_postprocess)
from gluon_fashion.predict import ImageReader, find_images, load_model, predict_images
from gluon_fashion.rle import mask_to_coco
from gluon_fashion.synthetic import make_sample_dataset
from gluon_fashion.convert import convert_imaterialist

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, GLUON_FASHION_NO_PROGRESS="1")
M = 16  # mask side of the crafted detections (a multiple of 4: the garment fills exactly its middle half)


def _dets(size, cats, scores, boxes, masks=None) -> Detections:
    masks = np.full((len(cats), M, M), 0.9, np.float32) if masks is None else np.asarray(masks, np.float32)
    return Detections(tuple(size), np.asarray(cats, np.int64), np.asarray(scores, np.float32),
                      np.asarray(boxes, np.float64).reshape(-1, 4), masks)


# ------------------------------------------------------------------------------------------------ merge
def test_a_flipped_duplicate_merges_into_one_with_the_masks_averaged():
    rng = np.random.RandomState(0)
    size, in_size = (100, 200), (50, 100)  # the network saw the photo at half size
    mask_a, mask_b = rng.rand(M, M).astype(np.float32), rng.rand(M, M).astype(np.float32)
    box_in = np.array([[10.0, 5.0, 30.0, 40.0]])
    plain = detections_from_outputs(np.array([0]), np.array([0.8], np.float32), box_in, mask_a[None], in_size,
                                    size, category_ids=[7])
    # What the network reports on the mirrored input: the box mirrored, the mask flipped left-right.
    mirrored_box = np.array([[in_size[1] - 30.0, 5.0, in_size[1] - 10.0, 40.0]])
    flipped = detections_from_outputs(np.array([0]), np.array([0.6], np.float32), mirrored_box,
                                      mask_b[:, ::-1][None], in_size, size, category_ids=[7], flipped=True)
    np.testing.assert_allclose(flipped.boxes, plain.boxes)
    np.testing.assert_allclose(flipped.masks[0], mask_b)
    merged = merge_passes([plain, flipped])
    assert len(merged) == 1 and merged.category_ids.tolist() == [7]
    np.testing.assert_allclose(merged.boxes[0], [20, 10, 60, 80])
    assert merged.scores[0] == pytest.approx((0.8 + 0.6) / 2)
    np.testing.assert_allclose(merged.masks[0], (mask_a + mask_b) / 2, atol=1e-5)


def test_attribute_probabilities_merge_score_weighted_and_reach_the_instances():
    size, ids = (100, 200), (36, 156, 317)
    first = detections_from_outputs(np.array([0, 1]), np.array([0.8, 0.7], np.float32),
                                    np.array([[10.0, 5.0, 30.0, 40.0], [100.0, 50, 150, 90]]),
                                    np.full((2, M, M), 0.9, np.float32), size, size, category_ids=[7, 8],
                                    attributes=np.array([[0.9, 0.1, 0.6], [0.2, 0.2, 0.2]]), attribute_ids=ids)
    second = detections_from_outputs(np.array([0]), np.array([0.2], np.float32), np.array([[10.0, 5.0, 30.0, 40.0]]),
                                     np.full((1, M, M), 0.9, np.float32), size, size, category_ids=[7],
                                     attributes=np.array([[0.4, 0.6, 0.1]]), attribute_ids=ids)
    merged = merge_passes([first, second])
    assert merged.attribute_ids == ids and merged.category_ids.tolist() == [7, 8]
    np.testing.assert_allclose(merged.attributes[0], (0.8 * np.array([0.9, 0.1, 0.6]) + 0.2 * np.array([0.4, 0.6, 0.1]))
                               / 1.0, atol=1e-6)
    np.testing.assert_allclose(merged.attributes[1], [0.2, 0.2, 0.2], atol=1e-6)
    instances = apply_postprocess(merged, PostprocessSettings(score_threshold=0.0), size)
    assert instances[0].attributes == pytest.approx({36: 0.8, 156: 0.2, 317: 0.5})
    assert to_coco_results(1, instances[:1])[0]["attribute_ids"] == [36, 317]
    # A pass without attributes (a model trained without --attributes) leaves the merge without any.
    bare = detections_from_outputs(np.array([0]), np.array([0.5], np.float32), np.array([[10.0, 5.0, 30.0, 40.0]]),
                                   np.full((1, M, M), 0.9, np.float32), size, size, category_ids=[7])
    assert merge_passes([first, bare]).attributes is None
    assert apply_postprocess(bare, PostprocessSettings(score_threshold=0.0), size)[0].attributes is None


def test_masks_of_shifted_boxes_are_averaged_in_the_merged_box():
    """Two passes box the same square object slightly differently; the merged mask is the mean of both
    soft masks resampled into the merged box, so a uniform object stays uniform inside both boxes."""
    a = _dets((100, 100), [1], [0.9], [[20, 20, 60, 60]], np.ones((1, M, M)))
    b = _dets((100, 100), [1], [0.9], [[24, 20, 64, 60]], np.ones((1, M, M)))
    merged = merge_passes([a, b])
    assert len(merged) == 1
    np.testing.assert_allclose(merged.boxes[0], [22, 20, 62, 60])
    mask = merged.masks[0]
    assert mask[:, M // 2].min() == pytest.approx(1.0, abs=1e-6)  # inside both boxes: both masks say 1
    assert mask[M // 2, 0] == pytest.approx(0.5, abs=0.1)  # left edge: only inside a's box
    assert mask[M // 2, -1] == pytest.approx(0.5, abs=0.1)  # right edge: only inside b's box


def test_an_instance_found_by_one_pass_survives_and_categories_never_merge():
    a = _dets((100, 100), [1, 2], [0.9, 0.7], [[10, 10, 50, 50], [10, 10, 50, 50]])
    b = _dets((100, 100), [1, 1], [0.8, 0.6], [[11, 10, 51, 50], [60, 60, 90, 95]])
    merged = merge_passes([a, b])
    assert len(merged) == 3
    by_cat = {(int(c), tuple(np.round(bx).astype(int))): float(s)
              for c, s, bx in zip(merged.category_ids, merged.scores, merged.boxes)}
    assert by_cat[(2, (10, 10, 50, 50))] == pytest.approx(0.7 / 2)  # category 2: only pass a
    assert by_cat[(1, (60, 60, 90, 95))] == pytest.approx(0.6 / 2)  # only pass b
    assert max(by_cat.values()) == pytest.approx((0.9 + 0.8) / 2)  # the shared one
    assert list(merged.scores) == sorted(merged.scores, reverse=True)


def test_one_pass_is_left_as_it_is_and_a_pass_never_merges_with_itself():
    a = _dets((100, 100), [1, 1], [0.9, 0.8], [[10, 10, 50, 50], [12, 10, 52, 50]])
    assert merge_passes([a]) is a
    merged = merge_passes([a, _dets((100, 100), [], [], np.zeros((0, 4)))])
    assert len(merged) == 2  # the two overlapping boxes of one pass stay two


def test_nms_within_and_across_categories():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
    cats = np.array([1, 1, 2, 1])
    assert nms_keep(boxes, cats, None).all()
    assert nms_keep(boxes, cats, 0.5).tolist() == [True, False, True, True]
    assert nms_keep(boxes, cats, 0.5, across_classes=True).tolist() == [True, False, False, True]


# --------------------------------------------------------------------------------- metric and search
def _rect(size, box):
    mask = np.zeros(size, np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 1
    return mask


def _crafted(num_images=8, seed=0):
    """512 x 512 images, each with two garments of categories 1 and 2 and predictions whose best settings are
    known: every true garment is detected at score >= 0.72 inside a box twice its size, its soft mask 0.75
    on the garment and 0.45 on the ring around it, so binarising at 0.6 (their midpoint, where bilinear
    resampling crosses exactly at the garment's edge) gives the garment, 0.5 bleeds past its edge and 0.4
    takes the whole box; false positives score 0.40-0.60 (best threshold in (0.60, 0.72]); a near-duplicate
    of each first garment scores 0.05 under it (box IoU 0.498 with it: removed by NMS at IoU < 0.5, and by
    no score threshold that keeps every garment); a tiny 4 x 4
    false positive scores 0.95 (removed by a minimum mask area of 25 pixels or more). Every box lies
    inside the image, so no clipping distorts a mask."""
    rng = np.random.RandomState(seed)
    size = (512, 512)
    images, annotations, detections = [], [], {}
    garment_scores, duplicate_scores = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 512, "width": 512})
        cats, scores, boxes, masks = [], [], [], []
        for k, cat in enumerate((1, 2)):
            x1, y1 = int(rng.randint(56, 95)) + 250 * k, int(rng.randint(98, 219))
            gt_box = (x1, y1, x1 + 112, y1 + 196)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "segmentation": mask_to_coco(_rect(size, gt_box)), "area": 112 * 196,
                                "bbox": [x1, y1, 112, 196], "iscrowd": 0})
            # A box twice the garment's size around it: inner half 0.75, the ring around it 0.45.
            soft = np.full((M, M), 0.45, np.float32)
            soft[M // 4: 3 * M // 4, M // 4: 3 * M // 4] = 0.75
            cats.append(cat)
            scores.append(0.72 + 0.2 * rng.rand())
            garment_scores.append(scores[-1])
            boxes.append([x1 - 56, y1 - 98, x1 + 168, y1 + 294])
            masks.append(soft)
            if k == 0:  # the near-duplicate: same garment, box shifted by a third
                cats.append(cat)
                scores.append(scores[-1] - 0.05)
                duplicate_scores.append(scores[-1])
                boxes.append([x1 - 56 + 75, y1 - 98, x1 + 168 + 75, y1 + 294])
                masks.append(soft)
        for _ in range(2):  # false positives in empty space
            cats.append(int(rng.choice([1, 2])))
            scores.append(0.40 + 0.2 * rng.rand())
            boxes.append([0, 440, 50, 500])  # below every garment
            masks.append(np.full((M, M), 0.9, np.float32))
        cats.append(1)
        scores.append(0.95)
        boxes.append([500, 500, 504, 504])
        masks.append(np.full((M, M), 0.9, np.float32))
        detections[image_id] = _dets(size, cats, scores, boxes, masks).sorted()
    assert max(duplicate_scores) > min(garment_scores)  # no score threshold removes every duplicate alone
    gt = coco_from_dict({"images": images, "annotations": annotations,
                         "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]})
    return gt, detections


def test_the_search_finds_the_known_best_settings():
    gt, detections = _crafted()
    cache = MetricCache(detections, gt)
    found = search(cache, SearchSpace(mask_thresholds=(0.4, 0.5, 0.6), rounds=2))
    s = found.settings
    scores = np.concatenate([d.scores for d in detections.values()])
    false_positive_top = scores[(scores >= 0.4) & (scores < 0.6)].max()
    assert false_positive_top < s.score_threshold <= 0.72
    assert s.nms_iou is not None and s.nms_iou <= 0.5
    assert s.min_mask_area >= 25
    assert s.mask_threshold == 0.6
    assert found.score > cache.score(PostprocessSettings())
    assert found.score == pytest.approx(1.0, abs=0.05)  # every garment found, nothing else kept


def test_the_attribute_threshold_tuned_under_the_settings_separates_true_from_false_attributes():
    """Each garment's own detections give its attributes probability 0.62-0.8 and the others 0.35-0.55: the tuned
    threshold lies between (0.55 on the grid), and beats the default 0.5 on the held-out half."""
    from gluon_fashion.postprocess import _tune_attribute_threshold, split_halves

    gt, detections = _crafted()
    rng = np.random.RandomState(1)
    ids = (10, 20, 30)
    for ann in gt.dataset["annotations"]:
        ann["attribute_ids"] = sorted(int(a) for a in rng.choice(ids, size=rng.randint(1, 3), replace=False))
    for image_id, det in detections.items():
        probabilities = rng.uniform(0.35, 0.55, (len(det), len(ids)))
        for ann in (a for a in gt.dataset["annotations"] if a["image_id"] == image_id):
            x, y, w, h = ann["bbox"]
            cx, cy = x + w / 2, y + h / 2  # the garment's own detections' boxes hold its centre
            own = ((det.category_ids == ann["category_id"]) & (det.boxes[:, 0] < cx) & (det.boxes[:, 2] > cx)
                   & (det.boxes[:, 1] < cy) & (det.boxes[:, 3] > cy))
            for j, a in enumerate(ids):
                if a in ann["attribute_ids"]:
                    probabilities[own, j] = rng.uniform(0.62, 0.8, own.sum())
        det.attributes, det.attribute_ids = probabilities.astype(np.float32), ids
    cache = MetricCache(detections, coco_from_dict(gt.dataset))
    settings = PostprocessSettings(score_threshold=0.65, mask_threshold=0.6, nms_iou=0.45, min_mask_area=25)
    assert cache.score(settings) == pytest.approx(1.0)  # the settings keep exactly the garments
    found = _tune_attribute_threshold(cache, settings, settings, *split_halves(len(cache.image_ids)))
    # Every grid point in [0.55, 0.62] separates them; ties go to the lowest.
    assert found["tuning_half_threshold"] == found["written"] == pytest.approx(0.55)
    held = found["held_out_half"]
    assert held["tuned"] > held["default"] and found["all_val"]["tuned"] > found["all_val"]["default"]


def test_the_fast_metric_equals_kaggle_evaluate_on_the_written_results():
    gt, detections = _crafted(num_images=6, seed=3)
    cache = MetricCache(detections, gt)
    rng = np.random.RandomState(1)
    for _ in range(12):
        settings = PostprocessSettings(
            score_threshold=float(rng.choice([0.0, 0.3, 0.5, 0.7, 0.9])),
            mask_threshold=float(rng.choice([0.3, 0.5, 0.7])), max_detections=int(rng.choice([1, 2, 3, 100])),
            nms_iou=rng.choice([None, 0.3, 0.5]), cross_class_nms_iou=rng.choice([None, 0.2]),
            min_mask_area=int(rng.choice([0, 25])), class_score_thresholds={2: 0.85} if rng.rand() < 0.3 else {})
        images = None if rng.rand() < 0.5 else np.array([0, 2, 3])
        results = cache.results(settings, images)
        expected = kaggle_evaluate(cache.ground_truth(images), results, progress=False).score
        assert cache.score(settings, images) == pytest.approx(expected, abs=1e-12), settings


def test_greedy_true_positives_matches_one_pair_at_a_time():
    rng = np.random.RandomState(0)
    pairs, rows, singles = [], [], []
    for p in range(40):
        n, g = rng.randint(1, 6), rng.randint(0, 4)
        ious = np.round(rng.rand(n, g), 1)
        scores = np.sort(np.round(rng.rand(n), 1))[::-1]
        singles.append(match_scores(ious, scores))
        padded = np.full((n, 3), -1.0)
        padded[:, :g] = ious
        rows.append(padded)
        pairs += [p] * n
    hits = greedy_true_positives(np.concatenate(rows), np.array(pairs))
    start = 0
    for p, single in enumerate(singles):
        n, g = rows[p].shape[0], int((rows[p][0] >= 0).sum())
        tp = hits[start:start + n].sum(axis=0)
        np.testing.assert_allclose(tp / (n + g - tp), single)
        start += n


def test_apply_postprocess_honours_each_setting():
    det = _dets((512, 512), [1, 1, 2, 2], [0.9, 0.8, 0.7, 0.3],
                [[0, 0, 100, 100], [5, 0, 105, 100], [200, 200, 300, 300], [400, 400, 404, 404]])
    grid = (512, 512)
    assert len(apply_postprocess(det, PostprocessSettings(score_threshold=0.0), grid)) == 4
    assert len(apply_postprocess(det, PostprocessSettings(score_threshold=0.5), grid)) == 3
    assert [i.score for i in apply_postprocess(det, PostprocessSettings(score_threshold=0.0, nms_iou=0.5), grid)] \
        == pytest.approx([0.9, 0.7, 0.3])
    assert len(apply_postprocess(det, PostprocessSettings(score_threshold=0.0, min_mask_area=50), grid)) == 3
    assert len(apply_postprocess(det, PostprocessSettings(score_threshold=0.0, max_detections=2), grid)) == 2
    own = PostprocessSettings(score_threshold=0.95, class_score_thresholds={2: 0.5})
    assert [i.category_id for i in apply_postprocess(det, own, grid)] == [2]
    # Masks pasted on another grid: boxes scale with it.
    half = apply_postprocess(det, PostprocessSettings(score_threshold=0.0), (256, 256))
    np.testing.assert_allclose(half[0].box, [0, 0, 50, 50])


# ------------------------------------------------------------------------------------------ the file
def test_postprocess_file_round_trip(tmp_path):
    settings = PostprocessSettings(score_threshold=0.45, mask_threshold=0.4, max_detections=30, nms_iou=0.3,
                                   cross_class_nms_iou=0.8, min_mask_area=25, class_score_thresholds={3: 0.6},
                                   attribute_threshold=0.35)
    record = PostprocessFile(settings, Tta(True, (600, 800)), [{"path": "a.params", "sha1": "ab" * 20}],
                             scores={"held_out_half": {"default": {"kaggle_score": 0.2}}}, search={"rounds": 3})
    path = tmp_path / "postprocess.json"
    write_postprocess(path, record)
    back = read_postprocess(path)
    assert back.settings == settings and back.tta == Tta(True, (600, 800))
    assert back.weights == record.weights and back.scores == record.scores and back.search == record.search


@pytest.mark.parametrize("content, words", [
    ("not json", "not a JSON file"),
    ('{"settings": {}}', "schema"),
    ('{"schema": "gluon_fashion.postprocess/1", "settings": {"mask_threshold": 1.5}}', "mask_threshold 1.5"),
    ('{"schema": "gluon_fashion.postprocess/1", "settings": {"score": 0.5}}', "unknown setting(s) score"),
    ('{"schema": "gluon_fashion.postprocess/1", "settings": {"max_detections": 2.5}}', "max_detections"),
])
def test_malformed_postprocess_files_are_refused_naming_the_file(tmp_path, content, words):
    path = tmp_path / "pp.json"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        read_postprocess(path)
    assert str(path) in str(info.value) and words in str(info.value)


# ------------------------------------------------------------------------------------------- flags
def test_tta_flags_parse_and_refuse_bad_values():
    assert Tta.from_flags(["flip"], "600, 800") == Tta(True, (600, 800))
    assert Tta.from_flags([], None) == Tta(False, ())
    for scales, words in (("600,abc", "'abc'"), ("16", "too small"), ("600,600", "repeated")):
        with pytest.raises(UserError, match=words):
            Tta.from_flags([], scales)


def test_thresholds_and_postprocess_together_are_refused():
    from argparse import Namespace

    args = Namespace(score_threshold=0.3, mask_threshold=None, max_detections=None, postprocess="pp.json",
                     tta=[], tta_scales=None)
    with pytest.raises(UserError, match="--score-threshold and --postprocess pp.json"):
        inference_options(args)
    args.postprocess = None
    assert inference_options(args)["score_threshold"] == 0.3 and inference_options(args)["max_detections"] == 100


def test_checkpoints_of_different_class_sets_are_refused_naming_both():
    first = {"task": "mask_rcnn", "classes": [{"id": 0, "name": "shirt"}, {"id": 1, "name": "top"}]}
    same = {"task": "mask_rcnn", "classes": [{"id": 1, "name": "top"}, {"id": 0, "name": "shirt"}]}
    other = {"task": "mask_rcnn", "classes": [{"id": 0, "name": "shirt"}, {"id": 6, "name": "pants"}]}
    check_ensemble([("a.params", first), ("b.params", same)], Tta())
    with pytest.raises(UserError) as info:
        check_ensemble([("a.params", first), ("c.params", other)], Tta())
    text = str(info.value)
    assert "a.params" in text and "c.params" in text and "[1]" in text and "[6]" in text
    with pytest.raises(UserError, match="segmentation checkpoint"):
        check_ensemble([("s.params", {"task": "segmentation", "classes": {}})], Tta(flip=True))
    with_attributes = dict(first, attributes=[{"id": 36, "name": "jeans"}])
    check_ensemble([("a.params", with_attributes), ("b.params", dict(same, attributes=[{"id": 36}]))], Tta())
    with pytest.raises(UserError, match="different attributes") as info:
        check_ensemble([("a.params", with_attributes), ("b.params", same)], Tta())
    assert "a.params" in str(info.value) and "b.params" in str(info.value)


# --------------------------------------------------------------------------- tools on real checkpoints
MODEL = "mask_rcnn_resnet18_v1b_coco"


def _checkpoint(folder: Path, classes, seed: int) -> str:
    mx.random.seed(seed)
    net = build_mask_rcnn(MODEL, classes, pretrained=False, rpn_test_pre_nms=256, rpn_test_post_nms=32)
    net(mx.nd.zeros((1, 3, 128, 128)))
    meta = checkpoint_meta(MODEL, classes, 128, 192, net.limits)
    manager = CheckpointManager(str(folder / "mask_rcnn"), meta, metric_name="segm_mAP")
    assert manager.update_best(net, epoch=0, iteration=1, metric=0.0)
    return manager.best_path


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp") / "sample"
    make_sample_dataset(root, num_train=6, num_test=2, seed=4, min_size=128, max_size=192, progress=False)
    convert_imaterialist(root, val_num=4, num_workers=1, progress=False)
    base = tmp_path_factory.mktemp("pp_ckpt")
    weights = [_checkpoint(base / name, list(range(13)), seed) for name, seed in (("a", 0), ("b", 1))]
    odd = _checkpoint(base / "odd", [0, 1, 6], 2)
    return root, weights, odd


def _tool(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


def _tool_main(name: str, *args) -> int:
    """A tool's main() in this process (no second MXNet start-up)."""
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def test_one_pass_with_default_settings_predicts_exactly_what_predict_did(sample):
    root, weights, _ = sample
    model = load_model(weights[0])
    paths = find_images(root / "val")[:2]
    plain = [p.instances_at((512, 512)) for p in predict_images(model, ImageReader(paths), 0.05, progress=False)]
    tuned = [p.instances_at((512, 512)) for p in predict_images(
        model, ImageReader(paths), progress=False, postprocess=PostprocessSettings(score_threshold=0.05))]
    assert sum(map(len, plain)) > 0
    for a, b in zip(plain, tuned):
        assert to_coco_results(1, a) == to_coco_results(1, b)


def test_several_contexts_predict_what_one_does(sample):
    """Images spread over two CPU contexts (as over GPUs), each image's passes merged."""
    root, weights, _ = sample
    paths = find_images(root / "val")[:2]
    got = []
    for contexts in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        got.append([to_coco_results(1, p.instances_at((512, 512))) for p in predict_images(
            load_model(weights[0], contexts), ImageReader(paths), progress=False,
            postprocess=PostprocessSettings(score_threshold=0.02), tta=Tta(flip=True))])
    assert sum(map(len, got[0])) > 0 and got[0] == got[1]


def test_tune_then_submit_with_an_ensemble_and_flip(sample, tmp_path, capsys, caplog, monkeypatch):
    root, weights, odd = sample
    monkeypatch.setenv("GLUON_FASHION_NO_PROGRESS", "1")
    pp = tmp_path / "postprocess.json"
    proc = _tool("tune_postprocess", "--weights", *weights, "--dataset-root", root, "--output", pp, "--tta", "flip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "held-out half" in proc.stdout and "search" in proc.stdout and "prediction pass" in proc.stdout
    record = read_postprocess(pp)
    assert record.tta == Tta(True, ()) and [w["path"] for w in record.weights] == weights
    assert all(len(w["sha1"]) == 40 for w in record.weights)
    held = record.scores["held_out_half"]
    assert held["images"] == 2 and record.scores["tuning_half"]["images"] == 2
    assert held["tuned"]["kaggle_score"] == pytest.approx(held["tuned"]["fast_kaggle_score"], abs=1e-9)
    assert _tool_main("tune_postprocess", "--weights", weights[0], "--dataset-root", root, "--output", pp) == 2
    assert "exists" in capsys.readouterr().err

    out = tmp_path / "submission.csv"
    with caplog.at_level("WARNING"):
        assert _tool_main("write_submission", "--weights", *weights, "--tta", "flip", "--postprocess", pp,
                          "--test-root", root / "test", "--sample-csv", root / "sample_submission.csv",
                          "--output", out) == 0
    assert "was tuned" not in caplog.text  # same checkpoints and augmentation: no warning
    assert _tool_main("check_submission", out, "--sample", root / "sample_submission.csv") == 0

    pred, image = tmp_path / "pred", find_images(root / "val")[0]
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert _tool_main("predict", "--weights", weights[0], "--tta", "flip", "--tta-scales", "96,128",
                          "--postprocess", pp, "--images", image, "--output", pred) == 0
    assert "tuned for other checkpoint(s)" in caplog.text and "tuned with test-time augmentation" in caplog.text
    images = json.loads((pred / "images.json").read_text())
    assert images["tta"] == {"flip": True, "scales": [96, 128]} and images["postprocess"]["file"] == str(pp)
    assert images["postprocess"]["settings"] == record.settings.as_dict()


def test_tools_refuse_mismatched_checkpoints_and_conflicting_flags(sample, tmp_path, capsys):
    root, weights, odd = sample
    assert _tool_main("write_submission", "--weights", weights[0], odd, "--test-root", root / "test",
                      "--sample-csv", root / "sample_submission.csv", "--output", tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert weights[0] in err and odd in err and "different class sets" in err
    assert _tool_main("tune_postprocess", "--weights", weights[0], odd, "--dataset-root", root,
                      "--output", tmp_path / "pp.json") == 2
    assert "different class sets" in capsys.readouterr().err
    assert _tool_main("predict", "--weights", weights[0], "--images", root / "val", "--output", tmp_path / "p",
                      "--postprocess", tmp_path / "pp.json", "--score-threshold", "0.2") == 2
    assert "--score-threshold and --postprocess" in capsys.readouterr().err
    assert _tool_main("predict", "--weights", weights[0], "--images", root / "val", "--output", tmp_path / "p",
                      "--tta-scales", "100,x") == 2
    assert "--tta-scales" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "p").exists()
