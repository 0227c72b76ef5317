"""A validation report in one self-contained HTML file (``tools/report.py``): the figures, and the pictures.

The report holds the summary metrics (COCO box/mask mAP from ``evaluation.coco``, the competition score from
``evaluation.kaggle_metric``, and for segmentation checkpoints pixAcc/mIoU from ``evaluation.segmentation``),
the per-class AP table, the per-class AP bars and precision-recall curves (``evaluation.plots``), the
confusion between classes, and the N worst and N best images by their own competition score, each drawn
twice: ground truth beside prediction. Every picture is embedded as a data URI, so the file opens offline
and can be mailed as it is.

Two sources: a checkpoint predicted on a dataset's val split through ``predict.py`` (masks scored on the
annotation file's grid, the 512 x 512 resize file by default, as the trainers validate; pictures drawn at
each photo's own size), or a COCO results file with its ground truth (pictures drawn on the annotation grid).
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .errors import UserError
from .fileio import atomic_save

PathLike = Union[str, Path]
log = logging.getLogger(__name__)

DEFAULT_EXAMPLES = 6
#: Scores below this are not drawn in the example pictures (the metrics use every detection).
DEFAULT_DRAW_THRESHOLD = 0.5
#: Confusion counts a prediction as matching a ground-truth mask from this IoU on (COCO's loosest threshold).
MATCH_IOU = 0.5
_PICTURE_WIDTH = 420


@dataclass
class ReportImage:
    """One image as the report draws it: the photo and, on ``grid``, its ground truth and detections."""

    image_id: int
    file_name: str
    path: Path
    grid: Tuple[int, int]
    gt: List[Dict] = field(default_factory=list)
    detections: List[Dict] = field(default_factory=list)
    score: float = math.nan


@dataclass
class ReportData:
    """What a report is made from: ground truth and results on its grid, and the images to draw."""

    gt: object  # pycocotools COCO
    results: List[Dict]
    images: Dict[int, ReportImage]
    source: str
    segmentation: Optional[Dict] = None  # pixAcc/mIoU of a segmentation checkpoint
    settings: Dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ sources
def default_annotations(dataset_root: PathLike, split: str = "val") -> Path:
    """The ground truth a split is validated on: ``annotations/resize_rle_instances_<split>.json`` (512 x 512)
    where the converter wrote one, else ``annotations/rle_instances_<split>.json``."""
    folder = Path(dataset_root) / "annotations"
    for name in (f"resize_rle_instances_{split}.json", f"rle_instances_{split}.json"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"--dataset-root {dataset_root}: no annotations/resize_rle_instances_{split}.json or "
                    f"rle_instances_{split}.json; convert the dataset first (tools/convert_imaterialist_to_coco.py)")


def category_names(categories: Sequence[Dict]) -> List[str]:
    """Class names indexed by category id (as the drawing functions take them): the data's own names
    (ModaNet, DeepFashion2 or a user's categories), iMaterialist's for ids the data does not name."""
    from .labels import CATEGORY_NAMES

    named = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    size = max([len(CATEGORY_NAMES)] + [i + 1 for i in named])
    return [named.get(i, CATEGORY_NAMES[i] if i < len(CATEGORY_NAMES) else str(i)) for i in range(size)]


def _by_image(records: Sequence[Dict]) -> Dict[int, List[Dict]]:
    out: Dict[int, List[Dict]] = {}
    for record in records:
        out.setdefault(int(record["image_id"]), []).append(record)
    return out


def annotations_on_grid(anns: Sequence[Dict], grid: Tuple[int, int]) -> List[Dict]:
    """COCO annotations or detections with their masks (and boxes) moved to ``grid`` when theirs differs."""
    from .rle import resize_coco_rle

    out = []
    for ann in anns:
        size = tuple(int(v) for v in ann["segmentation"]["size"])
        if size == tuple(grid):
            out.append(ann)
            continue
        sy, sx = grid[0] / size[0], grid[1] / size[1]
        x, y, w, h = ann["bbox"]
        out.append(dict(ann, segmentation=resize_coco_rle(ann["segmentation"], *grid),
                        bbox=[x * sx, y * sy, w * sx, h * sy]))
    return out


def from_checkpoint(weights: PathLike, dataset_root: PathLike, split: str = "val",
                    annotations: Optional[PathLike] = None, contexts: Optional[Sequence] = None,
                    max_images: Optional[int] = None, score_threshold: float = 0.05,
                    progress: bool = True, test_budgets: Optional[Mapping[str, Optional[int]]] = None) -> ReportData:
    """Predict a split's images with a checkpoint (``predict.py``'s path) and gather what the report needs.

    Results lie on the annotation file's grid (scored there); detections for the pictures on each photo's
    own grid. ``max_images``: the first images of the annotation file only; ``test_budgets``: Mask R-CNN
    budgets replacing the checkpoint's.
    """
    from .evaluation.coco import load_coco_gt, validation_ground_truth
    from .models.mask_rcnn import to_coco_results
    from .predict import ImageReader, load_model, predict_images

    annotations = Path(annotations) if annotations else default_annotations(dataset_root, split)
    image_dir = Path(dataset_root) / split
    if not image_dir.is_dir():
        raise UserError(f"--dataset-root {dataset_root}: no {split}/ folder of images")
    gt = load_coco_gt(annotations)
    records = sorted(gt.dataset["images"], key=lambda r: r["id"])
    if max_images is not None:
        if max_images < 1:
            raise UserError(f"--max-images must be at least 1, got {max_images}")
        records = records[:max_images]
    if not records:
        raise UserError(f"{annotations}: no images")
    model = load_model(weights, contexts, test_budgets=test_budgets)
    if not model.gives_instances:
        raise UserError(f"--weights {weights}: a binary (garment/background) checkpoint predicts no category, "
                        "so there is nothing to score per class")
    # Scored as validation scores the model: on its own categories (others would count 0 in every mean).
    gt = validation_ground_truth(annotations, model.category_ids, [r["id"] for r in records])
    by_path = {image_dir / Path(r["file_name"]).name: r for r in records}
    missing = [str(p) for p in by_path if not p.is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) of {annotations} are not in {image_dir}, e.g. {missing[0]}")
    gt_by_image = _by_image(gt.dataset["annotations"])
    results: List[Dict] = []
    images: Dict[int, ReportImage] = {}
    reader = ImageReader(list(by_path))
    for pred in predict_images(model, reader, score_threshold, progress=progress, desc="report: predicting"):
        record = by_path[pred.path]
        image_id, grid = int(record["id"]), (int(record["height"]), int(record["width"]))
        results += to_coco_results(image_id, pred.instances_at(grid))
        own = tuple(pred.image.shape[:2])
        images[image_id] = ReportImage(image_id, record["file_name"], pred.path, own,
                                       annotations_on_grid(gt_by_image.get(image_id, []), own),
                                       to_coco_results(image_id, pred.instances))
    if reader.skipped:
        log.warning("%d unreadable image(s) left out of the report: %s", len(reader.skipped),
                    ", ".join(p.name for p in reader.skipped[:5]))
    if max_images is not None or reader.skipped:
        gt = _subset(gt, set(images))
    segmentation = None
    if model.task == "segmentation":
        from .evaluation.segmentation import evaluate_checkpoint

        segmentation = evaluate_checkpoint(str(weights), str(dataset_root), split, ctx=model.contexts[0],
                                           max_images=max_images)
    settings = {"weights": str(weights), "task": model.task, "architecture": model.meta.get("model"),
                "annotations": str(annotations), "images": str(image_dir), "scale": model.scale,
                "score_threshold": score_threshold}
    return ReportData(gt, results, images, f"checkpoint {weights}", segmentation, settings)


def from_results(annotations: PathLike, results: PathLike, image_dir: PathLike) -> ReportData:
    """Gather a report's material from a COCO results file (``tools/predict.py --annotations``'s) and its
    ground truth; photos from ``image_dir`` (matched by file name), drawn on the annotation grid."""
    from .evaluation.coco import load_coco_gt, load_results

    gt = load_coco_gt(annotations)
    dets = load_results(str(results), gt)
    image_dir = Path(image_dir)
    dets_by_image, gt_by_image = _by_image(dets), _by_image(gt.dataset["annotations"])
    images = {}
    for record in gt.dataset["images"]:
        path = image_dir / Path(record["file_name"]).name
        if not path.is_file():
            raise UserError(f"--images {image_dir}: no {path.name} (image {record['id']} of {annotations})")
        image_id = int(record["id"])
        images[image_id] = ReportImage(image_id, record["file_name"], path,
                                       (int(record["height"]), int(record["width"])), gt_by_image.get(image_id, []),
                                       dets_by_image.get(image_id, []))
    return ReportData(gt, dets, images, f"results {results}",
                      settings={"annotations": str(annotations), "results": str(results), "images": str(image_dir)})


def _subset(gt, image_ids: set):
    """The ground truth of ``image_ids`` only (categories kept)."""
    from .evaluation.coco import coco_from_dict

    dataset = dict(gt.dataset, images=[r for r in gt.dataset["images"] if r["id"] in image_ids],
                   annotations=[a for a in gt.dataset["annotations"] if a["image_id"] in image_ids])
    return coco_from_dict(dataset)


# ------------------------------------------------------------------------------------------------ figures
def per_image_scores(data: ReportData) -> Dict[int, float]:
    """Each image's competition score (``kaggle_evaluate`` on that image alone); NaN where the image has
    neither ground truth nor detections."""
    from .evaluation.kaggle_metric import kaggle_evaluate

    dets = _by_image(data.results)
    scores = {}
    for image_id in data.images:
        subset = _subset(data.gt, {image_id})
        scores[image_id] = kaggle_evaluate(subset, dets.get(image_id, []), progress=False).score
    return scores


def class_confusion(data: ReportData, score_threshold: float = DEFAULT_DRAW_THRESHOLD,
                    iou: float = MATCH_IOU) -> Tuple[List[int], np.ndarray]:
    """Which class each ground-truth mask was predicted as: (category ids, (K + 1) x (K + 1) counts).

    Row k: ground truth of class k, column j: matched by a detection of class j (the detection scoring at
    least ``score_threshold`` whose mask overlaps it most, IoU >= ``iou``, each detection used once), last
    column: missed. Last row: detections that matched no ground truth (false positives), by class.
    """
    from pycocotools import mask as coco_mask

    cats = sorted(data.gt.getCatIds())
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros((len(cats) + 1, len(cats) + 1), dtype=np.int64)
    gts, dets = _by_image(data.gt.dataset["annotations"]), _by_image(data.results)
    for image_id in data.images:
        truth = [a for a in gts.get(image_id, []) if not a.get("iscrowd", 0)]
        preds = [d for d in dets.get(image_id, []) if d["score"] >= score_threshold and d["category_id"] in index]
        preds.sort(key=lambda d: -d["score"])
        ious = (np.asarray(coco_mask.iou([_bytes_rle(d["segmentation"]) for d in preds],
                                         [_bytes_rle(a["segmentation"]) for a in truth], [0] * len(truth)))
                if preds and truth else np.zeros((len(preds), len(truth))))
        ious = ious.reshape(len(preds), len(truth))
        used = np.zeros(len(preds), dtype=bool)
        for g in np.argsort([-a.get("area", 0) for a in truth], kind="stable"):
            candidates = np.where(~used & (ious[:, g] >= iou))[0] if len(preds) else []
            row = index[truth[g]["category_id"]]
            if len(candidates):
                best = candidates[np.argmax(ious[candidates, g])]
                used[best] = True
                counts[row, index[preds[best]["category_id"]]] += 1
            else:
                counts[row, -1] += 1
        for p in np.where(~used)[0]:
            counts[-1, index[preds[p]["category_id"]]] += 1
    return cats, counts


def _bytes_rle(rle: Dict) -> Dict:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


# ----------------------------------------------------------------------------------------------- pictures
def _data_uri(rgb: np.ndarray, fmt: str = ".jpg") -> str:
    ok, buffer = cv2.imencode(fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG_QUALITY, 85] if fmt == ".jpg" else [])
    if not ok:
        raise RuntimeError("image encoding failed")
    mime = "image/jpeg" if fmt == ".jpg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.tobytes()).decode('ascii')}"


def side_by_side(image: ReportImage, class_names: Sequence[str], draw_threshold: float = DEFAULT_DRAW_THRESHOLD,
                 width: int = _PICTURE_WIDTH) -> Tuple[np.ndarray, np.ndarray]:
    """(ground-truth overlay, prediction overlay) of one image on its grid, scaled to ``width`` pixels."""
    from .images import read_rgb
    from .models.mask_rcnn import Instance
    from .predict import render_instances
    from .visualize import render_ground_truth

    photo = read_rgb(image.path)
    if photo.shape[:2] != tuple(image.grid):
        photo = cv2.resize(photo, (image.grid[1], image.grid[0]), interpolation=cv2.INTER_AREA)
    names = {i: n for i, n in enumerate(class_names)}
    truth = render_ground_truth(photo, image.gt, names)
    shown = [Instance(int(d["category_id"]), float(d["score"]),
                      np.array([d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]),
                      d["segmentation"]) for d in image.detections if d["score"] >= draw_threshold]
    predicted = render_instances(photo, shown, class_names)
    scale = min(1.0, width / photo.shape[1])
    if scale < 1.0:
        size = (width, max(1, round(photo.shape[0] * scale)))
        truth = cv2.resize(truth, size, interpolation=cv2.INTER_AREA)
        predicted = cv2.resize(predicted, size, interpolation=cv2.INTER_AREA)
    return truth, predicted


def _pr_plot_uri(metrics) -> Optional[str]:
    from .evaluation.plots import plot_coco_metrics

    if not metrics.iou_types:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pr.png"
        plot_coco_metrics(metrics, path)
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# ------------------------------------------------------------------------------------------------ the page
def _pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _e(text) -> str:
    return html.escape(str(text))


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 7px;text-align:right}
th{background:#f0f0f0;cursor:pointer}td.l,th.l{text-align:left}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em}
.card b{display:block;font-size:1.6em}.pair{display:flex;gap:6px;align-items:flex-start}
figure{margin:0 0 1.2em}figcaption{color:#444;margin-bottom:.3em}.pair div{text-align:center;color:#666}
.pair img{display:block}.zero{color:#bbb}.diag{background:#e4f2e4}.off{background:#fbe3e3}
"""

# Sorting of the tables by a click on a column header; the page is complete without it.
_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
      return dir * x.localeCompare(y);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.body.dataset.ready = '1';
"""


def _class_table(metrics, kaggle) -> str:
    rows = []
    for c in metrics.per_class:
        comp = kaggle.per_class.get(c.category_id)
        rows.append(f"<tr><td>{c.category_id}</td><td class=l>{_e(c.name)}</td><td>{c.num_gt}</td><td>{c.num_dets}</td>"
                    f"<td data-v='{-1 if math.isnan(c.segm_ap) else c.segm_ap}'>{_pct(c.segm_ap)}</td>"
                    f"<td data-v='{-1 if math.isnan(c.bbox_ap) else c.bbox_ap}'>{_pct(c.bbox_ap)}</td>"
                    f"<td data-v='{-1 if comp is None else comp}'>{_pct(comp)}</td></tr>")
    return ("<table class=sortable id=per-class><thead><tr><th>id</th><th class=l>class</th><th>GT masks</th>"
            "<th>detections</th><th>mask AP</th><th>box AP</th><th>competition</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _confusion_table(cats: List[int], counts: np.ndarray, names: Sequence[str]) -> str:
    keep_rows = [i for i in range(len(cats)) if counts[i].sum()] + [len(cats)]
    keep_cols = [j for j in range(len(cats)) if counts[:, j].sum()] + [len(cats)]
    label = lambda i, last: last if i == len(cats) else f"{cats[i]} {names[cats[i]] if cats[i] < len(names) else ''}"
    head = "".join(f"<th>{_e(label(j, 'missed'))}</th>" for j in keep_cols)
    body = []
    for i in keep_rows:
        cells = []
        for j in keep_cols:
            n = int(counts[i, j])
            cls = "zero" if n == 0 else ("diag" if i == j else "off")
            cells.append(f"<td class={cls}>{n}</td>")
        body.append(f"<tr><th class=l>{_e(label(i, 'no ground truth'))}</th>{''.join(cells)}</tr>")
    return (f"<table id=confusion><thead><tr><th class=l>ground truth \\ predicted</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _examples(title: str, ids: Sequence[int], data: ReportData, names: Sequence[str], draw_threshold: float) -> str:
    parts = [f"<h2>{_e(title)}</h2>"]
    if not ids:
        parts.append("<p>no scored image</p>")
    for image_id in ids:
        image = data.images[image_id]
        truth, predicted = side_by_side(image, names, draw_threshold)
        shown = sum(1 for d in image.detections if d["score"] >= draw_threshold)
        parts.append(f"<figure class=example data-image-id={image_id}><figcaption><b>{_e(image.file_name)}</b> "
                     f"(id {image_id}): competition score {_pct(image.score)}, {len(image.gt)} ground-truth masks, "
                     f"{shown} detections drawn (score ≥ {draw_threshold})</figcaption><div class=pair>"
                     f"<div><img alt='ground truth' src='{_data_uri(truth)}'>ground truth</div>"
                     f"<div><img alt='prediction' src='{_data_uri(predicted)}'>prediction</div></div></figure>")
    return "".join(parts)


def write_report(data: ReportData, output: PathLike, num_examples: int = DEFAULT_EXAMPLES,
                 draw_threshold: float = DEFAULT_DRAW_THRESHOLD, title: str = "", overwrite: bool = False,
                 progress: bool = True) -> Dict:
    """Score ``data`` and write the report to ``output`` (atomically); returns the summary figures."""
    from .evaluation.coco import evaluate_coco
    from .evaluation.kaggle_metric import kaggle_evaluate

    output = Path(output)
    if output.exists() and not overwrite:
        raise UserError(f"--output {output} exists; pass --overwrite to replace it")
    if num_examples < 0:
        raise UserError(f"--num-examples must be >= 0, got {num_examples}")
    if not 0.0 <= draw_threshold <= 1.0:
        raise UserError(f"--draw-threshold must lie in [0, 1], got {draw_threshold}")
    metrics = evaluate_coco(data.gt, data.results)
    kaggle = kaggle_evaluate(data.gt, data.results, progress=progress)
    scores = per_image_scores(data)
    for image_id, score in scores.items():
        data.images[image_id].score = score
    ranked = sorted((s, i) for i, s in scores.items() if not math.isnan(s))
    count = min(num_examples, len(ranked) // 2 if len(ranked) >= 2 else len(ranked))
    worst = [i for _, i in ranked[:count]]
    best = [i for _, i in reversed(ranked[len(ranked) - count:])] if count else []
    names = category_names(data.gt.dataset.get("categories", []))
    cats, confusion = class_confusion(data, draw_threshold)
    summary = {"segm_mAP": metrics.segm_mAP, "bbox_mAP": metrics.bbox_mAP, "segm_AP50": metrics.segm_AP50,
               "kaggle_score": kaggle.score, "images": len(data.images), "detections": len(data.results)}
    cards = [("mask mAP", metrics.segm_mAP), ("box mAP", metrics.bbox_mAP), ("mask AP50", metrics.segm_AP50),
             ("competition score", kaggle.score)]
    if data.segmentation:
        summary.update(mIoU=data.segmentation.get("mIoU"), pixAcc=data.segmentation.get("pixAcc"))
        cards += [("mIoU", data.segmentation.get("mIoU")), ("pixAcc", data.segmentation.get("pixAcc"))]
    card_html = "".join(f"<div class=card id='metric-{_e(n.replace(' ', '-'))}'>{_e(n)}<b>{_pct(v)}</b></div>"
                        for n, v in cards)
    pr = _pr_plot_uri(metrics)
    settings = "".join(f"<tr><th class=l>{_e(k)}</th><td class=l>{_e(json.dumps(v) if not isinstance(v, str) else v)}"
                       f"</td></tr>" for k, v in data.settings.items())
    seg_table = ""
    if data.segmentation:
        seg_table = ("<h2>pixel IoU per label</h2><table class=sortable id=iou><thead><tr><th class=l>label</th>"
                     "<th>IoU</th></tr></thead><tbody>" + "".join(
                         f"<tr><td class=l>{_e(n)}</td><td>{_pct(v)}</td></tr>"
                         for n, v in data.segmentation.get("iou_per_class", {}).items()) + "</tbody></table>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title or 'validation report')}</title>
<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body>
<h1>{_e(title or 'Validation report')}</h1>
<p class=sub>{_e(data.source)}: {len(data.images)} images, {len(data.results)} detections.
Percentages; COCO mAP is AP@[.5:.95] over classes with ground truth.</p>
<div class=cards>{card_html}</div>
<h2>settings</h2><table id=settings>{settings}</table>
<h2>per class</h2><p>Click a column to sort. AP: COCO AP@[.5:.95]; competition: the iMaterialist 2019 score of
the class's (image, class) pairs; – where the class has no ground truth.</p>
{_class_table(metrics, kaggle)}
{seg_table}
<h2>AP per class and precision-recall curves</h2>
{f"<img id=pr-curves alt='AP bars and precision-recall curves' src='{pr}' style='max-width:100%'>" if pr else ""}
<h2>class confusion</h2><p>Each ground-truth mask counted under the class of the detection (score ≥
{draw_threshold}) that overlaps it most with IoU ≥ {MATCH_IOU}; "missed" when none does. The last row counts
detections that match no ground truth. Classes with no count are left out.</p>
{_confusion_table(cats, confusion, names)}
{_examples(f"the {len(worst)} worst images", worst, data, names, draw_threshold)}
{_examples(f"the {len(best)} best images", best, data, names, draw_threshold)}
<script>{_SCRIPT}</script>
</body></html>
"""
    atomic_save(output, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    summary.update(output=str(output), worst=worst, best=best)
    return summary
