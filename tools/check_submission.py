"""Check a Kaggle submission CSV before uploading it: prints every violation (one line each) and exits 1 if any.

    python tools/check_submission.py submission.csv [--sample sample_submission.csv] [--format auto|2019|2020]
"""
from __future__ import annotations

import argparse
import sys

from gluon_fashion.errors import cli_entry
from gluon_fashion.submission import check_submission_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", help="the submission CSV to check")
    parser.add_argument("--sample", help="the competition's sample_submission.csv: every ImageId in it must appear")
    parser.add_argument("--format", default="auto", choices=["auto", "2019", "2020"],
                        help="submission format (auto: read it from the header)")
    parser.add_argument("--images", help="2020 format: folder of the test images, to bound masks by each image's "
                                         "exact grid instead of 1024 x 1024")
    parser.add_argument("--max-lines", type=int, default=None, help="print at most this many violations")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    ok = check_submission_file(args.submission, sample_csv=args.sample, fmt=args.format,
                               image_dir=args.images, max_lines=args.max_lines)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
