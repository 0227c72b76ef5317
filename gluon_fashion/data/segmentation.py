"""Semantic segmentation dataset over the converter's COCO-style JSON (one label per pixel).

Splits: ``train`` reads ``<root>/annotations/rle_instances_train.json`` with images in ``<root>/train/``;
``val`` reads ``<root>/annotations/rle_instances_val.json`` with images in ``<root>/val/``.

Classes (``labels.ClassSet``): by default the 13 main apparel categories (Kaggle ids 0..12) become labels 1..13 and
every other pixel is background 0 (14 classes). Any list of category ids can be chosen instead; in binary
mode every chosen category becomes label 1 ("garment"), for training and validation alike. Instances of
categories outside the set are not painted at all (a sleeve stays part of its shirt).

Overlapping instances, one deterministic rule: instances are painted in order of decreasing pixel area
(counted from their runs at full resolution), so a smaller instance lies on top of a larger one it overlaps;
equal areas are painted in increasing annotation id, so the higher id ends on top. The result does not
depend on the order of the annotations in the JSON.

Masks are never decoded as full-resolution dense arrays: the label map is sampled from the run-length
encodings at the size the transform asks for (``rle.coco_to_runs`` + ``rle.resize_runs_to_mask``); at an
image's own size the runs are painted straight into one label map.

Truncated JPEGs (no end-of-image marker) are left out when the dataset is built, with a warning
(``data.truncated``; their paths in ``truncated_images``).

Filtering (``min_label_fraction`` > 0): images whose chosen categories cover less than that fraction of the
image are dropped (the union of the instances, computed from the runs). The list of kept image ids is cached
as JSON in ``$GLUON_FASHION_CACHE/semantic_filter/`` (default ``~/.cache/gluon_fashion/semantic_filter/``),
keyed on the annotation file's absolute path, size and modification time, the class ids and the threshold:
editing or replacing the annotation file changes the key, so a stale list is never used. The dataset folder
itself is never written to.

Items: ``dataset[i]`` returns ``transform(image_rgb, decode_label, rng)``; indices ``>= len(dataset)`` stand
for ``(epoch, i) = divmod(index, len(dataset))`` so augmentation randomness is a
function of (seed, epoch, image) whatever the number of loader workers (``data.samplers.EpochTaggedBatches``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from ..fileio import atomic_write_json
from ..images import read_rgb
from ..labels import ClassSet
from ..rle import coco_to_runs, resize_runs_to_mask
from .coco_json import converter_hint, read_coco_json
from .truncated import find_truncated_images

log = logging.getLogger(__name__)

SPLITS = {
    "train": ("annotations/rle_instances_train.json", "train"),
    "val": ("annotations/rle_instances_val.json", "val"),
}
CACHE_ENV = "GLUON_FASHION_CACHE"
_CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------- painting
@dataclass(frozen=True)
class _Instance:
    ann_id: int
    label: int
    rle: Dict


def _runs_by_paint_order(instances: Sequence[_Instance]) -> List[Tuple[int, np.ndarray, np.ndarray]]:
    """(label, starts, lengths) of each instance in painting order: larger area first, then annotation id."""
    decoded = []
    for inst in instances:
        starts, lengths = coco_to_runs(inst.rle)
        decoded.append((-int(lengths.sum()), inst.ann_id, inst.label, starts, lengths))
    decoded.sort(key=lambda item: (item[0], item[1]))
    return [(label, starts, lengths) for _, _, label, starts, lengths in decoded]


def paint_label_map(instances: Sequence[_Instance], height: int, width: int,
                    out_height: Optional[int] = None, out_width: Optional[int] = None) -> np.ndarray:
    """int32 label map (``out_height x out_width``, default the image size) of instances on a ``height x width`` image."""
    out_height = height if out_height is None else int(out_height)
    out_width = width if out_width is None else int(out_width)
    ordered = _runs_by_paint_order(instances)
    if (out_height, out_width) == (height, width):
        # Own resolution: write the runs straight into a column-major flat map, no per-instance mask.
        flat = np.zeros(height * width, dtype=np.int32)
        for label, starts, lengths in ordered:
            if len(starts):
                offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
                flat[offsets + np.arange(int(lengths.sum()))] = label
        return flat.reshape(width, height).T.copy()
    label_map = np.zeros((out_height, out_width), dtype=np.int32)
    for label, starts, lengths in ordered:
        mask = resize_runs_to_mask(starts, lengths, height, width, out_height, out_width)
        label_map[mask.astype(bool)] = label
    return label_map


def _union_length(instances: Sequence[_Instance]) -> int:
    """Pixels covered by at least one instance, from the runs (no mask is built)."""
    starts, lengths = [], []
    for inst in instances:
        s, n = coco_to_runs(inst.rle)
        starts.append(s)
        lengths.append(n)
    if not starts:
        return 0
    s = np.concatenate(starts)
    e = s + np.concatenate(lengths)
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    # A run opens a new covered segment when it starts past everything before it.
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] >= reach[:-1]
    seg_start = s[new]
    seg_end = np.append(reach[np.flatnonzero(new)[1:] - 1], reach[-1])
    return int((seg_end - seg_start).sum())


# -------------------------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class ImageRecord:
    """One image of the split: id, file path, size (from the JSON) and its labelled instances."""

    image_id: int
    path: Path
    height: int
    width: int
    instances: Tuple[_Instance, ...]


def _parse_records(data: Dict, ann_path: Path, image_dir: Path, class_set: ClassSet) -> List[ImageRecord]:
    """Image records of a document checked by ``read_coco_json`` (ids, sizes, mask sizes, references)."""
    by_image: Dict[int, List[_Instance]] = {entry["id"]: [] for entry in data["images"]}
    for ann in data["annotations"]:
        label = class_set.label_of(ann["category_id"])
        if label == 0:
            continue
        if not isinstance(ann["segmentation"], dict):
            raise UserError(f"{ann_path}: annotation {ann['id']}: segmentation must be a COCO RLE "
                            "{'size': [h, w], 'counts': ...} (polygons are not supported)")
        by_image[ann["image_id"]].append(_Instance(ann["id"], label, ann["segmentation"]))
    return [ImageRecord(entry["id"], image_dir / entry["file_name"], entry["height"], entry["width"],
                        tuple(by_image[entry["id"]]))
            for entry in sorted(data["images"], key=lambda entry: entry["id"])]


def cache_dir() -> Path:
    """Folder for derived data (image filters): ``$GLUON_FASHION_CACHE`` or ``~/.cache/gluon_fashion``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gluon_fashion")


def _filter_cache_path(ann_path: Path, class_set: ClassSet, min_fraction: float) -> Path:
    stat = ann_path.stat()
    key = {"version": _CACHE_VERSION, "annotations": str(ann_path.resolve()), "size": stat.st_size,
           "mtime_ns": stat.st_mtime_ns, "category_ids": list(class_set.category_ids),
           "min_label_fraction": float(min_fraction)}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    return cache_dir() / "semantic_filter" / f"{ann_path.stem}-{digest}.json"


def _filter_records(records: List[ImageRecord], ann_path: Path, class_set: ClassSet,
                    min_fraction: float) -> List[ImageRecord]:
    cache_path = _filter_cache_path(ann_path, class_set, min_fraction)
    kept_ids = None
    if cache_path.is_file():
        try:
            with open(cache_path, encoding="utf-8") as handle:
                kept_ids = set(json.load(handle)["kept_image_ids"])
            log.info("image filter: %d of %d images kept (cached in %s)", len(kept_ids), len(records), cache_path)
        except (OSError, ValueError, KeyError, TypeError):
            kept_ids = None
    if kept_ids is None:
        kept_ids = {r.image_id for r in records
                    if _union_length(r.instances) >= min_fraction * r.height * r.width and r.instances}
        try:
            atomic_write_json(cache_path, {"annotations": str(ann_path.resolve()),
                                           "min_label_fraction": min_fraction,
                                           "category_ids": list(class_set.category_ids),
                                           "kept_image_ids": sorted(kept_ids)})
        except OSError as exc:  # a read-only home must not stop training
            log.warning("could not write the image-filter cache %s (%s)", cache_path, exc)
        log.info("image filter: %d of %d images have >= %.4g of their pixels labelled", len(kept_ids),
                 len(records), min_fraction)
    return [r for r in records if r.image_id in kept_ids]


Transform = Callable[[np.ndarray, Callable[[int, int], np.ndarray], np.random.Generator], Tuple]


class SemanticSegmentation:
    """Images of one split with per-pixel labels of ``class_set`` (see the module docstring for the rules).

    Works as an ``mx.gluon.data.Dataset`` (``len`` and indexing). ``transform`` receives
    ``(image_rgb uint8 H x W x 3, decode_label(h, w), rng)``; without one, items are
    ``(image_rgb, label at the image's own size)``. ``check_files`` (default): refuse missing images and leave
    out truncated JPEGs.
    """

    def __init__(self, root: str = "datasets/imaterialist", split: str = "train",
                 class_set: Optional[ClassSet] = None, transform: Optional[Transform] = None,
                 min_label_fraction: float = 0.0, seed: int = 0, check_files: bool = True):
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        if not 0.0 <= min_label_fraction < 1.0:
            raise UserError(f"--min-label-fraction must be in [0, 1), got {min_label_fraction}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"--dataset-root {root}: folder not found")
        self.split = split
        self.class_set = class_set or ClassSet()
        self.transform = transform
        self.seed = int(seed)
        ann_rel, image_rel = SPLITS[split]
        self.annotation_file = self.root / ann_rel
        self.image_dir = self.root / image_rel
        annotations = read_coco_json(self.annotation_file, hint=converter_hint(self.root))
        records = _parse_records(annotations, self.annotation_file, self.image_dir, self.class_set)
        if min_label_fraction > 0:
            records = _filter_records(records, self.annotation_file, self.class_set, min_label_fraction)
        if not records:
            raise UserError(f"{self.annotation_file}: no images left for the {split} split"
                            + (f" (after --min-label-fraction {min_label_fraction})" if min_label_fraction else ""))
        #: paths of the truncated JPEGs left out (see ``data.truncated``)
        self.truncated_images: List[str] = []
        if check_files:
            missing = [r.path for r in records if not r.path.is_file()]
            if missing:
                raise UserError(f"{len(missing)} image(s) listed in {self.annotation_file} are missing from "
                                f"{self.image_dir}, e.g. {missing[0].name}")
            truncated = set(find_truncated_images([r.path for r in records], self.annotation_file))
            self.truncated_images = [str(records[i].path) for i in sorted(truncated)]
            records = [r for i, r in enumerate(records) if i not in truncated]
            if not records:
                raise UserError(f"{self.annotation_file}: no images left for the {split} split: every one is a "
                                "truncated JPEG")
        self.records = records

    @property
    def num_classes(self) -> int:
        return self.class_set.num_classes

    @property
    def classes(self) -> List[str]:
        return self.class_set.class_names

    def __len__(self) -> int:
        return len(self.records)

    def decode_label(self, index: int, out_height: Optional[int] = None,
                     out_width: Optional[int] = None) -> np.ndarray:
        """int32 label map of image ``index`` at ``out_height x out_width`` (default: its own size)."""
        record = self.records[index]
        return paint_label_map(record.instances, record.height, record.width, out_height, out_width)

    def read_image(self, index: int) -> np.ndarray:
        """uint8 RGB pixels of image ``index``; UserError if they do not match the size in the JSON."""
        record = self.records[index]
        image = read_rgb(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise UserError(f"{record.path}: image is {image.shape[0]}x{image.shape[1]} but "
                            f"{self.annotation_file} says {record.height}x{record.width}")
        return image

    def rng_for(self, index: int, epoch: int = 0) -> np.random.Generator:
        """The augmentation generator of image ``index`` in ``epoch``."""
        return np.random.default_rng([self.seed % 2**32, int(epoch), int(index)])

    def __getitem__(self, index: int):
        epoch, index = divmod(int(index), len(self.records))
        image = self.read_image(index)
        if self.transform is None:
            return image, self.decode_label(index)
        return self.transform(image, lambda h, w: self.decode_label(index, h, w), self.rng_for(index, epoch))


# ------------------------------------------------------------------------------------------- registry
DatasetFactory = Callable[..., SemanticSegmentation]
_REGISTRY: Dict[str, DatasetFactory] = {}


def register_dataset(name: str, factory: DatasetFactory) -> None:
    """Make ``--dataset name`` build datasets with ``factory(root=..., split=..., class_set=..., ...)``."""
    _REGISTRY[name.lower()] = factory


def get_dataset(name: str, **kwargs) -> SemanticSegmentation:
    """Build the registered dataset ``name`` (UserError listing the known names otherwise)."""
    try:
        factory = _REGISTRY[name.lower()]
    except KeyError:
        raise UserError(f"--dataset {name!r}: unknown; registered: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**kwargs)


register_dataset("imaterialist", SemanticSegmentation)
