"""Fashionpedia, ModaNet, DeepFashion2 (and any COCO-style instance JSON) -> the project's layout.

One split per run (``split`` "train" or "val"), written under ``<data_root>`` as the iMaterialist converter
writes it, so the trainers, ``predict.py`` and ``evaluate.py`` read the result unchanged:

- train: ``annotations/rle_instances_train.json`` (file names relative to ``train/``), ``train/`` (the images,
  hard-linked from ``images``, copied where linking fails or with ``copy_images``),
  ``annotations/conversion_report_train.json``;
- val: ``annotations/rle_instances_val.json``, ``annotations/resize_rle_instances_val.json`` (masks at 512x512,
  the true size kept as ``orig_height``/``orig_width``), ``val/``, ``annotations/conversion_report_val.json``.

Sources (:func:`read_source`):

- ``fashionpedia``: ``instances_attributes_{train,val}2020.json``: COCO JSON, polygons and compressed RLE mixed,
  ``attribute_ids`` per annotation (ids not consecutive, kept as they are), ``bbox`` sometimes absent (boxes are
  always recomputed from the mask);
- ``modanet``: ``modanet2018_instances_{train,val}.json``: COCO JSON with polygons, some objects as several
  polygons, some degenerate;
- ``deepfashion2``: a folder of per-image JSON files (``item1``, ``item2``, ... with ``category_id`` 1-13 and
  ``segmentation`` polygons; no image size: it is read from the photo);
- ``coco``: any COCO instance JSON with polygons or RLE (crowd regions, ``iscrowd`` set, are skipped and reported).

Every mask is what pycocotools decodes from the source's polygons (``frPyObjects`` + ``merge``) or RLE at the
image's size, stored as compressed RLE; area and box are computed from it. The image size comes from the photo's
header: a JSON size that is the photo's swapped is handled as the iMaterialist converter does (mask decoded on
the JSON's grid, then rotated: ``convert.SWAPPED_SIZE_FIX``; listed in the report), any other disagreement skips
the image's objects as ``size_mismatch``. A polygon of fewer than 3 points (which pycocotools would even read as a
box when it has 2) is dropped from its object and listed in the report; an object left with no polygon, or whose
mask is empty, is skipped. Nothing is dropped silently: skipped objects (with the source entry that held them and
the reason), dropped polygon parts, categories dropped by the class map, and images left without any object are
all in the report and counted on screen. ``strict``: the first such object is an error and nothing is written.
Outputs are replaced as one set or not at all (``converters.common``).
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pycocotools import mask as coco_mask
from tqdm import tqdm

from .. import rle
from ..data.coco_json import (_check_categories, _check_images, is_finite_number, is_integer, load_json,
                              polygons_to_rle)
from ..errors import UserError
from ..fileio import PathLike, atomic_write_json
from ..labels import DEEPFASHION2_CATEGORIES
from .class_map import ClassMap, identity_map, read_class_map
from .common import (_OutputSet, _annotation_tails, _check_outputs_free, _check_photo, _only_conversion_of,
                     _place_images, _require_folder, _write_coco)

FORMATS = ("fashionpedia", "modanet", "deepfashion2", "coco")
FORMAT_NAMES = {"fashionpedia": "Fashionpedia", "modanet": "ModaNet", "deepfashion2": "DeepFashion2",
                "coco": "COCO-style"}
RESIZE_SIZE = 512
#: Why an object can be skipped (the report's ``skipped_objects_by_reason``), in report order.
SKIP_REASONS = ("malformed_annotation", "unknown_image", "unknown_category", "crowd_region", "missing_image",
                "unreadable_image", "truncated_image", "corrupt_image", "size_mismatch", "invalid_segmentation",
                "degenerate_polygon", "empty_mask")


@dataclass
class SourceObject:
    """One object of the source: where it was (``ref``), its category, segmentation and attribute ids."""

    ref: str
    category_id: int
    segmentation: Any
    attribute_ids: List[int] = field(default_factory=list)


@dataclass
class SourceImage:
    """One image of the source: ``file_name`` relative to the image folder, the JSON's size (None: not given)."""

    ref: str
    image_id: int
    file_name: str
    height: Optional[int]
    width: Optional[int]
    objects: List[SourceObject] = field(default_factory=list)


@dataclass
class SkippedObject:
    """An object left out of the output, with the source entry that held it."""

    ref: str
    file_name: Optional[str]
    reason: str
    detail: str

    def as_dict(self) -> Dict:
        return {"source": self.ref, "file_name": self.file_name, "reason": self.reason, "detail": self.detail}


@dataclass
class Source:
    """A dataset split as read from its files, before any photo is opened."""

    format: str
    path: Path
    images: List[SourceImage]
    categories: List[Dict]
    attributes: List[Dict]
    skipped: List[SkippedObject] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- reading
def read_source(fmt: str, annotations: PathLike) -> Source:
    """Read ``annotations`` (a COCO JSON file, or DeepFashion2's folder of per-image JSON) of format ``fmt``."""
    if fmt not in FORMATS:
        raise UserError(f"unknown source format {fmt!r}: use one of {', '.join(FORMATS)}")
    path = Path(annotations)
    if fmt == "deepfashion2":
        return read_deepfashion2(path)
    return read_coco_style(path, fmt)


def read_coco_style(path: Path, fmt: str = "coco") -> Source:
    """A COCO instance JSON: images and categories must be well formed (UserError naming the entry); an annotation
    that is not is skipped and reported (``strict`` turns that into an error later)."""
    if path.is_dir():
        raise UserError(f"--annotations {path}: is a folder; {FORMAT_NAMES[fmt]} annotations are one JSON file")
    doc = load_json(path, f"{FORMAT_NAMES[fmt]} annotation file")
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a COCO JSON object, got {type(doc).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise UserError(f"{path}: no '{key}' list; expected a COCO instance file with images, annotations "
                            "and categories")
    by_id = _check_images(doc["images"], path)
    _check_categories(doc["categories"], path)
    categories = [{k: c[k] for k in ("id", "name", "supercategory") if k in c} for c in doc["categories"]]
    category_ids = {c["id"] for c in categories}
    attributes = [a for a in doc.get("attributes") or [] if isinstance(a, dict)]
    images = {image_id: SourceImage(f"image {image_id}", image_id, entry["file_name"], entry["height"],
                                    entry["width"]) for image_id, entry in by_id.items()}
    skipped = []
    for index, ann in enumerate(doc["annotations"]):
        ref = (f"annotation {ann['id']}" if isinstance(ann, dict) and is_integer(ann.get("id"))
               else f"annotations[{index}]")
        problem = None
        if not isinstance(ann, dict):
            problem = ("malformed_annotation", f"expected an object, got {ann!r:.60}")
        elif not is_integer(ann.get("image_id")):
            problem = ("malformed_annotation", f"'image_id' must be an integer, got {ann.get('image_id')!r:.40}")
        elif ann["image_id"] not in images:
            problem = ("unknown_image", f"image_id {ann['image_id']} is not in 'images'")
        elif not is_integer(ann.get("category_id")):
            problem = ("malformed_annotation", f"'category_id' must be an integer, got {ann.get('category_id')!r:.40}")
        elif ann["category_id"] not in category_ids:
            problem = ("unknown_category", f"category_id {ann['category_id']} is not in 'categories'")
        elif "segmentation" not in ann:
            problem = ("malformed_annotation", "no 'segmentation'")
        elif ann.get("iscrowd"):  # a COCO crowd region marks many objects at once: not one instance to train on
            problem = ("crowd_region", "'iscrowd' is set: a region of several objects, not one instance")
        elif not (isinstance(ann.get("attribute_ids", []), list)
                  and all(is_integer(a) for a in ann.get("attribute_ids", []))):
            problem = ("malformed_annotation", f"'attribute_ids' must be a list of integers, got "
                       f"{ann.get('attribute_ids')!r:.40}")
        if problem:
            image = images.get(ann["image_id"]) if isinstance(ann, dict) and is_integer(ann.get("image_id")) else None
            skipped.append(SkippedObject(ref, image.file_name if image else None, *problem))
            continue
        images[ann["image_id"]].objects.append(SourceObject(ref, ann["category_id"], ann["segmentation"],
                                                            [int(a) for a in ann.get("attribute_ids", [])]))
    return Source(fmt, path, sorted(images.values(), key=lambda image: image.image_id), categories, attributes,
                  skipped)


_ITEM = re.compile(r"item(\d+)")


def read_deepfashion2(folder: Path) -> Source:
    """DeepFashion2's ``annos/`` folder: ``NNNNNN.json`` per image ``NNNNNN.jpg``, objects ``item1``, ``item2``, ..."""
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "no such folder"
        raise UserError(f"--annotations {folder}: {what} (expected DeepFashion2's annos/ folder of per-image JSON)")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise UserError(f"--annotations {folder}: no .json files (expected DeepFashion2's per-image annotations)")
    categories = [dict(c) for c in DEEPFASHION2_CATEGORIES]
    known = {c["id"] for c in categories}
    images, skipped = [], []
    numbered = all(f.stem.isdigit() for f in files) and len({int(f.stem) for f in files}) == len(files)
    for index, path in enumerate(files, start=1):
        doc = load_json(path, "DeepFashion2 annotation")
        if not isinstance(doc, dict):
            raise UserError(f"{path}: expected a JSON object with item1, item2, ..., got {type(doc).__name__}")
        image = SourceImage(path.name, int(path.stem) if numbered else index, path.stem + ".jpg", None, None)
        items = sorted((int(m.group(1)), key) for key in doc for m in [_ITEM.fullmatch(key)] if m)
        for _, key in items:
            item, ref = doc[key], f"{path.name} {key}"
            category = item.get("category_id") if isinstance(item, dict) else None
            if not isinstance(item, dict) or "segmentation" not in item:
                skipped.append(SkippedObject(ref, image.file_name, "malformed_annotation",
                                             "expected an object with 'category_id' and 'segmentation'"))
            elif not is_integer(category) or category not in known:
                skipped.append(SkippedObject(ref, image.file_name, "unknown_category",
                                             f"category_id {category!r:.20} is not one of DeepFashion2's 1-13"))
            else:
                image.objects.append(SourceObject(ref, category, item["segmentation"]))
        images.append(image)
    return Source("deepfashion2", folder, images, categories, [], skipped)


# --------------------------------------------------------------------------------------------- masks
class _SkipObject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def decode_segmentation(segmentation: Any, height: int, width: int) -> Tuple[Dict, List[int]]:
    """(compressed COCO RLE with str counts, indices of degenerate polygons dropped) of a source segmentation on a
    ``height x width`` grid, as pycocotools decodes it. Raises _SkipObject for what cannot be converted."""
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if size != [height, width]:
            raise _SkipObject("invalid_segmentation", f"RLE size {size!r:.30} is not the image's [{height}, {width}]")
        if isinstance(counts, list):
            if not all(is_integer(v) and v >= 0 for v in counts) or sum(counts) != height * width:
                raise _SkipObject("invalid_segmentation", f"uncompressed RLE counts must be non-negative integers "
                                  f"summing to {height}x{width}")
            encoded = coco_mask.frPyObjects({"size": size, "counts": counts}, height, width)
        elif isinstance(counts, str):
            try:
                runs = rle.coco_to_runs({"size": size, "counts": counts})
            except (rle.RLEError, ValueError) as exc:
                raise _SkipObject("invalid_segmentation", f"RLE counts: {exc}") from None
            if len(runs[0]) and int(runs[0][-1] + runs[1][-1]) > height * width:
                raise _SkipObject("invalid_segmentation", f"RLE counts run past the {height}x{width} image")
            encoded = {"size": size, "counts": counts.encode("ascii")}
        else:
            raise _SkipObject("invalid_segmentation", "RLE 'counts' must be a string or a list of integers")
        return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}, []
    if not isinstance(segmentation, list) or not segmentation:
        raise _SkipObject("invalid_segmentation", f"'segmentation' must be polygons or an RLE, got {segmentation!r:.60}")
    for index, polygon in enumerate(segmentation):
        if not (isinstance(polygon, list) and len(polygon) % 2 == 0 and all(is_finite_number(v) for v in polygon)):
            raise _SkipObject("invalid_segmentation", f"polygon {index} is not a list of x, y numbers: {polygon!r:.60}")
    encoded, degenerate = polygons_to_rle(segmentation, height, width)
    if encoded is None:
        raise _SkipObject("degenerate_polygon", f"every polygon has fewer than 3 points ({len(segmentation)} "
                          "polygon(s))")
    return encoded, degenerate


def _rotate_onto_photo(segmentation: Dict) -> Dict:
    """The mask of a swapped-size image on the photo's grid (``convert.SWAPPED_SIZE_FIX``)."""
    from ..convert import rotate_swapped_mask
    return rle.mask_to_coco(rotate_swapped_mask(rle.coco_to_mask(segmentation)))


# ------------------------------------------------------------------------------------------ converting
@dataclass
class CocoConversionResult:
    """What a conversion of one split produced (counts, skipped objects, repairs, outputs)."""

    format: str
    split: str
    images: int
    annotations: int
    source_images: int
    source_objects: int
    skipped: List[SkippedObject]
    degenerate_parts: List[Dict]
    swapped: List[Dict]
    dropped_by_class_map: Dict[str, int]
    images_without_annotations: List[str]
    images_without_objects: List[str]
    outputs: List[Path]
    empty_at_512: int = 0
    linked: int = 0
    copied: int = 0
    recovered: Optional[str] = None
    seconds: float = 0.0

    def skipped_by_reason(self) -> Dict[str, int]:
        counts = {reason: 0 for reason in SKIP_REASONS}
        for entry in self.skipped:
            counts[entry.reason] += 1
        return {reason: n for reason, n in counts.items() if n}

    def summary_table(self) -> str:
        """Human-readable end-of-run summary."""
        lines = [f"note: {self.recovered}"] if self.recovered else []
        lines += [f"{FORMAT_NAMES[self.format]} -> {self.split}: {self.images} images, {self.annotations} annotations "
                  f"(source: {self.source_images} images, {self.source_objects} objects)",
                  f"skipped objects: {len(self.skipped)}"]
        lines += [f"  {reason:<24}{n:>8}" for reason, n in self.skipped_by_reason().items()]
        if self.degenerate_parts:
            lines.append(f"polygons of fewer than 3 points dropped from objects kept: {len(self.degenerate_parts)}")
        if self.dropped_by_class_map:
            lines.append("dropped by the class map: " + ", ".join(f"{name} {n}" for name, n in
                                                                   self.dropped_by_class_map.items()))
        if self.swapped:
            lines.append(f"images whose JSON size is the photo's swapped (masks rotated): {len(self.swapped)}")
        if self.images_without_annotations:
            lines.append(f"images left out (no object left): {len(self.images_without_annotations)}")
        if self.images_without_objects:
            lines.append(f"images left out (no object in the source): {len(self.images_without_objects)}")
        if self.split == "val" and self.empty_at_512:
            lines.append(f"val masks empty at {RESIZE_SIZE}x{RESIZE_SIZE}, left out of the resize file: "
                         f"{self.empty_at_512}")
        lines.append(f"images: {self.linked} hard-linked, {self.copied} copied; time {self.seconds:.1f} s")
        lines += [f"wrote {path}" for path in self.outputs]
        if self.skipped or self.degenerate_parts:
            lines.append(f"every skipped object and dropped polygon is listed in {self.outputs[-2]}")
        return "\n".join(lines)


def output_paths(data_root: PathLike, split: str) -> Tuple[Dict[str, Path], Tuple[str, ...]]:
    """(paths, keys in output-set order) of what a conversion of ``split`` writes under ``data_root``."""
    root = Path(data_root)
    ann = root / "annotations"
    if split == "train":
        return ({"train": ann / "rle_instances_train.json", "report": ann / "conversion_report_train.json",
                 "train_dir": root / "train"}, ("train", "report", "train_dir"))
    if split == "val":
        return ({"val": ann / "rle_instances_val.json", "resize_val": ann / "resize_rle_instances_val.json",
                 "report": ann / "conversion_report_val.json", "val_dir": root / "val"},
                ("val", "resize_val", "report", "val_dir"))
    raise UserError(f"--split must be train or val, got {split!r}")


def convert_coco_source(fmt: str, annotations: PathLike, images: PathLike, data_root: PathLike, split: str = "train",
                        class_map: Optional[PathLike] = None, overwrite: bool = False, strict: bool = False,
                        copy_images: bool = False, verify_images: bool = False,
                        progress: bool = True) -> CocoConversionResult:
    """Convert one split of a Fashionpedia / ModaNet / DeepFashion2 / COCO-style source into ``data_root``.

    See the module docstring. UserError for unreadable inputs, a bad ``class_map``, outputs already there without
    ``overwrite``, and (``strict``) the first object that cannot be converted as given; then nothing is written.
    """
    started = time.perf_counter()
    root, image_dir = Path(data_root), Path(images)
    paths, keys = output_paths(root, split)
    _require_folder(image_dir, f"--images {image_dir}", f"the folder of the {FORMAT_NAMES.get(fmt, fmt)} images")
    target_dir = paths[keys[-1]].resolve()
    source_dir = image_dir.resolve()
    if source_dir == target_dir or target_dir in source_dir.parents:
        raise UserError(f"--images {image_dir} is the folder this conversion writes ({paths[keys[-1]]}): choose "
                        "another --data_root (the output folder is replaced as a whole)")
    source = read_source(fmt, annotations)
    mapping = read_class_map(class_map, source.categories) if class_map else identity_map(source.categories)
    root.mkdir(parents=True, exist_ok=True)
    outputs = _OutputSet.beside(paths, keys)
    annotations_existed = paths[keys[0]].parent.exists()
    with _only_conversion_of(root):
        recovered = outputs.recover()
        _check_outputs_free(paths, keys, overwrite)
        converted = _convert_objects(source, image_dir, mapping, verify_images, progress)
        if strict:
            _refuse_first_problem(source, converted)
        if not converted["images"]:
            reasons = ", ".join(f"{r} {n}" for r, n in _count(converted["skipped"]).items()) or "no objects"
            raise UserError(f"{source.path}: no object could be converted ({reasons}); nothing was written")
        try:
            outputs.prepare(overwrite)
            result = _write_outputs(outputs, source, split, mapping, converted, copy_images, image_dir, progress)
        except BaseException:
            outputs.discard()
            if not annotations_existed:
                with contextlib.suppress(OSError):
                    paths[keys[0]].parent.rmdir()
            raise
    result.recovered = recovered
    result.seconds = time.perf_counter() - started
    return result


def _count(skipped: Sequence[SkippedObject]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for entry in skipped:
        counts[entry.reason] = counts.get(entry.reason, 0) + 1
    return counts


def _refuse_first_problem(source: Source, converted: Dict) -> None:
    problems = [(entry.ref, f"{entry.reason}: {entry.detail}") for entry in converted["skipped"]]
    problems += [(entry["source"], f"degenerate_polygon: polygon {entry['polygon']} has fewer than 3 points")
                 for entry in converted["degenerate_parts"]]
    if problems:
        ref, problem = problems[0]
        raise UserError(f"{source.path}: {ref}: {problem} ({len(problems)} problem(s) in all; --strict: nothing "
                        "was written)")


def _convert_objects(source: Source, image_dir: Path, mapping: ClassMap, verify: bool, progress: bool) -> Dict:
    """Every image's photo checked and objects decoded: converted images (in source order) and what was left out."""
    skipped = list(source.skipped)
    degenerate_parts: List[Dict] = []
    swapped: List[Dict] = []
    dropped: Dict[str, int] = {}
    names = {c["id"]: c["name"] for c in source.categories}
    kept_images = []
    for image in tqdm(source.images, desc=f"convert {source.path.name}", unit="img", disable=not progress):
        objects = []
        for obj in image.objects:
            if mapping.target_of.get(obj.category_id) is None:
                dropped[names[obj.category_id]] = dropped.get(names[obj.category_id], 0) + 1
            else:
                objects.append(obj)
        if not objects:
            continue
        checked = _check_photo(str(image_dir / image.file_name), image.file_name, verify)
        if isinstance(checked[0], str):
            skipped += [SkippedObject(obj.ref, image.file_name, *checked) for obj in objects]
            continue
        real = checked
        grid = real if image.height is None else (image.height, image.width)
        is_swapped = grid != real
        if is_swapped and grid != real[::-1]:
            detail = f"{source.path.name} says {grid[0]}x{grid[1]} (HxW) but the photo is {real[0]}x{real[1]}"
            skipped += [SkippedObject(obj.ref, image.file_name, "size_mismatch", detail) for obj in objects]
            continue
        if is_swapped:
            swapped.append({"source": image.ref, "file_name": image.file_name, "json_height": grid[0],
                            "json_width": grid[1], "file_height": real[0], "file_width": real[1]})
        items = []
        for obj in objects:
            try:
                segmentation, degenerate = decode_segmentation(obj.segmentation, *grid)
                if is_swapped:
                    segmentation = _rotate_onto_photo(segmentation)
                if not int(coco_mask.area({"size": segmentation["size"],
                                           "counts": segmentation["counts"].encode("ascii")})):
                    raise _SkipObject("empty_mask", "the mask has no pixel at the image's size")
            except _SkipObject as skip:
                skipped.append(SkippedObject(obj.ref, image.file_name, skip.reason, skip.detail))
                continue
            degenerate_parts += [{"source": obj.ref, "file_name": image.file_name, "polygon": index}
                                 for index in degenerate]
            items.append((mapping.target_of[obj.category_id], obj.attribute_ids, segmentation))
        if items:
            kept_images.append((image, real, items))
    # Every image not written is listed: with objects that were all skipped or dropped, or with none at all.
    written = {kept.file_name for kept, _, _ in kept_images}
    had_objects = {image.file_name for image in source.images if image.objects} | {e.file_name for e in source.skipped}
    left_out = [image.file_name for image in source.images
                if image.file_name not in written and image.file_name in had_objects]
    without_objects = [image.file_name for image in source.images if image.file_name not in had_objects]
    return {"images": kept_images, "skipped": skipped, "degenerate_parts": degenerate_parts, "swapped": swapped,
            "dropped": dropped, "left_out": left_out, "without_objects": without_objects}


def _write_outputs(outputs: _OutputSet, source: Source, split: str, mapping: ClassMap, converted: Dict,
                   copy_images: bool, image_dir: Path, progress: bool) -> CocoConversionResult:
    staged = outputs.staged
    kept = converted["images"]
    entries = [{"id": image.image_id, "file_name": image.file_name, "height": real[0], "width": real[1]}
               for image, real, _ in kept]
    tails = [(image.image_id, tail) for image, _, items in kept for tail in _annotation_tails(items)]
    categories = mapping.categories
    attributes = [{k: a[k] for k in ("id", "name", "supercategory", "level") if k in a} for a in source.attributes]
    info = {"description": f"{FORMAT_NAMES[source.format]} converted by gluon_fashion.converters.coco_sources",
            "source_format": source.format, "source": source.path.name, "split": split,
            "class_map": Path(mapping.path).name if mapping.path else None}
    image_key = "train_dir" if split == "train" else "val_dir"
    linked, copied = _place_images([e["file_name"] for e in entries], image_dir, staged[image_key], copy_images,
                                   progress, desc=f"{split} images")
    empty_at_512 = 0
    if split == "val":
        resized = []
        for image, _, items in kept:
            for category, attribute_ids, segmentation in items:
                small = rle.resize_coco_rle(segmentation, RESIZE_SIZE, RESIZE_SIZE)
                if rle.coco_to_runs(small)[0].size:
                    resized.append((image.image_id, (category, attribute_ids, small)))
                else:
                    empty_at_512 += 1
        resized_tails = list(zip([i for i, _ in resized], _annotation_tails([item for _, item in resized])))
        _write_coco(staged["resize_val"], dict(info, mask_size=RESIZE_SIZE),
                    [dict(e, height=RESIZE_SIZE, width=RESIZE_SIZE, orig_height=e["height"], orig_width=e["width"])
                     for e in entries], resized_tails, len(resized_tails), categories, attributes, progress)
    _write_coco(staged[split], info, entries, tails, len(tails), categories, attributes, progress)
    result = CocoConversionResult(
        format=source.format, split=split, images=len(entries), annotations=len(tails),
        source_images=len(source.images), source_objects=sum(len(i.objects) for i in source.images) + len(source.skipped),
        skipped=converted["skipped"], degenerate_parts=converted["degenerate_parts"], swapped=converted["swapped"],
        dropped_by_class_map=converted["dropped"], images_without_annotations=converted["left_out"],
        images_without_objects=converted["without_objects"],
        outputs=[outputs.final[key] for key in outputs.final], empty_at_512=empty_at_512, linked=linked, copied=copied)
    atomic_write_json(staged["report"], _report(result, source, mapping), indent=1)
    outputs.commit()
    return result


def _report(result: CocoConversionResult, source: Source, mapping: ClassMap) -> Dict:
    """The conversion report: deterministic (no timings, no absolute paths)."""
    return {
        "source": {"format": source.format, "annotations": source.path.name, "images": result.source_images,
                   "objects": result.source_objects},
        "class_map": Path(mapping.path).name if mapping.path else None,
        "split": result.split,
        "written": {"images": result.images, "annotations": result.annotations},
        "skipped_objects": len(result.skipped),
        "skipped_objects_by_reason": result.skipped_by_reason(),
        "skipped": [entry.as_dict() for entry in result.skipped],
        "degenerate_polygons_dropped": result.degenerate_parts,
        "dropped_by_class_map": result.dropped_by_class_map,
        "swapped_size": result.swapped,
        "images_without_valid_annotations": result.images_without_annotations,
        "images_without_objects_in_source": result.images_without_objects,
        "val_annotations_empty_at_512": result.empty_at_512 if result.split == "val" else None,
        "outputs": [path.relative_to(path.parent.parent).as_posix() if path.parent.name == "annotations"
                    else path.name + "/" for path in result.outputs],
    }


# ------------------------------------------------------------------------------------------ command line
def build_parser(fmt: str, description: str):
    """The command line shared by ``tools/convert_{fashionpedia,modanet,deepfashion2}_to_coco.py``."""
    import argparse
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = "folder of per-image JSON (annos/)" if fmt == "deepfashion2" else "COCO JSON file"
    parser.add_argument("--annotations", required=True, help=f"the split's {FORMAT_NAMES[fmt]} annotations: {what}")
    parser.add_argument("--images", required=True, help="folder of the split's images")
    parser.add_argument("--data_root", required=True,
                        help="output dataset folder (annotations/, train/, val/); not the --images folder's parent "
                             "if that folder is named like the split")
    parser.add_argument("--split", choices=("train", "val"), default="train",
                        help="which split of the project's layout to write (default: %(default)s)")
    parser.add_argument("--class-map", "--class_map", dest="class_map", default=None,
                        help="JSON mapping source categories (name or id) to target names or null (drop); e.g. "
                             "datasets/class_maps/modanet_to_imaterialist.json")
    parser.add_argument("--copy_images", action="store_true", help="copy the images instead of hard-linking them")
    parser.add_argument("--overwrite", action="store_true", help="replace this split's existing outputs")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first object that cannot be converted as given (nothing written)")
    parser.add_argument("--verify_images", action="store_true",
                        help="also decode every JPEG at 1/8 scale and skip the objects of those libjpeg reports corrupt")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    return parser


def main(fmt: str, description: str, argv: Optional[List[str]] = None) -> int:
    """Run a converter tool: parse ``argv``, convert, print the summary."""
    args = build_parser(fmt, description).parse_args(argv)
    result = convert_coco_source(fmt, args.annotations, args.images, args.data_root, split=args.split,
                                 class_map=args.class_map, overwrite=args.overwrite, strict=args.strict,
                                 copy_images=args.copy_images, verify_images=args.verify_images,
                                 progress=not args.no_progress)
    print(result.summary_table())
    return 0


__all__ = ["FORMATS", "CocoConversionResult", "Source", "convert_coco_source", "decode_segmentation", "main",
           "read_source"]
