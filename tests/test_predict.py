"""Prediction and submission tools on randomly initialised checkpoints, saved the way the trainers save them.

A random Mask R-CNN (ResNet-18, He-initialised) detects plenty of boxes at score threshold 0, which is all
these tests need: the tools' plumbing (checkpoint -> network, image grids, RLE, overlaps, files) is what
is checked, not accuracy.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from gluon_fashion.convert import convert_imaterialist
from gluon_fashion.labels import ClassSet
from gluon_fashion.engine.checkpoint import CheckpointManager
from gluon_fashion.errors import UserError
from gluon_fashion.evaluation.coco import evaluate_coco
from gluon_fashion.images import read_rgb
from gluon_fashion.labels import CATEGORY_NAMES
from gluon_fashion.models.mask_rcnn import build_mask_rcnn, checkpoint_meta, predict_instances
from gluon_fashion.models.segmentation import build_segmentation_model
from gluon_fashion.models.segmentation import checkpoint_meta as segmentation_meta
from gluon_fashion.models.segmentation import predict_label_map
from gluon_fashion.predict import (ImageReader, load_model, predict_images, predict_to_folder, semantic_instances,
                                   write_submission_from_checkpoint)
from gluon_fashion.rle import coco_to_mask, kaggle_to_mask, mask_to_coco, mask_to_kaggle, resize_coco_rle
from gluon_fashion.synthetic import make_sample_dataset
from gluon_fashion.submission import check_submission, read_sample_ids, resolve_overlaps
from gluon_fashion.visualize import palette

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mask_rcnn_resnet18_v1b_coco"
CLASSES = list(range(13))
SHORT, MAX_SIZE = 256, 320
SEG_CLASSES = ClassSet((0, 1, 6))
ENV = dict(os.environ, GLUON_FASHION_NO_PROGRESS="1")


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    """Sample dataset with train/val/test images and the converted (and 512 x 512 resized) val annotations."""
    root = tmp_path_factory.mktemp("predict") / "sample"
    make_sample_dataset(root, num_train=6, num_test=3, seed=11, min_size=128, max_size=256, progress=False)
    convert_imaterialist(root, val_num=2, num_workers=1, progress=False)
    assert len(list((root / "val").glob("*.jpg"))) >= 1 and len(list((root / "test").glob("*.jpg"))) == 3
    return root


@pytest.fixture(scope="module")
def mask_rcnn_weights(tmp_path_factory) -> str:
    """A random Mask R-CNN checkpoint (best.params + .json) written by the trainers' CheckpointManager."""
    mx.random.seed(0)
    net = build_mask_rcnn(MODEL, CLASSES, pretrained=False, rpn_test_pre_nms=256, rpn_test_post_nms=32)
    net(mx.nd.zeros((1, 3, SHORT, SHORT)))  # deferred shapes are known after a forward, as after training
    meta = checkpoint_meta(MODEL, CLASSES, SHORT, MAX_SIZE, net.limits)
    manager = CheckpointManager(str(tmp_path_factory.mktemp("mask_rcnn_ckpt") / "mask_rcnn"), meta,
                                metric_name="segm_mAP")
    assert manager.update_best(net, epoch=0, iteration=1, metric=0.0)
    return manager.best_path


@pytest.fixture(scope="module")
def segmentation_weights(tmp_path_factory) -> str:
    """A random FCN checkpoint for categories 0, 1, 6 (labels 1..3), meta as the segmentation trainer writes it."""
    mx.random.seed(1)
    net, build_kwargs = build_segmentation_model("fcn", SEG_CLASSES.num_classes, [mx.cpu()], backbone="resnet50",
                                                 aux=False, base_size=96, crop_size=96, pretrained=False)
    meta = segmentation_meta(build_kwargs, SEG_CLASSES)
    assert meta["image_scale"] == {"base_size": 96, "crop_size": 96}
    manager = CheckpointManager(str(tmp_path_factory.mktemp("seg_ckpt") / "fcn_resnet50"), meta, metric_name="mIoU")
    assert manager.update_best(net, epoch=0, iteration=1, metric=0.0)
    return manager.best_path


def _run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def _tool_module(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gt_file(sample_root: Path) -> Path:
    return sample_root / "annotations" / "resize_rle_instances_val.json"


@pytest.fixture(scope="module")
def cli_prediction(sample_root, mask_rcnn_weights, tmp_path_factory):
    """tools/predict.py on the val images with the resized val annotations, every detection kept."""
    out = tmp_path_factory.mktemp("cli_predict") / "out"
    proc = _run_tool("predict", "--weights", mask_rcnn_weights, "--images", sample_root / "val", "--output", out,
                     "--annotations", _gt_file(sample_root), "--score-threshold", "0")
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="module")
def cli_submission(sample_root, mask_rcnn_weights, tmp_path_factory):
    """tools/write_submission.py on the test images, every detection kept (so masks overlap before resolution)."""
    out = tmp_path_factory.mktemp("cli_submission") / "submission.csv"
    proc = _run_tool("write_submission", "--weights", mask_rcnn_weights, "--test-root", sample_root / "test",
                     "--sample-csv", sample_root / "sample_submission.csv", "--output", out, "--score-threshold", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def _read_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


# --------------------------------------------------------------------------------------- predict tool
def test_predict_cli_writes_overlays_and_results_that_evaluate(cli_prediction, sample_root):
    out, proc = cli_prediction
    gt = json.loads(_gt_file(sample_root).read_text())
    gt_ids = {Path(im["file_name"]).name: im["id"] for im in gt["images"]}
    val_images = sorted((sample_root / "val").glob("*.jpg"))
    for path in val_images:
        overlay = read_rgb(out / f"{path.stem}_overlay.png")
        original = read_rgb(path)
        assert overlay.shape == original.shape
        assert np.abs(overlay.astype(int) - original.astype(int)).max() > 50  # masks and boxes were drawn
    results = json.loads((out / "results.json").read_text())
    index = json.loads((out / "images.json").read_text())
    assert results and "predicted" in proc.stdout
    assert {im["file_name"]: im["id"] for im in index["images"]} == {p.name: gt_ids[p.name] for p in val_images}
    assert {r["image_id"] for r in results} <= set(gt_ids.values())
    for det in results:
        assert det["segmentation"]["size"] == [512, 512] and det["category_id"] in CLASSES
        x, y, w, h = det["bbox"]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0 and x + w <= 512.01 and y + h <= 512.01
    metrics = evaluate_coco(_gt_file(sample_root), out / "results.json")
    assert metrics.num_detections == len(results) and 0.0 <= metrics.segm_mAP <= 1.0


def test_test_budget_flags_replace_the_checkpoints_and_are_refused_for_segmentation(cli_prediction, sample_root,
                                                                                     mask_rcnn_weights,
                                                                                     segmentation_weights, tmp_path):
    from collections import Counter

    recorded = load_model(mask_rcnn_weights).net
    assert (recorded.limits["rpn_test_post_nms"], recorded.limits["rcnn_max_dets"]) == (32, 32)  # the checkpoint's
    per_image = Counter(r["image_id"] for r in json.loads((cli_prediction[0] / "results.json").read_text()))
    assert max(per_image.values()) > 3  # the checkpoint's budget lets a random net detect more than 3
    out = tmp_path / "three"
    proc = _run_tool("predict", "--weights", mask_rcnn_weights, "--images", sample_root / "val", "--output", out,
                     "--annotations", _gt_file(sample_root), "--score-threshold", "0", "--rcnn-max-dets", "3",
                     "--rpn-test-post-nms", "20")
    assert proc.returncode == 0, proc.stderr
    per_image = Counter(r["image_id"] for r in json.loads((out / "results.json").read_text()))
    assert per_image and max(per_image.values()) <= 3
    overridden = load_model(mask_rcnn_weights, test_budgets={"rcnn_max_dets": 3, "rpn_test_pre_nms": None}).net
    assert (overridden.limits["rpn_test_post_nms"], overridden.limits["rcnn_max_dets"]) == (32, 3)  # None: kept
    proc = _run_tool("predict", "--weights", segmentation_weights, "--images", sample_root / "val", "--output",
                     tmp_path / "seg", "--rcnn-max-dets", "3")
    assert proc.returncode == 2 and "--rcnn-max-dets" in proc.stderr and "segmentation" in proc.stderr


def test_draw_threshold_thins_the_overlays_not_the_results(cli_prediction, sample_root, mask_rcnn_weights,
                                                           tmp_path):
    out = tmp_path / "drawn"
    proc = _run_tool("predict", "--weights", mask_rcnn_weights, "--images", sample_root / "val", "--output", out,
                     "--annotations", _gt_file(sample_root), "--score-threshold", "0", "--draw-threshold", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "results.json").read_text()) == json.loads((cli_prediction[0] / "results.json")
                                                                            .read_text())
    for path in sorted((sample_root / "val").glob("*.jpg")):  # a random net scores below 1: nothing drawn
        np.testing.assert_array_equal(read_rgb(out / f"{path.stem}_overlay.png"), read_rgb(path))
    proc = _run_tool("predict", "--weights", mask_rcnn_weights, "--images", sample_root / "val", "--output",
                     tmp_path / "bad", "--draw-threshold", "1.5")
    assert proc.returncode == 2 and "--draw-threshold" in proc.stderr


def test_gt_grid_results_are_pasted_straight_onto_the_gt_grid(cli_prediction, sample_root, mask_rcnn_weights,
                                                              tmp_path):
    gt_out, _ = cli_prediction
    summary = predict_to_folder(mask_rcnn_weights, sample_root / "val", tmp_path / "own", score_threshold=0.0,
                                progress=False)
    own = json.loads((tmp_path / "own" / "results.json").read_text())
    own_index = json.loads((tmp_path / "own" / "images.json").read_text())["images"]
    gt_results = json.loads((gt_out / "results.json").read_text())
    gt_index = json.loads((gt_out / "images.json").read_text())["images"]
    assert summary.detections == len(own) == len(gt_results)
    assert [im["id"] for im in own_index] == list(range(1, len(own_index) + 1))
    gt_id = {im["file_name"]: im["id"] for im in gt_index}
    net = load_model(mask_rcnn_weights).net
    for image in own_index:
        original = read_rgb(image["path"])
        assert (image["height"], image["width"]) == original.shape[:2]
        mine = [r for r in own if r["image_id"] == image["id"]]
        theirs = [r for r in gt_results if r["image_id"] == gt_id[image["file_name"]]]
        assert [(r["category_id"], r["score"]) for r in mine] == [(r["category_id"], r["score"]) for r in theirs]
        # The same detections, with boxes and masks made on the 512 x 512 grid from the mask probabilities.
        on_grid = predict_instances(net, original, SHORT, MAX_SIZE, score_threshold=0.0, out_size=(512, 512))
        assert len(on_grid) == len(theirs) > 0
        for a, b, inst in zip(mine, theirs, on_grid):
            assert a["segmentation"]["size"] == list(original.shape[:2]) and b["segmentation"]["size"] == [512, 512]
            assert b["segmentation"] == inst.rle
            scale = [512 / original.shape[1], 512 / original.shape[0]] * 2
            assert b["bbox"][0] == pytest.approx(a["bbox"][0] * scale[0], abs=0.05)
            assert b["bbox"][3] == pytest.approx(a["bbox"][3] * scale[1], abs=0.05)


def test_predict_and_evaluate_reproduce_the_trainers_validation(sample_root, mask_rcnn_weights, tmp_path):
    """The trainer's validation and tools/predict.py --annotations + tools/evaluate.py agree exactly.

    Ground truth: the checkpoint's own best detections pasted at each photo's size and resized to 512 x 512
    (nearest), i.e. close to what the one rule gives but not the same pixels, so mAP is high but not 1 and a
    prediction path that resized its masks instead would score differently from validation.
    """
    from pycocotools import mask as coco_mask

    from gluon_fashion.data.instance import FashionInstance
    from gluon_fashion.evaluation.coco import validation_ground_truth
    from gluon_fashion.trainers.mask_rcnn import VAL_MAX_DETECTIONS, VAL_SCORE_THRESHOLD, predict_dataset
    net = load_model(mask_rcnn_weights).net
    images, annotations = [], []
    for image_id, path in enumerate(sorted((sample_root / "val").glob("*.jpg")), start=1):
        photo = read_rgb(path)
        images.append({"id": image_id, "file_name": path.name, "height": 512, "width": 512,
                       "orig_height": photo.shape[0], "orig_width": photo.shape[1]})
        for inst in predict_instances(net, photo, SHORT, MAX_SIZE, score_threshold=0.0)[:4]:
            rle = resize_coco_rle(inst.rle, 512, 512)
            encoded = dict(rle, counts=rle["counts"].encode("ascii"))
            if coco_mask.area(encoded) >= 16:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": inst.category_id,
                                    "segmentation": rle, "area": float(coco_mask.area(encoded)),
                                    "bbox": coco_mask.toBbox(encoded).tolist(), "iscrowd": 0})
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                   "categories": [{"id": c, "name": CATEGORY_NAMES[c]} for c in CLASSES]}))
    assert annotations

    # MaskRCNNTrainer.validate: predict_dataset scored against validation_ground_truth
    validation = predict_dataset(net, FashionInstance(gt_file, sample_root / "val", category_ids=CLASSES,
                                                      skip_empty=False), [mx.cpu()], SHORT, MAX_SIZE)
    logged = evaluate_coco(validation_ground_truth(gt_file, CLASSES, [im["id"] for im in images]), validation)
    summary = predict_to_folder(mask_rcnn_weights, sample_root / "val", tmp_path / "out", annotations=gt_file,
                                score_threshold=VAL_SCORE_THRESHOLD, max_detections=VAL_MAX_DETECTIONS,
                                progress=False)
    assert json.loads(Path(summary.results).read_text()) == validation
    reproduced = evaluate_coco(gt_file, summary.results)
    assert 0.0 < reproduced.segm_mAP == logged.segm_mAP < 1.0
    assert reproduced.as_dict() == logged.as_dict()


def test_prediction_path_matches_model_module_and_mask_threshold_is_monotonic(sample_root, mask_rcnn_weights):
    model = load_model(mask_rcnn_weights)
    assert model.task == "mask_rcnn" and model.scale == {"short": SHORT, "max_size": MAX_SIZE}
    path = sorted((sample_root / "test").glob("*.jpg"))[0]
    image = read_rgb(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The first forward of a loaded net is where MXNet would warn about the target generator's statistics.
        reference = predict_instances(model.net, image, SHORT, MAX_SIZE, score_threshold=0.0)
    assert not [w for w in caught if "is not used by any computation" in str(w.message)]

    def run(mask_threshold):
        return next(predict_images(model, ImageReader([path]), score_threshold=0.0, mask_threshold=mask_threshold,
                                   progress=False)).instances

    default, low, high = run(0.5), run(0.3), run(0.7)
    direct = predict_instances(model.net, image, SHORT, MAX_SIZE, score_threshold=0.0, mask_threshold=0.3)
    assert len(reference) == len(default) == len(low) == len(high) > 0
    assert [inst.rle for inst in direct] == [inst.rle for inst in low]
    grown = shrunk = 0
    for ref, mid, lo, hi in zip(reference, default, low, high):
        assert (mid.category_id, mid.score) == (ref.category_id, ref.score) and mid.rle == ref.rle
        mid_m, lo_m, hi_m = coco_to_mask(mid.rle), coco_to_mask(lo.rle), coco_to_mask(hi.rle)
        assert not (hi_m & ~mid_m).any() and not (mid_m & ~lo_m).any()
        grown += int(lo_m.sum() > mid_m.sum())
        shrunk += int(hi_m.sum() < mid_m.sum())
    assert grown and shrunk


def test_two_contexts_predict_two_images_at_once_with_the_same_results(sample_root, mask_rcnn_weights):
    paths = sorted((sample_root / "test").glob("*.jpg"))[:2]

    def run(contexts):
        model = load_model(mask_rcnn_weights, contexts)
        return [(p.path, p.instances) for p in predict_images(model, ImageReader(paths), score_threshold=0.3,
                                                                progress=False)]

    single, double = run([mx.cpu(0)]), run([mx.cpu(0), mx.cpu(1)])
    assert [path for path, _ in double] == paths == [path for path, _ in single]
    for (_, one), (_, two) in zip(single, double):
        assert len(one) == len(two) > 0
        for a, b in zip(one, two):
            assert a.category_id == b.category_id and a.score == pytest.approx(b.score, abs=1e-5)
            assert np.array_equal(coco_to_mask(a.rle), coco_to_mask(b.rle))


def test_unreadable_images_are_skipped_and_counted(sample_root, mask_rcnn_weights, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    good = sorted((sample_root / "test").glob("*.jpg"))[0]
    shutil.copy(good, images / "b_good.jpg")
    (images / "a_broken.jpg").write_bytes(b"not a jpeg at all")
    (images / "c_empty.png").write_bytes(b"")
    summary = predict_to_folder(mask_rcnn_weights, images, tmp_path / "out", score_threshold=0.0, progress=False)
    assert summary.predicted == 1 and summary.images == 3
    assert sorted(Path(p).name for p in summary.skipped) == ["a_broken.jpg", "c_empty.png"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["b_good_overlay.png"]
    index = json.loads((tmp_path / "out" / "images.json").read_text())
    assert [im["file_name"] for im in index["images"]] == ["b_good.jpg"] and len(index["skipped"]) == 2
    assert {r["image_id"] for r in json.loads((tmp_path / "out" / "results.json").read_text())} == {2}

    (images / "b_good.jpg").unlink()
    with pytest.raises(UserError, match="none of the 2 image"):
        predict_to_folder(mask_rcnn_weights, images, tmp_path / "out2", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        predict_to_folder(mask_rcnn_weights, tmp_path / "empty", tmp_path / "out3", progress=False)


def test_existing_outputs_are_refused_without_overwrite(cli_prediction, sample_root, mask_rcnn_weights, tmp_path):
    out, _ = cli_prediction
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    with pytest.raises(UserError, match="--overwrite"):
        predict_to_folder(mask_rcnn_weights, sample_root / "val", out, progress=False)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    with pytest.raises(UserError, match="--base-size"):
        predict_to_folder(mask_rcnn_weights, sample_root / "val", tmp_path / "new", base_size=64, progress=False)
    assert not (tmp_path / "new").exists()


def test_missing_meta_or_weights_is_a_clear_error_with_exit_2(mask_rcnn_weights, sample_root, tmp_path, capsys):
    lonely = tmp_path / "lonely.params"
    shutil.copy(mask_rcnn_weights, lonely)
    predict_tool, submission_tool = _tool_module("predict"), _tool_module("write_submission")
    assert predict_tool.main(["--weights", str(lonely), "--images", str(sample_root / "val"),
                              "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lonely.json" in err and "Traceback" not in err
    assert submission_tool.main(["--weights", str(tmp_path / "nowhere.params"), "--test-root",
                                 str(sample_root / "test"), "--sample-csv", str(sample_root / "sample_submission.csv"),
                                 "--output", str(tmp_path / "sub.csv")]) == 2
    assert "nowhere.params" in capsys.readouterr().err and not (tmp_path / "sub.csv").exists()
    assert not (tmp_path / "out").exists()


def test_missing_meta_exits_2_from_the_command_line(mask_rcnn_weights, sample_root, tmp_path):
    lonely = tmp_path / "lonely.params"
    os.link(mask_rcnn_weights, lonely)
    proc = _run_tool("write_submission", "--weights", lonely, "--test-root", sample_root / "test", "--sample-csv",
                     sample_root / "sample_submission.csv", "--output", tmp_path / "sub.csv")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ") and "lonely.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def _cut_to_a_third(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _truncated_copy(weights: str, folder: Path) -> Path:
    """A copy of a checkpoint (.params and .json) whose weights file was cut to a third, as by a kill while saving."""
    folder.mkdir()
    base = weights[: -len(".params")]
    for suffix in (".params", ".json"):
        shutil.copy(base + suffix, folder / f"cut{suffix}")
    _cut_to_a_third(folder / "cut.params")
    return folder / "cut.params"


def _says_killed_while_saving(err: str, weights: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"{weights} does not match its .json (sha1 differs): the run was probably killed while saving" in err


def test_truncated_mask_rcnn_weights_say_killed_while_saving(mask_rcnn_weights, sample_root, tmp_path, capsys):
    weights = _truncated_copy(mask_rcnn_weights, tmp_path / "ckpt")
    assert _tool_module("predict").main(["--weights", str(weights), "--images", str(sample_root / "val"),
                                         "--output", str(tmp_path / "out")]) == 2
    _says_killed_while_saving(capsys.readouterr().err, weights)
    assert _tool_module("write_submission").main(
        ["--weights", str(weights), "--test-root", str(sample_root / "test"), "--sample-csv",
         str(sample_root / "sample_submission.csv"), "--output", str(tmp_path / "sub.csv")]) == 2
    _says_killed_while_saving(capsys.readouterr().err, weights)
    assert not (tmp_path / "sub.csv").exists()


def test_truncated_segmentation_weights_say_killed_while_saving(segmentation_weights, sample_root, tmp_path,
                                                                capsys):
    weights = _truncated_copy(segmentation_weights, tmp_path / "ckpt")
    eval_tool = _tool_module("eval_segmentation")
    assert eval_tool.main(["--weights", str(weights), "--dataset-root", str(sample_root), "--ngpus", "0"]) == 2
    _says_killed_while_saving(capsys.readouterr().err, weights)
    assert eval_tool.main(["--weights", str(weights), "--images", str(sample_root / "test"), "--output",
                           str(tmp_path / "out"), "--ngpus", "0"]) == 2
    _says_killed_while_saving(capsys.readouterr().err, weights)
    spec = importlib.util.spec_from_file_location("_train_segmentation", ROOT / "train_segmentation.py")
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    assert trainer.main(["--eval", "--resume", str(weights), "--dataset-root", str(sample_root), "--ngpus", "0",
                         "--model", "fcn", "--workers", "0"]) == 2
    _says_killed_while_saving(capsys.readouterr().err, weights)


def test_truncated_images_are_predicted_with_a_warning_and_marked(sample_root, mask_rcnn_weights, tmp_path, caplog):
    test_root = tmp_path / "test"
    shutil.copytree(sample_root / "test", test_root)
    cut = sorted(test_root.glob("*.jpg"))[1]
    _cut_to_a_third(cut)
    summary = predict_to_folder(mask_rcnn_weights, test_root, tmp_path / "out", score_threshold=0.0, progress=False)
    assert summary.predicted == 3 and summary.skipped == [] and summary.truncated == [str(cut)]
    assert f"1 truncated JPEG(s) predicted from the part before the cut: {cut.name}" in str(summary)
    assert any(f"{cut}: truncated JPEG" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    index = json.loads((tmp_path / "out" / "images.json").read_text())
    assert index["truncated"] == [str(cut)]
    assert [im["file_name"] for im in index["images"] if im.get("truncated")] == [cut.name]
    cut_id = next(im["id"] for im in index["images"] if im.get("truncated"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["image_id"] for r in results if r.get("truncated_image")} == {cut_id}
    assert all(r.get("truncated_image") for r in results if r["image_id"] == cut_id)

    caplog.clear()
    sample = sample_root / "sample_submission.csv"
    result = write_submission_from_checkpoint(mask_rcnn_weights, test_root, sample, tmp_path / "sub.csv",
                                              score_threshold=0.0, progress=False)
    assert result.violations == [] and result.truncated == [str(cut)]
    assert f"1 truncated JPEG(s) predicted from the part before the cut: {cut.name}" in str(result)
    assert any(f"{cut}: truncated JPEG" in r.getMessage() for r in caplog.records)
    _, rows = _read_rows(tmp_path / "sub.csv")
    assert cut.name in {row[0] for row in rows}  # the truncated image still has its row


# ------------------------------------------------------------------------------------ submission tool
def test_submission_cli_passes_the_checker_with_overlaps_resolved(cli_submission, sample_root, mask_rcnn_weights):
    out, proc = cli_submission
    sample = sample_root / "sample_submission.csv"
    assert check_submission(out, sample_csv=sample, fmt="2019") == []
    assert out.read_text(encoding="utf-8").splitlines()[0] == "ImageId,EncodedPixels,ClassId"
    header, rows = _read_rows(out)
    assert {r[0] for r in rows} == set(read_sample_ids(sample))
    assert "rows for 3 images" in proc.stdout
    by_image = {}
    for image_id, encoded, class_id in rows:
        assert int(class_id) in CLASSES
        by_image.setdefault(image_id, []).append(kaggle_to_mask(encoded, 512, 512))
    for image_id, masks in by_image.items():
        assert len(masks) > 1  # 32 random detections each: overlapping before resolution, disjoint after
        assert np.stack(masks).sum(axis=0).max() == 1, image_id
    # The rows are the detections pasted straight onto the 512 x 512 grid, made disjoint by score.
    net = load_model(mask_rcnn_weights).net
    for image_id in by_image:
        instances = predict_instances(net, read_rgb(sample_root / "test" / image_id), SHORT, MAX_SIZE,
                                      score_threshold=0.0, out_size=(512, 512))
        kept = resolve_overlaps([coco_to_mask(inst.rle).astype(bool) for inst in instances],
                                [inst.score for inst in instances], min_area=10)
        expected = sorted([image_id, mask_to_kaggle(mask), str(inst.category_id)]
                          for inst, mask in zip(instances, kept) if mask is not None)
        assert sorted(r for r in rows if r[0] == image_id) == expected


def test_check_flag_reports_every_violation(cli_submission, sample_root, tmp_path):
    out, _ = cli_submission
    sample = sample_root / "sample_submission.csv"
    header, rows = _read_rows(out)
    dropped = rows[-1][0]
    broken = [rows[0], rows[0], [rows[1][0], rows[1][1], "99"]] + [r for r in rows[2:] if r[0] != dropped]
    broken.append([rows[0][0], "262140 10", "1"])  # runs past 512 * 512
    bad = tmp_path / "broken.csv"
    with open(bad, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header] + broken)
    proc = _run_tool("write_submission", "--check", bad, "--sample-csv", sample)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for kind in ("[overlap]", "[class_id]", "[missing_image]", "[bounds]"):
        assert kind in proc.stdout, kind
    assert dropped in proc.stdout
    assert _tool_module("write_submission").main(["--check", str(out), "--sample-csv", str(sample)]) == 0


def test_missing_test_images_and_zero_detections(sample_root, mask_rcnn_weights, tmp_path):
    test_root = tmp_path / "test"
    shutil.copytree(sample_root / "test", test_root)
    removed = sorted(test_root.glob("*.jpg"))[0]
    removed.unlink()
    sample = sample_root / "sample_submission.csv"
    with pytest.raises(UserError, match=f"1 of the 3 ImageIds.*{removed.stem}.*--allow-missing"):
        write_submission_from_checkpoint(mask_rcnn_weights, test_root, sample, tmp_path / "a.csv", progress=False)
    assert not (tmp_path / "a.csv").exists()
    # The 2020 layout: ImageIds without .jpg, an AttributesIds column.
    sample_2020 = tmp_path / "sample_2020.csv"
    with open(sample_2020, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(
            [["ImageId", "EncodedPixels", "ClassId", "AttributesIds"]]
            + [[Path(i).stem, "1 1", "23", ""] for i in read_sample_ids(sample)])
    # Nothing scores 1.0, so every image gets the sample's placeholder row.
    result = write_submission_from_checkpoint(mask_rcnn_weights, test_root, sample_2020, tmp_path / "b.csv",
                                              fmt="2020", score_threshold=1.0, allow_missing=True, progress=False)
    assert result.violations == [] and result.missing == [removed.stem]
    assert result.summary.images_with_detections == 0
    header, rows = _read_rows(tmp_path / "b.csv")
    assert header == ["ImageId", "EncodedPixels", "ClassId", "AttributesIds"]
    assert sorted(rows) == sorted([[Path(i).stem, "1 1", "23", ""] for i in read_sample_ids(sample)])
    with pytest.raises(UserError, match="--overwrite"):
        write_submission_from_checkpoint(mask_rcnn_weights, test_root, sample, tmp_path / "b.csv", progress=False)


# ------------------------------------------------------------------------------------------ segmentation
def test_semantic_instances_one_per_class_present():
    labels = np.zeros((6, 8), dtype=np.int32)
    labels[1:3, 2:5] = 3
    labels[4:6, 0:2] = 1
    labels[0, 7] = 9  # not a label of this class set: ignored
    instances = semantic_instances(labels, (4, 5, 10))
    assert [i.category_id for i in instances] == [4, 10] and all(i.score == 1.0 for i in instances)
    assert np.array_equal(coco_to_mask(instances[0].rle), labels == 1)
    assert np.array_equal(coco_to_mask(instances[1].rle), labels == 3)
    assert instances[1].box.tolist() == [2, 1, 5, 3] and instances[1].rle == mask_to_coco(labels == 3)


def test_segmentation_checkpoint_predicts_and_submits(sample_root, segmentation_weights, tmp_path):
    summary = predict_to_folder(segmentation_weights, sample_root / "test", tmp_path / "out", progress=False)
    assert summary.task == "segmentation" and summary.predicted == 3
    legend = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert legend == {"0": "background", "1": SEG_CLASSES.class_names[1], "2": SEG_CLASSES.class_names[2],
                      "3": SEG_CLASSES.class_names[3]}
    colours = palette(SEG_CLASSES.num_classes)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    index = {im["file_name"]: im["id"] for im in json.loads((tmp_path / "out" / "images.json").read_text())["images"]}
    for path in sorted((sample_root / "test").glob("*.jpg")):
        coloured = read_rgb(tmp_path / "out" / f"{path.stem}_labels.png")
        assert coloured.shape == read_rgb(path).shape and (tmp_path / "out" / f"{path.stem}_overlay.png").is_file()
        matches = (coloured[:, :, None, :] == colours[None, None]).all(axis=-1)
        assert matches.any(axis=-1).all()  # only palette colours
        labels = matches.argmax(axis=-1)
        dets = [r for r in results if r["image_id"] == index[path.name]]
        present = sorted(int(k) for k in np.unique(labels) if k > 0)
        assert [d["category_id"] for d in dets] == [SEG_CLASSES.category_ids[k - 1] for k in present]
        for det, k in zip(dets, present):
            assert np.array_equal(coco_to_mask(det["segmentation"]), labels == k)
    assert summary.detections == len(results)

    sample = sample_root / "sample_submission.csv"
    result = write_submission_from_checkpoint(segmentation_weights, sample_root / "test", sample,
                                              tmp_path / "sub.csv", progress=False)
    assert result.violations == []
    header, rows = _read_rows(tmp_path / "sub.csv")
    assert {r[0] for r in rows} == set(read_sample_ids(sample))
    assert {int(r[2]) for r in rows if r[1] != "1 1"} <= set(SEG_CLASSES.category_ids)
    # Each class present in the label map made straight on the 512 x 512 grid is one row (10 pixels at least).
    net = load_model(segmentation_weights).net
    for image_id in read_sample_ids(sample):
        labels = predict_label_map(net, read_rgb(sample_root / "test" / image_id), mx.cpu(), base_size=96,
                                   crop_size=96, out_size=(512, 512))
        expected = sorted([image_id, mask_to_kaggle(labels == k), str(SEG_CLASSES.category_ids[k - 1])]
                          for k in np.unique(labels) if k > 0 and (labels == k).sum() >= 10)
        assert sorted(r for r in rows if r[0] == image_id and r[1] != "1 1") == expected


def test_binary_segmentation_checkpoint_cannot_submit(segmentation_weights, sample_root, tmp_path):
    meta = json.loads(Path(segmentation_weights[:-len(".params")] + ".json").read_text())
    meta["classes"] = ClassSet((0, 1, 6), binary=True).to_dict()
    (tmp_path / "binary.json").write_text(json.dumps(meta))
    os.link(segmentation_weights, tmp_path / "binary.params")
    with pytest.raises(UserError, match="binary"):
        write_submission_from_checkpoint(tmp_path / "binary.params", sample_root / "test",
                                         sample_root / "sample_submission.csv", tmp_path / "sub.csv", progress=False)
