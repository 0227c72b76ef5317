"""Semantic segmentation datasets (one label per pixel): over the converters' COCO-style JSON
(``--dataset imaterialist``, :class:`SemanticSegmentation`), and over a folder of images with PNG label maps and
a ``classes.json`` (``--dataset folder``, :class:`LabelMapFolder`, which brings its own classes and colours).

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
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import UserError
from ..fileio import PathLike, atomic_write_json
from ..images import image_size, read_rgb
from ..labels import ClassSet, class_set_for, parse_class_set
from ..rle import coco_to_runs, resize_runs_to_mask
from .coco_json import converter_hint, is_integer, load_json, polygons_to_rle, read_categories, read_coco_json
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
    images = {entry["id"]: entry for entry in data["images"]}
    for ann in data["annotations"]:
        label = class_set.label_of(ann["category_id"])
        if label == 0:
            continue
        segmentation = ann["segmentation"]
        if not isinstance(segmentation, dict):  # polygons: pycocotools' mask of them, as the converters make
            image = images[ann["image_id"]]
            segmentation, _ = polygons_to_rle(segmentation, image["height"], image["width"])
            if segmentation is None:  # every polygon of fewer than 3 points: no pixel to paint
                continue
        by_image[ann["image_id"]].append(_Instance(ann["id"], label, segmentation))
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


class _SeededPairs:
    """What the semantic datasets share: their classes (from ``class_set``) and ``(image, label)`` pairs
    through ``transform``, whose random generator depends only on the seed, the epoch and the image, so a
    resumed run sees the same augmentation. Index ``epoch * len(self) + i`` is image ``i`` in ``epoch``
    (``EpochTaggedBatches``). Subclasses give
    ``read_image``, ``decode_label``, ``__len__``, ``transform``, ``seed`` and ``class_set``."""

    @property
    def num_classes(self) -> int:
        return self.class_set.num_classes

    @property
    def classes(self) -> List[str]:
        return self.class_set.class_names

    def rng_for(self, index: int, epoch: int = 0) -> np.random.Generator:
        """The augmentation generator of image ``index`` in ``epoch``."""
        return np.random.default_rng([self.seed % 2**32, int(epoch), int(index)])

    def __getitem__(self, index: int):
        epoch, index = divmod(int(index), len(self))
        image = self.read_image(index)
        if self.transform is None:
            return image, self.decode_label(index)
        return self.transform(image, lambda h, w: self.decode_label(index, h, w), self.rng_for(index, epoch))


class SemanticSegmentation(_SeededPairs):
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
        annotations = read_coco_json(self.annotation_file, hint=converter_hint(self.root), fill_boxes=True)
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



# ---------------------------------------------------------------------------------------- label-map folders
FOLDER_CLASSES = "classes.json"
FOLDER_SPLITS = "splits.json"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_folder_classes(root: PathLike) -> Tuple[List[str], Optional[List[Tuple[int, int, int]]], int]:
    """(names, colours or None, ignore value) from ``<root>/classes.json``: ``{"names": [...], "colors":
    [[r, g, b], ...], "ignore_value": 255}`` (pixel value = index in ``names``; ``colors`` and ``ignore_value``
    optional, default: the palette and 255)."""
    path = Path(root) / FOLDER_CLASSES
    doc = load_json(path, "class list", "a label-map folder needs classes.json: {\"names\": [\"background\", ...], "
                    "\"colors\": [[0, 0, 0], ...], \"ignore_value\": 255}")
    names = doc.get("names") if isinstance(doc, dict) else None
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) and n for n in names)):
        raise UserError(f"{path}: 'names' must be a list of at least 2 class names (pixel value = index, "
                        "background first)")
    if len(names) > 255:
        raise UserError(f"{path}: {len(names)} classes; a PNG label map holds at most 255 (plus the ignore value)")
    colors = doc.get("colors")
    if colors is not None:
        if not (isinstance(colors, list) and len(colors) == len(names) and all(
                isinstance(c, list) and len(c) == 3 and all(is_integer(v) and 0 <= v <= 255 for v in c) for c in colors)):
            raise UserError(f"{path}: 'colors' must be one [r, g, b] (0-255) per name ({len(names)})")
        colors = [tuple(int(v) for v in c) for c in colors]
    ignore = doc.get("ignore_value", 255)
    if not (is_integer(ignore) and len(names) <= ignore <= 255):
        raise UserError(f"{path}: 'ignore_value' must be an integer from {len(names)} to 255 (not a class), got "
                        f"{ignore!r:.20}")
    return names, colors, int(ignore)


def folder_class_set(root: PathLike, spec: str = "all", binary: bool = False) -> ClassSet:
    """The classes of a label-map folder as a ClassSet (label value v of ``classes.json`` is category id v).

    ``spec`` (``--classes``): 'all' or 'main' (every class), or ids/ranges of the class indices to keep (others
    become background 0); ``binary``: every kept class becomes 1."""
    names, colors, _ = read_folder_classes(root)
    text = (spec or "all").strip().lower()
    if text in ("all", "main"):
        ids = tuple(range(1, len(names)))
    else:
        try:
            ids = parse_class_set(text).category_ids
        except UserError:
            ids = ()
        if not ids or any(i < 1 or i >= len(names) for i in ids):
            raise UserError(f"--classes {spec!r}: {Path(root) / FOLDER_CLASSES} has classes 1..{len(names) - 1} "
                            f"besides background 0 (use 'all' or ids such as '1,3-5')")
    if binary:
        return ClassSet(ids, True, (names[0], "foreground"), None if colors is None else (colors[0], colors[ids[0]]))
    kept = (0,) + ids
    return ClassSet(ids, False, tuple(names[i] for i in kept), None if colors is None else tuple(colors[i] for i in kept))


def _folder_items(root: Path, split: str) -> List[Tuple[Path, Path]]:
    """(image, label map) pairs of ``split``: from ``<root>/<split>/{images,labels}``, or ``images/`` +
    ``labels/`` split by ``splits.json`` (``{"train": [stems], "val": [stems]}``) or, without it, by a seeded
    20% of the sorted stems for val (as the converters split)."""
    if (root / split / "images").is_dir():
        image_dir, label_dir, stems = root / split / "images", root / split / "labels", None
    else:
        image_dir, label_dir = root / "images", root / "labels"
        if not image_dir.is_dir():
            raise UserError(f"--dataset-root {root}: no images/ folder (nor {split}/images/): a label-map folder "
                            "holds images/, labels/ and classes.json")
        stems = None
        splits_path = root / FOLDER_SPLITS
        if splits_path.is_file():
            doc = load_json(splits_path, "split list")
            if not isinstance(doc, dict) or not isinstance(doc.get(split), list):
                raise UserError(f"{splits_path}: no '{split}' list of image names")
            stems = [Path(str(name)).stem for name in doc[split]]
    if not label_dir.is_dir():
        raise UserError(f"{label_dir}: folder not found (PNG label maps with the images' names)")
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES}
    if stems is None and image_dir == root / "images":
        from ..convert import choose_val_count, split_images
        val = split_images(list(images), choose_val_count(len(images), None)[0], seed=0)
        stems = [stem for stem in images if (stem in val) == (split == "val")]
    if stems is None:
        stems = list(images)
    missing = [stem for stem in stems if stem not in images]
    if missing:
        raise UserError(f"{image_dir}: no image named {missing[0]} (listed for the {split} split); "
                        f"{len(missing)} missing in all")
    items = [(images[stem], label_dir / f"{stem}.png") for stem in stems]
    no_label = [image.name for image, label in items if not label.is_file()]
    if no_label:
        raise UserError(f"{label_dir}: no label map {Path(no_label[0]).stem}.png for image {no_label[0]} "
                        f"({len(no_label)} image(s) without one)")
    if not items:
        raise UserError(f"--dataset-root {root}: no images in the {split} split")
    return items


class FolderRecord(NamedTuple):
    """An image of a label-map folder and its label map."""

    path: Path
    label_path: Path


class LabelMapFolder(_SeededPairs):
    """Semantic segmentation from a folder of images and PNG label maps (``--dataset folder``).

    ``root`` holds ``images/``, ``labels/`` (same stems, one 8-bit value per pixel: the class index in
    ``classes.json``, or its ignore value) and ``classes.json``, with ``splits.json`` or ``train/``/``val/``
    subfolders choosing the split (see :func:`_folder_items`). Items as :class:`SemanticSegmentation`'s; the
    ignore value becomes ``IGNORE_LABEL`` (not trained, not scored), classes outside ``class_set`` background.
    """

    def __init__(self, root: str, split: str = "train", class_set: Optional[ClassSet] = None,
                 transform: Optional[Transform] = None, min_label_fraction: float = 0.0, seed: int = 0,
                 check_files: bool = True):
        from ..transforms.segmentation import IGNORE_LABEL
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"--dataset-root {root}: folder not found")
        names, _, ignore = read_folder_classes(self.root)
        self.class_set = class_set or folder_class_set(self.root)
        if self.class_set.num_classes > len(names) or any(i >= len(names) for i in self.class_set.category_ids):
            raise UserError(f"{self.root / FOLDER_CLASSES}: {len(names)} classes, but the model's class set "
                            f"{list(self.class_set.category_ids)} needs more (trained on another dataset?)")
        self.split, self.transform, self.seed = split, transform, int(seed)
        self.items = _folder_items(self.root, split)
        self.ignore_value = ignore
        self.annotation_file = self.root / FOLDER_CLASSES
        # Pixel value -> label: kept classes to theirs, other classes to background, the rest is ignored.
        self._lut = np.full(256, IGNORE_LABEL, dtype=np.int32)
        self._lut[:len(names)] = [self.class_set.label_of(v) if v else 0 for v in range(len(names))]
        self._valid_values = len(names)
        self.truncated_images: List[str] = []
        if min_label_fraction > 0:
            kept = [item for item in self.items
                    if np.mean(self._read_label(item[1]) > 0) >= min_label_fraction]
            if not kept:
                raise UserError(f"--dataset-root {root}: no {split} image has {min_label_fraction} of its pixels "
                                "labelled (--min-label-fraction)")
            self.items = kept

    @property
    def records(self) -> List[FolderRecord]:
        """One record per image (``path``, ``label_path``), as :class:`SemanticSegmentation`'s ``records``."""
        return [FolderRecord(image, label) for image, label in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def _read_label(self, path: Path) -> np.ndarray:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2 or raw.dtype != np.uint8:
            raise UserError(f"{path}: not an 8-bit single-channel PNG label map")
        bad = raw[(raw >= self._valid_values) & (raw != self.ignore_value)]
        if bad.size:
            raise UserError(f"{path}: pixel value {int(bad[0])} is neither a class of {FOLDER_CLASSES} "
                            f"(0..{self._valid_values - 1}) nor its ignore value {self.ignore_value}")
        return self._lut[raw]

    def decode_label(self, index: int, out_height: Optional[int] = None,
                     out_width: Optional[int] = None) -> np.ndarray:
        """int32 label map of image ``index`` at ``out_height x out_width`` (nearest neighbour; default: own size)."""
        label = self._read_label(self.items[index][1])
        if out_height is None or (out_height, out_width) == label.shape:
            return label
        return cv2.resize(label, (int(out_width), int(out_height)), interpolation=cv2.INTER_NEAREST)

    def read_image(self, index: int) -> np.ndarray:
        """uint8 RGB pixels of image ``index``; UserError if its label map has another size."""
        image_path, label_path = self.items[index]
        image = read_rgb(image_path)
        size = image_size(label_path)
        if image.shape[:2] != tuple(size):
            raise UserError(f"{image_path}: image is {image.shape[0]}x{image.shape[1]} but its label map "
                            f"{label_path.name} is {size[0]}x{size[1]}")
        return image



# ------------------------------------------------------------------------------------------- registry
DatasetFactory = Callable[..., SemanticSegmentation]
ClassSetFactory = Callable[[str, str, bool], ClassSet]
_REGISTRY: Dict[str, DatasetFactory] = {}
_CLASS_SETS: Dict[str, ClassSetFactory] = {}


def register_dataset(name: str, factory: DatasetFactory, class_set: Optional[ClassSetFactory] = None) -> None:
    """Make ``--dataset name`` build datasets with ``factory(root=..., split=..., class_set=..., ...)``;
    ``class_set(root, --classes, --binary)`` gives the classes of a dataset that brings its own (default:
    ``labels.parse_class_set``, iMaterialist's categories)."""
    _REGISTRY[name.lower()] = factory
    if class_set is not None:
        _CLASS_SETS[name.lower()] = class_set


def dataset_class_set(name: str, root: str, spec: str, binary: bool = False) -> ClassSet:
    """The ClassSet ``--classes spec`` selects on the registered dataset ``name`` at ``root``."""
    if name.lower() not in _REGISTRY:
        get_dataset(name)  # the UserError listing the known names
    factory = _CLASS_SETS.get(name.lower())
    return factory(root, spec, binary) if factory else parse_class_set(spec, binary)


def get_dataset(name: str, **kwargs) -> SemanticSegmentation:
    """Build the registered dataset ``name`` (UserError listing the known names otherwise)."""
    try:
        factory = _REGISTRY[name.lower()]
    except KeyError:
        raise UserError(f"--dataset {name!r}: unknown; registered: {', '.join(_REGISTRY)}") from None  # default first
    return factory(**kwargs)


def coco_class_set(root: str, spec: str = "main", binary: bool = False) -> ClassSet:
    """The classes of a converted dataset at ``root`` (its training JSON's categories): iMaterialist's keep
    ``--classes`` as :func:`labels.parse_class_set` reads it; any other dataset's (ModaNet, DeepFashion2, ...) are
    its own, with their names (:func:`labels.class_set_for`). Read from the val JSON where there is no training
    one."""
    paths = [Path(root) / SPLITS[split][0] for split in ("train", "val")]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:  # the dataset reports the missing file, with how to make it
        return parse_class_set(spec, binary)
    return class_set_for(read_categories(path), spec, binary)


register_dataset("imaterialist", SemanticSegmentation, coco_class_set)
register_dataset("folder", LabelMapFolder, folder_class_set)
