"""Score COCO results (boxes + masks) against ground truth: mAP, per-class AP, the competition metric.

    python tools/evaluate.py --annotations GT.json --results RESULTS.json [--json-out METRICS.json] [--plot OUT.png]
"""
from __future__ import annotations

import argparse
import sys

from gluon_fashion.errors import cli_entry
from gluon_fashion.evaluation import evaluate_files
from gluon_fashion.labels import parse_class_set


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", required=True, help="ground-truth COCO JSON (e.g. annotations/rle_instances_val.json)")
    parser.add_argument("--results", required=True, help="COCO results JSON: [{image_id, category_id, bbox, score, segmentation}]")
    parser.add_argument("--json-out", help="write the metrics here (bbox_mAP, segm_mAP, kaggle_score, per_class, ...)")
    parser.add_argument("--plot", help="write per-class AP bars and PR curves to this PNG")
    parser.add_argument("--no-kaggle", action="store_true", help="skip the competition metric")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="competition metric only: ignore predictions scoring below this (default 0: all)")
    parser.add_argument("--attribute-threshold", type=float, default=None,
                        help="results with attributes: a detection has an attribute when its probability "
                             "(attribute_scores) is at least this (default: the attribute_ids as written)")
    parser.add_argument("--tune-attribute-threshold", action="store_true",
                        help="results with attribute_scores (predict.py on val with an attribute checkpoint): find "
                             "the attribute threshold of the best Fashionpedia AP, for write_submission.py "
                             "--attribute-threshold")
    parser.add_argument("--classes", default=None,
                        help="score only these categories ('main', 'all' or ids such as 0,1,6-8), as the trainers' "
                             "validation scores a model on its --classes (default: every ground-truth category)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --json-out / --plot files")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    evaluate_files(args.annotations, args.results, json_out=args.json_out, plot=args.plot,
                   kaggle=not args.no_kaggle, score_threshold=args.score_threshold, overwrite=args.overwrite,
                   attribute_threshold=args.attribute_threshold,
                   tune_attribute_threshold=args.tune_attribute_threshold,
                   categories=parse_class_set(args.classes).category_ids if args.classes else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
