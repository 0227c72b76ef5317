"""Sample predictions for TensorBoard: at every validation both trainers draw a few fixed val images, ground
truth beside prediction, and log them as images (``RunLogger.log_image``, tag ``val_samples/<file name>``).

The same images every time (the first ``SAMPLE_IMAGES`` of the val set), so TensorBoard's step slider shows
one photo's prediction improving over the epochs. Drawing never stops training: a failure is logged as a
warning and the samples of that validation are skipped.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_IMAGES = 3
#: Detections drawn from this score on (the default of tools/predict.py's overlays).
SAMPLE_SCORE_THRESHOLD = 0.5
#: Width of each half of a sample picture, in pixels.
SAMPLE_WIDTH = 400

Sample = Tuple[str, np.ndarray]


def instance_samples(gt, results: Sequence[Dict], images: Iterable[Tuple[int, str]], class_names: Sequence[str],
                     score_threshold: float = SAMPLE_SCORE_THRESHOLD) -> List[Sample]:
    """(file name, ground truth | prediction picture) of each (image id, photo path) in ``images``.

    ``gt`` (pycocotools COCO) and ``results`` (COCO results) may lie on another grid than the photo (the
    512 x 512 resize file): both are moved to the photo's own grid for drawing.
    """
    from ..images import image_size
    from ..report import ReportImage, annotations_on_grid, side_by_side
    from ..visualize import side_by_side as join

    out = []
    for image_id, path in images:
        grid = image_size(path)
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))
        dets = [d for d in results if d["image_id"] == image_id and d["score"] >= score_threshold]
        picture = ReportImage(image_id, Path(path).name, Path(path), grid, annotations_on_grid(anns, grid),
                              annotations_on_grid(dets, grid))
        truth, predicted = side_by_side(picture, class_names, score_threshold, SAMPLE_WIDTH)
        out.append((Path(path).name, join(truth, predicted, ("ground truth", f"prediction (score >= "
                                                                            f"{score_threshold})"))))
    return out


def semantic_samples(images: Iterable[Tuple[str, np.ndarray, np.ndarray]], predict: Callable[[np.ndarray], np.ndarray],
                     num_labels: int) -> List[Sample]:
    """(name, ground truth | prediction picture) of each (name, RGB photo, label map) in ``images``;
    ``predict`` maps a photo to its predicted label map on the photo's grid."""
    import cv2

    from ..visualize import overlay_semantic
    from ..visualize import side_by_side as join

    out = []
    for name, image, label in images:
        truth = overlay_semantic(image, label, num_labels)
        predicted = overlay_semantic(image, predict(image), num_labels)
        scale = min(1.0, SAMPLE_WIDTH / image.shape[1])
        if scale < 1.0:
            size = (SAMPLE_WIDTH, max(1, round(image.shape[0] * scale)))
            truth = cv2.resize(truth, size, interpolation=cv2.INTER_AREA)
            predicted = cv2.resize(predicted, size, interpolation=cv2.INTER_AREA)
        out.append((name, join(truth, predicted)))
    return out


def log_samples(logger, make: Callable[[], List[Sample]], step: int) -> int:
    """Draw the samples with ``make`` and log each as TensorBoard image ``val_samples/<name>``; how many.

    Only the main worker draws. Any failure is a warning: sample pictures are never worth a lost run.
    """
    if not getattr(logger, "is_main", False):
        return 0
    try:
        samples = make()
        for name, picture in samples:
            logger.log_image(f"val_samples/{name}", picture, step)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("sample predictions for TensorBoard skipped: %s: %s", type(exc).__name__, exc)
        return 0
    return len(samples)
