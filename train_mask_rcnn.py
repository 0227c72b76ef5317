"""Fine-tune a COCO-pretrained GluonCV Mask R-CNN on iMaterialist (Fashion) 2019 (flags as GluonCV's
scripts/instance/mask_rcnn/train_mask_rcnn.py).

    python train_mask_rcnn.py --gpus 0,1,2,3 --batch-size 8 --use-fpn --save-prefix train_logs/fpn50/ --val-interval 1

Small CPU check on the sample dataset (random initialisation, small images and RoI budget):

    python train_mask_rcnn.py --dataset-root datasets/sample --network resnet18_v1b --no-pretrained \\
        --short 256 --max-size 384 --rpn-train-pre-nms 300 --rpn-train-post-nms 100 --rcnn-num-sample 32 \\
        --epochs 2 --lr 0.01 --lr-warmup 10 --save-prefix train_logs/cpu/
"""
from __future__ import annotations

import sys
from typing import List, Optional

from gluon_fashion.errors import cli_entry
from gluon_fashion.trainers.mask_rcnn import build_parser, train


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    train(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
