"""Write a Kaggle iMaterialist (Fashion) submission CSV from a trained checkpoint, or check any submission.

    python tools/write_submission.py --weights RUN_best.params --test-root datasets/imaterialist/test \\
        --sample-csv datasets/imaterialist/sample_submission.csv --output submission.csv
    python tools/write_submission.py --weights A.params B.params --postprocess postprocess.json --tta flip \\
        --test-root ... --sample-csv ... --output submission.csv    # tuned by tools/tune_postprocess.py
    python tools/write_submission.py --check submission.csv --sample-csv datasets/imaterialist/sample_submission.csv

Images are predicted at the scale the checkpoint was validated at (recorded in its .json). 2019 format:
header ImageId,EncodedPixels,ClassId, masks in Kaggle RLE on a 512 x 512 grid, overlaps given to the
higher score, and every sample ImageId present ('1 1' where nothing was detected). --format 2020 writes
the 2020 layout instead. A segmentation (DeepLab) checkpoint gives one instance per class present.
The written file is re-checked; --check prints every violation of an existing file. Exit status: 0 clean,
1 violations found, 2 bad input.
"""
from __future__ import annotations

import argparse
import logging
import sys

from gluon_fashion.engine import parse_gpus
from gluon_fashion.postprocess import add_inference_flags, inference_options
from gluon_fashion.errors import UserError, cli_entry
from gluon_fashion.predict import write_submission_from_checkpoint
from gluon_fashion.submission import check_submission_file, format_violations


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+",
                   help="checkpoint .params (its .json must lie beside it); Mask R-CNN: several for an ensemble")
    p.add_argument("--test-root", help="folder of the test images (<ImageId>.jpg)")
    p.add_argument("--sample-csv", help="the competition's sample_submission.csv (every ImageId in it gets rows)")
    p.add_argument("--output", help="the submission CSV to write")
    p.add_argument("--format", default=None, choices=["2019", "2020"],
                   help="submission format (default: 2019 when writing, read from the header with --check)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="keep instances scoring at least this (default: 0.5)")
    p.add_argument("--mask-threshold", type=float, default=None,
                   help="Mask R-CNN mask probability above which a pixel is inside (default: 0.5)")
    p.add_argument("--max-detections", type=int, default=None,
                   help="per image, before overlap removal (default: 100)")
    p.add_argument("--attribute-threshold", type=float, default=None,
                   help="a checkpoint with attributes (train_mask_rcnn.py --attributes): the 2020 AttributesIds of "
                        "an instance are its attributes of probability at least this (default: the one "
                        "tools/tune_postprocess.py tuned, in --postprocess, else 0.5)")
    add_inference_flags(p)
    p.add_argument("--gpus", default="", help="GPU ids such as 0 or 0,1 (default: empty = CPU)")
    p.add_argument("--allow-missing", action="store_true",
                   help="write '1 1' rows (with a warning) for sample ImageIds whose image is not in --test-root")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--check", metavar="FILE", help="only check this submission CSV and print every violation")
    return p.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if args.check:
        image_dir = args.test_root if args.format == "2020" else None  # 2020 grids depend on image sizes
        ok = check_submission_file(args.check, sample_csv=args.sample_csv, fmt=args.format or "auto",
                                   image_dir=image_dir)
        return 0 if ok else 1
    missing = [flag for flag, value in (("--weights", args.weights), ("--test-root", args.test_root),
                                        ("--sample-csv", args.sample_csv), ("--output", args.output)) if not value]
    if missing:
        raise UserError(f"{', '.join(missing)} required to write a submission (or give --check FILE)")
    result = write_submission_from_checkpoint(
        args.weights, args.test_root, args.sample_csv, args.output, contexts=parse_gpus(args.gpus),
        fmt=args.format or "2019", allow_missing=args.allow_missing, overwrite=args.overwrite,
        attribute_threshold=args.attribute_threshold,
        **inference_options(args))
    print(result)
    if result.violations:
        print(format_violations(result.violations, limit=20))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
