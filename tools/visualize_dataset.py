"""Draw the ground truth of a converted dataset (masks, boxes, class names) over its images, one PNG each.

    python tools/visualize_dataset.py --data_root DIR --split val -n 20 --output DIR
"""
from __future__ import annotations

import argparse
import sys

from gluon_fashion.errors import cli_entry
from gluon_fashion.visualize import render_dataset


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", required=True, help="dataset folder holding annotations/ (run the converter first)")
    parser.add_argument("--split", default="val", choices=["train", "val"], help="which split to draw")
    parser.add_argument("-n", "--num-images", type=int, default=20, help="how many images to draw")
    parser.add_argument("--output", required=True, help="folder for the PNGs (<ImageId>.png)")
    parser.add_argument("--seed", type=int, default=None, help="draw a random choice of images (default: the first ones)")
    parser.add_argument("--overwrite", action="store_true", help="replace PNGs that already exist")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    written = render_dataset(args.data_root, args.split, args.num_images, args.output, seed=args.seed,
                             overwrite=args.overwrite)
    print(f"wrote {len(written)} overlays to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
