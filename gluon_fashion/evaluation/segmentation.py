"""Semantic segmentation metrics: pixel accuracy and per-class IoU from an accumulated confusion matrix, and
scoring a network or a checkpoint with them (the body of tools/eval_segmentation.py).

MXNet and the model code are imported inside the functions that run a network, so the metric alone stays light.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import UserError
from ..fileio import atomic_write_json
from ..labels import ClassSet


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


def evaluate_batches(net, loader, contexts: Sequence, num_classes: int,
                     desc: str = "validation") -> ConfusionMatrix:
    """Confusion matrix of ``net`` over a loader of (normalised images, labels) batches."""
    from mxnet import gluon

    from ..engine.progress import progress
    from ..models.segmentation import forward_logits
    from ..transforms.segmentation import IGNORE_LABEL

    conf = ConfusionMatrix(num_classes, ignore_index=IGNORE_LABEL)
    for data, label in progress(loader, total=len(loader), desc=desc):
        used = list(contexts)[:data.shape[0]]
        datas = gluon.utils.split_and_load(data, used, even_split=False)
        labels = gluon.utils.split_and_load(label, used, even_split=False)
        for x, y in zip(datas, labels):
            pred = forward_logits(net, x).argmax(axis=1)
            conf.update(pred.asnumpy().astype(np.int32), y.asnumpy().astype(np.int32))
    return conf


def parse_scales(text: str) -> List[float]:
    """'0.75,1.0,1.25' -> [0.75, 1.0, 1.25] (UserError naming --scales otherwise)."""
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--scales {text!r}: expected comma-separated numbers such as 0.75,1.0,1.25") from None
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise UserError(f"--scales {text!r}: expected positive numbers such as 0.75,1.0,1.25")
    return scales


def evaluate_checkpoint(weights: str, dataset_root: str, split: str = "val", scales: Sequence[float] = (1.0,),
                        flip: bool = False, ctx=None, base_size: Optional[int] = None,
                        crop_size: Optional[int] = None, max_images: Optional[int] = None,
                        output: Optional[str] = None) -> Dict:
    """pixAcc/mIoU of a checkpoint on a split, every image predicted and scored at its own resolution.

    Prints the per-class table; with ``output`` also writes ``<output>/metrics_<split>.json``. The network
    and its test scale (``base_size``/``crop_size`` override the checkpoint's) come from ``predict.load_model``.
    """
    import mxnet as mx

    from ..data.segmentation import get_dataset
    from ..engine.progress import progress
    from ..models.segmentation import predict_label_map
    from ..predict import load_model
    from ..transforms.segmentation import IGNORE_LABEL

    ctx = ctx or mx.cpu()
    model = load_model(weights, [ctx], base_size=base_size, crop_size=crop_size)
    if model.task != "segmentation":
        raise UserError(f"--weights {weights}: a {model.task!r} checkpoint, not a segmentation one")
    net, meta = model.net, model.meta
    class_set = ClassSet.from_dict(meta["classes"])
    base, crop = model.scale["base_size"], model.scale["crop_size"]
    dataset = get_dataset(meta.get("dataset") or "imaterialist", root=dataset_root, split=split,
                          class_set=class_set)
    count = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    conf = ConfusionMatrix(class_set.num_classes, ignore_index=IGNORE_LABEL)
    started = time.perf_counter()
    for index in progress(range(count), total=count, desc=f"evaluating {split}", unit="img"):
        image, label = dataset[index]
        pred = predict_label_map(net, image, ctx, scales=scales, flip=flip, base_size=base, crop_size=crop)
        conf.update(pred, label)
    result = conf.as_dict(class_set.class_names)
    result.update({"weights": str(weights), "split": split, "images": count, "pixels": int(conf.matrix.sum()), "scales": list(scales), "flip": flip,
                   "base_size": base, "crop_size": crop, "seconds": round(time.perf_counter() - started, 2)})
    print(conf.table(class_set.class_names))
    if output:
        path = Path(output) / f"metrics_{split}.json"
        atomic_write_json(path, result, indent=2)
        print(f"metrics written to {path}")
    return result
