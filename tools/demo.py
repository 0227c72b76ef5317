"""The whole pipeline on a small generated dataset: what `make demo` runs.

    python tools/demo.py --output demo_output                       # make demo: about 2 minutes
    python tools/demo.py --full --serve --output demo_full          # make demo-full: about 20 minutes

Each step is the same command a user would type (printed before it runs), so the demo doubles as a
walk-through: generate a sample dataset -> convert it to COCO JSON -> look at the ground truth -> train
Mask R-CNN from random initialisation on the CPU -> predict on the val images -> evaluate -> draw overlays
of the detections scoring at least --overlay-threshold -> write and check a Kaggle submission -> write the
validation report (report.html: metrics, per-class AP, ground truth beside prediction). The files worth
opening are listed at the end.

The quick demo trains 2 epochs: it shows the pipeline working, not a model (mAP near 0). --full trains with
the recipe of the Mask R-CNN convergence benchmark (benchmarks/bench_mask_rcnn.py --mode convergence, its
default run in BENCHMARKS.md: segm mAP 0.303 at minute 17.7 on a 2-core CPU): 160 generated photos (20 held
out), the 13 main apparel classes, ResNet-18 C4, 11 epochs; --serve then serves the best checkpoint on
http://127.0.0.1:8080/ until Ctrl-C.
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
    parser.add_argument("--num-train", type=int, default=None, help="generated training images (default: 60)")
    parser.add_argument("--epochs", type=int, default=None, help="Mask R-CNN training epochs (default: 2)")
    parser.add_argument("--seed", type=int, default=None, help="data and training seed (default: 0)")
    parser.add_argument("--overlay-threshold", type=float, default=0.5,
                        help="overlays and report pictures draw detections scoring at least this (default: "
                             "%(default)s; the metrics use every detection from 0.05)")
    parser.add_argument("--full", action="store_true",
                        help="the convergence benchmark's recipe (about 20 minutes on 2 CPU cores): a model that "
                             "learns (segm mAP about 0.3) instead of a 2-epoch smoke run")
    parser.add_argument("--serve", action="store_true",
                        help="end by serving the best checkpoint on http://127.0.0.1:PORT/ until Ctrl-C")
    parser.add_argument("--port", type=int, default=8080, help="with --serve (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.overlay_threshold <= 1.0:
        raise UserError(f"--overlay-threshold must lie in [0, 1], got {args.overlay_threshold}")
    quick = {"num_train": 60, "epochs": 2, "seed": 0}
    given = [f"--{name.replace('_', '-')}" for name in quick if getattr(args, name) is not None]
    if args.full and given:
        # --full is the convergence benchmark's recipe as it stands: changing part of it would not learn as promised.
        raise UserError(f"--full trains the convergence benchmark's fixed recipe: drop {', '.join(given)}")
    for name, default in quick.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def training_flags(args: argparse.Namespace) -> List[str]:
    """train_mask_rcnn.py's flags: the quick smoke run, or with --full the convergence benchmark's recipe."""
    if args.full:
        # benchmarks/bench_mask_rcnn.py --mode convergence with its defaults (run G in BENCHMARKS.md).
        return ["--network", "resnet18_v1b", "--no-pretrained", "--gpus", "", "--short", "256", "--max-size", "384",
                "--epochs", "11", "--lr", "0.02", "--lr-warmup", "100", "--lr-decay-epoch", "8",
                "--val-interval", "2", "-j", "1", "--log-interval", "20", "--classes", "main",
                "--rpn-train-pre-nms", "600", "--rpn-train-post-nms", "128", "--rcnn-num-sample", "16",
                "--rcnn-pos-ratio", "0.25", "--rpn-test-pre-nms", "600", "--rpn-test-post-nms", "100",
                "--seed", "233"]
    return ["--network", "resnet18_v1b", "--no-pretrained", "--gpus", "", "--short", "256", "--max-size", "384",
            "--rpn-train-pre-nms", "300", "--rpn-train-post-nms", "100", "--rcnn-num-sample", "32",
            "--rpn-test-pre-nms", "1000", "--rpn-test-post-nms", "300", "--rcnn-max-dets", "100", "--batch-size", "2",
            "-j", "1", "--epochs", str(args.epochs), "--lr", "0.01", "--lr-warmup", "20", "--log-interval", "10",
            "--seed", str(args.seed), "--val-interval", "1"]


def run_step(title: str, command: List[str]) -> None:
    """Print a step's command, run it, and stop the demo with a clear error if it fails."""
    print(f"\n=== {title}\n$ {' '.join(shlex.quote(c) for c in command)}", flush=True)
    started = time.time()
    if subprocess.call(command, cwd=REPO) != 0:
        raise UserError(f"demo step failed: {title}")
    print(f"--- {title}: done in {time.time() - started:.0f} s", flush=True)


def serve_until_stopped(command: List[str]) -> int:
    """Run the server in the foreground until it exits; its exit code.

    Ctrl-C reaches the server too (same process group) and it stops cleanly, finishing the requests in hand:
    wait for that instead of letting subprocess kill it after a quarter of a second.
    """
    proc = subprocess.Popen(command, cwd=REPO)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


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

    # --full: the convergence benchmark's dataset (160 photos, seed 0, 20 held out for validation).
    num_train, val_num, data_seed = (160, 20, 0) if args.full else (args.num_train, 12, args.seed)
    run_step("1/9 generate the sample dataset (Kaggle layout)",
             [py, "tools/make_sample_dataset.py", "--out", str(data), "--num-train", str(num_train),
              "--num-test", "8", "--seed", str(data_seed), "--overwrite"])
    run_step("2/9 convert train.csv to COCO JSON",
             [py, "tools/convert_imaterialist_to_coco.py", "--data_root", str(data), "--val_num", str(val_num),
              "--seed", str(data_seed), "--overwrite"])
    run_step("3/9 draw the ground truth of a few val images",
             [py, "tools/visualize_dataset.py", "--data_root", str(data), "--split", "val", "-n", "4",
              "--output", str(out / "ground_truth"), "--overwrite"])
    run_step("4/9 train Mask R-CNN (random init, CPU" + (", the convergence recipe: about 18 minutes)" if args.full
                                                         else ", small scale)"),
             [py, "train_mask_rcnn.py", "--dataset-root", str(data), "--save-prefix", str(out / "mask_rcnn") + "/"]
             + training_flags(args))
    weights = find_one(str(out / "mask_rcnn" / "*_best.params"))
    val_json = str(data / "annotations" / "resize_rle_instances_val.json")
    run_step("5/9 predict on the val images (every detection from score 0.05, for the metrics)",
             [py, "tools/predict.py", "--weights", weights, "--images", str(data / "val"),
              "--annotations", val_json, "--score-threshold", "0.05", "--output", str(out / "predictions"),
              "--overwrite"])
    run_step("6/9 evaluate: COCO mAP, per-class AP, competition metric",
             [py, "tools/evaluate.py", "--annotations", val_json, "--results", str(out / "predictions" / "results.json"),
              "--classes", "main" if args.full else "all",  # the trained classes (training_flags)
              "--json-out", str(out / "metrics.json"), "--plot", str(out / "metrics.png"), "--overwrite"])
    run_step(f"7/9 overlays of the val images: detections scoring >= {args.overlay_threshold} (--overlay-threshold)",
             [py, "tools/predict.py", "--weights", weights, "--images", str(data / "val"),
              "--score-threshold", str(args.overlay_threshold), "--output", str(out / "overlays"), "--overwrite"])
    run_step("8/9 write and check a Kaggle submission for the test images",
             [py, "tools/write_submission.py", "--weights", weights, "--test-root", str(data / "test"),
              "--sample-csv", str(data / "sample_submission.csv"), "--output", str(out / "submission.csv"),
              "--overwrite"])
    run_step("9/9 the validation report: metrics, per-class AP, confusion, ground truth beside prediction",
             [py, "tools/report.py", "--weights", weights, "--dataset-root", str(data), "--output",
              str(out / "report.html"), "--draw-threshold", str(args.overlay_threshold), "--overwrite"])

    prefix = weights[: -len("_best.params")]
    if args.full:
        print(f"\nDemo finished in {time.time() - started:.0f} s. The model trained from random weights with the "
              "convergence benchmark's CPU recipe (segm mAP about 0.3 expected: see report.html). Files to open:")
    else:
        print(f"\nDemo finished in {time.time() - started:.0f} s. The model trained for {args.epochs} epochs from "
              "random weights on a small CPU budget: it shows the pipeline working, not a useful model, and its mAP "
              "is expected to be near 0 (make demo-full trains one that learns). Files to open:")
    for label, path in [
        ("ground-truth overlays", out / "ground_truth"),
        ("training log", prefix + "_train.log"),
        ("loss / lr / mAP plots", prefix + "_losses.png"),
        ("best checkpoint (+ .json meta)", weights),
        (f"overlays (score >= {args.overlay_threshold})", out / "overlays"),
        ("validation report (open in a browser)", out / "report.html"),
        ("TensorBoard: tensorboard --logdir", Path(prefix).parent),
        ("metrics (JSON, plot)", out / "metrics.json"),
        ("", out / "metrics.png"),
        ("Kaggle submission", out / "submission.csv"),
    ]:
        print(f"  {label:38s} {path}")
    if args.serve:
        print(f"\n=== serving the best checkpoint: open http://127.0.0.1:{args.port}/ and drop a photo "
              f"(e.g. {data / 'test'}); Ctrl-C stops", flush=True)
        return serve_until_stopped([py, "tools/serve.py", "--weights", weights, "--port", str(args.port)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
