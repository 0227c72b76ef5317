#!/usr/bin/env python
"""Benchmark tools/tune_postprocess.py: how fast the search is, and what tuning, TTA and ensembles gain.

    python benchmarks/bench_postprocess.py --mode search --weights RUN/..._best.params   # settings/s, 1,000 images
    python benchmarks/bench_postprocess.py --mode gain --run RUN_FOLDER                  # the gain table

Both use the convergence sample of bench_mask_rcnn.py (``benchmarks/_work/mask_rcnn/convergence``, 20 val
images at 512 x 512) and a checkpoint trained on it (``bench_mask_rcnn.py --mode convergence``).

search: the tuner end to end on the sample (``tune_postprocess``: prediction pass and search printed
apart); then the checkpoint's cached val detections and their ground truth repeated to ``--images`` images
(1,000 by default, a real val split's size; image ids renumbered), on which the default search space is
timed: building the cache, pasting every detection's mask once per mask threshold, and the search itself
(settings evaluated per second, the pastes excluded).
gain: the competition score and segm mAP on the held-out half of the val images (tuned on the other half,
as the tuner reports them) for: default settings; tuned; tuned + flip; tuned + flip + ``--scales``; an
ensemble of the run's ``--ensemble`` best checkpoints (by the run's own val segm mAP) tuned; and that
ensemble with flip + scales. Accuracy only (no timing), so it may run beside other work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
SAMPLE = HERE / "_work" / "mask_rcnn" / "convergence"


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def _tune(weights, tta, root: Path, quiet: bool = True):
    from gluon_fashion.postprocess import tune_postprocess

    with tempfile.TemporaryDirectory() as tmp:
        return tune_postprocess([str(w) for w in weights], root, Path(tmp) / "postprocess.json", tta=tta,
                                progress=False, echo=(lambda text: None) if quiet else print)


# ------------------------------------------------------------------------------------------------ search
def _repeated(cache, times: int):
    """The cache's detections and ground truth repeated ``times`` times, image ids renumbered."""
    from gluon_fashion.evaluation.coco import coco_from_dict

    data = cache.coco.dataset
    step = max(cache.image_ids) + 1
    images, annotations, detections = [], [], {}
    for k in range(times):
        for image in data["images"]:
            if image["id"] in cache._grids:
                images.append(dict(image, id=image["id"] + k * step))
        for ann in data["annotations"]:
            if ann["image_id"] in cache._grids:
                annotations.append(dict(ann, id=len(annotations) + 1, image_id=ann["image_id"] + k * step))
        for image_id, det in zip(cache.image_ids, cache.dets):
            detections[image_id + k * step] = det
    return detections, coco_from_dict({"images": images, "annotations": annotations,
                                       "categories": data["categories"]})


def bench_search(args) -> None:
    from gluon_fashion.postprocess import MetricCache, SearchSpace, Tta, load_ensemble, predict_all, search
    from gluon_fashion.predict import _read_ground_truth
    from gluon_fashion.evaluation.coco import validation_ground_truth

    root = Path(args.dataset_root)
    started = time.perf_counter()
    report = _tune([args.weights], Tta(), root)
    total = time.perf_counter() - started
    print(f"tuner on the sample ({report.record.scores['images']} val images, 1 checkpoint, no TTA): {total:.1f} s "
          f"in all; prediction pass {report.predict_seconds:.1f} s, mask pastes and IoUs {report.mask_seconds:.1f} s, "
          f"search {report.search_seconds:.1f} s ({report.settings_evaluated} settings, both searches)")

    annotations = root / "annotations" / "resize_rle_instances_val.json"
    records = sorted(_read_ground_truth(annotations).by_name.values(), key=lambda r: r["id"])
    paths = [root / "val" / Path(str(r["file_name"])).name for r in records]
    models = load_ensemble([args.weights])
    by_path, _ = predict_all(models, paths, Tta(), progress=False)
    id_of = {path: int(r["id"]) for path, r in zip(paths, records)}
    detections = {id_of[p]: d for p, d in by_path.items()}
    gt = validation_ground_truth(annotations, models[0].category_ids, list(detections))
    small = MetricCache(detections, gt)
    times = -(-args.images // len(small.image_ids))
    detections, gt = _repeated(small, times)
    started = time.perf_counter()
    cache = MetricCache(detections, gt)
    build = time.perf_counter() - started
    space = SearchSpace()
    for threshold in space.mask_thresholds:
        cache.mask_stats(threshold)
    result = search(cache, space)  # the masks are pasted already: this times the search alone
    search_only = result.seconds
    print(f"{len(cache.image_ids)} images ({len(small.image_ids)} val images x {times}), {len(cache)} cached "
          f"detections: cache built in {build:.1f} s; masks pasted at {len(space.mask_thresholds)} mask thresholds "
          f"in {cache.mask_seconds:.1f} s ({cache.mask_seconds / len(space.mask_thresholds):.1f} s each); "
          f"search {search_only:.1f} s for {result.evaluated} settings = {result.evaluated / search_only:.0f} "
          f"settings/s; {machine()}")


# -------------------------------------------------------------------------------------------------- gain
def best_checkpoints(run: Path, count: int):
    """(best checkpoint, the ``count`` epoch checkpoints of ``run`` with the highest val segm mAP)."""
    metrics = next(run.glob("*_metrics.jsonl"))
    prefix = str(metrics)[: -len("_metrics.jsonl")]
    scored = []
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        path = Path(f"{prefix}_{int(record.get('epoch', -1)):04d}.params")
        if record.get("split") == "val" and path.is_file():
            scored.append((record["values"]["segm_mAP"], record["epoch"], path))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return Path(prefix + "_best.params"), [(epoch, value, path) for value, epoch, path in scored[:count]]


def bench_gain(args) -> None:
    from gluon_fashion.postprocess import PostprocessSettings, Tta, _describe

    run, root = Path(args.run), Path(args.dataset_root)
    best, chosen = best_checkpoints(run, args.ensemble)
    scales = Tta.from_flags(["flip"], args.scales)
    print(f"run {run.name}; best checkpoint {best.name}; ensemble: "
          + ", ".join(f"epoch {e} (val segm mAP {v:.3f})" for e, v, _ in chosen))
    ensemble = [p for _, _, p in chosen]
    configs = [("tuned", [best], Tta()), ("tuned + flip", [best], Tta(flip=True)),
               (f"tuned + flip + scales {args.scales}", [best], scales),
               (f"ensemble of {len(ensemble)}, tuned", ensemble, Tta()),
               (f"ensemble of {len(ensemble)}, tuned + flip + scales", ensemble, scales)]
    rows = []
    for name, weights, tta in configs:
        started = time.perf_counter()
        report = _tune(weights, tta, root)
        held = report.record.scores["held_out_half"]
        if not rows:
            rows.append(("default (one pass, score 0.5, mask 0.5, 100 per image)", held["default"], "", held["images"]))
        tuned = PostprocessSettings.from_dict(report.record.scores["tuning_half"]["settings"])
        rows.append((name, held["tuned"], _describe(tuned), held["images"]))
        print(f"  {name}: held-out competition {held['tuned']['kaggle_score']:.4f}, segm mAP "
              f"{held['tuned']['segm_mAP']:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    print("\n| inference | competition score | segm mAP | settings tuned on the other half |\n| --- | --- | --- | --- |")
    for name, scores, text, _ in rows:
        print(f"| {name} | {scores['kaggle_score']:.4f} | {scores['segm_mAP']:.4f} | {text} |")
    print(f"\nheld-out half: {rows[0][3]} images; {machine()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("search", "gain"), default="search")
    parser.add_argument("--dataset-root", default=str(SAMPLE), help="default: the convergence sample")
    parser.add_argument("--weights", help="search: the checkpoint")
    parser.add_argument("--images", type=int, default=1000, help="search: images of cached predictions")
    parser.add_argument("--run", help="gain: the convergence run's folder (epoch checkpoints and metrics)")
    parser.add_argument("--ensemble", type=int, default=3, help="gain: how many of the best checkpoints")
    parser.add_argument("--scales", default="192,256,320", help="gain: --tta-scales (the run trains at 256)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLUON_FASHION_NO_PROGRESS", "1")
    if args.mode == "search":
        if not args.weights:
            parser.error("--mode search needs --weights")
        bench_search(args)
    else:
        if not args.run:
            parser.error("--mode gain needs --run")
        bench_gain(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
