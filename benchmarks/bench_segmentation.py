#!/usr/bin/env python
"""Benchmark semantic segmentation on CPU with the generated sample dataset (no pretrained weights needed).

    python benchmarks/bench_segmentation.py                      # speed: training and inference samples/s
    python benchmarks/bench_segmentation.py --mode convergence   # ~20 min: val mIoU over time (target 0.5)

Speed mode: for each configuration, one SegmentationTrainer step (forward, backward, update) on real
augmented batches already in memory, so the figure is the network's and not the JPEG decoder's; 2 warm-up
steps (hybridisation, memory allocation) are not timed. Inference: predict_label_map (sliding window, one
scale, no flip) on the validation photos at their own resolution.
Convergence mode: train_segmentation's trainer from random initialisation on the sample dataset, then the
minute each validation finished and its mIoU. Target: mIoU >= 0.5 within 20 minutes (BENCHMARKS.md has the run).

The sample (160 training photos by default) is generated once under benchmarks/_work/ and reused.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import gluon_fashion  # noqa: F401  before MXNet: restores the numpy aliases it needs (Python 3.12)

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "segmentation"
TARGET_MIOU = 0.5
TARGET_MINUTES = 20.0
SPEED_CONFIGS = [  # (model, backbone, crop)
    ("fcn", "resnet50", 96),
    ("psp", "resnet50", 96),
    ("deeplabv3", "resnet50", 96),
    ("deeplabv3", "resnet18", 96),
    ("fcn", "resnet18", 96),
    ("deeplabv3plus", "xception", 96),
    ("deeplabv3", "resnet101", 96),
]


def sample_dataset(num_train: int) -> Path:
    """The converted sample dataset for ``num_train`` photos (made once, then reused)."""
    from gluon_fashion.convert import convert_imaterialist
    from gluon_fashion.synthetic import make_sample_dataset

    root = WORK / f"sample_{num_train}"
    if not (root / "annotations" / "rle_instances_val.json").is_file():
        if root.exists():
            shutil.rmtree(root)
        make_sample_dataset(root, num_train=num_train, num_test=0, seed=0, progress=False)
        convert_imaterialist(root, val_num=max(2, num_train // 10), progress=False)
    return root


def machine() -> str:
    import mxnet as mx

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores (load {load:.1f} at start), Python {platform.python_version()}, "
            f"MXNet {mx.__version__}")


def _config(root: Path, name: str, **overrides):
    """train_segmentation.py's flags for a CPU run from random weights; ``overrides`` by flag destination."""
    from gluon_fashion.trainers.segmentation import build_parser

    args = build_parser().parse_args([
        "--dataset-root", str(root), "--no-pretrained", "--ngpus", "0", "--workers", "0",
        "--logdir", str(WORK / "runs"), "--checkname", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        "--log-interval", "10"])
    for dest, value in overrides.items():
        setattr(args, dest, value)
    return args


def _use_work_cache() -> None:
    # Keep the image-filter cache of the benchmark's own sample out of the user's home.
    from gluon_fashion.data.segmentation import CACHE_ENV

    os.environ.setdefault(CACHE_ENV, str(WORK / "cache"))


def speed(args) -> None:
    import mxnet as mx

    from gluon_fashion.models.segmentation import predict_label_map
    from gluon_fashion.trainers.segmentation import SegmentationTrainer

    _use_work_cache()
    os.environ.setdefault("GLUON_FASHION_NO_PROGRESS", "1")
    root = sample_dataset(args.num_train)
    print(f"machine: {machine()}")
    print(f"batch {args.batch_size}, {args.steps} timed steps after 2 warm-up steps; inference on "
          f"{args.infer_images} val photos at base size {args.infer_base}")
    print(f"{'model':<14} {'backbone':<10} {'crop':>4} {'train samples/s':>16} {'infer images/s':>15}")
    for model, backbone, crop in SPEED_CONFIGS:
        if args.only and model not in args.only.split(","):
            continue
        cfg = _config(root, f"speed-{model}-{backbone}", model=model, backbone=backbone, crop_size=crop,
                      base_size=int(crop * 1.2), batch_size=args.batch_size, epochs=1, aux=True)
        trainer = SegmentationTrainer(cfg)
        try:
            batches = []
            for data, label in trainer.train_loader:
                batches.append((data, label))
                if len(batches) == 2 + args.steps:
                    break
            trainer.hybridize()  # as the training loop does before its first epoch
            for i, batch in enumerate(batches[:2]):
                trainer.step(batch, i, cfg.lr)
            mx.nd.waitall()
            started = time.perf_counter()
            for i, batch in enumerate(batches[2:]):
                trainer.step(batch, i + 2, cfg.lr)
            mx.nd.waitall()
            train_rate = args.batch_size * (len(batches) - 2) / (time.perf_counter() - started)
            images = [trainer.valset.read_image(i) for i in range(min(args.infer_images, len(trainer.valset)))]
            predict_label_map(trainer.net, images[0], mx.cpu(), base_size=args.infer_base, crop_size=crop)
            started = time.perf_counter()
            for image in images:
                predict_label_map(trainer.net, image, mx.cpu(), base_size=args.infer_base, crop_size=crop)
            infer_rate = len(images) / (time.perf_counter() - started)
        finally:
            trainer.close()
        print(f"{model:<14} {backbone:<10} {crop:>4} {train_rate:>16.2f} {infer_rate:>15.2f}", flush=True)
        del trainer, batches  # free one network before building the next


def convergence(args) -> None:
    from curves import first_minute_reaching, validation_curve
    from gluon_fashion.trainers.segmentation import SegmentationTrainer

    _use_work_cache()
    root = sample_dataset(args.num_train)
    print(f"machine: {machine()}")
    cfg = _config(root, f"convergence-{args.model}", model=args.model, backbone=args.backbone,
                  crop_size=args.crop, base_size=args.base, batch_size=args.batch_size, epochs=args.epochs,
                  optimizer=args.optimizer, lr=args.lr, aux=False, num_workers=args.workers, test_batch_size=4)
    print(f"config: {cfg}")
    started, started_wall = time.perf_counter(), time.time()
    trainer = SegmentationTrainer(cfg)
    try:
        result = trainer.fit()
    finally:
        trainer.close()
    minutes = (time.perf_counter() - started) / 60
    curve = validation_curve(trainer.logger.metrics_path, started_wall)
    print("epoch  minutes  val mIoU  pixAcc")
    for epoch, minute, values in curve:
        print(f"{epoch:>5}  {minute:7.1f}  {values['mIoU']:8.3f}  {values['pixAcc']:.3f}")
    reached = first_minute_reaching(curve, "mIoU", TARGET_MIOU)
    best = result["best"] or 0.0
    ok = reached is not None and reached <= TARGET_MINUTES
    print(json.dumps({"minutes": round(minutes, 1), "best_mIoU": best, "best_epoch": result["best_epoch"],
                      "target_reached_at_minute": None if reached is None else round(reached, 1),
                      "target": f"mIoU >= {TARGET_MIOU} within {TARGET_MINUTES:.0f} min", "met": ok}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("speed", "convergence"), default="speed")
    p.add_argument("--num-train", type=int, default=160, help="sample training photos (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="speed: timed training steps per configuration")
    p.add_argument("--infer-images", type=int, default=4, help="speed: photos for the inference figure")
    p.add_argument("--infer-base", type=int, default=160, help="speed: long side for inference")
    p.add_argument("--only", default="", help="speed: comma-separated models to run (default: all)")
    p.add_argument("--model", default="deeplabv3", help="convergence: model (default: %(default)s)")
    p.add_argument("--backbone", default="resnet18", help="convergence: backbone (default: %(default)s)")
    p.add_argument("--crop", type=int, default=96, help="convergence: crop size (default: %(default)s)")
    p.add_argument("--base", type=int, default=128, help="convergence: base size (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=40, help="convergence: epochs (default: %(default)s)")
    p.add_argument("--optimizer", default="adam", help="convergence: optimizer (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="convergence: learning rate (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="convergence: loader processes (default: %(default)s)")
    args = p.parse_args()
    (speed if args.mode == "speed" else convergence)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
