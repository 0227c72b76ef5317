"""PNG plots of a run's metrics JSONL: training losses, learning rate, validation metrics per epoch."""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Iterable, Optional

import numpy as np

from ..fileio import atomic_save

LR_KEYS = ("lr", "learning_rate")
SPEED_KEYS = ("samples_s", "samples_per_sec", "throughput", "speed")
_RECORD_KEYS = ("time", "split", "step", "epoch", "values")
_SPLIT_TITLES = {"val": "Validation metrics", "train_epoch": "Training, epoch averages"}


def read_metrics(metrics_jsonl: str) -> dict:
    """``{split: {name: [(step, epoch, value), ...]}}`` sorted by step; a step logged twice keeps its last value.

    Resumed runs re-log the steps after their checkpoint, so later lines win. Torn or invalid lines
    (a run killed mid-write) and non-numeric values are skipped.
    """
    latest: dict = {}
    if not os.path.exists(metrics_jsonl):
        return {}
    with open(metrics_jsonl, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                split, step = str(record["split"]), int(record["step"])
            except (ValueError, KeyError, TypeError):
                continue
            values = record.get("values")
            if not isinstance(values, dict):
                values = {k: v for k, v in record.items() if k not in _RECORD_KEYS}
            epoch = record.get("epoch")
            for name, value in values.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue
                latest.setdefault(split, {}).setdefault(name, {})[step] = (epoch, float(value))
    return {split: {name: [(step, epoch, value) for step, (epoch, value) in sorted(points.items())]
                    for name, points in names.items()}
            for split, names in latest.items()}


def _smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Bias-corrected exponential moving average (as in TensorBoard's smoothing slider)."""
    out = np.empty_like(values)
    average, norm = 0.0, 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out[i] = average / norm
    return out


def _output_path(out_dir_or_prefix: str, name: str) -> str:
    if os.path.isdir(out_dir_or_prefix) or out_dir_or_prefix.endswith(("/", os.sep)):
        return os.path.join(out_dir_or_prefix, f"{name}.png")
    return f"{out_dir_or_prefix}_{name}.png"


def _figure(count: int, title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, count)
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(4.8 * cols, 3.4 * rows + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    figure.suptitle(title, fontsize=13)
    return figure, axes[:count]


def _save(figure, path: str) -> str:
    figure.tight_layout()
    atomic_save(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def _plot_iterations(series: dict, names: Iterable[str], title: str, path: str,
                     labels: Optional[dict] = None, exact: Iterable[str] = ()) -> Optional[str]:
    """One subplot per name; noisy series get a smoothed line over the faint raw one, ``exact`` ones
    (deterministic, like the learning rate) are drawn as they are on a log axis."""
    names = [name for name in names if series.get(name)]
    if not names:
        return None
    figure, axes = _figure(len(names), title)
    for axis, name in zip(axes, names):
        steps = np.array([p[0] for p in series[name]], dtype=np.float64)
        values = np.array([p[2] for p in series[name]], dtype=np.float64)
        if name in exact:
            axis.plot(steps, values, color="tab:blue", linewidth=1.6)
            if np.all(values > 0) and values.max() / values.min() > 20:
                axis.set_yscale("log")
        elif len(values) > 10:
            axis.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8, label="raw")
            axis.plot(steps, _smooth(values, 0.9), color="tab:blue", linewidth=1.6, label="smoothed")
            axis.legend(loc="best", fontsize=8)
        else:
            axis.plot(steps, values, "o-", color="tab:blue", linewidth=1.6, markersize=3)
        axis.set_title(name)
        axis.set_xlabel("iteration")
        axis.set_ylabel((labels or {}).get(name, name))
        axis.grid(True, alpha=0.4)
    return _save(figure, path)


def _plot_epochs(series: dict, title: str, path: str) -> Optional[str]:
    names = sorted(name for name, points in series.items() if points)
    if not names:
        return None
    figure, axes = _figure(len(names), title)
    for axis, name in zip(axes, names):
        points = series[name]
        by_epoch = all(p[1] is not None for p in points)
        xs = [p[1] if by_epoch else p[0] for p in points]
        values = [p[2] for p in points]
        axis.plot(xs, values, "o-", color="tab:green", linewidth=1.6, markersize=4)
        lower_is_better = "loss" in name.lower()
        best = int(np.argmin(values) if lower_is_better else np.argmax(values))
        axis.annotate(f"{'min' if lower_is_better else 'max'} {values[best]:.4g}", (xs[best], values[best]),
                      textcoords="offset points",
                      xytext=(0, 6), ha="center", fontsize=8)
        axis.margins(y=0.15)  # room for the label above the best point
        axis.set_title(name)
        axis.set_xlabel("epoch" if by_epoch else "iteration")
        axis.set_ylabel(name)
        axis.grid(True, alpha=0.4)
        if by_epoch:
            axis.xaxis.get_major_locator().set_params(integer=True)
    return _save(figure, path)


def plot_metrics(metrics_jsonl: str, out_dir_or_prefix: str) -> list[str]:
    """Write PNG plots from a RunLogger metrics JSONL; returns the paths written (none for an empty file).

    ``<out>_losses.png``: every "train_iter" value except learning rate/throughput, vs iteration;
    ``<out>_lr.png``: learning rate (and samples/s) vs iteration; ``<out>_<split>.png`` for each other
    split ("val", "train_epoch"...): its values vs epoch. ``out_dir_or_prefix`` may be a folder.
    """
    metrics = read_metrics(metrics_jsonl)
    written = []
    train = metrics.get("train_iter", {})
    loss_names = sorted(n for n in train if n not in LR_KEYS and n not in SPEED_KEYS)
    path = _plot_iterations(train, loss_names, "Training losses per iteration",
                            _output_path(out_dir_or_prefix, "losses"))
    written += [path] if path else []
    lr_names = [n for n in LR_KEYS + SPEED_KEYS if n in train]
    if any(n in train for n in LR_KEYS):
        path = _plot_iterations(train, lr_names, "Learning rate schedule",
                                _output_path(out_dir_or_prefix, "lr"),
                                labels={"lr": "learning rate", "learning_rate": "learning rate",
                                        "samples_s": "samples / s", "samples_per_sec": "samples / s"},
                                exact=LR_KEYS)
        written += [path] if path else []
    for split in sorted(metrics):
        if split == "train_iter":
            continue
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in split)
        title = _SPLIT_TITLES.get(split, f"{split} metrics")
        path = _plot_epochs(metrics[split], title, _output_path(out_dir_or_prefix, safe))
        written += [path] if path else []
    return written


def plot_metrics_or_warn(metrics_jsonl: str, out_prefix: str) -> None:
    """``plot_metrics`` for use inside training: a plotting problem is logged, never ends a long run."""
    try:
        plot_metrics(metrics_jsonl, out_prefix)
    except Exception as exc:  # noqa: BLE001 - any failure to draw is only worth a warning
        logging.getLogger(__name__).warning("could not draw the metric plots: %s", exc)
