"""Train FCN / PSPNet / DeepLabV3 / DeepLabV3+ on the main apparel classes (flags follow GluonCV's
scripts/segmentation/train.py; ``--help`` lists them).

    python train_segmentation.py --model deeplabv3 --dataset imaterialist --model-zoo deeplab_resnet101_coco \\
        --aux --checkname res101 --epochs 30 --lr 0.001 --ngpus 1 --workers 2 --batch-size 2 --test-batch-size 2

Outputs go to train_logs/<dataset>/<model>/<checkname>/ (relative to the working directory).
"""
from __future__ import annotations

import sys
from typing import List, Optional

from gluon_fashion.errors import cli_entry
from gluon_fashion.trainers.segmentation import build_parser, train


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    train(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
