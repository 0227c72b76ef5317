"""The one reader of COCO-style JSON: every problem is a UserError naming the file, and importing it stays cheap."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from gluon_fashion.data.coco_json import converter_hint, read_coco_json, read_coco_results
from gluon_fashion.errors import UserError


def test_reads_a_coco_document_and_checks_the_keys_its_caller_needs(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "info": {}}))
    assert read_coco_json(path, keys=("images", "annotations"))["info"] == {}
    with pytest.raises(UserError, match=r"a\.json: no 'categories' list; expected a JSON object with the lists "
                                        r"'images', 'annotations', 'categories'"):
        read_coco_json(path)  # all three by default
    path.write_text(json.dumps({"images": {}, "annotations": []}))
    with pytest.raises(UserError, match="no 'images' list"):
        read_coco_json(path)
    path.write_text("[]")
    with pytest.raises(UserError, match=r"a\.json: expected a JSON object .* got list"):
        read_coco_json(path)


def test_missing_and_invalid_files_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(UserError, match=r"nowhere\.json: annotation file not found \(run "
                                        r"tools/convert_imaterialist_to_coco\.py --data_root data first\)"):
        read_coco_json(tmp_path / "nowhere.json", hint=converter_hint("data"))
    with pytest.raises(UserError, match=r"nowhere\.json: label descriptions not found$"):
        read_coco_json(tmp_path / "nowhere.json", "label descriptions", keys=("categories",))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match=r"bad\.json: not valid JSON"):
        read_coco_json(bad)
    bad.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(UserError, match=r"bad\.json: not valid JSON"):
        read_coco_results(bad)


def test_results_are_a_list(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"image_id": 1}]))
    assert read_coco_results(path) == [{"image_id": 1}]
    path.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(UserError, match=r"results\.json: results must be a JSON list of detections, got dict"):
        read_coco_results(path)
    with pytest.raises(UserError, match=r"missing\.json: results file not found"):
        read_coco_results(tmp_path / "missing.json")


def test_import_stays_cheap():
    code = "import sys, gluon_fashion.data.coco_json; print('mxnet' in sys.modules, 'pycocotools' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["False", "False"], run.stderr


# ------------------------------------------------------------------------- entries of the shape readers rely on
def _document(**changes):
    """A valid two-image COCO document; ``changes`` replace whole lists."""
    segmentation = {"size": [4, 6], "counts": [0, 24]}
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 6},
                      {"id": 2, "file_name": "b.jpg", "height": 4, "width": 6, "orig_height": 8, "orig_width": 12}],
           "annotations": [{"id": 7, "image_id": 2, "category_id": 0, "segmentation": segmentation,
                            "bbox": [0, 0, 6, 4], "area": 24, "iscrowd": 0}],
           "categories": [{"id": 0, "name": "shirt, blouse"}, {"id": 1, "name": "top"}]}
    doc.update(changes)
    return doc


def _annotation(**changes):
    return dict(_document()["annotations"][0], **changes)


@pytest.mark.parametrize("changes, message", [
    ({"images": [5]}, r"images\[0\]: expected an object, got 5"),
    ({"images": [{"id": "1", "file_name": "a.jpg", "height": 4, "width": 6}]}, r"images\[0\]: 'id' must be an integer"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 4}]}, r"image 1 \(images\[0\]\): 'width' must be a positive"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 4.0, "width": 6}]}, r"image 1 .*'height' must be"),
    ({"images": [{"id": 1, "height": 4, "width": 6}]}, r"image 1 .*'file_name' must be a non-empty string"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 6, "orig_width": 0}]}, r"'orig_width' must"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 6}] * 2}, r"image 1 \(images\[1\]\): id 1 is "
                                                                                 r"also the id of images\[0\]"),
    ({"categories": [{"id": 0}]}, r"category 0 \(categories\[0\]\): 'name' must be a string"),
    ({"annotations": [_annotation(category_id=31)]},
     r"annotation 7 \(annotations\[0\]\): category_id 31 is not in 'categories'"),
    ({"annotations": [_annotation(image_id=3)]}, r"annotation 7 .*image_id 3 is not in 'images'"),
    ({"annotations": [_annotation(image_id=None)]}, r"annotation 7 .*'image_id' must be an integer"),
    ({"annotations": [{k: v for k, v in _annotation().items() if k != "id"}]}, r"annotations\[0\]: 'id' must be"),
    ({"annotations": [{k: v for k, v in _annotation().items() if k != "segmentation"}]}, r"no 'segmentation'"),
    ({"annotations": [_annotation(segmentation={"size": [4, 5], "counts": [0, 20]})]},
     r"annotation 7 .*mask size \[4, 5\] differs from its image's size \[4, 6\]"),
    ({"annotations": [_annotation(segmentation="x")]}, r"'segmentation' must be a COCO RLE"),
    ({"annotations": [_annotation(bbox=[0, 0, -1, 4])]}, r"annotation 7 .*'bbox' must be \[x, y, width, height\]"),
    ({"annotations": [_annotation(bbox=[0, 0, float("nan"), 4])]}, r"'bbox' must be"),
    ({"annotations": [{k: v for k, v in _annotation().items() if k != "area"}]}, r"'area' must be a finite number"),
    ({"annotations": [_annotation(), _annotation()]}, r"annotation 7 \(annotations\[1\]\): id 7 is also the id"),
])
def test_entries_of_the_wrong_shape_are_errors_naming_the_entry(tmp_path, changes, message):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(_document(**changes)))
    with pytest.raises(UserError, match=r"a\.json: .*" + message):
        read_coco_json(path)


def test_valid_documents_polygons_and_lists_not_asked_for_pass(tmp_path):
    path = tmp_path / "a.json"
    polygons = _annotation(id=8, segmentation=[[0, 0, 5, 0, 5, 3]])
    path.write_text(json.dumps(_document(annotations=[_annotation(), polygons])))
    assert len(read_coco_json(path)["annotations"]) == 2
    # Without 'categories' among the lists asked for, categories are neither required nor cross-checked.
    path.write_text(json.dumps({"images": _document()["images"], "annotations": [_annotation(category_id=40)]}))
    assert read_coco_json(path, keys=("images", "annotations"))["annotations"][0]["category_id"] == 40
    with pytest.raises(UserError, match="no 'categories' list"):
        read_coco_json(path)


def _write_dataset(root, document):
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).mkdir()
    for name in ("rle_instances_train.json", "rle_instances_val.json", "resize_rle_instances_val.json"):
        (root / "annotations" / name).write_text(json.dumps(document))


@pytest.mark.parametrize("document, message", [
    ({"images": 5, "annotations": [], "categories": []}, r"no 'images' list"),
    ({"images": [5], "annotations": [], "categories": []}, r"images\[0\]: expected an object"),
    (_document(annotations=[_annotation(category_id=31)]), r"annotation 7 .*category_id 31 is not in 'categories'"),
])
@pytest.mark.parametrize("trainer", ["train_mask_rcnn", "train_segmentation"])
def test_both_trainers_refuse_annotation_files_of_the_wrong_shape_in_one_line(tmp_path, monkeypatch, capsys,
                                                                              trainer, document, message):
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(trainer, repo / f"{trainer}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLUON_FASHION_CACHE", str(tmp_path / "cache"))
    _write_dataset(tmp_path / "data", document)
    flags = (["--network", "resnet18_v1b", "--save-prefix", "run/", "--gpus", ""] if trainer == "train_mask_rcnn"
             else ["--model", "fcn", "--backbone", "resnet18", "--ngpus", "0", "--checkname", "run"])
    assert script.main(["--dataset-root", str(tmp_path / "data"), "--no-pretrained"] + flags) == 2
    err = capsys.readouterr().err
    # (the segmentation trainer reads the val split first)
    assert re.search(r"^error: .*rle_instances_(train|val)\.json: " + message, err, re.MULTILINE), err
    assert "Traceback" not in err
