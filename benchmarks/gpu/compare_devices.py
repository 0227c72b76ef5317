#!/usr/bin/env python
"""Load checkpoints on two devices and check that their predictions agree (gpu_check.py runs this).

    python benchmarks/gpu/compare_devices.py --devices cpu,gpu:0 --images DATA/val \
        --checkpoint "mrcnn cpu-trained=RUN/..._last.params" --checkpoint "seg gpu-trained=..." --json-out out.json

Each checkpoint is rebuilt from its file alone (``gluon_fashion.predict.load_model``) once per device and
both copies run on the same images. Tolerances (fp32; run with ``NVIDIA_TF32_OVERRIDE=0`` so that cuBLAS and
cuDNN do not round inputs to TF32 on Ampere and later GPUs, which gpu_check.py sets):

Mask R-CNN: every backbone/FPN feature map within ``FEATURE_RTOL`` of its largest magnitude; of the first
``TOP_K`` detections on the first device with score >= ``MIN_SCORE``, at least ``MATCH_FRACTION`` have a
detection of the same class on the second with box IoU >= ``MATCH_IOU`` or every box coordinate within
``BOX_ATOL`` pixels (a barely trained net also outputs zero-area boxes), score within ``SCORE_ATOL`` and mean
mask-probability difference <= ``MASK_ATOL`` (detections are matched, not compared by rank: near-equal scores
may swap places). The CPU copy of an FPN model pools its RoIs with gluon_fashion's replacement, the GPU copy
with GluonCV's own pooling, so this also checks that the two agree.

Segmentation: logits of a fixed input within ``LOGIT_RTOL`` of their largest magnitude; class probabilities
of each image (``label_scores``) within ``PROB_ATOL``; argmax labels equal on >= ``LABEL_AGREEMENT`` of pixels.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import gluon_fashion  # noqa: F401  (numpy aliases MXNet needs, before MXNet is imported)
import cv2
import mxnet as mx
import numpy as np

FEATURE_RTOL = 1e-3
TOP_K, MIN_SCORE = 20, 0.05
MATCH_IOU, BOX_ATOL, SCORE_ATOL, MASK_ATOL, MATCH_FRACTION = 0.9, 1.0, 0.01, 0.02, 0.9
LOGIT_RTOL, PROB_ATOL, LABEL_AGREEMENT = 1e-3, 2e-3, 0.995
TOLERANCES = {"feature_rtol": FEATURE_RTOL, "top_k": TOP_K, "min_score": MIN_SCORE, "match_iou": MATCH_IOU,
              "box_atol_px": BOX_ATOL, "score_atol": SCORE_ATOL, "mask_atol": MASK_ATOL,
              "match_fraction": MATCH_FRACTION,
              "logit_rtol": LOGIT_RTOL, "prob_atol": PROB_ATOL, "label_agreement": LABEL_AGREEMENT}


def context(spec: str) -> mx.Context:
    """``cpu``, ``cpu:1``, ``gpu:0`` -> an MXNet context."""
    kind, _, index = spec.partition(":")
    if kind not in ("cpu", "gpu"):
        raise SystemExit(f"error: device {spec!r}: expected cpu, cpu:N or gpu:N")
    return mx.cpu(int(index or 0)) if kind == "cpu" else mx.gpu(int(index or 0))


def read_rgb(path: Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"error: cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def relative_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over max |a| (1e-12 floor)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12)) if a.size else 0.0


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``x1, y1, x2, y2`` box with each row of ``boxes``."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def match_detections(a: Tuple, b: Tuple) -> Dict[str, float]:
    """Match the first device's top detections to the second's (same class, best IoU)."""
    ids_a, scores_a, boxes_a, masks_a = a
    ids_b, scores_b, boxes_b, masks_b = b
    keep = [i for i in np.argsort(-scores_a, kind="stable")[:TOP_K] if scores_a[i] >= MIN_SCORE]
    matched, score_diff, mask_diff = 0, 0.0, 0.0
    for i in keep:
        same = np.flatnonzero(ids_b == ids_a[i])
        if not same.size:
            continue
        ious = box_iou(boxes_a[i], boxes_b[same])
        coords = np.max(np.abs(boxes_b[same] - boxes_a[i]), axis=1)
        close = ((ious >= MATCH_IOU) | (coords <= BOX_ATOL)) & (np.abs(scores_b[same] - scores_a[i]) <= SCORE_ATOL)
        if not close.any():
            continue
        j = same[close][np.argmin(coords[close])]
        diff = float(np.mean(np.abs(masks_a[i] - masks_b[j])))
        if diff > MASK_ATOL:
            continue
        matched += 1
        score_diff = max(score_diff, float(abs(scores_b[j] - scores_a[i])))
        mask_diff = max(mask_diff, diff)
    return {"compared": len(keep), "matched": matched, "max_score_diff": score_diff, "max_mask_diff": mask_diff}


def compare_mask_rcnn(models: Sequence, images: Sequence[Path]) -> Dict:
    """Features and detections of a Mask R-CNN checkpoint on two devices."""
    from gluon_fashion.models.mask_rcnn import forward, network_input

    short, max_size = models[0].scale["short"], models[0].scale["max_size"]
    worst_feature, compared, matched, score_diff, mask_diff, dets = 0.0, 0, 0, 0.0, 0.0, []
    for path in images:
        x = network_input(read_rgb(path), short, max_size)
        outs, feats = [], []
        for model in models:
            batch = mx.nd.array(x[None], ctx=model.contexts[0])
            maps = model.net.features(batch)
            maps = maps if isinstance(maps, (list, tuple)) else [maps]
            feats.append([m.asnumpy() for m in maps])
            outs.append(forward(model.net, batch))
        worst_feature = max([worst_feature] + [relative_diff(fa, fb) for fa, fb in zip(*feats)])
        result = match_detections(outs[0], outs[1])
        compared += result["compared"]
        matched += result["matched"]
        score_diff = max(score_diff, result["max_score_diff"])
        mask_diff = max(mask_diff, result["max_mask_diff"])
        dets.append((len(outs[0][0]), len(outs[1][0])))
    fraction = matched / compared if compared else 1.0
    ok = worst_feature <= FEATURE_RTOL and fraction >= MATCH_FRACTION
    figure = (f"features rel diff {worst_feature:.1e} (tol {FEATURE_RTOL:g}); detections matched {matched}/{compared} "
              f"(need {MATCH_FRACTION:.0%}), max score diff {score_diff:.1e}, max mask diff {mask_diff:.1e}")
    return {"ok": bool(ok), "figure": figure, "feature_rel_diff": worst_feature, "compared": compared,
            "matched": matched, "max_score_diff": score_diff, "max_mask_diff": mask_diff, "detections": dets}


def compare_segmentation(models: Sequence, images: Sequence[Path]) -> Dict:
    """Logits of a fixed input and class probabilities of each image on two devices."""
    from gluon_fashion.models.segmentation import forward_logits, label_scores

    base, crop = models[0].scale["base_size"], models[0].scale["crop_size"]
    rng = np.random.RandomState(0)
    x = rng.standard_normal((1, 3, crop, crop)).astype(np.float32)
    logits = [forward_logits(m.net, mx.nd.array(x, ctx=m.contexts[0])).asnumpy() for m in models]
    logit_diff = relative_diff(logits[0], logits[1])
    prob_diff, agree, pixels = 0.0, 0, 0
    for path in images:
        rgb = read_rgb(path)
        probs = [label_scores(m.net, rgb, m.contexts[0], base_size=base, crop_size=crop) for m in models]
        prob_diff = max(prob_diff, float(np.max(np.abs(probs[0] - probs[1]))))
        agree += int(np.sum(np.argmax(probs[0], 0) == np.argmax(probs[1], 0)))
        pixels += probs[0][0].size
    agreement = agree / pixels if pixels else 1.0
    ok = logit_diff <= LOGIT_RTOL and prob_diff <= PROB_ATOL and agreement >= LABEL_AGREEMENT
    figure = (f"logits rel diff {logit_diff:.1e} (tol {LOGIT_RTOL:g}); probs max diff {prob_diff:.1e} "
              f"(tol {PROB_ATOL:g}); labels agree {agreement:.4%}")
    return {"ok": bool(ok), "figure": figure, "logit_rel_diff": logit_diff, "prob_max_diff": prob_diff,
            "label_agreement": agreement}


def compare(name: str, weights: str, devices: Sequence[str], images: Sequence[Path]) -> Dict:
    """Load ``weights`` on each device and compare; never raises (errors become a failed result)."""
    from gluon_fashion.predict import load_model

    started = time.time()
    try:
        models = [load_model(weights, contexts=[context(d)]) for d in devices]
        result = (compare_mask_rcnn if models[0].task == "mask_rcnn" else compare_segmentation)(models, images)
    except Exception as exc:  # report, do not crash the other comparisons
        lines = [l.strip() for l in str(exc).splitlines() if l.strip() and not l.strip().startswith(("File ", "["))]
        telling = [l for l in lines if "Check failed" in l or "rror" in l and not l.startswith("Traceback")]
        text = (telling or lines or [""])[-1]
        result = {"ok": False, "figure": f"{type(exc).__name__}: {text}"[:300]}
    result.update(name=name, weights=weights, devices=list(devices), seconds=round(time.time() - started, 1))
    print(f"{name} ({' vs '.join(devices)}): {'agree' if result['ok'] else 'DIFFER'}: {result['figure']}", flush=True)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """Compare every ``--checkpoint``; exit 1 when any disagrees."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PARAMS",
                        help="a checkpoint .params to compare (repeatable)")
    parser.add_argument("--devices", default="cpu,gpu:0", help="two devices (default: %(default)s)")
    parser.add_argument("--images", type=Path, required=True, help="folder of images to predict")
    parser.add_argument("--max-images", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",")]
    if len(devices) != 2:
        parser.error("--devices takes two devices, e.g. cpu,gpu:0")
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = images[:args.max_images]
    if not images:
        parser.error(f"--images {args.images}: no images")
    results = []
    for spec in args.checkpoint:
        name, sep, weights = spec.partition("=")
        if not sep:
            parser.error(f"--checkpoint {spec!r}: expected NAME=PATH")
        results.append(compare(name, weights, devices, images))
    if args.json_out:
        args.json_out.write_text(json.dumps({"tolerances": TOLERANCES, "results": results}, indent=1) + "\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
