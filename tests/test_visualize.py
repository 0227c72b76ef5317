"""Colours, overlays, atomic image saving and the ground-truth renderer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gluon_fashion.errors import UserError
from gluon_fashion.labels import CATEGORIES
from gluon_fashion.rle import mask_to_coco
from gluon_fashion.visualize import (IGNORE_COLOR, category_colors, colorize_labels, overlay_instances,
                                     overlay_semantic, palette, render_dataset, save_image)

ROOT = Path(__file__).resolve().parents[1]


def test_palette_distinct_with_black_background():
    colors = palette(47)
    assert colors.shape == (47, 3) and colors.dtype == np.uint8
    assert colors[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colors.tolist()}) == 47
    # every class colour is clearly apart from every other (max channel difference)
    diffs = np.abs(colors[1:, None, :].astype(int) - colors[None, 1:, :].astype(int)).max(axis=2)
    assert diffs[~np.eye(46, dtype=bool)].min() >= 20
    assert np.array_equal(palette(5), colors[:5])  # stable: a class keeps its colour whatever n is
    np.testing.assert_array_equal(category_colors([0, 45]), colors[[1, 46]])


def test_overlay_instances_blends_masks_and_draws_boxes():
    image = np.full((60, 80, 3), 100, np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[10:40, 10:50] = True
    color = category_colors([4])[0].astype(float)
    out = overlay_instances(image, [mask], boxes=np.array([[5, 5, 70, 55]]), class_ids=[4], scores=[0.93], alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.all(image == 100)  # input untouched
    np.testing.assert_array_equal(out[25, 30], np.round(100 * 0.5 + color * 0.5).astype(np.uint8))  # mask interior
    np.testing.assert_array_equal(out[55, 40], color.astype(np.uint8))  # bottom edge of the box
    np.testing.assert_array_equal(out[58, 2], [100, 100, 100])  # outside everything
    # a label was drawn near the box's top-left corner
    assert np.any(out[0:12, 5:60] != 100)
    with pytest.raises(ValueError, match="different lengths"):
        overlay_instances(image, [mask], class_ids=[1, 2])
    with pytest.raises(ValueError, match="shape"):
        overlay_instances(image, [np.zeros((5, 5), bool)])


def test_overlay_instances_without_classes_and_probability_masks():
    image = np.zeros((20, 20, 3), np.uint8)
    soft = np.zeros((20, 20), np.float32)
    soft[5:15, 5:15] = 0.8
    soft[0:2, 0:2] = 0.3  # under 0.5: outside
    out = overlay_instances(image, [soft], alpha=1.0)
    np.testing.assert_array_equal(out[10, 10], palette(2)[1])
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])


def test_colorize_and_overlay_semantic():
    labels = np.array([[0, 1, 2], [-1, 255, 13]])
    rgb = colorize_labels(labels, 14)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    colors = palette(14)
    np.testing.assert_array_equal(rgb[0], colors[[0, 1, 2]])
    np.testing.assert_array_equal(rgb[1, 0], IGNORE_COLOR)
    np.testing.assert_array_equal(rgb[1, 1], IGNORE_COLOR)
    np.testing.assert_array_equal(rgb[1, 2], colors[13])
    image = np.full((2, 3, 3), 200, np.uint8)
    over = overlay_semantic(image, labels, 14, alpha=0.25)
    np.testing.assert_array_equal(over[0, 0], [200, 200, 200])  # background keeps the photo
    np.testing.assert_array_equal(over[0, 1], np.round(200 * 0.75 + colors[1] * 0.25).astype(np.uint8))


def test_save_image_png_exact_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    save_image(tmp_path / "sub" / "a.png", rgb)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "sub" / "a.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, rgb)  # RGB order preserved, lossless
    save_image(tmp_path / "b.JPG", np.full((8, 8, 3), (255, 0, 0), np.uint8))
    jpeg = cv2.imread(str(tmp_path / "b.JPG"))
    assert jpeg.shape == (8, 8, 3) and jpeg[4, 4, 2] > 200 and jpeg[4, 4, 0] < 60  # red stays red
    with pytest.raises(UserError, match="extension"):
        save_image(tmp_path / "c.gif", rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.JPG", "sub"]  # no temporary files left


def _dataset(root: Path):
    """A converted-layout val split: two images, three annotations (category 0 included)."""
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for image_id, (h, w) in enumerate([(40, 30), (32, 48)], start=1):
        cv2.imwrite(str(root / "val" / f"img{image_id}.jpg"), np.full((h, w, 3), 120, np.uint8))
        images.append({"id": image_id, "file_name": f"img{image_id}.jpg", "height": h, "width": w})
        for cat in ([0, 31] if image_id == 1 else [10]):
            mask = np.zeros((h, w), np.uint8)
            mask[5:20, 4:20] = 1
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "segmentation": mask_to_coco(mask), "area": int(mask.sum()), "bbox": [4, 5, 16, 15],
                         "iscrowd": 0})
    cats = [{k: c[k] for k in ("id", "name", "supercategory")} for c in CATEGORIES]
    (root / "annotations" / "rle_instances_val.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))


def test_render_dataset_writes_overlays(tmp_path):
    _dataset(tmp_path / "data")
    written = render_dataset(tmp_path / "data", "val", 5, tmp_path / "out", progress=False)
    assert [p.name for p in written] == ["img1.png", "img2.png"]
    first = cv2.imread(str(written[0]))
    assert first.shape == (40, 30, 3)
    assert np.any(first[10, 10] != 120)  # the mask is drawn
    with pytest.raises(UserError, match="exists"):
        render_dataset(tmp_path / "data", "val", 1, tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="run tools/convert_imaterialist_to_coco.py"):
        render_dataset(tmp_path / "data", "train", 1, tmp_path / "out2", progress=False)
    (tmp_path / "data" / "val" / "img2.jpg").unlink()
    with pytest.raises(UserError, match="img2.jpg"):
        render_dataset(tmp_path / "data", "val", 2, tmp_path / "out3", progress=False)


def test_visualize_dataset_cli(tmp_path):
    _dataset(tmp_path / "data")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "visualize_dataset.py"), "--data_root",
                           str(tmp_path / "data"), "--split", "val", "-n", "1", "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img1.png"]
    missing = subprocess.run([sys.executable, str(ROOT / "tools" / "visualize_dataset.py"), "--data_root",
                              str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "run tools/convert_imaterialist_to_coco.py" in missing.stderr
