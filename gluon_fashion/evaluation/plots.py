"""Plots of COCO evaluation results: per-class AP bars and precision-recall curves."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..fileio import atomic_save
from ..labels import short_name
from ..visualize import category_colors
from .coco import CocoMetrics

_TYPE_STYLE = {"segm": dict(color="#1f5fbf", label="mask"), "bbox": dict(color="#e08a1e", label="box")}


def plot_coco_metrics(metrics: CocoMetrics, out_png: Union[str, Path], title: str = "") -> None:
    """One PNG: AP@[.5:.95] per class (mask and box side by side) above the PR curves at IoU 0.50 and 0.75.

    The PR panels draw each class thinly in its class colour (mask results if evaluated, else box) and the
    mean over classes in bold, for masks solid and for boxes dashed. Written atomically.
    """
    iou_types = metrics.iou_types
    if not iou_types:
        raise ValueError("metrics hold no evaluated IoU type")
    fig = Figure(figsize=(15, 10), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.1, 1])
    _ap_bars(fig.add_subplot(grid[0, :]), metrics)
    for col, iou in enumerate((0.5, 0.75)):
        _pr_panel(fig.add_subplot(grid[1, col]), metrics, iou)
    headline = ", ".join(f"{_TYPE_STYLE[t]['label']} mAP {100 * getattr(metrics, f'{t}_mAP'):.1f}"
                         for t in iou_types if not math.isnan(getattr(metrics, f"{t}_mAP")))
    fig.suptitle(" | ".join(p for p in (title, headline, f"{metrics.num_images} images, "
                                        f"{metrics.num_detections} detections") if p), fontsize=13)
    atomic_save(out_png, lambda tmp: fig.savefig(tmp, dpi=100))


def _ap_bars(ax, metrics: CocoMetrics) -> None:
    rows = metrics.per_class
    x = np.arange(len(rows))
    width = 0.8 / len(metrics.iou_types)
    for i, iou_type in enumerate(metrics.iou_types):
        values = np.array([getattr(r, f"{iou_type}_ap") for r in rows], dtype=np.float64)
        ax.bar(x + (i - (len(metrics.iou_types) - 1) / 2) * width, np.nan_to_num(100 * values), width,
               color=_TYPE_STYLE[iou_type]["color"], label=f"{_TYPE_STYLE[iou_type]['label']} AP")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r.category_id} {short_name(r.name)}" for r in rows], rotation=60, ha="right", fontsize=8)
    for tick, row in zip(ax.get_xticklabels(), rows):
        if row.num_gt == 0:
            tick.set_color("#999999")  # no ground truth: AP undefined, bar left empty
    ax.set_ylabel("AP@[.5:.95] (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right")
    ax.set_title("AP per class (grey names: no ground truth)")


def _pr_panel(ax, metrics: CocoMetrics, iou: float) -> None:
    recall = metrics.recall_thresholds
    primary = "segm" if "segm" in metrics.iou_types else "bbox"
    colors = category_colors(metrics.category_ids) / 255.0
    for k, cat_id in enumerate(metrics.category_ids):
        curve = metrics.pr_curve(primary, iou, cat_id)
        if not np.isnan(curve).all():
            ax.plot(recall, curve, color=colors[k], linewidth=0.8, alpha=0.6)
    for iou_type in metrics.iou_types:
        mean = metrics.pr_curve(iou_type, iou)
        if not np.isnan(mean).all():
            ax.plot(recall, mean, color=_TYPE_STYLE[iou_type]["color"], linewidth=2.5,
                    linestyle="-" if iou_type == "segm" else "--",
                    label=f"mean over classes ({_TYPE_STYLE[iou_type]['label']})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.set_title(f"precision-recall at IoU {iou:.2f} (thin: each class, {_TYPE_STYLE[primary]['label']})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left")
