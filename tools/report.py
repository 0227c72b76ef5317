"""A validation report in one self-contained HTML file: metrics, per-class AP and PR curves, class confusion,
and the worst and best images with ground truth beside prediction.

    python tools/report.py --weights RUN_best.params --dataset-root datasets/sample --output report.html
    python tools/report.py --annotations GT.json --results RESULTS.json --images IMAGE_DIR --output report.html

From a checkpoint (Mask R-CNN or segmentation), the split's images are predicted exactly as tools/predict.py
does and scored on the annotation file the trainers validate on (annotations/resize_rle_instances_val.json
by default). From a results file (tools/predict.py --annotations's results.json), the pictures are drawn on
the annotation grid. Images are embedded: the file opens offline in any browser.
"""
from __future__ import annotations

import argparse
import logging
import sys

from gluon_fashion.engine import parse_gpus
from gluon_fashion.errors import UserError, cli_entry
from gluon_fashion.models.mask_rcnn import add_test_budget_flags, test_budgets_from
from gluon_fashion.report import (DEFAULT_DRAW_THRESHOLD, DEFAULT_EXAMPLES, from_checkpoint, from_results,
                                  write_report)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint .params (its .json beside it); needs --dataset-root")
    p.add_argument("--dataset-root", help="converted dataset (annotations/ and the split's image folder)")
    p.add_argument("--split", default="val", help="image folder and annotation split (default: %(default)s)")
    p.add_argument("--annotations", help="ground-truth COCO JSON (default with --weights: the split's resize file)")
    p.add_argument("--results", help="COCO results JSON (instead of --weights); needs --annotations and --images")
    p.add_argument("--images", help="with --results: the folder holding the annotated images")
    p.add_argument("--output", required=True, help="the HTML file to write")
    p.add_argument("--num-examples", type=int, default=DEFAULT_EXAMPLES,
                   help="worst and best images shown, each (default: %(default)s)")
    p.add_argument("--draw-threshold", type=float, default=DEFAULT_DRAW_THRESHOLD,
                   help="detections drawn and counted in the confusion from this score (default: %(default)s)")
    p.add_argument("--score-threshold", type=float, default=0.05,
                   help="with --weights: lowest score kept for the metrics (default: %(default)s, as for mAP)")
    p.add_argument("--max-images", type=int, default=None, help="with --weights: the first N images only")
    add_test_budget_flags(p)
    p.add_argument("--gpus", default="", help="GPU ids such as 0 (default: empty = CPU)")
    p.add_argument("--title", default="", help="heading of the report")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return p.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if bool(args.weights) == bool(args.results):
        raise UserError("give either --weights (with --dataset-root) or --results (with --annotations and --images)")
    if args.weights:
        if not args.dataset_root:
            raise UserError("--weights needs --dataset-root")
        data = from_checkpoint(args.weights, args.dataset_root, args.split, args.annotations, parse_gpus(args.gpus),
                               max_images=args.max_images, score_threshold=args.score_threshold,
                               test_budgets=test_budgets_from(args))
    else:
        if not args.annotations or not args.images:
            raise UserError("--results needs --annotations and --images")
        data = from_results(args.annotations, args.results, args.images)
    summary = write_report(data, args.output, args.num_examples, args.draw_threshold, args.title or
                           f"Validation report: {args.weights or args.results}", overwrite=args.overwrite)
    print(f"report written to {summary['output']}: {summary['images']} images, segm mAP "
          f"{100 * summary['segm_mAP']:.1f}, competition score {100 * summary['kaggle_score']:.1f}"
          + (f", mIoU {100 * summary['mIoU']:.1f}" if summary.get("mIoU") is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
