"""Mask R-CNN: RLE dataset, working-resolution transform, mask pasting, COCO weight reuse, and short
training runs (overfit + validation + best checkpoint, SIGKILL and resume, two CPU contexts).

Training runs use resnet18 C4 from random initialisation at a small scale with a small RoI budget.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluon_fashion.convert import convert_imaterialist
from gluon_fashion.data.instance import FashionInstance, split_files
from gluon_fashion.engine import WarmupStepSchedule
from gluon_fashion.errors import UserError
from gluon_fashion.evaluation.coco import evaluate_coco
from gluon_fashion.images import read_rgb, read_rgb_at_least
from gluon_fashion.models.mask_rcnn import (anchor_count, apply_limits, build_mask_rcnn, coco_reuse_map, load_mask_rcnn,
                                            network_input, paste_mask, predict_instances, read_network_input,
                                            trainable_params)
from gluon_fashion.predict import predict_to_folder
from gluon_fashion.rle import coco_to_mask, nearest_indices
from gluon_fashion.synthetic import make_sample_dataset
from gluon_fashion.trainers.mask_rcnn import (VAL_MAX_DETECTIONS, VAL_SCORE_THRESHOLD, build_parser, predict_dataset,
                                              train)
from gluon_fashion.transforms.instance import MaskRCNNTrainTransform, scaled_size

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mask_rcnn_resnet18_v1b_coco"
RUN = "mask_rcnn_resnet18_v1b_imaterialist"
SMALL = ["--network", "resnet18_v1b", "--no-pretrained", "--short", "160", "--max-size", "224",
         "--rpn-train-pre-nms", "256", "--rpn-train-post-nms", "64", "--rcnn-num-sample", "32",
         "--rpn-test-pre-nms", "256", "--rpn-test-post-nms", "32", "--log-interval", "1", "-j", "0"]
LIMITS = dict(rpn_train_pre_nms=256, rpn_train_post_nms=64, rcnn_num_sample=32, rpn_test_pre_nms=256,
              rpn_test_post_nms=32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Sample dataset (5 images: 4 train, 1 val) converted to COCO JSON, once for this file."""
    root = tmp_path_factory.mktemp("mask_rcnn") / "sample"
    make_sample_dataset(root, num_train=5, num_test=1, seed=3, max_size=320, progress=False)
    convert_imaterialist(root, val_num=1, num_workers=1, progress=False)
    return root


def _metrics(prefix: str) -> list:
    with open(prefix + "_metrics.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _run(data_root: Path, save_prefix: Path, *flags: str) -> dict:
    args = build_parser().parse_args(["--dataset-root", str(data_root), "--save-prefix", f"{save_prefix}/"]
                                     + SMALL + list(flags))
    return train(args)


# ------------------------------------------------------------------------------------------ data
def test_dataset_keeps_rle_and_subsets_categories(data_root):
    ann_file, image_dir = split_files(data_root, "train")
    coco = json.loads(ann_file.read_text())
    full = FashionInstance(ann_file, image_dir)
    assert len(full) == len(coco["images"]) == 4
    assert full.num_class == 46 and full.classes[23] == "shoe"
    for i in range(len(full)):
        image, label, segms = full[i]
        record = full.image_records[i]
        assert image.shape == (record["height"], record["width"], 3) and image.dtype == np.uint8
        assert label.shape == (len(segms), 5) and all(s["size"] == [record["height"], record["width"]] for s in segms)
        assert full.get_im_aspect_ratio()[i] == pytest.approx(record["width"] / record["height"])

    subset = FashionInstance(ann_file, image_dir, category_ids=[31, 23])  # sleeve -> 0, shoe -> 1
    assert subset.classes == ["sleeve", "shoe"] and subset.contiguous_id_to_json == {0: 31, 1: 23}
    expected = sum(1 for a in coco["annotations"] if a["category_id"] in (23, 31))
    labels = np.concatenate([subset[i][1][:, 4] for i in range(len(subset))])
    assert len(labels) == expected and set(labels.tolist()) == {0.0, 1.0}
    first_sleeve = next(a for a in coco["annotations"] if a["category_id"] == 31)
    index = [r["id"] for r in subset.image_records].index(first_sleeve["image_id"])
    assert any(s["counts"] == first_sleeve["segmentation"]["counts"] for s in subset[index][2])

    with pytest.raises(UserError, match="convert_imaterialist_to_coco"):
        FashionInstance(data_root / "annotations" / "missing.json", image_dir)


def test_truncated_jpegs_are_left_out_of_every_epoch_with_a_warning(data_root, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    ann_file, image_dir = split_files(root, "train")
    intact = FashionInstance(ann_file, image_dir)
    cut = Path(intact.image_path(1))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])  # libjpeg would decode the rest as grey
    with caplog.at_level("WARNING", logger="gluon_fashion"):
        dataset = FashionInstance(ann_file, image_dir)
    assert len(dataset) == len(intact) - 1 and dataset.truncated_images == [str(cut)]
    assert str(cut) not in [dataset.image_path(i) for i in range(len(dataset))]
    assert [r["id"] for r in dataset.image_records] == [r["id"] for i, r in enumerate(intact.image_records) if i != 1]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"1 of {len(intact)} image(s) are truncated JPEGs" in warning and "1 image(s) per epoch" in warning
    assert cut.name in warning
    # The dataset depends on the files alone, so a resumed run sees the same samples in the same order.
    again = FashionInstance(ann_file, image_dir)
    assert [again.image_path(i) for i in range(len(again))] == [dataset.image_path(i) for i in range(len(dataset))]
    # Validation leaves it out as well (and scores against the ground truth of the images it keeps).
    assert len(FashionInstance(ann_file, image_dir, skip_empty=False)) == len(intact) - 1


def test_reduced_jpeg_decode_covers_the_requested_size(tmp_path):
    rng = np.random.RandomState(0)
    photo = cv2.GaussianBlur(rng.randint(0, 255, (301, 455, 3), dtype=np.uint8), (15, 15), 5)
    color, gray = str(tmp_path / "color.jpg"), str(tmp_path / "gray.jpg")
    cv2.imwrite(color, photo)
    cv2.imwrite(gray, photo[:, :, 1])
    full = read_rgb(color)
    assert read_rgb_at_least(color, 301, 455, 301, 455).shape == full.shape
    half = read_rgb_at_least(color, 301, 455, 140, 200)  # 1/2 covers it, 1/4 would not
    assert half.shape == (151, 228, 3)
    shrunk = cv2.resize(full, (228, 151), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(half.astype(int) - shrunk).mean() < 3
    assert read_rgb_at_least(gray, 301, 455, 35, 50).shape == (38, 57, 3)  # grayscale comes back RGB
    with pytest.raises(UserError, match="says 300x455"):
        read_rgb_at_least(color, 300, 455, 100, 100)
    # A full decode at hand is used where no reduced decode applies, and ignored where one does.
    marked = full.copy()
    marked[0, 0] = 255 - marked[0, 0]
    assert read_rgb_at_least(color, 301, 455, 301, 455, full=marked) is marked
    np.testing.assert_array_equal(read_rgb_at_least(color, 301, 455, 140, 200, full=marked), half)


def test_network_input_of_a_file_is_validations_reduced_decode(tmp_path):
    rng = np.random.RandomState(2)
    path = str(tmp_path / "photo.jpg")
    cv2.imwrite(path, cv2.GaussianBlur(rng.randint(0, 255, (480, 720, 3), dtype=np.uint8), (9, 9), 3))
    full = read_rgb(path)
    small = read_network_input(path, 100, 160, (480, 720), full_image=full)  # a 1/4 decode covers 100 x 150
    assert small.shape == (3, 100, 150) and small.dtype == np.float32
    np.testing.assert_array_equal(small, network_input(read_rgb_at_least(path, 480, 720, 100, 150), 100, 160,
                                                       orig_size=(480, 720)))
    assert not np.array_equal(small, network_input(full, 100, 160))  # not the full decode resized
    large = read_network_input(path, 400, 700, (480, 720), full_image=full)  # no reduced decode covers it
    np.testing.assert_array_equal(large, network_input(full, 400, 700))


def test_transform_decodes_masks_at_training_size_and_flips_consistently(data_root):
    dataset = FashionInstance(*split_files(data_root, "train"))
    image, label, segms = dataset[0]
    height, width = image.shape[:2]
    out_h, out_w = scaled_size(height, width, 160, 224)
    rows, cols = nearest_indices(height, out_h), nearest_indices(width, out_w)
    full_size = np.stack([coco_to_mask(s) for s in segms])[:, rows][:, :, cols]

    kept = MaskRCNNTrainTransform(160, 224, flip_prob=0.0)
    img, bbox, masks = kept(image, label, segms)
    assert img.shape == (3, out_h, out_w) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks.asnumpy(), full_size)
    np.testing.assert_allclose(bbox[:, 0], label[:, 0] * out_w / width, rtol=1e-5)

    flipped = MaskRCNNTrainTransform(160, 224, flip_prob=1.0)
    fimg, fbox, fmasks = flipped(image, label, segms)
    np.testing.assert_array_equal(fmasks.asnumpy(), full_size[:, :, ::-1])
    np.testing.assert_allclose(fimg.asnumpy(), img.asnumpy()[:, :, ::-1], atol=1e-6)
    for box, mask in zip(fbox, fmasks.asnumpy()):  # every flipped mask lies inside its flipped box
        ys, xs = np.nonzero(mask)
        if len(xs):
            assert box[0] - 1 <= xs.min() and xs.max() <= box[2] + 1
            assert box[1] - 1 <= ys.min() and ys.max() <= box[3] + 1


def test_rpn_targets_batchify_with_the_network(data_root):
    from gluoncv.data.batchify import MaskRCNNTrainBatchify
    net = build_mask_rcnn(MODEL, range(46), pretrained=False, per_device_batch_size=2, **LIMITS)
    dataset = FashionInstance(*split_files(data_root, "train"), transform=MaskRCNNTrainTransform(160, 224, net))
    samples = [dataset[0], dataset[1]]
    assert len(samples[0]) == 6
    img, label, masks, cls_targets, box_targets, box_masks = MaskRCNNTrainBatchify(net, 1)(samples)
    assert img.shape[0] == 2 and masks.shape[:2] == label.shape[:2] and masks.shape[2:] == img.shape[2:]
    feat_h, feat_w = net.features(mx.nd.zeros((1, 3) + img.shape[2:])).shape[2:]
    anchors = feat_h * feat_w * 15
    assert cls_targets[0].shape == (2, anchors) and box_targets[0].shape == (2, anchors, 4)
    assert (cls_targets[0].asnumpy() == 1).sum() > 0  # each image has positive anchors


def test_paste_mask_matches_gluoncv_fill_and_tolerates_boxes_off_the_grid():
    from gluoncv.data.transforms.mask import fill
    rng = np.random.RandomState(1)
    for _ in range(40):
        height, width = rng.randint(20, 90, 2)
        prob = rng.rand(14, 14).astype(np.float32)
        x1, y1 = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
        box = np.array([x1, y1, x1 + rng.uniform(0.5, 60), y1 + rng.uniform(0.5, 60)])
        rle, _ = paste_mask(prob, box, height, width)
        np.testing.assert_array_equal(coco_to_mask(rle), fill(prob[None], box[None], (width, height))[0])
    rle, _ = paste_mask(np.ones((14, 14), np.float32), [-50, -40, -10, -5], 30, 40)
    assert rle["size"] == [30, 40] and coco_to_mask(rle).sum() == 0


def test_fpn_roi_features_are_those_of_each_rois_own_level():
    """MXNet 1.9 CPU ROIAlign mishandles skipped RoIs (batch index -1): garbage outputs and stray zeros."""
    net = build_mask_rcnn("mask_rcnn_fpn_resnet18_v1b_coco", range(3), pretrained=False, **LIMITS)
    feats = net.features(mx.nd.random.normal(shape=(1, 3, 256, 256)))
    rois = mx.nd.array([[0, 2, 2, 30, 30], [0, 0, 0, 250, 250], [0, 10, 10, 90, 120], [0, 40, 60, 44, 66]])
    expected = []
    for roi in rois.asnumpy():
        scale = np.sqrt((roi[3] - roi[1] + 1) * (roi[4] - roi[2] + 1))
        level = int(np.clip(np.floor(4 + np.log2(scale / 224.0 + 1e-6)), 2, 5))
        expected.append(mx.nd.contrib.ROIAlign(feats[level - 2], mx.nd.array(roi[None]), (7, 7),
                                               1.0 / net._strides[level - 2], sample_ratio=2).asnumpy()[0])
    for _ in range(3):
        garbage = mx.nd.full((1 << 22,), float("nan"))
        garbage.wait_to_read()
        del garbage
        pooled = net._pyramid_roi_feats(mx.nd, feats, rois, (7, 7), net._strides).asnumpy()
        np.testing.assert_allclose(pooled, np.stack(expected), rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------------- weights
def test_coco_weights_reused_for_tie_handbag_umbrella(tmp_path, monkeypatch):
    """A COCO-shaped net saved under the model-store name is found offline and its matching rows reused."""
    from gluoncv.data import COCODetection
    from gluoncv.model_zoo import get_model, model_store
    from gluon_fashion.models.pretrained import pretrained_file
    coco_net = get_model(MODEL, pretrained=False, pretrained_base=False)
    apply_limits(coco_net, rpn_test_pre_nms=100, rpn_test_post_nms=20)  # a cheap forward
    coco_net.initialize(mx.init.Uniform(0.5))
    coco_net(mx.nd.zeros((1, 3, 128, 128)))  # settles the shapes left to deferred initialisation
    saved = tmp_path / "coco.params"
    coco_net.save_parameters(str(saved))
    import hashlib
    monkeypatch.setitem(model_store._model_sha1, MODEL, hashlib.sha1(saved.read_bytes()).hexdigest())
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet"))
    store_file = pretrained_file(MODEL)
    store_file.parent.mkdir(parents=True)
    saved.rename(store_file)

    classes = [0, 16, 24, 26]  # shirt, tie, bag/wallet, umbrella
    net = build_mask_rcnn(MODEL, classes, pretrained=True)
    coco = list(COCODetection.CLASSES)
    assert coco_reuse_map(classes) == {1: coco.index("tie"), 2: coco.index("handbag"), 3: coco.index("umbrella")}
    old_cls, new_cls = coco_net.class_predictor.weight.data().asnumpy(), net.class_predictor.weight.data().asnumpy()
    old_box, new_box = coco_net.box_predictor.weight.data().asnumpy(), net.box_predictor.weight.data().asnumpy()
    old_mask, new_mask = coco_net.mask.mask.weight.data().asnumpy(), net.mask.mask.weight.data().asnumpy()
    for new, name in ((1, "tie"), (2, "handbag"), (3, "umbrella")):
        old = coco.index(name)
        np.testing.assert_array_equal(new_cls[new + 1], old_cls[old + 1])  # row 0 is background
        np.testing.assert_array_equal(new_box[4 * new:4 * new + 4], old_box[4 * old:4 * old + 4])
        np.testing.assert_array_equal(new_mask[new], old_mask[old])
    np.testing.assert_array_equal(new_cls[0], old_cls[0])
    assert not any(np.array_equal(new_cls[1], old_cls[k + 1]) for k in range(80) if k != coco.index("tie"))
    np.testing.assert_array_equal(net.rpn.score.weight.data().asnumpy(), coco_net.rpn.score.weight.data().asnumpy())


def test_random_init_trains_every_layer_fine_tuning_keeps_gluoncvs_frozen_stem():
    net = build_mask_rcnn(MODEL, range(3), pretrained=False, **LIMITS)
    stem = [name for name in net.collect_params().keys() if "resnetv1b_conv0" in name or "layers1_conv" in name]
    assert stem
    fine_tune = set(trainable_params(net, pretrained=True).keys())
    from_scratch = set(trainable_params(net, pretrained=False).keys())
    assert not fine_tune & set(stem) and set(stem) <= from_scratch and fine_tune < from_scratch


def test_random_init_is_he_in_the_backbone_and_gluoncvs_own_in_the_heads():
    net = build_mask_rcnn(MODEL, range(3), pretrained=False, **LIMITS)
    net(mx.nd.zeros((1, 3, 256, 320)))  # GluonCV's convolutions infer their input width on the first pass
    params = net.collect_params()
    for name in ("resnetv1b_conv0_weight", "resnetv1b_layers1_conv0_weight", "resnetv1b_layers4_conv1_weight"):
        weight = params[name].data().asnumpy()
        he_std = math.sqrt(2.0 / np.prod(weight.shape[1:]))  # 0.117 for the stem, 0.021 in stage 4
        assert abs(weight.std() / he_std - 1) < 0.05, name
    rpn_conv = net.rpn.conv1[0].weight.data().asnumpy()  # GluonCV's Normal(0.01)
    assert abs(rpn_conv.std() - 0.01) < 0.001


def test_positive_ratio_sets_the_positives_of_sampler_target_generator_and_checkpoint():
    from gluon_fashion.models.mask_rcnn import checkpoint_meta

    net = build_mask_rcnn(MODEL, range(3), pretrained=False, **dict(LIMITS, rcnn_num_sample=16, rcnn_pos_ratio=0.5))
    assert net.sampler._max_pos == 8 and net.target_generator._box_encoder._max_pos == 8
    assert net.limits["rcnn_pos_ratio"] == 0.5 and net.limits["rcnn_num_sample"] == 16
    default = build_mask_rcnn(MODEL, range(3), pretrained=False, **dict(LIMITS, rcnn_num_sample=16))
    assert default.sampler._max_pos == 4 and default.limits["rcnn_pos_ratio"] == 0.25  # GluonCV's 0.25 kept
    meta = checkpoint_meta(MODEL, [0, 1, 2], 160, 224, net.limits)
    assert meta["build_kwargs"]["rcnn_pos_ratio"] == 0.5 and meta["build_kwargs"]["rcnn_num_sample"] == 16
    fresh = build_mask_rcnn(MODEL, range(3), pretrained=False)
    for bad in (0.0, 1.5):  # refused before anything is changed, so one net serves both
        with pytest.raises(UserError, match=r"--rcnn-pos-ratio must be in \(0, 1\]"):
            apply_limits(fresh, rcnn_pos_ratio=bad)


def test_missing_pretrained_weights_named_before_any_data_is_read(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "empty_home"))
    from gluoncv.model_zoo.model_store import short_hash
    sys.path.insert(0, str(ROOT))
    try:
        import train_mask_rcnn
    finally:
        sys.path.remove(str(ROOT))
    code = train_mask_rcnn.main(["--network", "resnet18_v1b", "--dataset-root", str(data_root),
                                 "--save-prefix", f"{tmp_path}/run/"])
    err = capsys.readouterr().err
    assert code != 0
    assert f"{MODEL}-{short_hash(MODEL)}.params" in err and str(tmp_path / "empty_home" / "models") in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", [MODEL, "mask_rcnn_fpn_resnet18_v1b_coco"])
def test_anchor_count_is_what_the_rpn_sees_and_small_inputs_still_predict(model):
    net = build_mask_rcnn(model, range(3), pretrained=False)  # GluonCV's test budget: 1000 proposals kept
    fpn = model.startswith("mask_rcnn_fpn")
    for height, width in ((128, 128), (100, 200)):
        features = net.features(mx.nd.zeros((1, 3, height, width)))
        features = features if isinstance(features, (list, tuple)) else [features]
        cells = sum(f.shape[2] * f.shape[3] for f in features[:5])
        assert anchor_count(net, height, width) == cells * (3 if fpn else 15)
    assert anchor_count(net, 128, 128) < 1000 or fpn  # C4 at 128x128: 960 anchors, fewer than the proposals
    net = build_mask_rcnn(model, range(3), pretrained=False)  # fresh: the features() call fixed no shapes
    image = (np.random.default_rng(0).uniform(0, 255, (128, 128, 3))).astype(np.uint8)
    instances = predict_instances(net, image, 128, 128, score_threshold=0.0)
    assert instances and all(inst.rle["size"] == [128, 128] for inst in instances)


def test_too_many_training_proposals_for_the_image_size_is_a_user_error(data_root, tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    try:
        import train_mask_rcnn
    finally:
        sys.path.remove(str(ROOT))
    # SMALL's scale and budget, then overridden: 2000 proposals cannot come from a 96-px image.
    code = train_mask_rcnn.main(["--dataset-root", str(data_root), "--save-prefix", f"{tmp_path}/run/"] + SMALL
                                + ["--short", "96", "--max-size", "128", "--rpn-train-pre-nms", "4000",
                                   "--rpn-train-post-nms", "2000"])
    err = capsys.readouterr().err
    assert code != 0 and "--rpn-train-post-nms 2000" in err and "RPN anchors" in err and "Traceback" not in err


def test_flag_errors_are_user_errors(capsys):
    parser = build_parser()
    for flags, message in ((["--cpu-contexts", "2", "--batch-size", "3"], "cannot be split evenly"),
                           (["--horovod"], "Horovod is not installed"),
                           (["--amp"], "--amp needs GPUs"),
                           (["--short", "800,600"], "range runs backwards")):
        with pytest.raises(UserError, match=message):
            train(parser.parse_args(["--no-pretrained"] + flags))


def test_resume_accepts_a_checkpoint_a_prefix_or_latest(tmp_path):
    from gluon_fashion.engine import CheckpointManager
    from gluon_fashion.models.mask_rcnn import checkpoint_meta
    from gluon_fashion.trainers.mask_rcnn import run_prefix
    prefix = run_prefix(f"{tmp_path}/", RUN)
    assert prefix == str(tmp_path / RUN) and run_prefix("runs/exp1_", RUN) == "runs/exp1_" + RUN
    manager = CheckpointManager(prefix, checkpoint_meta(MODEL, [0], 160, 224, {}))
    assert manager.resolve_resume("") is None
    with pytest.raises(UserError, match="no checkpoint yet"):
        manager.resolve_resume("latest")
    tiny = mx.gluon.nn.Dense(2, in_units=3)
    tiny.initialize()
    manager.save(tiny, None, epoch=2, iteration=6)
    assert manager.resolve_resume("latest") == prefix + "_last.params"
    assert manager.resolve_resume(prefix) == prefix + "_last.params"
    assert manager.resolve_resume(prefix + "_0002.json") == prefix + "_0002.params"
    with pytest.raises(UserError, match="neither a checkpoint"):
        manager.resolve_resume(prefix + "_0007.params")


# ------------------------------------------------------------------------------------- training
def test_overfit_validates_and_keeps_best_checkpoint(data_root, tmp_path):
    result = _run(data_root, tmp_path, "--epochs", "4", "--lr", "0.01", "--lr-warmup", "2",
                  "--val-interval", "4", "--val-max-images", "1")
    prefix = str(tmp_path / RUN)
    records = _metrics(prefix)
    losses = [r["values"]["loss"] for r in records if r["split"] == "train_iter"]
    assert len(losses) == 16 and all(v is not None and math.isfinite(v) for v in losses)
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    val = [r for r in records if r["split"] == "val"]
    assert len(val) == 1 and val[0]["epoch"] == 3 and 0.0 <= val[0]["values"]["segm_mAP"] <= 1.0
    evaluation = json.loads(Path(prefix + "_val_metrics.json").read_text())
    assert evaluation["epoch"] == 3 and evaluation["num_images"] == 1 and evaluation["per_class"]
    best = json.loads(Path(prefix + "_best.json").read_text())
    assert best["kind"] == "best" and best["metric"]["name"] == "segm_mAP" and best["epoch"] == 3
    assert result["best_epoch"] == 3 and result["iteration"] == 16
    for suffix in ("_best.params", "_0003.params", "_last.states", "_config.json", "_train.log", "_losses.png",
                   "_lr.png", "_val.png"):
        assert os.path.exists(prefix + suffix), suffix
    assert any(Path(prefix + "_tensorboard").iterdir())
    assert "segm AP" in Path(prefix + "_train.log").read_text()  # the per-class table

    # Another tool rebuilds the network from the checkpoint file alone and predicts at full image size.
    net, meta = load_mask_rcnn(prefix + "_best.params")
    assert meta["model"] == MODEL and len(meta["classes"]) == 46 and meta["image_scale"]["short"] == 160
    image = FashionInstance(*split_files(data_root, "val"), skip_empty=False)[0][0]
    instances = predict_instances(net, image, 160, 224, score_threshold=0.0)
    assert 0 < len(instances) <= 32
    for inst in instances:
        assert inst.rle["size"] == list(image.shape[:2]) and 0 <= inst.category_id < 46
        assert 0 <= inst.box[0] <= inst.box[2] <= image.shape[1] and 0 <= inst.box[1] <= inst.box[3] <= image.shape[0]

    # tools/predict.py with the validation annotations, at validation's thresholds, gives validation's results,
    # so tools/evaluate.py on them reproduces the logged figures.
    val_gt, val_images = split_files(data_root, "val_resized")
    summary = predict_to_folder(prefix + "_best.params", val_images, tmp_path / "predicted", annotations=val_gt,
                                score_threshold=VAL_SCORE_THRESHOLD, max_detections=VAL_MAX_DETECTIONS,
                                progress=False)
    predicted = json.loads((tmp_path / "predicted" / "results.json").read_text())
    assert summary.predicted == 1 and len(predicted) == evaluation["num_detections"] > 0
    valset = FashionInstance(val_gt, val_images, skip_empty=False)
    assert predicted == predict_dataset(net, valset, [mx.cpu()], 160, 224)
    reproduced = evaluate_coco(val_gt, tmp_path / "predicted" / "results.json")
    assert not math.isnan(reproduced.segm_mAP) and reproduced.segm_mAP == val[0]["values"]["segm_mAP"]
    assert dict(reproduced.as_dict(), epoch=3, iteration=16) == evaluation


def test_sigkill_then_resume_continues_at_the_same_iteration(data_root, tmp_path):
    command = [sys.executable, str(ROOT / "train_mask_rcnn.py"), "--dataset-root", str(data_root),
               "--save-prefix", f"{tmp_path}/", *SMALL, "--epochs", "2", "--lr", "0.01", "--lr-warmup", "3",
               "--lr-decay-epoch", "1", "--save-iter-interval", "2", "--val-interval", "5", "--val-max-images", "1"]
    env = dict(os.environ, GLUON_FASHION_NO_PROGRESS="1")
    prefix = str(tmp_path / RUN)
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not os.path.exists(prefix + "_last.json"):
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.time()
    state = json.loads(Path(prefix + "_last.json").read_text())["resume"]
    assert state["iteration"] < 8  # killed before the end

    done = subprocess.run(command + ["--resume", "latest"], cwd=tmp_path, env=env, capture_output=True, timeout=400)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    log_text = Path(prefix + "_train.log").read_text()
    assert (f"epoch {state['epoch']}, iteration {state['iteration']}, skipping {state['batch_in_epoch']} batch"
            in log_text)
    resumed = [r for r in _metrics(prefix) if r["split"] == "train_iter" and r["time"] > killed_at]
    # A record's step counts the updates done, its own included: the first after resuming is iteration + 1.
    assert [r["step"] for r in resumed] == list(range(state["iteration"] + 1, 9))
    assert resumed[0]["epoch"] == state["epoch"]
    assert [r["epoch"] for r in resumed] == [(step - 1) // 4 for step in range(state["iteration"] + 1, 9)]
    schedule = WarmupStepSchedule(0.01, 4, [1], factor=0.1, warmup_iters=3, warmup_factor=1 / 3)
    for record in resumed:
        assert record["values"]["lr"] == pytest.approx(schedule(record["step"] - 1))
    final = json.loads(Path(prefix + "_last.json").read_text())
    assert final["kind"] == "epoch" and final["epoch"] == 1 and final["iteration"] == 8
    assert os.path.exists(prefix + "_best.params")


def test_ctrl_c_stops_training_within_seconds_and_leaves_the_last_checkpoint_loadable(data_root, tmp_path):
    command = [sys.executable, str(ROOT / "train_mask_rcnn.py"), "--dataset-root", str(data_root),
               "--save-prefix", f"{tmp_path}/", *SMALL, "--epochs", "50", "--lr", "0.01", "--save-iter-interval", "3",
               "--val-interval", "50"]
    prefix = str(tmp_path / RUN)
    # SIG_DFL first: a shell that started the test suite in the background may have SIGINT ignored.
    run = subprocess.Popen(command, cwd=tmp_path, env=dict(os.environ, GLUON_FASHION_NO_PROGRESS="1"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not os.path.exists(prefix + "_last.json"):
        assert run.poll() is None, run.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.1)
    time.sleep(1.0)  # inside the next steps
    run.send_signal(signal.SIGINT)
    sent = time.time()
    try:
        _, stderr = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGUSR1)  # the trainer's faulthandler prints every thread's stack
        time.sleep(2)
        run.kill()
        _, stderr = run.communicate()
        raise AssertionError("still running 60 s after SIGINT; stacks:\n" + stderr.decode()[-6000:]) from None
    stopped_after = time.time() - sent
    # One training step of this configuration takes well under a second; 15 s leaves room for a loaded CI machine.
    assert stopped_after < 15, f"still running {stopped_after:.1f} s after SIGINT"
    assert run.returncode == 130, stderr.decode()[-2000:]
    assert "Traceback" not in stderr.decode() and "interrupted" in stderr.decode()
    net, meta = load_mask_rcnn(prefix + "_last.params", hybridize=False)  # sha1-verified load
    assert meta["resume"]["iteration"] >= 3


def test_two_cpu_contexts_share_each_batch(data_root, tmp_path):
    result = _run(data_root, tmp_path, "--epochs", "1", "--cpu-contexts", "2", "--batch-size", "2",
                  "--executor-threads", "2", "-j", "1", "--lr", "0.005", "--lr-warmup", "0", "--val-max-images", "1")
    prefix = str(tmp_path / RUN)
    config = json.loads(Path(prefix + "_config.json").read_text())
    assert config["contexts"] == ["cpu(0)", "cpu(1)"] and config["per_device_batch_size"] == 1
    iters = [r for r in _metrics(prefix) if r["split"] == "train_iter"]
    assert len(iters) == 2 and result["iteration"] == 2  # 4 images, 2 per iteration
    assert all(math.isfinite(r["values"]["loss"]) for r in iters)
    net, _ = load_mask_rcnn(prefix + "_last.params", ctx=[mx.cpu(0), mx.cpu(1)], hybridize=False)
    weight = net.class_predictor.weight
    np.testing.assert_array_equal(weight.data(mx.cpu(0)).asnumpy(), weight.data(mx.cpu(1)).asnumpy())
