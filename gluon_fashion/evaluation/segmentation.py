"""Semantic segmentation metrics from an accumulated confusion matrix: pixel accuracy and per-class IoU."""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np


class ConfusionMatrix:
    """Pixel counts ``matrix[label, pred]`` accumulated over batches; labels equal to ``ignore_index`` are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = -1):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one batch of predicted and true class maps of the same shape.

        Integer arrays, or float arrays of whole numbers (MXNet's argmax output); NDArrays are converted.
        """
        pred, label = _class_ids(pred, "pred"), _class_ids(label, "label")
        if pred.shape != label.shape:
            raise ValueError(f"pred shape {pred.shape} differs from label shape {label.shape}")
        pred, label = pred.ravel(), label.ravel()
        valid = label != self.ignore_index
        pred, label = pred[valid], label[valid]
        n = self.num_classes
        for name, values in (("label", label), ("pred", pred)):
            if values.size and (values.min() < 0 or values.max() >= n):
                bad = values[(values < 0) | (values >= n)][0]
                raise ValueError(f"{name} value {bad} outside [0, {n}) (ignore_index is {self.ignore_index})")
        self.matrix += np.bincount(label * n + pred, minlength=n * n).reshape(n, n)

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels (NaN before any pixel is counted)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else math.nan

    def iou_per_class(self) -> np.ndarray:
        """IoU of each class; NaN for classes absent from both labels and predictions."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def mean_iou(self) -> float:
        """Mean IoU over the classes present in labels or predictions."""
        iou = self.iou_per_class()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan

    def _names(self, class_names: Optional[Sequence[str]]) -> Sequence[str]:
        if class_names is None:
            return [str(i) for i in range(self.num_classes)]
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        return class_names

    def as_dict(self, class_names: Optional[Sequence[str]] = None) -> Dict:
        """JSON-ready: pixAcc, mIoU and {class name: IoU or None}."""
        names = self._names(class_names)
        return {
            "pixAcc": _json_float(self.pixel_accuracy()),
            "mIoU": _json_float(self.mean_iou()),
            "iou_per_class": {name: _json_float(v) for name, v in zip(names, self.iou_per_class())},
        }

    def table(self, class_names: Optional[Sequence[str]] = None) -> str:
        """Aligned per-class table: index, name, #label pixels, IoU in % ('-' when the class never occurs)."""
        names = self._names(class_names)
        iou = self.iou_per_class()
        pixels = self.matrix.sum(axis=1)
        rows = [[str(i), names[i], str(int(pixels[i])), "-" if np.isnan(iou[i]) else f"{100 * iou[i]:.1f}"]
                for i in range(self.num_classes)]
        header = ["id", "class", "pixels", "IoU"]
        miou, acc = self.mean_iou(), self.pixel_accuracy()
        footer = [["", "mIoU", "", "-" if math.isnan(miou) else f"{100 * miou:.1f}"],
                  ["", "pixAcc", "", "-" if math.isnan(acc) else f"{100 * acc:.1f}"]]
        widths = [max(len(r[i]) for r in [header] + rows + footer) for i in range(4)]

        def render(cells):
            return "  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(render(header))
        return "\n".join([render(header), rule] + [render(r) for r in rows] + [rule] + [render(r) for r in footer])


def _class_ids(values, name: str) -> np.ndarray:
    if hasattr(values, "asnumpy"):  # mx.nd.NDArray
        values = values.asnumpy()
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64, copy=False)
    if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
        return values.astype(np.int64)
    raise ValueError(f"{name} must hold class ids (integers), got dtype {values.dtype}"
                     + (" with fractional values" if np.issubdtype(values.dtype, np.floating) else ""))


def _json_float(value: float):
    value = float(value)
    return None if math.isnan(value) else value
