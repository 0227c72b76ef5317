"""The one reader of COCO-style JSON: every problem is a UserError naming the file, and importing it stays cheap."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gluon_fashion.data.coco_json import converter_hint, read_coco_json, read_coco_results
from gluon_fashion.errors import UserError


def test_reads_a_coco_document_and_checks_the_keys_its_caller_needs(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "info": {}}))
    assert read_coco_json(path)["info"] == {}
    with pytest.raises(UserError, match=r"a\.json: no 'categories' list; expected a JSON object with the lists "
                                        r"'images', 'annotations', 'categories'"):
        read_coco_json(path, keys=("images", "annotations", "categories"))
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
