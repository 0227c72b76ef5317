"""Evaluation: COCO mAP (pycocotools), the iMaterialist 2019 competition metric, pixAcc/mIoU, plots."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Union

from ..errors import UserError
from ..fileio import atomic_write_json
from .coco import ClassAP, CocoMetrics, evaluate_coco, format_per_class_table, load_coco_gt
from .kaggle_metric import KaggleScore, kaggle_evaluate, kaggle_score
from .segmentation import ConfusionMatrix

__all__ = ["ClassAP", "CocoMetrics", "ConfusionMatrix", "KaggleScore", "evaluate_coco", "evaluate_files",
           "format_per_class_table", "kaggle_evaluate", "kaggle_score"]

PathLike = Union[str, Path]


def _refuse_existing(path: Optional[PathLike], flag: str, overwrite: bool) -> None:
    if path is not None and Path(path).exists() and not overwrite:
        raise UserError(f"{path} exists (given by {flag}); pass --overwrite to replace it")


def evaluate_files(annotations: PathLike, results: PathLike, json_out: Optional[PathLike] = None,
                   plot: Optional[PathLike] = None, kaggle: bool = True, score_threshold: float = 0.0,
                   overwrite: bool = False, echo: Callable[[str], None] = print,
                   attribute_threshold: Optional[float] = None, tune_attribute_threshold: bool = False,
                   categories: Optional[Sequence[int]] = None) -> Dict:
    """What tools/evaluate.py does: box and mask mAP, the per-class table, the competition score, and
    optionally a metrics JSON (keys bbox_mAP, segm_mAP, kaggle_score, per_class, ...) and a PR/AP plot.
    Results that carry attributes (``attribute_ids``/``attribute_scores``) are also scored as attributes
    (``evaluation.attributes``: per-attribute AP/F1, the Fashionpedia metric; key ``attributes``), their
    predicted sets re-derived at ``attribute_threshold`` when given. ``tune_attribute_threshold``: also find the
    attribute threshold of the best Fashionpedia AP (key ``attribute_threshold_tuned``; for write_submission.py).

    ``categories``: score only these category ids, as the trainers' validation scores a model on the classes
    it was trained on (None: every category of the ground truth, each one without a detection counting 0).

    Returns the metrics dictionary that ``json_out`` receives.
    """
    from .attributes import check_attribute_threshold

    check_attribute_threshold(attribute_threshold)
    _refuse_existing(json_out, "--json-out", overwrite)
    _refuse_existing(plot, "--plot", overwrite)
    from .coco import validation_ground_truth

    coco_gt = validation_ground_truth(annotations, categories) if categories else load_coco_gt(annotations)
    if not coco_gt.dataset["annotations"]:
        raise UserError(f"{annotations}: holds no annotations, so there is nothing to evaluate against")
    metrics = evaluate_coco(coco_gt, str(results))
    summary = metrics.as_dict()
    extra = {}
    kaggle_result: Optional[KaggleScore] = None
    if kaggle:
        kaggle_result = kaggle_evaluate(coco_gt, str(results), score_threshold=score_threshold)
        summary["kaggle_score"] = kaggle_result.score
        summary["kaggle_score_threshold"] = score_threshold
        extra["kaggle"] = kaggle_result.per_class
        for row in summary["per_class"]:
            value = kaggle_result.per_class.get(row["category_id"])
            row["kaggle_score"] = value
    echo(format_per_class_table(metrics, extra=extra))
    undetected = [row["category_id"] for row in summary["per_class"] if row["num_gt"] and not row["num_dets"]]
    if undetected and not categories:
        echo(f"note: {len(undetected)} ground-truth categories have no detection ({', '.join(map(str, undetected))}) "
             "and count 0 in the means; --classes scores only the categories a model was trained on")
    echo("")
    for iou_type, label in (("bbox", "bbox"), ("segm", "segm")):
        echo(f"{label} mAP {_pct(getattr(metrics, f'{iou_type}_mAP'))}   AP50 {_pct(getattr(metrics, f'{iou_type}_AP50'))}"
             f"   AP75 {_pct(getattr(metrics, f'{iou_type}_AP75'))}")
    if kaggle_result is not None:
        echo(f"competition score {kaggle_result.score:.4f} over {kaggle_result.num_pairs} (image, class) pairs"
             + (f", predictions scoring >= {score_threshold}" if score_threshold > 0 else ", all predictions"))
    from ..data.coco_json import read_coco_results

    detections = read_coco_results(results)
    if any("attribute_ids" in d or "attribute_scores" in d for d in detections if isinstance(d, dict)):
        from .attributes import evaluate_attributes, format_attribute_table

        attribute_metrics = evaluate_attributes(coco_gt, detections, attribute_threshold)
        summary["attributes"] = attribute_metrics.as_dict()
        echo(format_attribute_table(attribute_metrics))
        if tune_attribute_threshold:
            from .attributes import tune_attribute_threshold as tune

            best, tried = tune(coco_gt, detections)
            summary["attribute_threshold_tuned"] = {"best": best, "fashionpedia_AP": tried}
            echo("attribute threshold -> Fashionpedia AP: "
                 + ", ".join(f"{t:.2f}: {100 * ap:.1f}" for t, ap in tried.items()))
            echo(f"best attribute threshold {best:.2f} (pass write_submission.py --attribute-threshold {best:.2f})")
    elif tune_attribute_threshold:
        raise UserError(f"--tune-attribute-threshold: {results} has no detection with attributes (predict with a "
                        "checkpoint trained with --attributes)")
    if json_out is not None:
        atomic_write_json(json_out, summary, indent=2)
        echo(f"metrics written to {json_out}")
    if plot is not None:
        from .plots import plot_coco_metrics  # matplotlib only when a plot is asked for

        plot_coco_metrics(metrics, plot, title=Path(results).name)
        echo(f"plot written to {plot}")
    return summary


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"
