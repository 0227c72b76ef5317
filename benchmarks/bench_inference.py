#!/usr/bin/env python
"""Mask R-CNN test-time budgets: accuracy on the sample's val against predict.py's images/s on CPU.

    python benchmarks/bench_inference.py                       # newest convergence run's best checkpoint
    python benchmarks/bench_inference.py --weights RUN_best.params --dataset-root D --rounds 3

Each budget is ``pre,post,dets``: proposals kept before and after the RPN's NMS at test time
(``--rpn-test-pre-nms``/``--rpn-test-post-nms``) and detections whose masks are computed
(``--rcnn-max-dets``). The first is the reference (GluonCV's 6000,1000,1000, what a checkpoint trained
without those flags predicted with before they had defaults of their own).

Speed: ``predict.predict_images`` over the val photos at predict.py's defaults (score >= 0.5, masks pasted on
each photo's grid), the budgets interleaved within each round; images/s per budget is the median over the
rounds, and its ratio to the reference is taken within each round first (median of the per-round ratios).
Accuracy (not timed): one more pass keeping every detection (score >= 0), masks on the 512x512 val grid:
segm/bbox mAP as the trainers' validation computes them, and the competition score of the detections
scoring >= 0.5 (write_submission.py's default).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
WORK = HERE / "_work" / "mask_rcnn"
DEFAULT_BUDGETS = "6000,1000,1000 1000,1000,100 1000,300,100 1000,100,100 600,100,100 300,100,100 300,50,50"


def _newest_convergence_checkpoint() -> Path:
    runs = sorted((WORK / "runs").glob("convergence_*/*_best.params"), key=lambda p: p.stat().st_mtime)
    if not runs:
        sys.exit("no convergence run found: run benchmarks/bench_mask_rcnn.py --mode convergence first, "
                 "or pass --weights")
    return runs[-1]


def _budgets(text: str):
    out = []
    for item in text.split():
        pre, post, dets = (int(x) for x in item.split(","))
        out.append({"rpn_test_pre_nms": pre, "rpn_test_post_nms": post, "rcnn_max_dets": dets})
    return out


def _label(budget) -> str:
    return f"{budget['rpn_test_pre_nms']}/{budget['rpn_test_post_nms']}/{budget['rcnn_max_dets']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="Mask R-CNN checkpoint (default: newest convergence run's best)")
    parser.add_argument("--dataset-root", default=str(WORK / "convergence"), help="converted dataset with a val split")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS, help="space-separated pre,post,dets; first: reference")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per budget (interleaved)")
    args = parser.parse_args()

    import json

    from gluon_fashion.evaluation.coco import evaluate_coco, load_coco_gt
    from gluon_fashion.evaluation.kaggle_metric import kaggle_score
    from gluon_fashion.models.mask_rcnn import to_coco_results
    from gluon_fashion.predict import ImageReader, load_model, predict_images

    weights = Path(args.weights) if args.weights else _newest_convergence_checkpoint()
    root = Path(args.dataset_root)
    val_json = root / "annotations" / "rle_instances_val.json"
    gt_512 = load_coco_gt(str(root / "annotations" / "resize_rle_instances_val.json"))
    records = json.loads(val_json.read_text())["images"]
    paths = [root / "val" / r["file_name"] for r in records]
    ids = {p.name: r["id"] for p, r in zip(paths, records)}
    budgets = _budgets(args.budgets)
    models = [load_model(weights, test_budgets=b) for b in budgets]
    print(f"{weights}; {len(paths)} val photos; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, Python {platform.python_version()}")

    def timed_pass(model) -> float:
        started = time.perf_counter()
        for pred in predict_images(model, ImageReader(paths), progress=False):
            _ = pred.instances
        return len(paths) / (time.perf_counter() - started)

    for model in models:  # warm-up: hybridisation, allocation
        for pred in predict_images(model, ImageReader(paths[:2]), progress=False):
            _ = pred.instances
    speeds = [[] for _ in budgets]
    for _ in range(args.rounds):
        for k, model in enumerate(models):
            speeds[k].append(timed_pass(model))
    print(f"{'budget pre/post/dets':22s} {'images/s':>9s} {'x ref':>6s} {'segm mAP':>9s} {'bbox mAP':>9s} "
          f"{'comp. score':>11s} {'dets/img':>9s}")
    for k, (budget, model) in enumerate(zip(budgets, models)):
        results = []
        for pred in predict_images(model, ImageReader(paths), score_threshold=0.0, progress=False):
            results += to_coco_results(ids[pred.path.name], pred.instances_at((512, 512)))
        metrics = evaluate_coco(gt_512, results, log=lambda *a, **k: None)
        score = kaggle_score(gt_512, results, score_threshold=0.5)
        ratio = statistics.median(s / r for s, r in zip(speeds[k], speeds[0]))
        print(f"{_label(budget):22s} {statistics.median(speeds[k]):9.3f} {ratio:6.2f} {metrics.segm_mAP:9.4f} "
              f"{metrics.bbox_mAP:9.4f} {float(score):11.4f} {len(results) / len(paths):9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
