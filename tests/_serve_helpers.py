"""Helpers of the server, report and browser tests: small random checkpoints saved the way the trainers save
them, a photo-like test picture, and tools/serve.py started on 127.0.0.1.

A random Mask R-CNN (ResNet-18) detects plenty of boxes at a low score threshold, which is all these tests
need: the plumbing is under test, not accuracy.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import mxnet as mx
import numpy as np


from gluon_fashion.engine.checkpoint import CheckpointManager
from gluon_fashion.labels import ClassSet
from gluon_fashion.models.mask_rcnn import build_mask_rcnn, checkpoint_meta
from gluon_fashion.models.segmentation import build_segmentation_model
from gluon_fashion.models.segmentation import checkpoint_meta as segmentation_meta
from gluon_fashion.serving.process import free_loopback_port, start_server_process

ROOT = Path(__file__).resolve().parents[1]
MASK_RCNN_MODEL = "mask_rcnn_resnet18_v1b_coco"
MASK_RCNN_CLASSES = list(range(13))
SHORT, MAX_SIZE = 256, 320
SEG_CLASSES = ClassSet((0, 1, 6))


def tiny_mask_rcnn(folder: Path, seed: int = 0) -> str:
    """A random Mask R-CNN checkpoint under ``folder``; the path of its ``.params``."""
    mx.random.seed(seed)
    net = build_mask_rcnn(MASK_RCNN_MODEL, MASK_RCNN_CLASSES, pretrained=False, rpn_test_pre_nms=256,
                          rpn_test_post_nms=32)
    net(mx.nd.zeros((1, 3, SHORT, SHORT)))  # deferred shapes are known after a forward, as after training
    meta = checkpoint_meta(MASK_RCNN_MODEL, MASK_RCNN_CLASSES, SHORT, MAX_SIZE, net.limits)
    manager = CheckpointManager(str(Path(folder) / "mask_rcnn"), meta, metric_name="segm_mAP")
    assert manager.update_best(net, epoch=0, iteration=1, metric=0.0)
    return manager.best_path


def tiny_segmentation(folder: Path, seed: int = 1) -> str:
    """A random FCN checkpoint for categories 0, 1, 6 under ``folder``; the path of its ``.params``."""
    mx.random.seed(seed)
    net, build_kwargs = build_segmentation_model("fcn", SEG_CLASSES.num_classes, [mx.cpu()], backbone="resnet50",
                                                 aux=False, base_size=96, crop_size=96, pretrained=False)
    meta = segmentation_meta(build_kwargs, SEG_CLASSES)
    manager = CheckpointManager(str(Path(folder) / "fcn_resnet50"), meta, metric_name="mIoU")
    assert manager.update_best(net, epoch=0, iteration=1, metric=0.0)
    return manager.best_path


def photo_bytes(height: int = 120, width: int = 160, seed: int = 0, ext: str = ".jpg") -> bytes:
    """A photo-like picture (coloured ellipses on a gradient) encoded as ``ext``."""
    rng = np.random.RandomState(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = np.linspace(40, 200, width, dtype=np.uint8)[None, :, None]
    for _ in range(4):
        center = (int(rng.randint(width)), int(rng.randint(height)))
        axes = (int(rng.randint(10, width // 2)), int(rng.randint(10, height // 2)))
        cv2.ellipse(image, center, axes, float(rng.randint(180)), 0, 360, [int(v) for v in rng.randint(255, size=3)], -1)
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


#: tools/serve.py on 127.0.0.1, returned once /healthz answers, and a free port for it.
start_server = start_server_process
free_port = free_loopback_port
