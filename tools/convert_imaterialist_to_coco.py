#!/usr/bin/env python
"""Convert Kaggle iMaterialist (Fashion) train.csv to COCO instance JSON with RLE masks, and split off val.

    python tools/convert_imaterialist_to_coco.py --data_root datasets/imaterialist

Writes <data_root>/annotations/{rle_instances_train,rle_instances_val,resize_rle_instances_val,
conversion_report}.json and <data_root>/val/ (hard links to the val images). See gluon_fashion/convert.py.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from gluon_fashion.convert import DEFAULT_VAL_NUM, convert_imaterialist
from gluon_fashion.errors import cli_entry


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default="datasets/imaterialist",
                        help="Kaggle layout: train.csv, label_descriptions.json, train/ (default: %(default)s)")
    parser.add_argument("--val_num", type=int, default=DEFAULT_VAL_NUM,
                        help="images held out for validation (default: %(default)s; cut to 20%% of the usable "
                             "images when the dataset is smaller, with a note)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default: %(default)s)")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="worker processes (default: number of CPUs); the output does not depend on it")
    parser.add_argument("--copy_val", action="store_true",
                        help="copy the val images into val/ instead of hard-linking them")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad row (error naming the line) instead of skipping it")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = convert_imaterialist(args.data_root, val_num=args.val_num, seed=args.seed,
                                  num_workers=args.num_workers, copy_val=args.copy_val,
                                  overwrite=args.overwrite, strict=args.strict, progress=not args.no_progress)
    print(result.summary_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
