"""Kaggle submission writing (2019 and 2020 layouts) and the checker catching each kind of violation."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gluon_fashion.errors import UserError
from gluon_fashion.rle import kaggle_to_mask, mask_to_coco
from gluon_fashion.submission import (Instance, check_submission, instances_from_coco_results, resolve_overlaps,
                                      submission_size, write_submission)

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, rows, header=("ImageId", "EncodedPixels", "ClassId")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _read(path: Path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


@pytest.fixture()
def sample_2019(tmp_path):
    return _write(tmp_path / "sample_submission.csv", [[f"{i}.jpg", "1 1", "23"] for i in "abcd"])


def _rect(h, w, y0, y1, x0, x1, value=1.0, dtype=np.float32):
    mask = np.zeros((h, w), dtype)
    mask[y0:y1, x0:x1] = value
    return mask


def test_write_2019_resolves_overlaps_and_fills_every_image(tmp_path, sample_2019):
    # Image "a" is 256 x 128 (h x w): every mask is upscaled x2 rows, x4 columns onto the 512 grid, so
    # rectangles map to exact rectangles: rows [y0, y1) -> [2 y0, 2 y1), cols [x0, x1) -> [4 x0, 4 x1).
    high = _rect(256, 128, 10, 60, 10, 40, value=0.9)            # probabilities: > 0.5 inside
    low = _rect(256, 128, 40, 100, 20, 50, value=0.8)            # overlaps `high` on rows 40-59, cols 20-39
    covered = _rect(256, 128, 20, 30, 15, 25, value=0.7)         # entirely inside `high`: nothing left
    faint = _rect(256, 128, 200, 250, 0, 100)                    # score under the threshold
    below_mask_threshold = _rect(256, 128, 150, 190, 60, 120, value=0.4)  # nothing > 0.5: empty
    predictions = {
        "a": [Instance(7, 0.6, low), Instance(3, 0.95, high), Instance(9, 0.55, covered),
              Instance(1, 0.2, faint), Instance(2, 0.9, below_mask_threshold)],
        # "b.jpg" given as a COCO RLE at its 100 x 100 size, attributes present but not written by default
        "b.jpg": [Instance(0, 0.8, mask_to_coco(_rect(100, 100, 0, 50, 0, 100, dtype=np.uint8)), (4, 2))],
        "c": [],
    }
    out = tmp_path / "submission.csv"
    summary = write_submission(predictions, sample_2019, out, progress=False)
    header, rows = _read(out)
    assert header == ["ImageId", "EncodedPixels", "ClassId"]
    by_image = {}
    for image_id, encoded, class_id in rows:
        by_image.setdefault(image_id, []).append((encoded, class_id))
    assert sorted(by_image) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]  # spelt as the sample spells them
    assert by_image["c.jpg"] == [("1 1", "23")] and by_image["d.jpg"] == [("1 1", "23")]
    assert [c for _, c in by_image["a.jpg"]] == ["3", "7"]  # by descending score; 9, 1 and 2 dropped
    masks = {c: kaggle_to_mask(e, 512, 512) for e, c in by_image["a.jpg"]}
    expected_high = _rect(512, 512, 20, 120, 40, 160, dtype=np.uint8)
    expected_low = _rect(512, 512, 80, 200, 80, 200, dtype=np.uint8) & (1 - expected_high)
    np.testing.assert_array_equal(masks["3"], expected_high)   # the higher score keeps the shared pixels
    np.testing.assert_array_equal(masks["7"], expected_low)
    assert (masks["3"] & masks["7"]).sum() == 0
    b_mask = kaggle_to_mask(by_image["b.jpg"][0][0], 512, 512)
    np.testing.assert_array_equal(b_mask, _rect(512, 512, 0, 256, 0, 512, dtype=np.uint8))
    assert by_image["b.jpg"][0][1] == "0"
    assert summary.rows == len(rows) == 5 and summary.images_with_detections == 2
    assert summary.below_score_threshold == 1 and summary.dropped_after_overlap == 2
    assert check_submission(out, sample_2019) == []


def test_write_2019_options_and_errors(tmp_path, sample_2019):
    inst = Instance(6, 0.9, _rect(64, 64, 0, 8, 0, 8, dtype=np.uint8), (36, 28))
    out = tmp_path / "sub.csv"
    write_submission({"a": [inst]}, sample_2019, out, include_attributes=True, progress=False)
    assert _read(out)[1][0][2] == "6_28_36"
    with pytest.raises(UserError, match="exists"):
        write_submission({"a": [inst]}, sample_2019, out, progress=False)
    # min_area counts pixels on the 512 grid: the 8x8 square becomes 64x64 = 4096 pixels
    write_submission({"a": [inst]}, sample_2019, out, min_area=4097, overwrite=True, progress=False)
    assert _read(out)[1][0] == ["a.jpg", "1 1", "23"]
    with pytest.raises(UserError, match="'zzz'"):
        write_submission({"zzz": [inst]}, sample_2019, tmp_path / "x.csv", progress=False)
    with pytest.raises(UserError, match="given twice"):
        write_submission([("a", [inst]), ("a.jpg", [inst])], sample_2019, tmp_path / "y.csv", progress=False)
    with pytest.raises(UserError, match="not found"):
        write_submission({}, tmp_path / "missing.csv", tmp_path / "z.csv", progress=False)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()  # atomic: nothing half-written


def test_write_2020_scales_to_long_edge_1024(tmp_path):
    sample = _write(tmp_path / "sample.csv", [["img1", "1 1", "23", ""], ["img2", "1 1", "23", ""]],
                    header=("ImageId", "EncodedPixels", "ClassId", "AttributesIds"))
    # A 600 x 400 image -> 1024 x round(400 * 1024 / 600) = 1024 x 683.
    assert submission_size("2020", 600, 400) == (1024, 683)
    assert submission_size("2020", 300, 1500) == (205, 1024)
    mask = _rect(600, 400, 0, 300, 0, 400, dtype=bool)  # top half
    out = tmp_path / "sub2020.csv"
    write_submission({"img1.jpg": [Instance(10, 0.9, mask, (115, 3, 3))]}, sample, out, fmt="2020",
                     image_sizes={"img1": (600, 400)}, progress=False)
    header, rows = _read(out)
    assert header == ["ImageId", "EncodedPixels", "ClassId", "AttributesIds"]
    assert rows[0][0] == "img1" and rows[0][2] == "10" and rows[0][3] == "3,115"
    decoded = kaggle_to_mask(rows[0][1], 1024, 683)
    np.testing.assert_array_equal(decoded, _rect(1024, 683, 0, 512, 0, 683, dtype=np.uint8))
    assert rows[1] == ["img2", "1 1", "23", ""]
    assert check_submission(out, sample, image_sizes={"img1": (600, 400), "img2": (50, 80)}) == []
    notes = []
    assert check_submission(out, sample, log=notes.append) == []
    assert notes and "1024" in notes[0]


def test_instances_from_coco_results_feed_the_writer(tmp_path, sample_2019):
    mask = _rect(30, 20, 0, 15, 0, 20, dtype=np.uint8)
    results = [{"image_id": 2, "category_id": 5, "score": 0.9, "segmentation": mask_to_coco(mask)},
               {"image_id": 2, "category_id": 6, "score": 0.7, "segmentation": mask_to_coco(mask)}]
    grouped = instances_from_coco_results(results, {1: "a.jpg", 2: "b.jpg"})
    assert list(grouped) == ["b.jpg"] and [i.category_id for i in grouped["b.jpg"]] == [5, 6]
    out = tmp_path / "s.csv"
    write_submission(grouped, sample_2019, out, progress=False)
    rows = [r for r in _read(out)[1] if r[0] == "b.jpg"]
    assert [r[2] for r in rows] == ["5"]  # the same mask at a lower score has no pixel left
    np.testing.assert_array_equal(kaggle_to_mask(rows[0][1], 512, 512), _rect(512, 512, 0, 256, 0, 512, dtype=np.uint8))
    with pytest.raises(UserError, match="image_id 2"):
        instances_from_coco_results(results, {1: "a.jpg"})


def test_resolve_overlaps_keeps_higher_score():
    a = _rect(4, 4, 0, 2, 0, 4, dtype=bool)
    b = _rect(4, 4, 1, 4, 0, 4, dtype=bool)
    tiny = _rect(4, 4, 3, 4, 0, 1, dtype=bool)
    out = resolve_overlaps([a, b, tiny], [0.5, 0.9, 0.7], min_area=2)
    np.testing.assert_array_equal(out[1], b)
    np.testing.assert_array_equal(out[0], _rect(4, 4, 0, 1, 0, 4, dtype=bool))
    assert out[2] is None  # fully inside b


def test_checker_reports_each_violation_with_its_line(tmp_path, sample_2019):
    rows = [
        ["a.jpg", "1 10", "3"],             # line 2: fine...
        ["a.jpg", "5 3", "4"],              # line 3: ...but this overlaps line 2
        ["a.jpg", "1 2 3", "5"],            # line 4: odd token count
        ["b.jpg", "262144 2", "6"],         # line 5: runs past 512*512
        ["b.jpg", "10 5", "46"],            # line 6: class id out of range
        ["b.jpg", "20 5 x 1", "1"],         # line 7: non-integer token
        ["e.jpg", "1 1", "23"],             # line 8: not in the sample
        ["c.jpg", "1 1"],                   # line 9: a field short
        ["c.jpg", "100 2", "6_28_36"],      # line 10: fine (2019 ClassId with attributes)
        ["c.jpg", "50 3 40 3", "x"],        # line 11: unsorted runs, bad class id
    ]
    path = _write(tmp_path / "bad.csv", rows)
    found = {(v.row, v.kind) for v in check_submission(path, sample_2019)}
    assert found == {
        (3, "overlap"), (4, "rle"), (5, "bounds"), (6, "class_id"), (7, "rle"), (8, "unknown_image"),
        (9, "columns"), (11, "rle"), (11, "class_id"), (None, "missing_image"),
    }
    messages = [str(v) for v in check_submission(path, sample_2019)]
    assert any(m.startswith("line 3: [overlap]") and "line 2" in m for m in messages)
    assert any("'d.jpg'" in m and "missing_image" in m for m in messages)


def test_checker_matches_image_ids_with_or_without_extension_as_the_writer(tmp_path, sample_2019):
    rows = [["a", "1 10", "3"],                # line 2: "a.jpg" of the sample, spelt without extension
            ["a.jpg", "5 3", "4"],             # line 3: the same image: overlaps line 2
            ["b", "1 1", "23"], ["c.jpg", "1 1", "23"],
            ["e", "1 1", "23"]]                # line 6: not in the sample, either spelling
    notes = []
    found = {(v.row, v.kind) for v in check_submission(_write(tmp_path / "s.csv", rows), sample_2019, log=notes.append)}
    assert found == {(3, "overlap"), (6, "unknown_image"), (None, "missing_image")}
    messages = [str(v) for v in check_submission(tmp_path / "s.csv", sample_2019)]
    assert any("'d.jpg'" in m and "missing_image" in m for m in messages)
    assert len(notes) == 1 and "spelt differently" in notes[0] and "'a'" in notes[0]
    # the writer's own output for ids given without extension passes
    out = tmp_path / "written.csv"
    write_submission({"a": [], "b": [], "c": [], "d": []}, sample_2019, out, progress=False)
    assert check_submission(out, sample_2019) == []


def test_checker_header_and_2020_rules(tmp_path):
    wrong_header = _write(tmp_path / "h.csv", [["a.jpg", "1 1", "23", "x"]],
                          header=("ImageId", "EncodedPixels", "ClassId", "Extra"))
    kinds = [v.kind for v in check_submission(wrong_header, fmt="2019")]
    assert kinds == ["header"]
    no_pixels = _write(tmp_path / "n.csv", [["a.jpg", "23"]], header=("ImageId", "ClassId"))
    assert [v.kind for v in check_submission(no_pixels)] == ["header", "header"]
    rows = [["img1", "1 4", "3", "1,2"], ["img2.jpg", "1 4", "3", "1;2"], ["img3", "", "3", ""],
            ["img4", f"{1024 * 1024} 2", "3", ""]]
    path = _write(tmp_path / "s2020.csv", rows, header=("ImageId", "EncodedPixels", "ClassId", "AttributesIds"))
    found = {(v.row, v.kind) for v in check_submission(path)}
    assert found == {(3, "image_id"), (3, "attributes"), (4, "rle"), (5, "bounds")}
    # with the image size known the bound is that image's grid: 100 x 50 -> 1024 x 512
    sized = _write(tmp_path / "s.csv", [["img1", f"{1024 * 512} 2", "3", ""]],
                   header=("ImageId", "EncodedPixels", "ClassId", "AttributesIds"))
    assert [v.kind for v in check_submission(sized, image_sizes={"img1": (100, 50)})] == ["bounds"]
    assert check_submission(sized) == []


def test_checker_cli(tmp_path, sample_2019):
    good = _write(tmp_path / "good.csv", [[f"{i}.jpg", "1 1", "23"] for i in "abcd"])
    ok = subprocess.run([sys.executable, str(ROOT / "tools" / "check_submission.py"), str(good),
                         "--sample", str(sample_2019)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "no violations" in ok.stdout
    bad = _write(tmp_path / "bad.csv", [["a.jpg", "1 10", "3"], ["a.jpg", "5 3", "4"]])
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "check_submission.py"), str(bad),
                          "--sample", str(sample_2019)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("line 3: [overlap]")
    assert sum(line.startswith("file: [missing_image]") for line in lines) == 3  # b, c, d
    assert lines[-1].startswith("4 violation(s)")
    missing = subprocess.run([sys.executable, str(ROOT / "tools" / "check_submission.py"), str(tmp_path / "no.csv")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and "not found" in missing.stderr
