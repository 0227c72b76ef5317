"""Write the bundled synthetic sample dataset in the Kaggle iMaterialist (Fashion) layout, or in the format of
another dataset (Fashionpedia, ModaNet, DeepFashion2, a label-map folder).

    python tools/make_sample_dataset.py --out datasets/sample
    python tools/make_sample_dataset.py --out datasets/sample_modanet --format modanet
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from gluon_fashion import synthetic
from gluon_fashion.errors import cli_entry


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="datasets/sample", help="output folder (default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=synthetic.DEFAULT_NUM_TRAIN,
                        help="annotated training images (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=synthetic.DEFAULT_NUM_TEST,
                        help="unannotated test images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files (default: %(default)s)")
    parser.add_argument("--num-val", type=int, default=synthetic.DEFAULT_NUM_VAL,
                        help="annotated validation images of the non-Kaggle formats (default: %(default)s)")
    parser.add_argument("--format", choices=synthetic.FORMATS + synthetic.OTHER_FORMATS, default="2019", dest="fmt",
                        help="Kaggle competition layout: 2019 (ClassId '6_36') or 2020 (AttributesIds column); or "
                             "another dataset's format: fashionpedia, modanet, deepfashion2, labelmap (train and "
                             "val images, no test images)")
    parser.add_argument("--min-size", type=int, default=synthetic.DEFAULT_MIN_SIZE,
                        help="smallest image short side in pixels (default: %(default)s)")
    parser.add_argument("--max-size", type=int, default=synthetic.DEFAULT_MAX_SIZE,
                        help="largest image side in pixels (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a sample this tool wrote before (other non-empty folders are refused)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.fmt in synthetic.OTHER_FORMATS:
        summary = synthetic.make_format_sample(args.out, args.fmt, num_train=args.num_train, num_val=args.num_val,
                                               seed=args.seed, min_size=args.min_size, max_size=args.max_size,
                                               overwrite=args.overwrite, progress=not args.no_progress)
        print(summary.report().replace(" test images", " val images", 1))
        return 0
    summary = synthetic.make_sample_dataset(args.out, num_train=args.num_train, num_test=args.num_test,
                                            seed=args.seed, fmt=args.fmt, min_size=args.min_size,
                                            max_size=args.max_size, overwrite=args.overwrite,
                                            progress=not args.no_progress)
    print(summary.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
