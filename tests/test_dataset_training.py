"""Both trainers on every dataset format: a one-epoch run of Mask R-CNN and of semantic segmentation on the
converted Fashionpedia, ModaNet and DeepFashion2 samples, and of semantic segmentation on a label-map folder
(whose classes and colours reach evaluation and prediction overlays).

Tiny on purpose: 2 training and 1 validation image per format, small networks at a small scale.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import mxnet as mx
import numpy as np
import pytest

from gluon_fashion import labels, synthetic
from gluon_fashion.converters.coco_sources import convert_coco_source
from gluon_fashion.evaluation.segmentation import evaluate_checkpoint
from gluon_fashion.images import read_rgb
from gluon_fashion.models.segmentation import load_segmentation_model, predict_label_map
from gluon_fashion.predict import predict_to_folder
from gluon_fashion.trainers import mask_rcnn, segmentation

FORMATS = ("fashionpedia", "modanet", "deepfashion2")
MASK_RCNN = ["--network", "resnet18_v1b", "--no-pretrained", "--short", "128", "--max-size", "160",
             "--rpn-train-pre-nms", "128", "--rpn-train-post-nms", "32", "--rcnn-num-sample", "16",
             "--rpn-test-pre-nms", "128", "--rpn-test-post-nms", "16", "--log-interval", "1", "-j", "0",
             "--epochs", "1", "--gpus", ""]
SEGMENTATION = ["--model", "fcn", "--backbone", "resnet18", "--no-pretrained", "--base-size", "96", "--crop-size",
                "64", "--ngpus", "0", "--workers", "0", "--batch-size", "2", "--test-batch-size", "2", "--epochs", "1",
                "--log-interval", "1", "--lr", "0.01"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dataset_training")


@pytest.fixture(scope="module")
def roots(work) -> Dict[str, Path]:
    """Each format's sample converted into the project's layout; the label-map folder as generated."""
    out = {}
    for fmt in FORMATS:
        source = work / "sources" / fmt
        synthetic.make_format_sample(source, fmt, num_train=2, num_val=1, seed=7, min_size=128, max_size=160,
                                     progress=False)
        for split in ("train", "val"):
            images, annotations = synthetic.format_sample_paths(source, fmt, split)
            convert_coco_source(fmt, annotations, images, work / fmt, split=split, progress=False)
        out[fmt] = work / fmt
    out["labelmap"] = work / "labelmap"
    synthetic.make_format_sample(out["labelmap"], "labelmap", num_train=2, num_val=1, seed=7, min_size=128,
                                 max_size=160, progress=False)
    return out


@pytest.fixture(autouse=True)
def _quiet(work, monkeypatch):
    monkeypatch.chdir(work)
    monkeypatch.setenv("GLUON_FASHION_CACHE", str(work / "cache"))
    monkeypatch.setenv("GLUON_FASHION_NO_PROGRESS", "1")


@pytest.mark.parametrize("fmt", FORMATS)
def test_mask_rcnn_trains_on_each_converted_format_with_its_own_classes(roots, fmt, work):
    prefix = work / f"mrcnn_{fmt}"
    args = mask_rcnn.build_parser().parse_args(["--dataset-root", str(roots[fmt]), "--save-prefix", f"{prefix}/"]
                                               + MASK_RCNN)
    result = mask_rcnn.train(args)
    assert result["iteration"] == 2
    categories = json.loads((roots[fmt] / "annotations" / "rle_instances_train.json").read_text())["categories"]
    run = next(prefix.glob("*_0000.json"))
    meta = json.loads(run.read_text())
    assert meta["classes"] == [{"id": c["id"], "name": c["name"]} for c in categories]
    metrics = json.loads(next(prefix.glob("*_val_metrics.json")).read_text())
    assert 0.0 <= metrics["segm_mAP"] <= 1.0 and metrics["num_images"] == 1
    if fmt != "fashionpedia":  # the data's 13 classes, not iMaterialist's 46
        assert len(meta["classes"]) == 13 and not labels.has_imaterialist_classes(categories)


@pytest.mark.parametrize("fmt", FORMATS)
def test_segmentation_trains_on_each_converted_format_with_its_own_classes(roots, fmt, work):
    args = segmentation.build_parser().parse_args(["--dataset-root", str(roots[fmt]), "--checkname", fmt]
                                                  + SEGMENTATION)
    segmentation.train(args)
    run = work / "train_logs" / "imaterialist" / "fcn" / fmt
    val = json.loads((run / "fcn_resnet18_val_metrics.json").read_text())
    categories = json.loads((roots[fmt] / "annotations" / "rle_instances_train.json").read_text())["categories"]
    if fmt == "fashionpedia":  # iMaterialist's categories: --classes main keeps its meaning
        expected = labels.parse_class_set("main").class_names
    else:
        expected = ["background"] + [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    assert list(val["iou_per_class"]) == expected
    meta = json.loads((run / "fcn_resnet18_0000.json").read_text())
    assert meta["classes"]["names"] == expected and 0.0 <= val["mIoU"] <= 1.0


def test_segmentation_on_a_label_map_folder_uses_its_classes_and_colours(roots, work, capsys):
    root = roots["labelmap"]
    args = segmentation.build_parser().parse_args(["--dataset", "folder", "--dataset-root", str(root),
                                                   "--checkname", "labelmap"] + SEGMENTATION)
    segmentation.train(args)
    run = work / "train_logs" / "folder" / "fcn" / "labelmap"
    weights = run / "fcn_resnet18_best.params"
    meta = json.loads((run / "fcn_resnet18_0000.json").read_text())
    assert meta["dataset"] == "folder" and meta["classes"]["names"] == list(synthetic.LABELMAP_CLASSES)
    assert meta["classes"]["colors"] == [list(c) for c in synthetic.LABELMAP_COLORS]

    # Evaluation reads the folder's val split with the checkpoint's classes, names in the table.
    result = evaluate_checkpoint(str(weights), str(root), split="val")
    assert result["images"] == 1 and "outerwear" in capsys.readouterr().out

    # Prediction pictures are drawn in classes.json's colours.
    photos = root / "images"
    stem = json.loads((root / "splits.json").read_text())["val"][0]
    predict_to_folder(str(weights), photos / f"{stem}.jpg", work / "predicted", progress=False)
    net, _ = load_segmentation_model(str(weights), [mx.cpu()])
    predicted = predict_label_map(net, read_rgb(photos / f"{stem}.jpg"), mx.cpu(), base_size=96, crop_size=64)
    drawn = read_rgb(work / "predicted" / f"{stem}_labels.png")
    np.testing.assert_array_equal(drawn, np.asarray(synthetic.LABELMAP_COLORS, np.uint8)[predicted])
