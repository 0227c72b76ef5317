"""Semantic segmentation: dataset rules, transforms, model building and weights, training, resume, TTA, tools.

Training runs use DeepLabV3/ResNet-50 from random initialisation at a 48-pixel crop on a small generated
sample; a few iterations each.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import nn

from gluon_fashion.convert import convert_imaterialist
from gluon_fashion.data.segmentation import SemanticSegmentation, get_dataset
from gluon_fashion.engine.checkpoint import CheckpointManager
from gluon_fashion.engine.schedules import PolySchedule
from gluon_fashion.errors import UserError
from gluon_fashion.images import read_rgb
from gluon_fashion.labels import MAIN_APPAREL_IDS, ClassSet, parse_class_set
from gluon_fashion.models.initialization import initialize_params
from gluon_fashion.models.pretrained import pretrained_file
from gluon_fashion.models.segmentation import (_construct, build_segmentation_model, checkpoint_meta,
                                               classifier_convs, load_segmentation_model, predict_label_map)
from gluon_fashion.rle import coco_to_mask, mask_to_coco, nearest_indices
from gluon_fashion.synthetic import make_sample_dataset
from gluon_fashion.evaluation.segmentation import evaluate_batches
from gluon_fashion.trainers.segmentation import pixel_cross_entropy
from gluon_fashion.transforms.segmentation import (IGNORE_LABEL, BackgroundReplacer, EvalTransform, TrainTransform,
                                                   scaled_size)

REPO = Path(__file__).resolve().parents[1]
CROP, BASE = 48, 64


def _script(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = _script("train_segmentation.py")
eval_script = _script("tools/eval_segmentation.py")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUON_FASHION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))
    monkeypatch.setenv("GLUON_FASHION_NO_PROGRESS", "1")


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    """A converted sample dataset: 8 training and 2 validation photos (128-160 px, portrait and landscape)."""
    root = tmp_path_factory.mktemp("data") / "imaterialist"
    make_sample_dataset(root, num_train=10, num_test=0, seed=3, min_size=128, max_size=160, progress=False)
    convert_imaterialist(root, val_num=2, num_workers=1, progress=False)
    return root


def _common_args(root):
    return ["--model", "deeplabv3", "--backbone", "resnet50", "--no-pretrained", "--dataset-root", str(root),
            "--base-size", str(BASE), "--crop-size", str(CROP), "--ngpus", "0", "--workers", "0", "--lr", "0.01",
            "--log-interval", "1", "--test-batch-size", "2"]


@pytest.fixture(scope="module")
def trained(sample_root, tmp_path_factory):
    """One epoch on two CPU contexts (batch 2 = 1 per device); returns the run folder."""
    work = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("GLUON_FASHION_CACHE", str(work / "cache"))
        mp.setenv("MXNET_HOME", str(work / "mxnet_home"))
        mp.setenv("GLUON_FASHION_NO_PROGRESS", "1")
        rc = train_script.main(_common_args(sample_root) + ["--checkname", "two_ctx", "--epochs", "1",
                                                            "--cpu-contexts", "2", "--batch-size", "2"])
    assert rc == 0
    return work / "train_logs" / "imaterialist" / "deeplabv3" / "two_ctx"


def _metrics(run_dir: Path, split: str):
    lines = (run_dir / "deeplabv3_resnet50_metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


# ------------------------------------------------------------------------------------ classes, painting
def test_class_set_default_and_custom():
    default = parse_class_set("main")
    assert default.category_ids == MAIN_APPAREL_IDS and default.num_classes == 14
    assert [default.label_of(c) for c in (0, 5, 12, 13, 31)] == [1, 6, 13, 0, 0]
    custom = parse_class_set("6-8,0")
    assert custom.category_ids == (6, 7, 8, 0) and custom.class_names[1] == "pants"
    assert custom.label_of(0) == 4 and custom.label_of(1) == 0
    binary = parse_class_set("main", binary=True)
    assert binary.num_classes == 2 and {binary.label_of(c) for c in range(13)} == {1}
    assert ClassSet.from_dict(binary.to_dict()) == binary
    for bad in ("0,x", "50", "3-1", "1,1"):
        with pytest.raises(UserError, match="--classes"):
            parse_class_set(bad)


def _write_coco(root: Path, split: str, images, annotations):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    for image in images:
        cv2.imwrite(str(root / split / image["file_name"]),
                    np.full((image["height"], image["width"], 3), 90, np.uint8))
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": i, "name": str(i)} for i in range(46)]}
    (root / "annotations" / f"rle_instances_{split}.json").write_text(json.dumps(doc))


def _ann(ann_id, image_id, category, mask):
    return {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": mask_to_coco(mask),
            "area": int(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0}


def test_overlaps_smaller_on_top_ties_by_id_independent_of_json_order(tmp_path):
    h, w = 30, 40
    big = np.zeros((h, w), np.uint8)
    big[2:28, 2:38] = 1                       # dress (10), largest
    small = np.zeros((h, w), np.uint8)
    small[5:12, 5:15] = 1                     # jacket (4), inside the dress
    tie_a = np.zeros((h, w), np.uint8)
    tie_a[15:20, 20:30] = 1                   # shirt (0), 50 px, id 7
    tie_b = np.zeros((h, w), np.uint8)
    tie_b[17:22, 22:32] = 1                   # pants (6), 50 px, id 9 -> on top where they overlap
    sleeve = np.zeros((h, w), np.uint8)
    sleeve[5:8, 5:8] = 1                      # sleeve (31): not a main class, never painted
    anns = [_ann(9, 1, 6, tie_b), _ann(3, 1, 10, big), _ann(20, 1, 31, sleeve), _ann(7, 1, 0, tie_a),
            _ann(5, 1, 4, small)]
    image = {"id": 1, "file_name": "a.jpg", "height": h, "width": w}
    expected = np.zeros((h, w), np.int32)
    expected[big > 0] = 11
    expected[small > 0] = 5
    expected[tie_a > 0] = 1
    expected[tie_b > 0] = 7
    for order in (anns, anns[::-1]):
        _write_coco(tmp_path, "train", [image], order)
        dataset = SemanticSegmentation(tmp_path, "train")
        np.testing.assert_array_equal(dataset.decode_label(0), expected)
        # At a working resolution the same map is sampled with the centre-aligned nearest-neighbour rule.
        rows, cols = nearest_indices(h, 17), nearest_indices(w, 23)
        np.testing.assert_array_equal(dataset.decode_label(0, 17, 23), expected[np.ix_(rows, cols)])


def test_binary_mode_binarises_train_and_val(sample_root):
    for split in ("train", "val"):
        multi = SemanticSegmentation(sample_root, split, class_set=parse_class_set("main"))
        binary = SemanticSegmentation(sample_root, split, class_set=parse_class_set("main", binary=True))
        assert binary.num_classes == 2 and binary.classes == ["background", "garment"]
        for index in range(len(binary)):
            labels = binary.decode_label(index)
            assert set(np.unique(labels)) <= {0, 1}
            np.testing.assert_array_equal(labels, (multi.decode_label(index) > 0).astype(np.int32))
        assert any(binary.decode_label(i).any() for i in range(len(binary)))


def test_filter_cache_follows_annotation_file(tmp_path):
    h, w = 20, 20
    covered, tiny = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    covered[:10] = 1      # 50 % labelled
    tiny[0, 0] = 1        # 0.25 % labelled
    images = [{"id": i, "file_name": f"{i}.jpg", "height": h, "width": w} for i in (1, 2)]
    _write_coco(tmp_path / "d", "train", images, [_ann(1, 1, 0, covered), _ann(2, 2, 1, tiny)])
    cache = Path(os.environ["GLUON_FASHION_CACHE"]) / "semantic_filter"
    kept = SemanticSegmentation(tmp_path / "d", "train", min_label_fraction=0.1)
    assert [r.image_id for r in kept.records] == [1]
    assert len(list(cache.glob("rle_instances_train-*.json"))) == 1
    assert len(SemanticSegmentation(tmp_path / "d", "train", min_label_fraction=0.1)) == 1  # from the cache
    # Edit the annotations: image 2 becomes well covered. A stale cache would still drop it.
    _write_coco(tmp_path / "d", "train", images, [_ann(1, 1, 0, covered), _ann(2, 2, 1, covered)])
    path = tmp_path / "d" / "annotations" / "rle_instances_train.json"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert [r.image_id for r in SemanticSegmentation(tmp_path / "d", "train", min_label_fraction=0.1).records] == [1, 2]
    assert len(list(cache.glob("rle_instances_train-*.json"))) == 2
    with pytest.raises(UserError, match="no images left"):
        SemanticSegmentation(tmp_path / "d", "train", min_label_fraction=0.9)


def test_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="--dataset-root"):
        SemanticSegmentation(tmp_path / "nowhere", "train")
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match="rle_instances_train.json: annotation file not found"):
        SemanticSegmentation(tmp_path / "d", "train")
    with pytest.raises(UserError, match="unknown; registered: imaterialist"):
        get_dataset("cityscapes", root=str(tmp_path))
    mask = np.ones((5, 6), np.uint8)
    _write_coco(tmp_path / "e", "train", [{"id": 1, "file_name": "x.jpg", "height": 5, "width": 7}],
                [_ann(4, 1, 0, mask)])
    with pytest.raises(UserError, match=r"annotation 4 \(annotations\[0\]\): mask size \[5, 6\] differs"):
        SemanticSegmentation(tmp_path / "e", "train")


def test_truncated_jpegs_are_left_out_of_every_epoch_with_a_warning(sample_root, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    intact = SemanticSegmentation(root, "train")
    cut = intact.records[2].path
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])  # libjpeg would decode the rest as grey
    with caplog.at_level("WARNING", logger="gluon_fashion"):
        dataset = SemanticSegmentation(root, "train")
    assert len(dataset) == len(intact) - 1 and dataset.truncated_images == [str(cut)]
    assert [r.image_id for r in dataset.records] == [r.image_id for i, r in enumerate(intact.records) if i != 2]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"1 of {len(intact)} image(s) are truncated JPEGs" in warning and "1 image(s) per epoch" in warning
    assert cut.name in warning


# ----------------------------------------------------------------------------------------- transforms
def _constant_label(value):
    return lambda h, w: np.full((h, w), value, np.int32)


@pytest.mark.parametrize("shape", [(40, 40), (40, 60), (75, 30)])
def test_eval_transform_ignores_exactly_the_padding(shape):
    image = np.full(shape + (3,), 200, np.uint8)
    data, label = EvalTransform(64)(image, _constant_label(3))
    h, w = scaled_size(*shape, 64)
    assert data.shape == (3, 64, 64) and label.shape == (64, 64)
    assert (label[:h, :w] == 3).all()                    # a square image has no ignored pixel at all
    assert (label[h:] == IGNORE_LABEL).all() and (label[:, w:] == IGNORE_LABEL).all()
    assert np.abs(data[:, h:]).max(initial=0) < 0.02      # padded with the mean colour (zero once normalised)


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_train_transform_pads_with_ignore_only_outside_the_image(shape):
    transform = TrainTransform(base_size=32, crop_size=48, scale_range=(1.0, 1.0), blur_prob=0.0)
    h, w = scaled_size(*shape, 32)
    for seed in range(4):  # flips move the padding to the left; it must stay outside the image either way
        data, label = transform(np.full(shape + (3,), 200, np.uint8), _constant_label(2),
                                np.random.default_rng(seed))
        assert label.shape == (48, 48) and data.shape == (3, 48, 48)
        assert (label == 2).sum() == h * w and (label == IGNORE_LABEL).sum() == 48 * 48 - h * w


def test_augmentation_depends_on_seed_epoch_and_image_only(sample_root):
    transform = TrainTransform(BASE, CROP)
    dataset = SemanticSegmentation(sample_root, "train", transform=transform, seed=5)
    n = len(dataset)
    first, again = dataset[1], dataset[1]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    other_epoch = dataset[n + 1]  # index n + 1 is image 1 in epoch 1
    assert not np.array_equal(first[0], other_epoch[0])


def test_background_replacement_keeps_garment_pixels():
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40, 3), np.uint8)
    image[10:30, 10:30] = (200, 30, 30)
    label = np.zeros((40, 40), np.int32)
    label[10:30, 10:30] = 1
    label[:, 36:] = IGNORE_LABEL
    replacer = BackgroundReplacer(1.0, jpeg_quality=(100, 100))
    changed = 0
    for _ in range(6):
        out = replacer(image, label, rng)
        # JPEG at quality 100 changes colours by a few levels, mostly at the pasted edges.
        assert np.abs(out[14:26, 14:26].astype(int) - (200, 30, 30)).max() <= 12
        changed += np.abs(out[label == 0].astype(int) - image[label == 0]).mean() > 20
    assert changed >= 4
    assert BackgroundReplacer(0.0)(image, label, rng) is image


# ------------------------------------------------------------------------------------------- models
def test_any_crop_size_and_input_size():
    net = _construct("deeplabv3", "resnet50", 5, True, base_size=60, crop_size=50)
    initialize_params(net.collect_params(), [mx.cpu()])
    net.hybridize()
    for shape in [(2, 3, 50, 50), (1, 3, 37, 61)]:
        outputs = net(mx.nd.random.uniform(shape=shape))
        assert [o.shape for o in outputs] == [(shape[0], 5) + shape[2:]] * 2


def test_shape_free_forward_matches_gluoncv_at_the_crop_size(tmp_path):
    from gluoncv.model_zoo.deeplabv3 import DeepLabV3

    ours = _construct("deeplabv3", "resnet50", 5, True, base_size=72, crop_size=64)
    initialize_params(ours.collect_params(), [mx.cpu()])
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    expected = ours(x)
    ours.save_parameters(str(tmp_path / "w.params"))
    reference = DeepLabV3(5, backbone="resnet50", aux=True, pretrained_base=False, base_size=72, crop_size=64)
    reference.load_parameters(str(tmp_path / "w.params"))
    for mine, theirs in zip(expected, reference(x)):
        np.testing.assert_allclose(mine.asnumpy(), theirs.asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model, backbone", [("deeplabv3", "resnet50"), ("deeplabv3plus", "xception")])
def test_syncbn_reaches_every_batchnorm(model, backbone):
    net = _construct(model, backbone, 4, True, base_size=60, crop_size=50,
                     norm_layer=mx.gluon.contrib.nn.SyncBatchNorm, norm_kwargs={"num_devices": 3})
    found = []

    def visit(block):
        if isinstance(block, nn.BatchNorm):
            found.append((type(block).__name__, block._kwargs.get("ndev")))
        for child in block._children.values():
            visit(child)

    visit(net)
    assert len(found) > 50 and set(found) == {("SyncBatchNorm", 3)}


def test_zoo_head_replacement_from_local_coco_weights():
    # A randomly initialised network of exactly the deeplab_resnet101_coco shape, under the store's file name.
    mx.random.seed(1)
    source = _construct("deeplabv3", "resnet101", 21, True, base_size=520, crop_size=480)
    initialize_params(source.collect_params(), [mx.cpu()])
    source(mx.nd.zeros((1, 3, 32, 32)))  # finish deferred initialisation
    path = pretrained_file("deeplab_resnet101_coco")
    assert str(path).startswith(os.environ["MXNET_HOME"])
    path.parent.mkdir(parents=True)
    source.save_parameters(str(path))
    saved = mx.nd.load(str(path))
    del source
    for classes in (14, 21):  # 21 = COCO's count: the classifiers must still be new
        net, kwargs = build_segmentation_model("deeplabv3", classes, [mx.cpu()], model_zoo="deeplab_resnet101_coco",
                                               base_size=BASE, crop_size=CROP, verify_weights=False)
        assert kwargs["backbone"] == "resnet101" and kwargs["aux"] is True
        params = net._collect_params_with_prefix()
        for name in ("conv1.0.weight", "layer4.2.conv2.weight", "layer3.22.bn3.running_var",
                     "head.aspp.project.0.weight", "auxlayer.block.0.weight"):
            np.testing.assert_array_equal(params[name].data().asnumpy(), saved[name].asnumpy())
        for conv, prefix in zip(classifier_convs(net), ("head.block.4", "auxlayer.block.4")):
            weight = conv.weight.data().asnumpy()
            assert weight.shape == (classes, 256, 1, 1)
            if classes == 21:
                assert not np.allclose(weight, saved[prefix + ".weight"].asnumpy())
        assert params["head.block.4.weight"].lr_mult == 10 and params["layer1.0.conv1.weight"].lr_mult == 1
        assert params["auxlayer.block.0.weight"].lr_mult == 10


def _save_as_store_file(net: nn.Block, name: str) -> dict:
    """Initialise ``net`` at random and save it as model-store file ``name`` (under $MXNET_HOME); its tensors."""
    net.initialize(mx.init.Normal(0.05))
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = pretrained_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save_parameters(str(path))
    return mx.nd.load(str(path))


def test_deeplab_plus_xception_coco_uses_imagenet_backbone_with_warning(caplog):
    from gluoncv.model_zoo.xception import Xception65

    saved = _save_as_store_file(Xception65(), "xception")
    library_logger = logging.getLogger("gluon_fashion")  # a RunLogger may have stopped its propagation
    library_logger.addHandler(caplog.handler)
    try:
        net, kwargs = build_segmentation_model("deeplabv3", 3, [mx.cpu()], model_zoo="deeplab_plus_xception_coco",
                                               base_size=60, crop_size=50, verify_weights=False)
    finally:
        library_logger.removeHandler(caplog.handler)
    assert kwargs["model"] == "deeplabv3plus" and kwargs["backbone"] == "xception"
    assert any(r.levelno == logging.WARNING and "no COCO-pretrained" in r.getMessage() for r in caplog.records)
    params = net._collect_params_with_prefix()
    for name in ("conv1.weight", "midflow.5.rep.1.pointwise.weight", "bn5.gamma"):
        np.testing.assert_array_equal(params[name].data().asnumpy(), saved[name].asnumpy())
    assert not any(name.startswith("head.") for name in saved)
    outputs = net(mx.nd.random.uniform(shape=(1, 3, 50, 50)))  # 50 is not a multiple of 8
    assert [o.shape for o in outputs] == [(1, 3, 50, 50)] * 2


@pytest.mark.parametrize("model", ["fcn", "psp", "deeplabv3"])
def test_basic_block_backbones_get_heads_of_their_width(model, tmp_path):
    # ImageNet resnet18_v1b weights (random, under the store's file name) for a network GluonCV's heads
    # would size for ResNet-50's 1024/2048-channel features.
    from gluoncv.model_zoo.resnetv1b import resnet18_v1b

    mx.random.seed(2)
    saved = _save_as_store_file(resnet18_v1b(pretrained=False), "resnet18_v1b")
    net, kwargs = build_segmentation_model(model, 4, [mx.cpu()], backbone="resnet18", aux=True, base_size=60,
                                           crop_size=50, verify_weights=False)
    assert kwargs["backbone"] == "resnet18"
    params = net._collect_params_with_prefix()
    for name in ("conv1.weight", "layer4.1.conv2.weight", "layer3.0.bn1.running_mean"):
        np.testing.assert_array_equal(params[name].data().asnumpy(), saved[name].asnumpy())
    in_widths = {p.shape[1] for n, p in params.items() if n.startswith(("head.", "auxlayer.")) and p.data().ndim == 4}
    assert not in_widths & {1024, 2048, 4096}, in_widths
    net.hybridize()
    with autograd.record():
        outputs = net(mx.nd.random.uniform(shape=(2, 3, 50, 62)))
        loss = sum(pixel_cross_entropy(o, mx.nd.zeros((2, 50, 62), dtype="int32")).mean() for o in outputs)
    loss.backward()
    assert [o.shape for o in outputs] == [(2, 4, 50, 62)] * 2
    head_weights = [p for n, p in params.items() if n.startswith(("head.", "auxlayer.")) and n.endswith("weight")]
    assert all(float(p.grad().abs().sum().asscalar()) > 0 for p in head_weights)

    # A checkpoint of it loads back from the file alone (the tools' path), giving the same predictions.
    prefix = str(tmp_path / f"{model}_resnet18")
    CheckpointManager(prefix, checkpoint_meta(kwargs, parse_class_set("0-2"))).update_best(net, 0, 0, 0.5)
    loaded, meta = load_segmentation_model(prefix + "_best.params", mx.cpu())
    assert meta["build_kwargs"]["backbone"] == "resnet18"
    x = mx.nd.random.uniform(shape=(1, 3, 50, 62))
    with autograd.predict_mode():
        expected = net(x)[0]
    np.testing.assert_allclose(loaded(x)[0].asnumpy(), expected.asnumpy(), rtol=1e-4, atol=1e-5)


def test_loss_falls_when_fitting_a_batch(sample_root):
    mx.random.seed(0)
    dataset = SemanticSegmentation(sample_root, "train", transform=TrainTransform(BASE, CROP, blur_prob=0.0))
    items = [dataset[i] for i in range(2)]
    data = mx.nd.array(np.stack([x for x, _ in items]))
    label = mx.nd.array(np.stack([y for _, y in items]), dtype="int32")
    net, _ = build_segmentation_model("deeplabv3", 14, [mx.cpu()], backbone="resnet50", aux=False,
                                      base_size=BASE, crop_size=CROP, pretrained=False)
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-3})
    losses = []
    for _ in range(10):
        with autograd.record():
            loss = pixel_cross_entropy(net(data)[0], label)
        loss.backward()
        trainer.step(2)
        losses.append(float(loss.mean().asscalar()))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < 0.6 * np.mean(losses[:2]), losses


def test_pixel_cross_entropy_ignores_padding():
    logits = mx.nd.array(np.log(np.array([0.7, 0.2, 0.1]))[None, :, None, None] * np.ones((1, 3, 2, 2)))
    label = mx.nd.array([[[0, 1], [-1, -1]]], dtype="int32")
    expected = -(np.log(0.7) + np.log(0.2)) / 2
    assert float(pixel_cross_entropy(logits, label).asscalar()) == pytest.approx(expected, rel=1e-5)
    all_ignored = mx.nd.full((1, 2, 2), -1, dtype="int32")
    assert float(pixel_cross_entropy(logits, all_ignored).asscalar()) == 0.0


class _RedDetector(nn.HybridBlock):
    """Class 1 where the (normalised) red channel is high: a known answer for the inference machinery."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(2, 1, in_channels=3)

    def hybrid_forward(self, F, x):
        return (self.conv(x),)


def _red_detector() -> _RedDetector:
    net = _RedDetector()
    net.initialize()
    net.conv.weight.set_data(mx.nd.array([[[[0]], [[0]], [[0]]], [[[8]], [[0]], [[0]]]]))
    net.conv.bias.set_data(mx.nd.array([0, -8]))  # logit 1 > 0 when normalised red > 1
    return net


def test_predict_label_map_tta_at_own_resolution():
    net = _red_detector()
    image = np.full((150, 230, 3), 120, np.uint8)
    truth = np.zeros((150, 230), np.int32)
    image[30:100, 40:170] = (250, 20, 20)
    truth[30:100, 40:170] = 1
    interior = np.zeros_like(truth, dtype=bool)
    interior[34:96, 44:166] = True
    border = np.zeros_like(interior)
    border[26:104, 36:174] = True
    border &= ~interior
    for scales, flip in [((1.0,), False), ((0.5, 1.0, 1.5), True)]:
        # base 120 / crop 64: several overlapping windows at scale 1 and 1.5, a single one at 0.5.
        labels = predict_label_map(net, image, mx.cpu(), scales=scales, flip=flip, base_size=120, crop_size=64)
        assert labels.shape == (150, 230) and labels.dtype == np.int32
        np.testing.assert_array_equal(labels[~border], truth[~border])
    with pytest.raises(UserError, match="--scales"):
        predict_label_map(net, image, mx.cpu(), scales=(0.0,))


def test_evaluate_batches_scores_a_known_detector(tmp_path):
    net = _red_detector()
    images, anns = [], []
    for image_id, (h, w) in enumerate([(40, 40), (30, 50), (50, 36)], start=1):
        mask = np.zeros((h, w), np.uint8)
        mask[5:h - 8, 6:w - 10] = 1
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": h, "width": w})
        anns.append(_ann(image_id, image_id, 3, mask))
    _write_coco(tmp_path, "val", images, anns)
    for image, ann in zip(images, anns):  # red garment on grey, exactly where the mask is
        photo = np.full((image["height"], image["width"], 3), 120, np.uint8)
        photo[coco_to_mask(ann["segmentation"]) > 0] = (250, 20, 20)
        cv2.imwrite(str(tmp_path / "val" / image["file_name"]), photo[:, :, ::-1])
    dataset = SemanticSegmentation(tmp_path, "val", class_set=parse_class_set("main", binary=True),
                                   transform=EvalTransform(64))
    loader = gluon.data.DataLoader(dataset, batch_size=2, last_batch="keep")
    conf = evaluate_batches(net, loader, [mx.cpu()], 2)
    # Non-square images are padded to 64 x 64; the padding is not counted.
    expected_pixels = sum(np.prod(scaled_size(i["height"], i["width"], 64)) for i in images)
    assert conf.matrix.sum() == expected_pixels
    assert conf.pixel_accuracy() > 0.97 and conf.mean_iou() > 0.93
    net.conv.bias.set_data(mx.nd.array([0, -100]))  # now never says "garment"
    conf = evaluate_batches(net, loader, [mx.cpu()], 2)
    assert conf.iou_per_class()[1] == 0.0 and conf.pixel_accuracy() == pytest.approx(conf.iou_per_class()[0])


# ------------------------------------------------------------------------------- training and tools
def test_training_two_contexts_writes_run_files(trained, sample_root):
    prefix = trained / "deeplabv3_resnet50"
    for suffix in ("_config.json", "_train.log", "_metrics.jsonl", "_0000.params", "_0000.states", "_last.json",
                   "_best.params", "_val_metrics.json", "_losses.png", "_lr.png"):
        assert Path(str(prefix) + suffix).is_file(), suffix
    meta = json.loads(Path(str(prefix) + "_0000.json").read_text())
    assert meta["task"] == "segmentation" and meta["build_kwargs"]["num_classes"] == 14
    iters = 4  # 8 training images, batch 2
    assert meta["iteration"] == iters
    assert (meta["resume"]["epoch"], meta["resume"]["iteration"], meta["resume"]["batch_in_epoch"]) == (1, iters, 0)
    val = json.loads(Path(str(prefix) + "_val_metrics.json").read_text())
    assert 0.0 <= val["mIoU"] <= 1.0 and 0.0 <= val["pixAcc"] <= 1.0 and len(val["iou_per_class"]) == 14
    assert [r["values"]["mIoU"] for r in _metrics(trained, "val")] == [val["mIoU"]]
    log_text = (trained / "deeplabv3_resnet50_train.log").read_text()
    assert "cpu(0), cpu(1)" in log_text and "mIoU" in log_text and "jumpsuit" in log_text


def test_resume_continues_iteration_and_lr_schedule(trained, sample_root, monkeypatch):
    monkeypatch.chdir(trained.parents[3])
    args = _common_args(sample_root) + ["--checkname", "two_ctx", "--cpu-contexts", "2", "--batch-size", "2"]
    assert train_script.main(args + ["--epochs", "1"]) == 2  # a finished run is not overwritten silently
    assert train_script.main(args + ["--epochs", "2", "--resume", "latest"]) == 0
    iters = 4
    meta = json.loads((trained / "deeplabv3_resnet50_last.json").read_text())
    assert meta["epoch"] == 1 and meta["iteration"] == 2 * iters
    steps = {r["step"]: r["values"]["lr"] for r in _metrics(trained, "train_iter")}
    schedule = PolySchedule(0.01, 2 * iters)
    # The first update after resuming is iteration 4 of 8 (logged as step 5): lr = 0.01 * (1 - 4/8) ** 0.9.
    assert steps[iters + 1] == pytest.approx(0.01 * 0.5 ** 0.9) == pytest.approx(schedule(iters))
    assert sorted(steps)[-1] == 2 * iters


def test_eval_only_and_eval_tool_with_tta(trained, sample_root, tmp_path, capsys):
    weights = str(trained / "deeplabv3_resnet50_best.params")
    result = train_script.main(["--eval", "--resume", weights, "--dataset-root", str(sample_root), "--ngpus", "0",
                                "--workers", "0"])
    assert result == 0 and "mIoU" in capsys.readouterr().out
    out = tmp_path / "metrics"
    assert eval_script.main(["--weights", weights, "--dataset-root", str(sample_root), "--flip",
                             "--scales", "0.75,1.0,1.25", "--output", str(out), "--ngpus", "0"]) == 0
    metrics = json.loads((out / "metrics_val.json").read_text())
    doc = json.loads((sample_root / "annotations" / "rle_instances_val.json").read_text())
    # Scored at each photo's own resolution: every pixel of every val photo is counted once.
    assert metrics["pixels"] == sum(i["height"] * i["width"] for i in doc["images"])
    assert metrics["flip"] is True and metrics["scales"] == [0.75, 1.0, 1.25]
    photos = sample_root / "val"
    pred = tmp_path / "pred"
    assert eval_script.main(["--weights", weights, "--images", str(photos), "--output", str(pred), "--ngpus", "0",
                             "--flip", "--scales", "0.75,1.0"]) == 0
    for photo in sorted(photos.glob("*.jpg")):
        for kind in ("labels", "overlay"):
            written = read_rgb(pred / f"{photo.stem}_{kind}.png")
            assert written.shape == read_rgb(photo).shape
    settings = json.loads((pred / "images.json").read_text())
    assert settings["flip"] is True and settings["scales"] == [0.75, 1.0] and len(settings["images"]) == 2
    assert eval_script.main(["--weights", weights, "--images", str(photos), "--output", str(pred), "--ngpus", "0"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    net, meta = load_segmentation_model(weights, mx.cpu())
    assert meta["classes"]["names"][0] == "background" and not hasattr(net, "auxlayer")


def test_eval_latest_names_the_runs_last_checkpoint(trained, sample_root, monkeypatch, capsys):
    monkeypatch.chdir(trained.parents[3])
    args = _common_args(sample_root) + ["--checkname", "two_ctx", "--eval", "--resume", "latest"]
    assert train_script.main(args) == 0
    out = capsys.readouterr().out
    assert "deeplabv3_resnet50_last.params" in out and "mIoU" in out
    assert train_script.main(_common_args(sample_root) + ["--checkname", "nothing_here", "--eval", "--resume",
                                                          "latest"]) == 2
    assert "--resume latest: no checkpoint yet" in capsys.readouterr().err


def test_pretrained_weights_from_a_checkpoint_with_other_classes(trained, sample_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = str(trained / "deeplabv3_resnet50_best.params")
    args = [a for a in _common_args(sample_root) if a != "--no-pretrained"]
    assert train_script.main(args + ["--pretrained-weights", weights, "--binary", "--checkname", "from_ckpt",
                                     "--epochs", "1", "--batch-size", "8"]) == 0
    run = tmp_path / "train_logs" / "imaterialist" / "deeplabv3" / "from_ckpt"
    log_text = (run / "deeplabv3_resnet50_train.log").read_text()
    copied = [line for line in log_text.splitlines() if f"{weights}: copied" in line]
    assert copied and "2 shape mismatches" in copied[0]  # the 14-class classifier's weight and bias
    assert "classifier convolutions re-initialised for 2 classes" in log_text
    meta = json.loads((run / "deeplabv3_resnet50_last.json").read_text())
    assert meta["pretrained"] == weights and meta["build_kwargs"]["num_classes"] == 2
    assert train_script.main(args + ["--pretrained-weights", str(tmp_path / "missing.params"),
                                     "--checkname", "x"]) == 2


def test_binary_training_with_background_replacement(sample_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _common_args(sample_root) + ["--checkname", "bin", "--epochs", "1", "--batch-size", "8", "--binary",
                                        "--bg-replace", "1.0", "--save-interval", "5"]
    assert train_script.main(args) == 0
    run = tmp_path / "train_logs" / "imaterialist" / "deeplabv3" / "bin"
    val = json.loads((run / "deeplabv3_resnet50_val_metrics.json").read_text())
    assert list(val["iou_per_class"]) == ["background", "garment"]
    meta = json.loads((run / "deeplabv3_resnet50_best.json").read_text())
    assert meta["classes"]["binary"] is True and meta["build_kwargs"]["num_classes"] == 2


def test_batch_smaller_than_contexts_is_a_clear_error(sample_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = train_script.main(_common_args(sample_root) + ["--cpu-contexts", "2", "--batch-size", "1"])
    assert rc == 2
    assert "--batch-size 1 cannot be split evenly across the 2 device(s)" in capsys.readouterr().err
    assert not (tmp_path / "train_logs").exists()


@pytest.mark.parametrize("zoo, missing", [("deeplab_resnet101_coco", "deeplab_resnet101_coco-"),
                                          ("deeplab_plus_xception_coco", "xception-")])
def test_missing_weights_named_before_any_data_is_read(tmp_path, monkeypatch, capsys, zoo, missing):
    monkeypatch.chdir(tmp_path)
    rc = train_script.main(["--model-zoo", zoo, "--dataset-root", str(tmp_path / "no_data_here"), "--ngpus", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ")
    assert missing in err and str(Path(os.environ["MXNET_HOME"]) / "models") in err
    assert "no_data_here" not in err and not (tmp_path / "train_logs").exists()
