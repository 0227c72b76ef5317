#!/usr/bin/env python
"""Benchmark the Mask R-CNN data pipeline and training on CPU with generated sample data (no weights needed).

    python benchmarks/bench_mask_rcnn.py --mode pipeline      # photo-sized images: samples/s and mask memory
    python benchmarks/bench_mask_rcnn.py --mode train         # training samples/s: C4/FPN x 1/2 CPU contexts
    python benchmarks/bench_mask_rcnn.py --mode convergence   # ~17 min: val segm mAP over time (target 0.3)
    python benchmarks/bench_mask_rcnn.py --mode convergence --attributes --format 2020
                                                              # also attribute AP, Fashionpedia AP

pipeline: photos with a long side of 3000-4500 px and their instances (sample generator, once, under
benchmarks/_work/), loaded as in training (``FashionInstance`` + ``MaskRCNNTrainTransform`` at 800/1333 with
RPN targets) against the same pipeline decoding every instance at full resolution first and then resizing
it, and against that with the JPEG also decoded at full size. Same images, same process, the variants
interleaved image by image. Target: >= 3x samples/s over the full-resolution-masks pipeline.
train: ``train_mask_rcnn.py``'s trainer from random initialisation on the small sample dataset; samples/s
over the iterations after the first two (hybridisation, allocation), read from the run's metrics JSONL.
convergence: the trainer from random initialisation on the default sample dataset (160 photos, 20 held out
for validation) for ``--epochs``, by default on the 13 main apparel classes with 16 sampled RoIs per image;
prints the minute each validation finished and its mAP. Target: segm mAP >= 0.3 within 20 minutes (BENCHMARKS.md
has the runs: 0.303 at minute 17.7 with the defaults, 0.296 with --seed 1). ``--format 2020`` writes the same
images in the 2020 layout, whose attribute list names sleeve length, hem length, pattern and opening (2019's has
only nicknames); with ``--attributes`` the target is a mean attribute AP >= 0.6.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
WORK = HERE / "_work" / "mask_rcnn"
TARGET_SPEEDUP = 3.0
TARGET_SEGM_MAP = 0.3
TARGET_MINUTES = 20.0
TARGET_ATTRIBUTE_AP = 0.6
SMALL_BUDGET = ["--rpn-train-pre-nms", "300", "--rpn-train-post-nms", "100", "--rcnn-num-sample", "32",
                "--rpn-test-pre-nms", "300", "--rpn-test-post-nms", "50"]


def converted_sample(name: str, **kwargs) -> Path:
    """Generate (once) a sample dataset under benchmarks/_work and convert it."""
    from gluon_fashion.convert import convert_imaterialist
    from gluon_fashion.synthetic import REVISION, make_sample_dataset
    root = WORK / f"{name}_r{REVISION}"  # a sample of an older generator is not reused
    if not (root / "annotations" / "rle_instances_train.json").is_file():
        val_num = kwargs.pop("val_num", 1)
        make_sample_dataset(root, overwrite=True, progress=False, **kwargs)
        convert_imaterialist(root, val_num=val_num, num_workers=1, overwrite=True, progress=False)
    return root


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


# -------------------------------------------------------------------------------------------- pipeline
def bench_pipeline(args) -> None:
    from gluon_fashion.data.instance import FashionInstance, split_files
    from gluon_fashion.images import read_rgb
    from gluon_fashion.models.mask_rcnn import build_mask_rcnn
    from gluon_fashion.rle import coco_to_mask
    from gluon_fashion.transforms.instance import MaskRCNNTrainTransform

    class FullResolutionFirst(MaskRCNNTrainTransform):
        """Baseline: every instance decoded to a full-size mask, then resized to the training size."""

        def decode_masks(self, segms, height, width, out_height, out_width):
            full = np.stack([coco_to_mask(s) for s in segms])
            return np.stack([cv2.resize(m, (out_width, out_height), interpolation=cv2.INTER_NEAREST) for m in full])

    root = converted_sample("photos", num_train=args.photos + 1, num_test=0, min_size=3000, max_size=4500,
                            seed=7)
    net = build_mask_rcnn("mask_rcnn_resnet50_v1b_coco", range(46), pretrained=False)
    files = split_files(root, "train")
    variants = {"decode at training size": MaskRCNNTrainTransform(args.short, args.max_size, net),
                "full resolution first": FullResolutionFirst(args.short, args.max_size, net),
                "+ full-size JPEG decode": FullResolutionFirst(args.short, args.max_size, net)}
    datasets = {name: FashionInstance(*files, transform=t, reduced_decode=not name.startswith("+"))
                for name, t in variants.items()}
    plain = FashionInstance(*files)
    sizes = [plain[i][0].shape[:2] for i in range(len(plain))]
    instances = [len(plain[i][2]) for i in range(len(plain))]
    print(f"{len(plain)} photos, {min(max(s) for s in sizes)}-{max(max(s) for s in sizes)} px long side, "
          f"{np.mean(instances):.1f} instances each; training scale {args.short}/{args.max_size}; {machine()}")
    decode, reduced = [], []
    for i in range(len(plain)):
        started = time.perf_counter()
        read_rgb(plain.image_path(i))
        decode.append(time.perf_counter() - started)
        started = time.perf_counter()
        plain.read_image(i, min_size=_scaled(plain.image_size(i), args.short, args.max_size))
        reduced.append(time.perf_counter() - started)
    print(f"JPEG decode: {np.mean(decode) * 1000:.0f} ms per photo at full size, {np.mean(reduced) * 1000:.0f} ms "
          "reduced by DCT scaling to cover the training size")

    seconds = {name: 0.0 for name in datasets}
    mask_seconds = {name: 0.0 for name in datasets}
    for _ in range(args.repeats):
        for i in range(len(plain)):
            height, width = plain.image_size(i)
            out_h, out_w = _scaled((height, width), args.short, args.max_size)
            segms = plain[i][2]
            for name, dataset in datasets.items():  # interleaved, so background load hits all alike
                started = time.perf_counter()
                dataset[i]
                seconds[name] += time.perf_counter() - started
                started = time.perf_counter()
                variants[name].decode_masks(segms, height, width, out_h, out_w)
                mask_seconds[name] += time.perf_counter() - started
    count = args.repeats * len(plain)
    peaks = {}
    for name, transform in variants.items():
        tracemalloc.start()
        for i in range(len(plain)):
            image, _, segms = plain[i]
            out_h, out_w = _scaled(image.shape[:2], args.short, args.max_size)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            transform.decode_masks(segms, image.shape[0], image.shape[1], out_h, out_w)
            peaks[name] = max(peaks.get(name, 0), tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()
    print(f"{'variant':26s} {'samples/s':>10s} {'masks ms/photo':>15s} {'mask peak MB':>13s}")
    for name in datasets:
        print(f"{name:26s} {count / seconds[name]:10.2f} {1000 * mask_seconds[name] / count:15.1f} "
              f"{peaks[name] / 2**20:13.1f}")
    ours, base, naive = (count / seconds[n] for n in datasets)
    masks_ratio = mask_seconds["full resolution first"] / mask_seconds["decode at training size"]
    print(f"speed-up: {ours / base:.2f}x whole sample vs full-resolution masks (target >= {TARGET_SPEEDUP:.0f}x), "
          f"{ours / naive:.2f}x vs full-resolution masks and JPEG; {masks_ratio:.1f}x mask stage; "
          f"mask memory {peaks['full resolution first'] / max(peaks['decode at training size'], 1):.0f}x less")


def _scaled(shape, short, max_size):
    from gluon_fashion.transforms.instance import scaled_size
    return scaled_size(shape[0], shape[1], short, max_size)


# ----------------------------------------------------------------------------------------------- train
def _speed_from_metrics(prefix: str, batch: int, skip: int = 2) -> float:
    with open(prefix + "_metrics.jsonl", encoding="utf-8") as handle:
        times = [r["time"] for r in map(json.loads, handle) if r["split"] == "train_iter"]
    if len(times) <= skip + 1:
        return float("nan")
    return batch * (len(times) - 1 - skip) / (times[-1] - times[skip])


def bench_train(args) -> None:
    from gluon_fashion.trainers.mask_rcnn import build_parser, train
    root = converted_sample("small", num_train=args.images + 2, num_test=0, seed=5, val_num=1)
    print(f"training samples/s, random init, short {args.short} max {args.max_size}, RoI budget "
          f"{' '.join(SMALL_BUDGET)}; {machine()}")
    print(f"{'configuration':34s} {'contexts':>8s} {'batch':>5s} {'samples/s':>10s}")
    for network, fpn in (("resnet18_v1b", False), ("resnet18_v1b", True)):
        for contexts in (1, 2):
            out = WORK / "runs" / f"{network}{'_fpn' if fpn else ''}_{contexts}ctx_{int(time.time())}"
            flags = ["--dataset-root", str(root), "--save-prefix", f"{out}/", "--network", network,
                     "--no-pretrained", "--short", str(args.short), "--max-size", str(args.max_size),
                     "--epochs", "1", "--cpu-contexts", str(contexts), "--batch-size", str(contexts),
                     "--lr", "0.005", "--lr-warmup", "0", "-j", "1", "--val-max-images", "1",
                     "--log-interval", "1"] + SMALL_BUDGET + (["--use-fpn"] if fpn else [])
            flags += ["--attributes", "--attribute-loss-weight", str(args.attribute_loss_weight)] if args.attributes else []
            train(build_parser().parse_args(flags))
            prefix = str(next(out.glob("*_metrics.jsonl")))[: -len("_metrics.jsonl")]
            name = f"mask_rcnn_{'fpn_' if fpn else ''}{network}"
            print(f"{name:34s} {contexts:8d} {contexts:5d} {_speed_from_metrics(prefix, contexts):10.2f}",
                  flush=True)


# ----------------------------------------------------------------------------------------- convergence
def bench_convergence(args) -> None:
    from curves import first_minute_reaching, validation_curve
    from gluon_fashion.trainers.mask_rcnn import build_parser, train
    name = "convergence" if args.format == "2019" else f"convergence_{args.format}"
    root = converted_sample(name, num_train=160, num_test=0, seed=0, val_num=20, fmt=args.format)
    out = WORK / "runs" / f"convergence_{int(time.time())}"
    flags = ["--dataset-root", str(root), "--save-prefix", f"{out}/", "--network", args.network,
             "--short", str(args.short), "--max-size", str(args.max_size), "--epochs", str(args.epochs),
             "--lr", str(args.lr), "--lr-warmup", "100",
             "--lr-decay-epoch", str(args.lr_decay_epoch or int(args.epochs * 0.75)),
             "--val-interval", str(args.val_interval), "-j", "1", "--log-interval", "20", "--classes", args.classes,
             "--rpn-train-pre-nms", "600", "--rpn-train-post-nms", "128",
             "--rcnn-num-sample", str(args.rcnn_num_sample), "--rcnn-pos-ratio", str(args.rcnn_pos_ratio),
             "--rpn-test-pre-nms", "600", "--rpn-test-post-nms", "100", "--seed", str(args.seed)]
    flags += ["--use-fpn"] if args.use_fpn else []
    flags += ["--attributes", "--attribute-loss-weight", str(args.attribute_loss_weight)] if args.attributes else []
    flags += ["--pretrained-weights", args.pretrained_weights] if args.pretrained_weights else ["--no-pretrained"]
    started, started_wall = time.perf_counter(), time.time()
    result = train(build_parser().parse_args(flags))
    minutes = (time.perf_counter() - started) / 60
    prefix = str(next(out.glob("*_metrics.jsonl")))[: -len("_metrics.jsonl")]
    curve = validation_curve(prefix + "_metrics.jsonl", started_wall)
    for epoch, minute, values in curve:
        attributes = (f", attribute mAP {values['attribute_mAP']:.3f}, Fashionpedia AP {values['fashionpedia_AP']:.3f}"
                      f" (IoU/F1 0.5: {values['fashionpedia_AP_iou50_f150']:.3f})" if "attribute_mAP" in values else "")
        print(f"epoch {epoch:3d} ({minute:5.1f} min): segm mAP {values['segm_mAP']:.3f}, "
              f"bbox mAP {values['bbox_mAP']:.3f}, segm AP50 {values['segm_AP50']:.3f}{attributes}")
    reached = first_minute_reaching(curve, "segm_mAP", TARGET_SEGM_MAP)
    best = result["best"] or 0.0
    met = reached is not None and reached <= TARGET_MINUTES
    print(f"{minutes:.1f} min; best segm mAP {best:.3f}; target segm mAP >= {TARGET_SEGM_MAP} within "
          f"{TARGET_MINUTES:.0f} min: {'met at minute %.1f' % reached if met else 'not met'}; {machine()}")
    if args.attributes:
        reached = first_minute_reaching(curve, "attribute_mAP", TARGET_ATTRIBUTE_AP)
        print(f"target mean attribute AP >= {TARGET_ATTRIBUTE_AP} within {TARGET_MINUTES:.0f} min: "
              f"{'met at minute %.1f' % reached if reached is not None and reached <= TARGET_MINUTES else 'not met'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("pipeline", "train", "convergence"), default="pipeline")
    parser.add_argument("--photos", type=int, default=4, help="pipeline: photo-sized images to synthesize")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline: passes over the photos per variant")
    parser.add_argument("--images", type=int, default=8, help="train: training images (iterations per run)")
    parser.add_argument("--short", type=int, default=None, help="default: 800 (pipeline), 256 (train, convergence)")
    parser.add_argument("--max-size", type=int, default=None, help="default: 1333 (pipeline), 384 (train, convergence)")
    parser.add_argument("--network", default="resnet18_v1b", help="convergence: backbone")
    parser.add_argument("--use-fpn", action="store_true", help="convergence: FPN variant")
    parser.add_argument("--attributes", action="store_true",
                        help="train, convergence: with the attribute head (train_mask_rcnn.py --attributes)")
    parser.add_argument("--attribute-loss-weight", type=float, default=1.0,
                        help="convergence: the trainer's --attribute-loss-weight (with --attributes)")
    parser.add_argument("--format", choices=("2019", "2020"), default="2019",
                        help="convergence: the sample's Kaggle layout (2020 has the attributes worth learning)")
    parser.add_argument("--epochs", type=int, default=11, help="convergence: epochs")
    parser.add_argument("--lr", type=float, default=0.02, help="convergence: learning rate")
    parser.add_argument("--classes", default="main", help="convergence: --classes of the trainer")
    parser.add_argument("--rcnn-num-sample", type=int, default=16, help="convergence: RoIs sampled per image")
    parser.add_argument("--val-interval", type=int, default=2, help="convergence: validate every N epochs")
    parser.add_argument("--lr-decay-epoch", type=int, default=None,
                        help="convergence: the epoch of the 10x decay (default: 3/4 of --epochs)")
    parser.add_argument("--rcnn-pos-ratio", type=float, default=0.25,
                        help="convergence: largest fraction of positives among the sampled RoIs")
    parser.add_argument("--pretrained-weights", default=None, help="convergence: COCO .params to start from")
    parser.add_argument("--seed", type=int, default=233,
                        help="convergence: the trainer's --seed (initial weights, sample order, augmentation)")
    args = parser.parse_args()
    defaults = {"pipeline": (800, 1333), "train": (256, 384), "convergence": (256, 384)}[args.mode]
    args.short = args.short or defaults[0]
    args.max_size = args.max_size or defaults[1]
    os.environ.setdefault("GLUON_FASHION_NO_PROGRESS", "1")
    {"pipeline": bench_pipeline, "train": bench_train, "convergence": bench_convergence}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
