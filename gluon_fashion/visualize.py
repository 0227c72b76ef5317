"""Pictures for humans: class colours, instance and semantic overlays, and ground-truth renders of a dataset.

Colours are shared between the two tasks: entry 0 of ``palette`` is the black background of a semantic
map, and Kaggle category ``c`` is drawn in ``palette(...)[c + 1]``, the colour of semantic label ``c + 1``.
"""
from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from .data.coco_json import converter_hint, read_coco_json
from .errors import UserError
from .fileio import atomic_save
from .images import read_rgb
from .labels import CATEGORY_NAMES, short_name
from .rle import coco_to_mask

IGNORE_COLOR = (128, 128, 128)
_GOLDEN = 0.618033988749895
_LEVELS = ((0.8, 1.0), (0.6, 0.7), (1.0, 0.8), (0.4, 0.95))  # (saturation, value)


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (n x 3 uint8); entry 0 is black (background). Entry i never depends on n."""
    colors = np.zeros((max(int(n), 0), 3), dtype=np.uint8)
    for i in range(1, len(colors)):
        # Four saturation/brightness levels take turns; within a level, golden-ratio hue steps keep
        # colours far apart on the wheel (46 classes: every pair differs by >= 24 in some channel).
        step, level = divmod(i - 1, len(_LEVELS))
        hue = (step * _GOLDEN + level * 0.33) % 1.0
        colors[i] = np.round(np.array(colorsys.hsv_to_rgb(hue, *_LEVELS[level])) * 255)
    return colors


def category_colors(category_ids: Sequence[int]) -> np.ndarray:
    """Colour of each Kaggle category id (that of semantic label ``id + 1``), N x 3 uint8."""
    ids = np.asarray(category_ids, dtype=np.int64)
    if ids.size == 0:
        return np.zeros((0, 3), dtype=np.uint8)
    return palette(int(ids.max()) + 2)[ids + 1]


def _check_image(image_rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {image.shape}")
    return image.astype(np.uint8, copy=False)


def _text_color(background: np.ndarray) -> tuple:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _draw_label(canvas: np.ndarray, text: str, x: int, y: int, color: np.ndarray) -> None:
    """Text on a filled box in the instance colour, kept inside the image."""
    height, width = canvas.shape[:2]
    scale = max(0.4, min(height, width) / 900)
    thickness = 1 if scale < 0.8 else 2
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = int(np.clip(x, 0, max(width - tw - 4, 0)))
    top = y - th - baseline - 4
    if top < 0:  # no room above the box: put the label inside it
        top = y
    top = int(np.clip(top, 0, max(height - th - baseline - 4, 0)))
    cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + baseline + 4), tuple(int(c) for c in color), -1)
    cv2.putText(canvas, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, _text_color(color),
                thickness, cv2.LINE_AA)


def overlay_instances(image_rgb: np.ndarray, masks: Optional[Sequence[np.ndarray]] = None,
                      boxes: Optional[np.ndarray] = None, class_ids: Optional[Sequence[int]] = None,
                      scores: Optional[Sequence[float]] = None, class_names: Optional[Sequence[str]] = None,
                      alpha: float = 0.5, extra_labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Draw instances on a copy of ``image_rgb``: masks blended in class colours with outlines, box outlines
    (``boxes`` as N x 4 ``x1, y1, x2, y2`` pixels) and a "name 0.93" label per instance, followed by its
    ``extra_labels`` entry (e.g. its attributes) where that is not empty.

    ``masks`` are H x W (bool, 0/1 or probabilities > 0.5 count as inside). Without ``class_ids`` each
    instance gets its own colour; ``class_names`` defaults to the Kaggle category names.
    """
    canvas = _check_image(image_rgb).copy()
    height, width = canvas.shape[:2]
    counts = [len(x) for x in (masks, boxes, class_ids, scores) if x is not None]
    n = counts[0] if counts else 0
    if any(c != n for c in counts):
        raise ValueError(f"masks/boxes/class_ids/scores have different lengths: {counts}")
    if class_ids is not None:
        colors = category_colors(class_ids)
    else:
        colors = palette(n + 1)[1:]
    names = CATEGORY_NAMES if class_names is None else class_names
    if masks is not None:
        for i, mask in enumerate(masks):
            mask = np.asarray(mask)
            if mask.shape != (height, width):
                raise ValueError(f"mask {i} has shape {mask.shape}, image is {(height, width)}")
            inside = mask > 0.5 if mask.dtype.kind == "f" else mask.astype(bool)
            blended = canvas[inside].astype(np.float32) * (1 - alpha) + colors[i].astype(np.float32) * alpha
            canvas[inside] = np.round(blended).astype(np.uint8)
            contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in colors[i]), 1, cv2.LINE_AA)
    line = max(1, round(min(height, width) / 300))
    anchors: List[tuple] = []
    for i in range(n):
        if boxes is not None:
            x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
            cv2.rectangle(canvas, (x1, y1), (x2, y2), tuple(int(c) for c in colors[i]), line)
            anchors.append((x1, y1))
        elif masks is not None and np.any(masks[i]):
            ys, xs = np.nonzero(np.asarray(masks[i]) > (0.5 if np.asarray(masks[i]).dtype.kind == "f" else 0))
            anchors.append((int(xs.min()), int(ys.min())))
        else:
            anchors.append(None)
    for i in reversed(range(n)):  # the first instances' labels end on top (big objects, top scores)
        parts = []
        if class_ids is not None:
            cid = int(class_ids[i])
            parts.append(short_name(names[cid]) if 0 <= cid < len(names) else str(cid))
        if scores is not None:
            parts.append(f"{float(scores[i]):.2f}")
        if extra_labels is not None and extra_labels[i]:
            parts.append(f"[{extra_labels[i]}]")
        if parts and anchors[i] is not None:
            _draw_label(canvas, " ".join(parts), anchors[i][0], anchors[i][1], colors[i])
    return canvas


def colorize_labels(label_map: np.ndarray, num_classes: int, colors: Optional[Sequence] = None) -> np.ndarray:
    """H x W class map -> H x W x 3 RGB in palette colours (or ``colors``, one RGB per class, as a label-map
    folder's ``classes.json`` gives them); values outside [0, num_classes) (ignore) are grey."""
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"label_map must be H x W, got shape {labels.shape}")
    table = palette(num_classes) if colors is None else np.asarray(colors, dtype=np.uint8).reshape(num_classes, 3)
    colors = np.vstack([table, np.array([IGNORE_COLOR], dtype=np.uint8)])
    index = labels.astype(np.int64)
    index = np.where((index < 0) | (index >= num_classes), num_classes, index)
    return colors[index]


def overlay_semantic(image_rgb: np.ndarray, label_map: np.ndarray, num_classes: int, alpha: float = 0.5,
                     colors: Optional[Sequence] = None) -> np.ndarray:
    """Blend the colour of every non-background label (ignore included, in grey) over the photo (``colors``: as
    :func:`colorize_labels`)."""
    image = _check_image(image_rgb)
    labels = np.asarray(label_map)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"label_map shape {labels.shape} differs from image {image.shape[:2]}")
    colored = colorize_labels(labels, num_classes, colors)
    out = image.copy()
    fg = labels != 0
    out[fg] = np.round(image[fg].astype(np.float32) * (1 - alpha) + colored[fg].astype(np.float32) * alpha).astype(np.uint8)
    return out


def save_image(path: Union[str, Path], rgb: np.ndarray) -> None:
    """Write an RGB image atomically; PNG or JPEG by the file extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"{path}: unsupported image extension {path.suffix!r} (use .png, .jpg or .jpeg)")
    bgr = cv2.cvtColor(_check_image(rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if suffix != ".png" else []

    def write(tmp: str) -> None:
        if not cv2.imwrite(tmp, bgr, params):
            raise UserError(f"{path}: could not write image")

    atomic_save(path, write)


# --------------------------------------------------------------------------------------------------
# Ground-truth renders of a converted dataset (tools/visualize_dataset.py)


def render_ground_truth(image_rgb: np.ndarray, annotations: Sequence[Dict], class_names: Dict[int, str],
                        alpha: float = 0.5) -> np.ndarray:
    """Overlay of COCO annotations (compressed-RLE masks at the image's size, ``bbox`` as x, y, w, h)."""
    masks, boxes, class_ids = [], [], []
    for ann in sorted(annotations, key=lambda a: -a.get("area", 0)):  # big first, so small parts stay visible
        mask = coco_to_mask(ann["segmentation"])
        if mask.shape != image_rgb.shape[:2]:
            raise UserError(f"annotation {ann.get('id')}: mask size {mask.shape} differs from its image "
                            f"{image_rgb.shape[:2]}")
        masks.append(mask)
        x, y, w, h = ann["bbox"]
        boxes.append((x, y, x + w - 1, y + h - 1))
        class_ids.append(int(ann["category_id"]))
    names = [class_names.get(i, str(i)) for i in range(max(class_ids, default=-1) + 1)]
    return overlay_instances(image_rgb, masks, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), class_ids,
                             class_names=names, alpha=alpha)


def render_dataset(data_root: Union[str, Path], split: str, num_images: int, output: Union[str, Path],
                   seed: Optional[int] = None, overwrite: bool = False, progress: bool = True) -> List[Path]:
    """Write ground-truth overlay PNGs (``<output>/<ImageId>.png``) for ``num_images`` images of ``split``:
    the first ones in the annotation file, or a random choice with ``seed``. Returns the written paths.
    """
    if split not in ("train", "val"):
        raise UserError(f"--split must be train or val, got {split!r}")
    if num_images < 1:
        raise UserError(f"-n must be at least 1, got {num_images}")
    data_root = Path(data_root)
    dataset = _read_split(data_root, split)
    images = list(dataset["images"])
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(images))
        images = [images[i] for i in order]
    return _render(data_root, [(split, dataset, img) for img in images[:num_images]], Path(output), overwrite,
                   progress)


#: An image to draw: (its split, that split's annotation file, the image's entry in it).
_Pick = Tuple[str, Dict, Dict]


def render_images(data_root: Union[str, Path], image_ids: Sequence[str], output: Union[str, Path],
                  splits: Sequence[str] = ("val", "train"), overwrite: bool = False,
                  progress: bool = True) -> List[Path]:
    """Write ground-truth overlay PNGs (``<output>/<ImageId>.png``) for the named images, looked up in the
    annotation files of ``splits`` in turn (the small val file first). An ImageId is accepted with or without
    ``.jpg``. UserError naming every id found in none of them (the converter may have left it out: its
    report says why). This is how to check the converter's repairs by eye, e.g. the swapped-size photos its
    report lists.
    """
    wanted = list(dict.fromkeys(str(i).strip() for i in image_ids if str(i).strip()))
    if not wanted:
        raise UserError("--images: give at least one ImageId")
    data_root = Path(data_root)
    found: Dict[str, _Pick] = {}
    for split in splits:
        if len(found) == len(wanted):
            break
        dataset = _read_split(data_root, split)
        by_name = {img["file_name"]: img for img in dataset["images"]}
        for image_id in wanted:
            img = by_name.get(image_id if image_id.lower().endswith(".jpg") else image_id + ".jpg")
            if image_id not in found and img is not None:
                found[image_id] = (split, dataset, img)
    missing = [image_id for image_id in wanted if image_id not in found]
    if missing:
        files = " or ".join(f"rle_instances_{split}.json" for split in splits)
        raise UserError(f"--images: not in {files}: {', '.join(missing)} (left out by the converter? "
                        f"annotations/conversion_report.json lists every skipped row)")
    return _render(data_root, [found[image_id] for image_id in wanted], Path(output), overwrite, progress)


def _read_split(data_root: Path, split: str) -> Dict:
    return read_coco_json(data_root / "annotations" / f"rle_instances_{split}.json",
                          keys=("images", "annotations", "categories"), hint=converter_hint(data_root))


def _render(data_root: Path, picks: List[_Pick], output: Path, overwrite: bool, progress: bool) -> List[Path]:
    """Draw each (split, its annotation file, image entry) of ``picks`` to ``<output>/<stem>.png``."""
    targets = [output / f"{Path(img['file_name']).stem}.png" for _, _, img in picks]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} exists ({len(existing)} of the {len(targets)} outputs do); "
                        f"pass --overwrite to replace them")
    annotations_by_split: Dict[str, Dict[int, List[Dict]]] = {}  # split -> image id -> its annotations
    for (split, dataset, img), target in tqdm(list(zip(picks, targets)), desc="rendering", unit="image",
                                              disable=not progress):
        if split not in annotations_by_split:
            by_image = annotations_by_split[split] = {}
            for ann in dataset["annotations"]:
                by_image.setdefault(ann["image_id"], []).append(ann)
        names = {int(c["id"]): c["name"] for c in dataset["categories"]}
        path = data_root / split / img["file_name"]
        if not path.is_file():
            raise UserError(f"{path}: image listed in rle_instances_{split}.json not found")
        rgb = read_rgb(path)
        if rgb.shape[:2] != (img["height"], img["width"]):
            raise UserError(f"{path}: image is {rgb.shape[0]}x{rgb.shape[1]} but the annotation file says "
                            f"{img['height']}x{img['width']}")
        save_image(target, render_ground_truth(rgb, annotations_by_split[split].get(img["id"], []), names))
    return targets


def side_by_side(left_rgb: np.ndarray, right_rgb: np.ndarray, captions: Sequence[str] = ("ground truth", "prediction"),
                 gap: int = 6) -> np.ndarray:
    """Two pictures next to each other on a white sheet, each with its caption above it (e.g. ground truth
    beside prediction); the shorter one is top-aligned."""
    left, right = _check_image(left_rgb), _check_image(right_rgb)
    scale = max(0.4, min(left.shape[1], right.shape[1]) / 700)
    (_, text_h), baseline = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = text_h + baseline + 6
    height = band + max(left.shape[0], right.shape[0])
    sheet = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, dtype=np.uint8)
    for x, picture, caption in ((0, left, captions[0]), (left.shape[1] + gap, right, captions[1])):
        sheet[band:band + picture.shape[0], x:x + picture.shape[1]] = picture
        cv2.putText(sheet, caption, (x + 2, band - baseline - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return sheet
