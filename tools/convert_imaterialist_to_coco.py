#!/usr/bin/env python
"""Convert Kaggle iMaterialist (Fashion) train.csv to COCO instance JSON with RLE masks, and split off val.

    python tools/convert_imaterialist_to_coco.py --data_root datasets/imaterialist

Writes <data_root>/annotations/{rle_instances_train,rle_instances_val,resize_rle_instances_val,
conversion_report}.json and <data_root>/val/ (hard links to the val images), replacing earlier outputs as one
set or not at all. See gluon_fashion/convert.py.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from gluon_fashion.convert import DEFAULT_VAL_NUM, MAX_VAL_FRACTION, convert_imaterialist
from gluon_fashion.errors import cli_entry


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default="datasets/imaterialist",
                        help="Kaggle layout: train.csv, label_descriptions.json, train/ (default: %(default)s)")
    parser.add_argument("--val_num", type=int, default=None,
                        help=f"images held out for validation, honoured as given (an error if it leaves none for "
                             f"training); default: {DEFAULT_VAL_NUM}, cut to {MAX_VAL_FRACTION * 100:.0f}%% of the "
                             f"usable images on smaller datasets, with a note")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default: %(default)s)")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="worker processes (default: number of CPUs); the output does not depend on it")
    parser.add_argument("--copy_val", action="store_true",
                        help="copy the val images into val/ instead of hard-linking them")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (all of them, val/ too)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad row (error naming the line) instead of skipping it")
    parser.add_argument("--verify_images", action="store_true",
                        help="also decode every photo at 1/8 scale and skip those libjpeg reports corrupt; catches "
                             "damage the end-of-image check misses, at the cost of a decode per photo (slow)")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = convert_imaterialist(args.data_root, val_num=args.val_num, seed=args.seed,
                                  num_workers=args.num_workers, copy_val=args.copy_val,
                                  overwrite=args.overwrite, strict=args.strict, progress=not args.no_progress,
                                  verify_images=args.verify_images)
    print(result.summary_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
