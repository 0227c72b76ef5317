#!/usr/bin/env python
"""Convert one split of DeepFashion2 to the project's layout (COCO JSON with compressed RLE masks, train/ or val/).

    python tools/convert_deepfashion2_to_coco.py --annotations datasets/deepfashion2/train/annos \\
        --images datasets/deepfashion2/train/image --data_root datasets/deepfashion2_coco --split train
    python tools/convert_deepfashion2_to_coco.py --annotations datasets/deepfashion2/validation/annos \\
        --images datasets/deepfashion2/validation/image --data_root datasets/deepfashion2_coco --split val

Writes <data_root>/annotations/rle_instances_<split>.json (val: also resize_rle_instances_val.json),
conversion_report_<split>.json and <data_root>/<split>/ (hard links to the images), replacing earlier outputs
of that split as one set or not at all. See gluon_fashion/converters/coco_sources.py.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from gluon_fashion.converters.coco_sources import main as convert_main
from gluon_fashion.errors import cli_entry


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    return convert_main("deepfashion2", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
