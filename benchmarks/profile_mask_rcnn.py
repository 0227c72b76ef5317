#!/usr/bin/env python
"""Operator-level profile (MXNet's profiler) of Mask R-CNN on CPU: training steps and inference.

    python benchmarks/profile_mask_rcnn.py                  # C4 and FPN (resnet18_v1b), 256/384, the small sample
    python benchmarks/profile_mask_rcnn.py --network resnet50_v1b --steps 5

For each of C4 and FPN: ``train_mask_rcnn.py``'s trainer from random initialisation with the convergence
benchmark's RoI budgets, a few warm-up steps, then ``--steps`` optimizer steps under the profiler; then
inference (``models.mask_rcnn.predict_instances``) on ``--steps`` photos with the default test-time budgets.
Prints, per phase, the wall time per step/image and the ten operators with the largest total time with
their share of the phase's total operator time. MXNet runs operators on worker threads, so the shares
are of the summed operator time, not of the wall time.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

ROI_BUDGET = ["--rpn-train-pre-nms", "600", "--rpn-train-post-nms", "128", "--rcnn-num-sample", "16"]


def _operator_table(text: str):
    """(name, count, total ms) for every operator row of ``mx.profiler.dumps()``'s aggregate table."""
    rows, in_operators = [], False
    for line in text.splitlines():
        if line.strip().startswith("operator"):
            in_operators = True
            continue
        if in_operators and (not line.strip() or line.startswith("=")):
            if rows:
                break
            continue
        match = re.match(r"^\s*(\S+)\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s*$", line)
        if in_operators and match:
            rows.append((match.group(1), int(match.group(2)), float(match.group(3))))
    return rows


def _print_top(title: str, text: str, wall_per_unit: float, unit: str, top: int = 10) -> None:
    rows = _operator_table(text)
    total = sum(ms for _, _, ms in rows) or float("nan")
    print(f"\n{title}: {wall_per_unit * 1000:.0f} ms per {unit} (wall); operator time {total:.0f} ms in all")
    print(f"  {'operator':40s} {'calls':>6s} {'total ms':>9s} {'share':>6s}")
    for name, count, ms in sorted(rows, key=lambda r: -r[2])[:top]:
        print(f"  {name:40s} {count:6d} {ms:9.1f} {100 * ms / total:5.1f}%")


def _endless(loader):
    """The loader's batches, epoch after epoch (the sample may hold fewer photos than warm-up + profiled steps)."""
    while True:
        yield from loader


def profile_one(root: Path, out: Path, network: str, fpn: bool, steps: int, warmup: int) -> None:
    import mxnet as mx

    from gluon_fashion.models.mask_rcnn import predict_instances
    from gluon_fashion.images import read_rgb
    from gluon_fashion.trainers.mask_rcnn import MaskRCNNTrainer, build_parser

    flags = ["--dataset-root", str(root), "--save-prefix", f"{out}/", "--network", network, "--no-pretrained",
             "--short", "256", "--max-size", "384", "--epochs", "1", "--lr", "0.01", "--lr-warmup", "0", "-j", "0",
             "--batch-size", "1"] + ROI_BUDGET + (["--use-fpn"] if fpn else [])
    run = MaskRCNNTrainer(build_parser().parse_args(flags))  # opens the run's files and builds it
    try:
        run.hybridize()
        batches = _endless(run.train_loader)
        for i in range(warmup):
            run.step(next(batches), i, 0.01)
        mx.nd.waitall()
        timed = [next(batches) for _ in range(steps)]
        mx.profiler.set_config(profile_symbolic=True, profile_imperative=True, profile_api=False,
                               aggregate_stats=True, filename=str(out / "train_profile.json"))
        mx.profiler.set_state("run")
        started = time.perf_counter()
        for i, batch in enumerate(timed):
            run.step(batch, warmup + i, 0.01)
        mx.nd.waitall()
        wall = (time.perf_counter() - started) / steps
        mx.profiler.set_state("stop")
        name = f"mask_rcnn_{'fpn_' if fpn else ''}{network}"
        _print_top(f"{name} training step", mx.profiler.dumps(reset=True), wall, "step")

        run.hybridize()  # GluonCV builds another graph for inference
        photos = [read_rgb(run.valset.image_path(i)) for i in range(len(run.valset))]
        photos = (photos * (steps // max(len(photos), 1) + 1))[:steps + 1]
        predict_instances(run.net, photos[0], 256, 384, ctx=run.contexts[0])  # compile
        mx.nd.waitall()
        mx.profiler.set_state("run")
        started = time.perf_counter()
        for photo in photos[1:]:
            predict_instances(run.net, photo, 256, 384, ctx=run.contexts[0])
        mx.nd.waitall()
        wall = (time.perf_counter() - started) / steps
        mx.profiler.set_state("stop")
        budgets = {k: v for k, v in run.net.limits.items() if k.startswith(("rpn_test", "rcnn_max"))}
        _print_top(f"{name} inference ({budgets})", mx.profiler.dumps(reset=True), wall, "image")
    finally:
        run.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="resnet18_v1b")
    parser.add_argument("--steps", type=int, default=8, help="profiled steps (and inference images) per network")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", choices=("c4", "fpn"), default=None)
    args = parser.parse_args()
    from bench_mask_rcnn import converted_sample

    root = converted_sample("small", num_train=max(args.steps + args.warmup, 10), num_test=0, seed=5, val_num=1)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        for fpn in (False, True):
            if args.only and args.only != ("fpn" if fpn else "c4"):
                continue
            profile_one(root, Path(tmp) / ("fpn" if fpn else "c4"), args.network, fpn, args.steps, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
