#!/usr/bin/env python
"""Convert one split of Fashionpedia to the project's layout (COCO JSON with compressed RLE masks, train/ or val/).

    python tools/convert_fashionpedia_to_coco.py --annotations datasets/fashionpedia/instances_attributes_train2020.json \\
        --images datasets/fashionpedia/train --data_root datasets/fashionpedia_coco --split train
    python tools/convert_fashionpedia_to_coco.py --annotations datasets/fashionpedia/instances_attributes_val2020.json \\
        --images datasets/fashionpedia/test --data_root datasets/fashionpedia_coco --split val

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
    return convert_main("fashionpedia", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
