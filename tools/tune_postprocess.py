"""Tune Mask R-CNN post-processing on the competition metric over the val images, for write_submission.py.

    python tools/tune_postprocess.py --weights RUN_best.params --dataset-root datasets/imaterialist \\
        --output postprocess.json [--tta flip] [--tta-scales 600,800,1000] [--gpus 0,1]
    python tools/write_submission.py --weights RUN_best.params --postprocess postprocess.json ...

The val images (``<dataset-root>/val``, scored on the 512 x 512 ``resize_rle_instances_val.json``, as the
competition scored) are predicted once, with every pass of the test-time augmentation and every checkpoint
of the ensemble merged; then the score threshold, mask threshold, detections per image, NMS within and across
categories and minimum mask area (and with --per-class-thresholds a threshold per category) are searched
for the best competition score. Tuned on one half of the images and scored on the other (default vs tuned,
printed), then refit on all of them for the written file, which also records the checkpoints' sha1 and the
scores. Pass write_submission.py / predict.py the same --weights and --tta flags with --postprocess.
"""
from __future__ import annotations

import argparse
import logging
import sys

from gluon_fashion.engine import parse_gpus
from gluon_fashion.errors import cli_entry
from gluon_fashion.models.mask_rcnn import test_budgets_from
from gluon_fashion.postprocess import SearchSpace, Tta, add_inference_flags, tune_postprocess


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, nargs="+",
                   help="Mask R-CNN checkpoint .params (its .json beside it); several: an ensemble of one class set")
    p.add_argument("--dataset-root", required=True, help="the converted dataset (val/ and annotations/)")
    p.add_argument("--output", default="postprocess.json", help="settings file to write (default: %(default)s)")
    p.add_argument("--gpus", default="", help="GPU ids such as 0 or 0,1 (default: empty = CPU)")
    add_inference_flags(p, postprocess=False)
    p.add_argument("--per-class-thresholds", action="store_true", help="also search a score threshold per category")
    p.add_argument("--annotations", default=None,
                   help="val ground truth (default: <dataset-root>/annotations/resize_rle_instances_val.json)")
    p.add_argument("--images", default=None, help="val image folder (default: <dataset-root>/val)")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N val images (by id)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split into tuning and held-out halves")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return p.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    tune_postprocess(args.weights, args.dataset_root, args.output, contexts=parse_gpus(args.gpus),
                     tta=Tta.from_flags(args.tta, args.tta_scales), space=SearchSpace(per_class=args.per_class_thresholds),
                     annotations=args.annotations, images=args.images, seed=args.seed, max_images=args.max_images,
                     overwrite=args.overwrite, test_budgets=test_budgets_from(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
