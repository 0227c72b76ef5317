"""tools/report.py: the figures are those of the evaluation package, the pictures and tables are right.

Ground truth given back as results must score perfectly everywhere (every image 1.0, a diagonal confusion);
a class swapped in the results must show up off the diagonal; a checkpoint's report must carry the mAP
that tools/predict.py + evaluate_coco give for the same checkpoint.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _serve_helpers import ROOT, tiny_mask_rcnn, tiny_segmentation
from gluon_fashion.convert import convert_imaterialist
from gluon_fashion.errors import UserError
from gluon_fashion.evaluation.coco import evaluate_coco, load_coco_gt
from gluon_fashion.predict import predict_to_folder
from gluon_fashion.report import class_confusion, from_checkpoint, from_results, per_image_scores, write_report
from gluon_fashion.synthetic import make_sample_dataset


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "sample"
    make_sample_dataset(root, num_train=8, num_test=1, seed=5, min_size=128, max_size=256, progress=False)
    convert_imaterialist(root, val_num=4, num_workers=1, progress=False)
    return root


def _gt_as_results(gt_path: Path, swap=None) -> list:
    gt = json.loads(gt_path.read_text())
    results = []
    for ann in gt["annotations"]:
        category = ann["category_id"]
        if swap and category == swap[0]:
            category = swap[1]
        results.append({"image_id": ann["image_id"], "category_id": category, "score": 1.0, "bbox": ann["bbox"],
                        "segmentation": ann["segmentation"]})
    return results


def test_ground_truth_as_results_scores_perfectly(sample_root, tmp_path):
    gt_path = sample_root / "annotations" / "rle_instances_val.json"
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_gt_as_results(gt_path)))
    data = from_results(gt_path, results, sample_root / "val")
    scores = per_image_scores(data)
    assert len(scores) == 4 and all(s == pytest.approx(1.0) for s in scores.values())
    cats, counts = class_confusion(data)
    n_gt = len(data.gt.dataset["annotations"])
    assert np.trace(counts) == n_gt and counts.sum() == n_gt  # nothing missed, no false positive
    out = tmp_path / "report.html"
    summary = write_report(data, out, num_examples=2, progress=False)
    assert summary["segm_mAP"] == pytest.approx(1.0) and summary["kaggle_score"] == pytest.approx(1.0)
    page = out.read_text()
    assert page.count("<figure class=example") == 4  # 2 worst + 2 best
    assert page.count("src='data:image/jpeg;base64,") == 8 and "id=pr-curves" in page
    assert not re.search(r"(src|href)=['\"]?https?:", page)  # self-contained
    rows = re.findall(r"<tr><td>(\d+)</td><td class=l>", page.split("id=per-class")[1].split("</table>")[0])
    assert sorted(map(int, rows)) == sorted(load_coco_gt(gt_path).getCatIds())
    with pytest.raises(UserError, match="exists"):
        write_report(data, out)


def test_swapped_class_shows_in_confusion(sample_root, tmp_path):
    gt_path = sample_root / "annotations" / "rle_instances_val.json"
    gt = json.loads(gt_path.read_text())
    present = sorted({a["category_id"] for a in gt["annotations"]})
    source, target = present[0], present[-1] if len(present) > 1 else present[0] + 1
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_gt_as_results(gt_path, swap=(source, target))))
    data = from_results(gt_path, results, sample_root / "val")
    cats, counts = class_confusion(data)
    moved = sum(1 for a in gt["annotations"] if a["category_id"] == source)
    assert counts[cats.index(source), cats.index(target)] == moved > 0
    assert counts[cats.index(source), cats.index(source)] == 0
    scores = per_image_scores(data)
    hit = {a["image_id"] for a in gt["annotations"] if a["category_id"] == source}
    assert all(scores[i] < 1.0 for i in hit) and all(scores[i] == pytest.approx(1.0) for i in scores if i not in hit)


def test_checkpoint_report_cli_matches_predict_and_evaluate(sample_root, tmp_path):
    weights = tiny_mask_rcnn(tmp_path / "ckpt")
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "report.py"), "--weights", weights, "--dataset-root",
                           str(sample_root), "--output", str(out), "--num-examples", "1", "--draw-threshold", "0.0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"GLUON_FASHION_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    gt_path = sample_root / "annotations" / "resize_rle_instances_val.json"
    predicted = predict_to_folder(weights, sample_root / "val", tmp_path / "pred", annotations=gt_path,
                                  score_threshold=0.05, progress=False)
    expected = evaluate_coco(gt_path, predicted.results)
    assert f"segm mAP {100 * expected.segm_mAP:.1f}" in proc.stdout
    page = out.read_text()
    assert f"mask mAP<b>{100 * expected.segm_mAP:.1f}</b>" in page
    assert page.count("<figure class=example") == 2


def test_segmentation_report_has_miou(sample_root, tmp_path):
    weights = tiny_segmentation(tmp_path / "seg")
    data = from_checkpoint(weights, sample_root, max_images=2, progress=False)
    assert data.segmentation is not None and 0.0 <= data.segmentation["mIoU"] <= 1.0
    summary = write_report(data, tmp_path / "seg.html", num_examples=1, progress=False)
    assert summary["mIoU"] == data.segmentation["mIoU"] and "id=iou" in (tmp_path / "seg.html").read_text()
    assert len(data.images) == 2


def test_cli_refuses_mixed_sources(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "report.py"), "--output", str(tmp_path / "r.html")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--weights" in proc.stderr


def test_category_names_come_from_the_data():
    from gluon_fashion.labels import CATEGORY_NAMES
    from gluon_fashion.report import category_names

    names = category_names([{"id": 1, "name": "top"}, {"id": 50, "name": "scarf"}])
    assert len(names) == 51 and names[1] == "top" and names[50] == "scarf"
    assert names[0] == CATEGORY_NAMES[0] and names[47] == "47"


def test_demo_full_trains_the_convergence_benchmarks_recipe(tmp_path, monkeypatch):
    """make demo-full promises the convergence benchmark's result: its trainer flags must stay that benchmark's."""
    import importlib.util

    import gluon_fashion.trainers.mask_rcnn as trainer

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = load("bench_mask_rcnn", ROOT / "benchmarks" / "bench_mask_rcnn.py")
    demo = load("demo", ROOT / "tools" / "demo.py")
    captured = {}

    class Stop(Exception):
        pass

    def fake_train(args):
        captured["args"] = args
        raise Stop

    monkeypatch.setattr(bench, "converted_sample", lambda *a, **k: tmp_path / "data")
    monkeypatch.setattr(bench, "WORK", tmp_path / "work")
    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setattr(sys, "argv", ["bench_mask_rcnn.py", "--mode", "convergence"])
    with pytest.raises(Stop):
        bench.main()
    theirs = vars(captured["args"])
    ours = vars(trainer.build_parser().parse_args(["--dataset-root", str(tmp_path / "data"), "--save-prefix", "x/"]
                                                  + demo.training_flags(demo.parse_args(["--full"]))))
    differ = {k: (theirs[k], ours[k]) for k in theirs if k not in ("save_prefix", "gpus", "flag_spelling")
              and theirs[k] != ours[k]}
    assert differ == {}
