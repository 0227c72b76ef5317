"""Predict with a trained checkpoint: overlays per image, COCO results for tools/evaluate.py.

    python tools/predict.py --weights RUN_best.params --images FILE_OR_FOLDER --output DIR
    python tools/predict.py --weights RUN_best.params --images datasets/imaterialist/val --output DIR \\
        --annotations datasets/imaterialist/annotations/resize_rle_instances_val.json --score-threshold 0.05
    python tools/evaluate.py --annotations (the same file) --results DIR/results.json
    python tools/predict.py --weights A.params B.params --postprocess postprocess.json --tta flip \\
        --images FOLDER --output DIR    # Mask R-CNN: an ensemble, mirrored passes, tuned settings

The checkpoint's .json (written beside the .params by the trainers) gives the architecture, classes and
test-time scale. Mask R-CNN writes <stem>_overlay.png per image; segmentation checkpoints write
<stem>_labels.png (colour-coded, legend in classes.json) and <stem>_overlay.png. Both write results.json
(COCO results; a segmentation model gives one instance per class present, score 1.0) and images.json
(the image id, file name and mask size behind each result); binary segmentation checkpoints write no results.
--postprocess (tools/tune_postprocess.py's file) replaces --score-threshold/--mask-threshold/--max-detections;
give it the --weights and --tta flags it was tuned with.
"""
from __future__ import annotations

import argparse
import logging
import sys

from gluon_fashion.engine import parse_gpus
from gluon_fashion.postprocess import add_inference_flags, inference_options
from gluon_fashion.errors import cli_entry
from gluon_fashion.predict import predict_to_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, nargs="+",
                   help="checkpoint .params (its .json must lie beside it); Mask R-CNN: several for an ensemble")
    p.add_argument("--images", required=True, help="an image file, or a folder of images (not searched recursively)")
    p.add_argument("--output", required=True, help="folder for the overlays, results.json and images.json")
    p.add_argument("--annotations", default=None,
                   help="COCO ground truth of these images (e.g. annotations/resize_rle_instances_val.json): results "
                        "use its image ids and image sizes, ready for tools/evaluate.py")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="Mask R-CNN: keep detections scoring at least this (default: 0.5; use 0.05 for mAP)")
    p.add_argument("--mask-threshold", type=float, default=None,
                   help="Mask R-CNN: mask probability above which a pixel is inside (default: 0.5)")
    p.add_argument("--max-detections", type=int, default=None, help="Mask R-CNN: per image (default: 100)")
    add_inference_flags(p)
    p.add_argument("--gpus", default="", help="GPU ids such as 0 or 0,1 (default: empty = CPU)")
    p.add_argument("--short", type=int, default=None, help="Mask R-CNN: test short side (default: the checkpoint's)")
    p.add_argument("--max-size", type=int, default=None,
                   help="Mask R-CNN: test long-side cap (default: the checkpoint's)")
    p.add_argument("--base-size", type=int, default=None, help="segmentation: long side (default: the checkpoint's)")
    p.add_argument("--crop-size", type=int, default=None, help="segmentation: window size (default: the checkpoint's)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: %(default)s)")
    p.add_argument("--draw-threshold", type=float, default=None,
                   help="Mask R-CNN: overlays draw only detections scoring at least this, results keep all (e.g. "
                        "--score-threshold 0.05 for mAP with --draw-threshold 0.5; default: draw what is kept)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    return p.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    summary = predict_to_folder(
        args.weights, args.images, args.output, contexts=parse_gpus(args.gpus), annotations=args.annotations,
        short=args.short, max_size=args.max_size, base_size=args.base_size, crop_size=args.crop_size,
        alpha=args.alpha, overwrite=args.overwrite, draw_threshold=args.draw_threshold, **inference_options(args))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
