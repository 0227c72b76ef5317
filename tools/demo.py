"""The whole pipeline on a small generated dataset: what `make demo` runs.

    python tools/demo.py --output demo_output

Each step is the same command a user would type (printed before it runs), so the demo doubles as a
walk-through: generate a sample dataset -> convert it to COCO JSON -> look at the ground truth -> train
Mask R-CNN briefly from random initialisation on the CPU -> predict on the val images -> evaluate ->
write and check a Kaggle submission. The files worth opening are listed at the end.
"""
from __future__ import annotations

import argparse
import glob
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from gluon_fashion.errors import UserError, cli_entry

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--num-train", type=int, default=60, help="generated training images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="Mask R-CNN training epochs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run_step(title: str, command: List[str]) -> None:
    """Print a step's command, run it, and stop the demo with a clear error if it fails."""
    print(f"\n=== {title}\n$ {' '.join(shlex.quote(c) for c in command)}", flush=True)
    started = time.time()
    if subprocess.call(command, cwd=REPO) != 0:
        raise UserError(f"demo step failed: {title}")
    print(f"--- {title}: done in {time.time() - started:.0f} s", flush=True)


def find_one(pattern: str) -> str:
    """The single file matching ``pattern`` (newest if several)."""
    matches = sorted(glob.glob(pattern), key=lambda p: Path(p).stat().st_mtime)
    if not matches:
        raise UserError(f"expected a file matching {pattern}")
    return matches[-1]


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.output).resolve()
    data = out / "sample"
    py = sys.executable
    started = time.time()

    run_step("1/7 generate the sample dataset (Kaggle layout)",
             [py, "tools/make_sample_dataset.py", "--out", str(data), "--num-train", str(args.num_train),
              "--num-test", "8", "--seed", str(args.seed), "--overwrite"])
    run_step("2/7 convert train.csv to COCO JSON",
             [py, "tools/convert_imaterialist_to_coco.py", "--data_root", str(data), "--val_num", "12",
              "--seed", str(args.seed), "--overwrite"])
    run_step("3/7 draw the ground truth of a few val images",
             [py, "tools/visualize_dataset.py", "--data_root", str(data), "--split", "val", "-n", "4",
              "--output", str(out / "ground_truth"), "--overwrite"])
    run_step("4/7 train Mask R-CNN (random init, CPU, small scale)",
             [py, "train_mask_rcnn.py", "--dataset-root", str(data), "--network", "resnet18_v1b", "--no-pretrained",
              "--gpus", "", "--short", "256", "--max-size", "384", "--rpn-train-pre-nms", "300",
              "--rpn-train-post-nms", "100", "--rcnn-num-sample", "32",
              "--rpn-test-pre-nms", "1000", "--rpn-test-post-nms", "300", "--rcnn-max-dets", "100", "--batch-size", "2", "-j", "1",
              "--epochs", str(args.epochs), "--lr", "0.01", "--lr-warmup", "20", "--log-interval", "10",
              "--seed", str(args.seed), "--save-prefix", str(out / "mask_rcnn") + "/", "--val-interval", "1"])
    weights = find_one(str(out / "mask_rcnn" / "*_best.params"))
    val_json = str(data / "annotations" / "resize_rle_instances_val.json")
    run_step("5/7 predict on the val images",
             [py, "tools/predict.py", "--weights", weights, "--images", str(data / "val"),
              "--annotations", val_json, "--score-threshold", "0.05", "--output", str(out / "predictions"),
              "--overwrite"])
    run_step("6/7 evaluate: COCO mAP, per-class AP, competition metric",
             [py, "tools/evaluate.py", "--annotations", val_json, "--results", str(out / "predictions" / "results.json"),
              "--json-out", str(out / "metrics.json"), "--plot", str(out / "metrics.png"), "--overwrite"])
    run_step("7/7 write and check a Kaggle submission for the test images",
             [py, "tools/write_submission.py", "--weights", weights, "--test-root", str(data / "test"),
              "--sample-csv", str(data / "sample_submission.csv"), "--output", str(out / "submission.csv"),
              "--overwrite"])

    prefix = weights[: -len("_best.params")]
    print(f"\nDemo finished in {time.time() - started:.0f} s. The model trained for {args.epochs} epochs from random "
          "weights on a small CPU budget: it shows the pipeline working, not a useful model, and its mAP is "
          "expected to be near 0 (more epochs or COCO-pretrained weights change that). Files to open:")
    for label, path in [
        ("ground-truth overlays", out / "ground_truth"),
        ("training log", prefix + "_train.log"),
        ("loss / lr / mAP plots", prefix + "_losses.png"),
        ("best checkpoint (+ .json meta)", weights),
        ("prediction overlays", out / "predictions"),
        ("metrics (JSON, plot)", out / "metrics.json"),
        ("", out / "metrics.png"),
        ("Kaggle submission", out / "submission.csv"),
    ]:
        print(f"  {label:32s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
