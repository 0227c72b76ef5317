"""iMaterialist train.csv -> COCO converter: outputs, bad input, repairs, determinism, safety of the sources."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import KaggleRow, csv_line, write_kaggle_dataset
from gluon_fashion import labels, rle
from gluon_fashion.convert import SWAPPED_SIZE_FIX, convert_imaterialist, split_images
from gluon_fashion.images import image_size
from gluon_fashion.errors import UserError
from gluon_fashion.synthetic import make_sample_dataset

TOOL = Path(__file__).resolve().parents[1] / "tools" / "convert_imaterialist_to_coco.py"
JSON_NAMES = ["rle_instances_train.json", "rle_instances_val.json", "resize_rle_instances_val.json",
              "conversion_report.json"]


def convert(root: Path, **kwargs):
    kwargs = {"val_num": 2, "num_workers": 1, "progress": False, **kwargs}
    return convert_imaterialist(root, **kwargs)


def run_cli(root: Path, *flags: str, hash_seed: str = "0") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    return subprocess.run([sys.executable, str(TOOL), "--data_root", str(root), "--no_progress", *flags],
                          capture_output=True, text=True, env=env, timeout=300)


def staging_leftovers(root: Path) -> List[str]:
    """Hidden files and folders a conversion may have left beside its outputs (staging, old outputs, journal)."""
    found = [p for p in root.iterdir() if p.name.startswith(".")]
    if (root / "annotations").is_dir():
        found += [p for p in (root / "annotations").iterdir() if p.name.startswith(".")]
    return sorted(str(p.relative_to(root)) for p in found)


def load_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def source_hashes(root: Path) -> Dict[str, str]:
    """Content hash of everything the converter must leave alone: train/, test/ and train.csv."""
    files = [root / "train.csv"] + sorted((root / "train").rglob("*")) + sorted((root / "test").rglob("*"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def reference_bbox(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def centre_aligned(in_size: int, out_size: int) -> np.ndarray:
    return (2 * np.arange(out_size) + 1) * in_size // (2 * out_size)


def rows_by_file(rows: List[KaggleRow]) -> Dict[str, List[KaggleRow]]:
    grouped: Dict[str, List[KaggleRow]] = {}
    for row in rows:
        grouped.setdefault(row.file_name, []).append(row)
    return grouped


def annotations_by_file(coco: COCO) -> Dict[str, List[dict]]:
    return {img["file_name"]: coco.imgToAnns[img["id"]] for img in coco.dataset["images"]}


def assert_gt_scores_perfectly(coco: COCO) -> None:
    """COCOeval runs on the file, and the ground truth scored against itself gets AP 1 (category 0 included)."""
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "bbox": a["bbox"], "score": 1.0} for a in coco.dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        detections = coco.loadRes(results)
        for iou_type in ("segm", "bbox"):
            evaluator = COCOeval(coco, detections, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            assert evaluator.stats[0] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ outputs

def test_outputs_load_in_pycocotools_and_match_the_csv(kaggle_dataset):
    root, fmt, rows = kaggle_dataset
    before = source_hashes(root)
    result = convert(root)
    ann = root / "annotations"
    train, val = load_coco(ann / "rle_instances_train.json"), load_coco(ann / "rle_instances_val.json")
    expected = rows_by_file(rows)

    train_files = {img["file_name"] for img in train.dataset["images"]}
    val_files = {img["file_name"] for img in val.dataset["images"]}
    assert not train_files & val_files
    assert train_files | val_files == set(expected)
    assert len(val_files) == 2 == result.val_images and result.val_note is None  # an explicit --val_num holds

    for coco in (train, val):
        assert [img["id"] for img in coco.dataset["images"]] == list(range(1, len(coco.dataset["images"]) + 1))
        assert [a["id"] for a in coco.dataset["annotations"]] == list(range(1, len(coco.dataset["annotations"]) + 1))
        assert coco.dataset["categories"] == [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]}
                                              for c in labels.CATEGORIES]
        for img in coco.dataset["images"]:
            assert (img["height"], img["width"]) == (expected[img["file_name"]][0].height,
                                                     expected[img["file_name"]][0].width)
        for file_name, anns in annotations_by_file(coco).items():
            assert len(anns) == len(expected[file_name])
            for got, want in zip(anns, expected[file_name]):
                assert got["category_id"] == want.category
                assert got["attribute_ids"] == want.attributes
                assert got["iscrowd"] == 0
                assert isinstance(got["segmentation"]["counts"], str)
                assert np.array_equal(coco_mask.decode(got["segmentation"]), want.mask)
                assert got["area"] == int(want.mask.sum())
                assert got["bbox"] == reference_bbox(want.mask)
        assert_gt_scores_perfectly(coco)
    assert any(a["category_id"] == 0 for coco in (train, val) for a in coco.dataset["annotations"])
    assert any(a["attribute_ids"] for coco in (train, val) for a in coco.dataset["annotations"])

    for name in val_files:  # val images are hard links to the train files by default
        assert os.stat(root / "val" / name).st_ino == os.stat(root / "train" / name).st_ino
    assert result.val_linked == 2 and result.val_copied == 0
    assert source_hashes(root) == before


def test_resize_file_holds_512_masks_consistent_with_bbox_and_area(tmp_path):
    root = tmp_path / "data"
    rows = write_kaggle_dataset(root, num_images=9)
    # A photo larger than 512 whose one-pixel mask falls between the sampled rows: it has nothing left at
    # 512x512 and is left out of the resize file (and counted), as ground truth no detection could match.
    cv2.imwrite(str(root / "train" / "large.jpg"), np.zeros((1030, 520), np.uint8))
    dot = np.zeros((1030, 520), np.uint8)
    dot[0, 0] = 1
    append_lines(root, [csv_line("2019", "large.jpg", rle.mask_to_kaggle(dot), 1030, 520, "5")])
    rows.append(KaggleRow("large.jpg", 1030, 520, 5, [], dot))
    image_ids = sorted({row.image_id for row in rows})
    seed = next(seed for seed in range(100) if "large.jpg" in split_images(image_ids, 2, seed))
    result = convert(root, val_num=2, seed=seed)  # one small photo (upscaled) and the large one (downscaled)
    assert result.val_images == 2 and result.val_empty_at_512 == 1
    val = load_coco(root / "annotations" / "rle_instances_val.json")
    small = load_coco(root / "annotations" / "resize_rle_instances_val.json")
    expected = rows_by_file(rows)
    assert [img["id"] for img in small.dataset["images"]] == [img["id"] for img in val.dataset["images"]]
    for img in small.dataset["images"]:
        want = expected[img["file_name"]]
        assert (img["height"], img["width"]) == (512, 512)
        assert (img["orig_height"], img["orig_width"]) == (want[0].height, want[0].width)
        anns = small.imgToAnns[img["id"]]
        want = [row for row in want
                if row.mask[np.ix_(centre_aligned(row.height, 512), centre_aligned(row.width, 512))].any()]
        assert len(anns) == len(want)
        for got, row in zip(anns, want):
            reference = row.mask[np.ix_(centre_aligned(row.height, 512), centre_aligned(row.width, 512))]
            mask = coco_mask.decode(got["segmentation"])
            assert got["segmentation"]["size"] == [512, 512]
            assert np.array_equal(mask, reference)
            assert got["area"] == int(reference.sum())
            assert got["bbox"] == reference_bbox(reference)
            assert (got["category_id"], got["attribute_ids"]) == (row.category, row.attributes)
    report = json.loads((root / "annotations" / "conversion_report.json").read_text())
    assert report["val_annotations_empty_at_512"] == 1
    assert "large.jpg" in {img["file_name"] for img in small.dataset["images"]}
    assert len(small.dataset["annotations"]) == len(val.dataset["annotations"]) - 1
    assert_gt_scores_perfectly(small)


@pytest.mark.parametrize("fmt", ["2019", "2020"])
def test_cli_converts_the_bundled_sample_dataset_with_no_other_flag(tmp_path, fmt):
    root = tmp_path / "sample"
    summary = make_sample_dataset(root, num_train=8, num_test=1, fmt=fmt, min_size=128, max_size=200,
                                  progress=False)
    completed = run_cli(root)
    assert completed.returncode == 0, completed.stderr
    assert "skipped rows: 0" in completed.stdout and "so 1 go to val" in completed.stdout
    train, val = (load_coco(root / "annotations" / name) for name in JSON_NAMES[:2])
    assert len(train.dataset["images"]) + len(val.dataset["images"]) == summary.num_train
    assert len(train.dataset["annotations"]) + len(val.dataset["annotations"]) == summary.num_instances
    assert_gt_scores_perfectly(train)


# -------------------------------------------------------------------------------------- bad rows

def append_lines(root: Path, lines: List[str]) -> None:
    with open(root / "train.csv", "a", encoding="utf-8", newline="") as handle:
        handle.writelines(lines)


def bad_rows(root: Path, fmt: str, rows: List[KaggleRow]) -> Dict[int, str]:
    """Append one row per kind of problem; return {line number: expected reason}."""
    (root / "train" / "garbage.jpg").write_bytes(b"this is not a JPEG")
    good = rows[0]
    valid_rle = rle.mask_to_kaggle(good.mask)
    missing = "f" * 32 + (".jpg" if fmt == "2019" else "")
    garbage = "garbage.jpg" if fmt == "2019" else "garbage"
    cases = [
        (csv_line(fmt, missing, valid_rle, good.height, good.width, "3"), "missing_image"),
        (csv_line(fmt, garbage, valid_rle, good.height, good.width, "3"), "unreadable_image"),
        (csv_line(fmt, good.image_id, valid_rle, good.height, good.width, "46"), "unknown_category"),
        (csv_line(fmt, good.image_id, valid_rle, good.height, good.width, "3", "92"), "unknown_attribute"),
        (csv_line(fmt, good.image_id, valid_rle, good.height, good.width, "3x"), "malformed_class_id"),
        (csv_line(fmt, good.image_id, "5 3 2", good.height, good.width, "3"), "invalid_rle"),
        (csv_line(fmt, good.image_id, "3 5 1 2", good.height, good.width, "3"), "invalid_rle"),
        (csv_line(fmt, good.image_id, valid_rle, good.height + 1, good.width, "3"), "size_mismatch"),
        (f"{good.image_id},{valid_rle},{good.height}\n", "malformed_row"),
        (csv_line(fmt, good.image_id, valid_rle, "tall", good.width, "3"), "malformed_row"),
    ]
    if fmt == "2020":
        cases += [(csv_line(fmt, good.image_id, valid_rle, good.height, good.width, "3_4"), "malformed_class_id"),
                  (csv_line(fmt, good.image_id, valid_rle, good.height, good.width, "3", "1,x"),
                   "malformed_attribute_ids")]
    append_lines(root, [line for line, _ in cases])
    first = len(rows) + 2  # header is line 1
    return {first + i: reason for i, (_, reason) in enumerate(cases)}


def test_bad_rows_are_skipped_and_reported_and_strict_stops(kaggle_dataset):
    root, fmt, rows = kaggle_dataset
    expected = bad_rows(root, fmt, rows)
    before = source_hashes(root)

    first_line = min(expected)
    with pytest.raises(UserError, match=rf"line {first_line}: {expected[first_line]}.*--strict: nothing was written"):
        convert(root, strict=True)
    assert not (root / "annotations").exists() or not any((root / "annotations").iterdir())
    assert not (root / "val").exists()
    assert staging_leftovers(root) == []

    result = convert(root)
    report = json.loads((root / "annotations" / "conversion_report.json").read_text())
    assert {entry["line"]: entry["reason"] for entry in report["skipped"]} == expected
    assert all(entry["detail"] for entry in report["skipped"])
    unreadable = next(entry["detail"] for entry in report["skipped"] if entry["reason"] == "unreadable_image")
    assert unreadable.count("garbage.jpg") == 1 and str(root) not in unreadable, unreadable  # the path once
    assert report["skipped_rows"] == len(expected) == len(result.skipped)
    by_reason: Dict[str, int] = {}
    for reason in expected.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    assert report["skipped_rows_by_reason"] == by_reason
    assert set(report["images_without_valid_annotations"]) == {"f" * 32 + (".jpg" if fmt == "2019" else ""),
                                                               "garbage.jpg" if fmt == "2019" else "garbage"}
    summary = result.summary_table()
    for reason, count in by_reason.items():
        assert f"{reason}" in summary and str(count) in summary
    assert result.train_annotations + result.val_annotations == len(rows)
    assert source_hashes(root) == before


def swapped_rows_dataset(root: Path) -> tuple:
    """A dataset with one extra row on the first (48 x 64) photo that states its size as 64 x 48: the mask
    it encodes on that 64 x 48 grid and its line number."""
    rows = write_kaggle_dataset(root, num_images=3)
    photo = rows[0]
    assert (photo.height, photo.width) == (48, 64)
    on_csv_grid = np.zeros((64, 48), np.uint8)  # the CSV claims Height 64, Width 48
    on_csv_grid[2:10, 30:45] = 1  # an asymmetric shape: transposing and rotating give different masks
    on_csv_grid[40:44, 3:5] = 1
    append_lines(root, [csv_line("2019", photo.image_id, rle.mask_to_kaggle(on_csv_grid), 64, 48, "7")])
    return rows, on_csv_grid, len(rows) + 2


def test_swapped_height_width_rotates_the_mask_onto_the_image(tmp_path):
    root = tmp_path / "data"
    rows, on_csv_grid, line = swapped_rows_dataset(root)
    photo = rows[0]
    result = convert(root, val_num=0)
    train = load_coco(root / "annotations" / "rle_instances_train.json")
    image = next(img for img in train.dataset["images"] if img["file_name"] == photo.file_name)
    assert (image["height"], image["width"]) == (48, 64)
    repaired = train.imgToAnns[image["id"]][-1]
    mask = coco_mask.decode(repaired["segmentation"])
    # The original GluonCV iMaterialist converter's "transpose and vertical flip": a 90-degree rotation.
    rotated = np.rot90(on_csv_grid)
    assert np.array_equal(rotated, on_csv_grid.T[::-1, :]) and not np.array_equal(rotated, on_csv_grid.T)
    assert np.array_equal(mask, rotated)
    assert repaired["bbox"] == reference_bbox(rotated) and repaired["area"] == int(on_csv_grid.sum())
    assert result.swapped == [{"line": line, "image_id": photo.image_id, "csv_height": 64, "csv_width": 48,
                               "file_height": 48, "file_width": 64, "file_exif_orientation": None,
                               "fix": SWAPPED_SIZE_FIX}]
    assert "rotated" in SWAPPED_SIZE_FIX
    report = json.loads((root / "annotations" / "conversion_report.json").read_text())
    assert report["swapped_size"] == result.swapped and report["skipped"] == []
    assert f"--images {photo.image_id}" in result.summary_table()


def test_swapped_photo_is_drawn_by_id_with_visualize_dataset(tmp_path):
    """The documented way to check the swapped-size repair by eye: the summary's visualize_dataset command."""
    root = tmp_path / "data"
    rows, on_csv_grid, _ = swapped_rows_dataset(root)
    photo = rows[0]
    convert(root, val_num=1, seed=next(seed for seed in range(50)
                                       if photo.image_id not in split_images({r.image_id for r in rows}, 1, seed)))
    out = tmp_path / "check"
    tool = Path(__file__).resolve().parents[1] / "tools" / "visualize_dataset.py"
    stem = photo.image_id[:-len(".jpg")]
    drawn = subprocess.run([sys.executable, str(tool), "--data_root", str(root), "--images", stem,
                            "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0, drawn.stderr  # found in train (looked up after val), id given without .jpg
    overlay = cv2.imread(str(out / f"{stem}.png"))
    assert overlay.shape[:2] == (48, 64)
    original = cv2.imread(str(root / "train" / photo.file_name))
    changed = np.any(overlay != original, axis=2)
    assert changed[np.rot90(on_csv_grid).astype(bool)].mean() > 0.9  # the rotated mask is drawn
    unknown = subprocess.run([sys.executable, str(tool), "--data_root", str(root), "--images", f"{stem},nope",
                              "--output", str(tmp_path / "other")], capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "nope" in unknown.stderr and "conversion_report.json" in unknown.stderr
    assert unknown.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------ duplicate rows

def split_one_run(encoded: str) -> str:
    """The same mask spelled differently: its first run of two or more pixels cut into two touching runs."""
    values = [int(v) for v in encoded.split()]
    i = next(k for k in range(0, len(values), 2) if values[k + 1] >= 2)
    start, length = values[i], values[i + 1]
    return " ".join(map(str, values[:i] + [start, 1, start + 1, length - 1] + values[i + 2:]))


def test_duplicate_rows_are_kept_once_and_reported(kaggle_dataset):
    root, fmt, rows = kaggle_dataset
    original_lines = (root / "train.csv").read_text().splitlines(keepends=True)
    first, second = rows[0], rows[1]
    other_attributes = ",".join(map(str, [a for a in (5, 9) if a not in first.attributes][:1]))
    second_other_category = (second.category + 1) % labels.NUM_CATEGORIES
    appended = [
        original_lines[1], original_lines[2], original_lines[3],  # three rows exactly as they are (line 2-4)
        csv_line(fmt, first.image_id, split_one_run(rle.mask_to_kaggle(first.mask)), first.height, first.width,
                 str(first.category), other_attributes),  # the same mask spelled differently, other attributes
        csv_line(fmt, second.image_id, rle.mask_to_kaggle(second.mask), second.height, second.width,
                 str(second_other_category)),  # the same mask as line 3, another category
    ]
    append_lines(root, appended)
    n = len(rows) + 1  # last line of the original file
    result = convert(root, val_num=0)

    report = json.loads((root / "annotations" / "conversion_report.json").read_text())
    duplicates = {entry["line"]: entry for entry in report["skipped"] if entry["reason"] == "duplicate_row"}
    assert sorted(duplicates) == [n + 1, n + 2, n + 3, n + 4]
    assert report["skipped_rows_by_reason"] == {"duplicate_row": 4} and len(result.skipped) == 4
    for line, kept in [(n + 1, 2), (n + 2, 3), (n + 3, 4), (n + 4, 2)]:
        assert f"as line {kept}, which is kept" in duplicates[line]["detail"]
    assert "attributes" not in duplicates[n + 1]["detail"]
    assert f"attributes {first.attributes}" in duplicates[n + 4]["detail"]  # the first row's are kept, said so

    # Same mask, another category: both kept (nothing says which is right), listed together.
    assert report["same_mask_different_categories"] == [
        {"image_id": second.image_id, "lines": [3, n + 5], "category_ids": [second.category, second_other_category]}]
    train = load_coco(root / "annotations" / "rle_instances_train.json")
    assert len(train.dataset["annotations"]) == len(rows) + 1
    kept_first = annotations_by_file(train)[first.file_name]
    assert kept_first[0]["attribute_ids"] == first.attributes
    summary = result.summary_table()
    assert "skipped rows: 4" in summary and "duplicate_row" in summary
    assert "masks given two or more categories (all kept, listed in the report): 1 masks, 2 rows" in summary

    with pytest.raises(UserError, match=rf"line {n + 1}: duplicate_row: same image, category {first.category}"):
        convert(root, val_num=0, strict=True, overwrite=True)


# ----------------------------------------------------------------------------------- damaged photos

def test_truncated_photo_is_reported_and_left_out(kaggle_dataset):
    root, fmt, rows = kaggle_dataset
    photo = rows[0]
    path = root / "train" / photo.file_name
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])  # a download cut off at a third
    assert image_size(path) == (photo.height, photo.width)  # the header alone still reads fine
    photo_lines = [line for line, row in enumerate(rows, start=2) if row.image_id == photo.image_id]

    result = convert(root, val_num=1)
    report = json.loads((root / "annotations" / "conversion_report.json").read_text())
    assert [entry["line"] for entry in report["skipped"]] == photo_lines
    for entry in report["skipped"]:
        assert entry["reason"] == "truncated_image" and entry["image_id"] == photo.image_id
        assert entry["detail"].startswith(f"train/{photo.file_name} stops before the JPEG end-of-image marker")
    assert report["images_without_valid_annotations"] == [photo.image_id]
    files = {img["file_name"] for name in JSON_NAMES[:3]
             for img in json.loads((root / "annotations" / name).read_text())["images"]}
    assert photo.file_name not in files and not (root / "val" / photo.file_name).exists()
    assert result.train_annotations + result.val_annotations == len(rows) - len(photo_lines)
    assert "truncated_image" in result.summary_table()


def test_verify_images_catches_damage_the_end_marker_misses(tmp_path):
    root = tmp_path / "data"
    rows = write_kaggle_dataset(root, num_images=4)
    photo = rows[0]
    path = root / "train" / photo.file_name
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + b"\xff\xd9")  # cut, then "repaired" with an end marker

    default = convert(root, val_num=0)
    assert default.skipped == []  # the marker is there: the cheap check cannot tell
    result = convert(root, val_num=0, verify_images=True, overwrite=True)
    reasons = {(row.image_id, row.reason) for row in result.skipped}
    assert reasons == {(photo.image_id, "corrupt_image")}
    detail = result.skipped[0].detail
    assert detail.startswith(f"train/{photo.file_name}: decoding at 1/8 scale, libjpeg reports: ") and "JPEG" in detail
    report = json.loads((root / "annotations" / "conversion_report.json").read_text())
    assert report["settings"]["verify_images"] is True
    assert report["images_without_valid_annotations"] == [photo.image_id]


# ------------------------------------------------------------------------------------------- val_num

def test_explicit_val_num_is_honoured_and_must_leave_a_training_photo(tmp_path):
    root = tmp_path / "data"
    write_kaggle_dataset(root, num_images=10)
    result = convert(root, val_num=6)
    assert (result.val_images, result.train_images, result.val_note) == (6, 4, None)
    report = json.loads((root / "annotations" / "conversion_report.json").read_text())
    assert report["settings"]["val_num"] == 6 and report["splits"]["val"]["images"] == 6

    before = output_bytes(root)
    for too_many in (10, 11):
        with pytest.raises(UserError, match=rf"--val_num {too_many} leaves no training photo: only 10 photos"):
            convert(root, val_num=too_many, overwrite=True)
    assert output_bytes(root) == before and staging_leftovers(root) == []

    default = convert(root, val_num=None, overwrite=True)  # the default (1000) is cut to 20%, with a note
    assert default.val_images == 2 and "20%" in default.val_note and "--val_num" in default.val_note
    assert json.loads((root / "annotations" / "conversion_report.json").read_text())["settings"]["val_num"] is None


# --------------------------------------------------------------------------------------- bad input

def test_bad_inputs_are_user_errors_naming_the_file(tmp_path):
    root = tmp_path / "data"
    write_kaggle_dataset(root, num_images=2)
    csv_text = (root / "train.csv").read_bytes()
    labels_text = (root / "label_descriptions.json").read_bytes()

    with pytest.raises(UserError, match="nowhere: no such folder"):
        convert(tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(UserError, match=r"a_file: is a file, not a folder \(expected the dataset folder"):
        convert(tmp_path / "a_file")
    (root / "train.csv").write_text("ImageId,Height,Width\nx.jpg,1,1\n")
    with pytest.raises(UserError, match=r"train\.csv: missing column\(s\) EncodedPixels, ClassId"):
        convert(root)
    (root / "train.csv").write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a CSV\n")
    with pytest.raises(UserError, match=r"train\.csv: not a CSV"):
        convert(root)
    (root / "train.csv").unlink()
    with pytest.raises(UserError, match=r"train\.csv: not found"):
        convert(root)
    (root / "train.csv").write_bytes(csv_text)
    (root / "label_descriptions.json").write_text("{not json")
    with pytest.raises(UserError, match=r"label_descriptions\.json: not valid JSON"):
        convert(root)
    (root / "label_descriptions.json").unlink()
    with pytest.raises(UserError, match=r"label_descriptions\.json: label descriptions not found"):
        convert(root)
    (root / "label_descriptions.json").write_bytes(labels_text)
    with pytest.raises(UserError, match="--num_workers"):
        convert(root, num_workers=0)
    assert not (root / "annotations").exists() and not (root / "val").exists()

    (root / "train.csv").write_text("ImageId,EncodedPixels,Height\n")
    completed = run_cli(root)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and "train.csv" in completed.stderr
    assert "Traceback" not in completed.stderr


# ------------------------------------------------------------------------ determinism and overwrite

@pytest.fixture(scope="module")
def pristine_dataset(tmp_path_factory):
    """A 2019 dataset never converted; tests copy it before converting."""
    root = tmp_path_factory.mktemp("pristine") / "data"
    write_kaggle_dataset(root, num_images=24, seed=3)
    return root


def output_bytes(root: Path) -> Dict[str, bytes]:
    return {name: (root / "annotations" / name).read_bytes() for name in JSON_NAMES}


def test_output_is_byte_identical_across_hash_seeds_workers_and_chunking(pristine_dataset, tmp_path):
    first, second, third = (tmp_path / name for name in ("a", "b", "c"))
    for copy in (first, second, third):
        shutil.copytree(pristine_dataset, copy)
    one = run_cli(first, "--num_workers", "1", "--val_num", "4", hash_seed="1")
    two = run_cli(second, "--num_workers", "2", "--val_num", "4", hash_seed="2")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert "train" in one.stdout and "skipped rows: 0" in one.stdout
    convert(third, val_num=4, chunk_bytes=300)  # many chunks, cut mid-file
    assert output_bytes(first) == output_bytes(second) == output_bytes(third)
    other_seed = tmp_path / "d"
    shutil.copytree(pristine_dataset, other_seed)
    convert(other_seed, val_num=4, seed=1)
    assert output_bytes(other_seed)["rle_instances_val.json"] != output_bytes(first)["rle_instances_val.json"]


def test_existing_outputs_are_kept_without_overwrite_and_copies_never_write_through(pristine_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(pristine_dataset, root)
    sources = source_hashes(root)
    convert(root, val_num=4)
    outputs = output_bytes(root)
    stamps = {p.name: p.stat().st_mtime_ns for p in (root / "annotations").iterdir()}
    val_listing = sorted(p.name for p in (root / "val").iterdir())

    refused = run_cli(root, "--val_num", "4", "--seed", "5")
    assert refused.returncode == 2
    assert "rle_instances_train.json already exists" in refused.stderr and "--overwrite" in refused.stderr
    assert output_bytes(root) == outputs
    assert {p.name: p.stat().st_mtime_ns for p in (root / "annotations").iterdir()} == stamps
    assert sorted(p.name for p in (root / "val").iterdir()) == val_listing

    # New split, copies instead of links: the old links in val/ must be replaced, not written through.
    redone = run_cli(root, "--val_num", "4", "--seed", "5", "--overwrite", "--copy_val")
    assert redone.returncode == 0, redone.stderr
    val = load_coco(root / "annotations" / "rle_instances_val.json")
    names = sorted(img["file_name"] for img in val.dataset["images"])
    assert names != val_listing
    assert sorted(p.name for p in (root / "val").iterdir()) == names  # stale val images removed
    for name in names:
        copied, original = root / "val" / name, root / "train" / name
        assert os.stat(copied).st_ino != os.stat(original).st_ino
        assert copied.read_bytes() == original.read_bytes()
    assert source_hashes(root) == sources
