"""Draw the ground truth of a converted dataset (masks, boxes, class names) over its images, one PNG each.

    python tools/visualize_dataset.py --data_root DIR --split val -n 20 --output DIR
    python tools/visualize_dataset.py --data_root DIR --images ID,ID --output DIR   # these photos, any split

``--images`` is how to check the converter's repairs by eye: the ImageIds of ``swapped_size`` in
annotations/conversion_report.json (the converter's summary prints the command).
"""
from __future__ import annotations

import argparse
import sys

from gluon_fashion.errors import cli_entry
from gluon_fashion.visualize import render_dataset, render_images


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", required=True, help="dataset folder holding annotations/ (run the converter first)")
    parser.add_argument("--split", default=None, choices=["train", "val"],
                        help="which split to draw (default: val; with --images: look in val, then train)")
    parser.add_argument("-n", "--num-images", type=int, default=20, help="how many images to draw")
    parser.add_argument("--images", default=None, metavar="ID,ID,...",
                        help="draw these ImageIds (with or without .jpg) instead of the first -n of a split")
    parser.add_argument("--output", required=True, help="folder for the PNGs (<ImageId>.png)")
    parser.add_argument("--seed", type=int, default=None, help="draw a random choice of images (default: the first ones)")
    parser.add_argument("--overwrite", action="store_true", help="replace PNGs that already exist")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.images is not None:
        splits = (args.split,) if args.split else ("val", "train")
        written = render_images(args.data_root, args.images.split(","), args.output, splits=splits,
                                overwrite=args.overwrite)
    else:
        written = render_dataset(args.data_root, args.split or "val", args.num_images, args.output, seed=args.seed,
                                 overwrite=args.overwrite)
    print(f"wrote {len(written)} overlays to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
