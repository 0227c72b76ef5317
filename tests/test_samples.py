"""Sample predictions in TensorBoard: both trainers log fixed val images, ground truth beside prediction,
at every validation, readable back from the event files with TensorBoard's own reader."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gluon_fashion.convert import convert_imaterialist
from gluon_fashion.engine.logger import RunLogger
from gluon_fashion.engine.samples import SAMPLE_IMAGES, SAMPLE_WIDTH, log_samples
from gluon_fashion.images import read_rgb
from gluon_fashion.synthetic import make_sample_dataset
from gluon_fashion.visualize import side_by_side

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("samples") / "imaterialist"
    make_sample_dataset(root, num_train=4, num_test=0, seed=2, min_size=128, max_size=200, progress=False)
    convert_imaterialist(root, val_num=2, num_workers=1, progress=False)
    return root


def _images(tensorboard_dir: str) -> dict:
    """TensorBoard image tag -> [(step, RGB array)] as TensorBoard itself reads the event files."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    events = EventAccumulator(tensorboard_dir, size_guidance={IMAGES: 0})
    events.Reload()
    return {tag: [(e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")))
                  for e in events.Images(tag)] for tag in events.Tags()[IMAGES]}


def _check_sample(picture: np.ndarray, photo_path: Path) -> None:
    photo = read_rgb(photo_path)
    width = min(SAMPLE_WIDTH, photo.shape[1])
    assert picture.shape[1] == 2 * width + 6  # two halves and the gap
    # The left half is the photo with its ground truth drawn: it differs from the bare photo somewhere.
    height = round(photo.shape[0] * width / photo.shape[1])
    left = picture[-height:, :width].astype(int) if picture.shape[0] - height >= 0 else None
    assert left is not None and np.abs(left - photo[:height, :width]).max() > 50


def test_side_by_side_and_logger_roundtrip(tmp_path):
    left = np.full((30, 40, 3), 200, np.uint8)
    right = np.zeros((20, 50, 3), np.uint8)
    sheet = side_by_side(left, right, gap=4)
    assert sheet.shape[1] == 94 and sheet.shape[0] > 30
    assert (sheet[-30:, :40] == 200).all() and (sheet[-30:, 44:94][:20] == 0).all()
    logger = RunLogger(str(tmp_path / "run"), {"x": 1})
    try:
        assert log_samples(logger, lambda: [("a.jpg", sheet)], step=7) == 1
        assert log_samples(logger, lambda: 1 / 0, step=8) == 0  # drawing failures never stop training
    finally:
        logger.close()
    images = _images(str(tmp_path / "run_tensorboard"))
    assert list(images) == ["val_samples/a.jpg"] and images["val_samples/a.jpg"][0][0] == 7
    assert np.array_equal(images["val_samples/a.jpg"][0][1], sheet)  # PNG: lossless


def test_mask_rcnn_trainer_logs_samples(sample_root, tmp_path, monkeypatch):
    from gluon_fashion.trainers.mask_rcnn import build_parser, train

    monkeypatch.setenv("GLUON_FASHION_NO_PROGRESS", "1")
    args = build_parser().parse_args([
        "--dataset-root", str(sample_root), "--save-prefix", f"{tmp_path}/", "--network", "resnet18_v1b",
        "--no-pretrained", "--short", "128", "--max-size", "192", "--rpn-train-pre-nms", "256",
        "--rpn-train-post-nms", "64", "--rcnn-num-sample", "32", "--rpn-test-pre-nms", "256",
        "--rpn-test-post-nms", "32", "--log-interval", "1", "-j", "0", "--epochs", "2", "--batch-size", "2"])
    train(args)
    (board,) = list(tmp_path.glob("*_tensorboard"))
    images = _images(str(board))
    val = sorted((sample_root / "val").glob("*.jpg"))[:SAMPLE_IMAGES]
    assert sorted(images) == sorted(f"val_samples/{p.name}" for p in val)
    for path in val:
        steps = images[f"val_samples/{path.name}"]
        assert len(steps) == 2  # one per validation (every epoch)
        _check_sample(steps[-1][1], path)


def test_segmentation_trainer_logs_samples(sample_root, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_segmentation",
                                                  Path(__file__).resolve().parents[1] / "train_segmentation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLUON_FASHION_NO_PROGRESS", "1")
    rc = script.main(["--model", "deeplabv3", "--backbone", "resnet50", "--no-pretrained", "--dataset-root",
                      str(sample_root), "--base-size", "64", "--crop-size", "48", "--ngpus", "0", "--workers", "0",
                      "--epochs", "1", "--batch-size", "2", "--checkname", "samples"])
    assert rc == 0
    (board,) = list(tmp_path.glob("train_logs/**/*_tensorboard"))
    images = _images(str(board))
    val = sorted((sample_root / "val").glob("*.jpg"))[:SAMPLE_IMAGES]
    assert sorted(images) == sorted(f"val_samples/{p.name}" for p in val)
    for path in val:
        _check_sample(images[f"val_samples/{path.name}"][-1][1], path)
