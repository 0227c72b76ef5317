"""Evaluate a segmentation checkpoint at each image's own resolution, with optional test-time augmentation,
or write colour-coded predictions and overlays for a folder of photos (tools/predict.py's outputs, with TTA).

    python tools/eval_segmentation.py --weights train_logs/imaterialist/deeplabv3/res101/deeplabv3_resnet101_best.params \\
        --dataset-root datasets/imaterialist --split val --flip --scales 0.75,1.0,1.25
    python tools/eval_segmentation.py --weights CKPT.params --images photos/ --output predictions/
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from gluon_fashion.engine import parse_gpus
from gluon_fashion.engine.flags import default_gpus
from gluon_fashion.errors import UserError, cli_entry
from gluon_fashion.predict import predict_to_folder
from gluon_fashion.evaluation.segmentation import evaluate_checkpoint, parse_scales


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint .params (its .json must lie beside it)")
    p.add_argument("--dataset-root", default="datasets/imaterialist", help="dataset folder (default: %(default)s)")
    p.add_argument("--split", default="val", help="split to evaluate (default: %(default)s)")
    p.add_argument("--images", default=None, help="instead of evaluating: segment every photo in this folder")
    p.add_argument("--output", default=None,
                   help="with --images: folder for <name>_labels.png, <name>_overlay.png, classes.json and "
                        "results.json (required); otherwise: folder for metrics_<split>.json")
    p.add_argument("--overwrite", action="store_true", help="replace existing prediction images")
    p.add_argument("--scales", default="1.0", help="test scales, e.g. 0.75,1.0,1.25 (default: %(default)s)")
    p.add_argument("--flip", action="store_true", help="also predict the mirror image and average")
    p.add_argument("--base-size", type=int, default=None, help="long side at scale 1 (default: the checkpoint's)")
    p.add_argument("--crop-size", type=int, default=None, help="sliding-window size (default: the checkpoint's)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--ngpus", type=int, default=1 if default_gpus(all_gpus=False) else 0,
                   help="1 = run on GPU 0, 0 = CPU (default: %(default)s)")
    return p.parse_args(argv)


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    ctx = parse_gpus("0" if args.ngpus > 0 else "", flag="--ngpus")[0]
    scales = parse_scales(args.scales)
    if args.images:
        if not args.output:
            raise UserError("--images needs --output DIR for the prediction images")
        print(predict_to_folder(args.weights, args.images, args.output, contexts=[ctx], base_size=args.base_size,
                                crop_size=args.crop_size, scales=scales, flip=args.flip, alpha=args.alpha,
                                overwrite=args.overwrite))
    else:
        evaluate_checkpoint(args.weights, args.dataset_root, split=args.split, scales=scales, flip=args.flip, ctx=ctx,
                            base_size=args.base_size, crop_size=args.crop_size, max_images=args.max_images,
                            output=args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
