"""Reading COCO-style JSON files: annotations, label descriptions and detection results.

Every reader of such a file goes through here, so a missing file, invalid JSON, a document without the
lists its caller needs, or an entry of another shape than the readers rely on is one
:class:`~gluon_fashion.errors.UserError` naming the file and the entry. :func:`read_coco_json` checks, for
each list it is asked for:

* ``images``: objects with integer ``id`` (unique), positive integer ``width`` and ``height`` (and
  ``orig_width``/``orig_height`` where present) and a non-empty ``file_name``;
* ``annotations``: objects with integer ``id`` (unique), ``image_id`` and ``category_id``, a ``segmentation``
  (a COCO RLE ``{"size": [h, w], "counts": ...}`` or polygons), a ``bbox`` ``[x, y, w, h]`` of finite numbers with
  ``w, h >= 0`` and a finite ``area >= 0`` (the datasets and COCOeval read all of them);
* ``categories``: objects with integer ``id`` (unique) and a string ``name``;

and, across lists, that every annotation's image is in ``images`` and its category in ``categories``, and that
an RLE mask has its image's size: an annotation that fits none of the listed images or categories is an error,
never trained or scored silently. Checks that only one caller needs (RLE rather than polygons for the
datasets; detection results, see ``evaluation.coco.load_results``) stay with that caller. Cheap to import:
no MXNet, no pycocotools.
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import UserError
from ..fileio import PathLike

#: The lists of a COCO annotation file.
COCO_LISTS = ("images", "annotations", "categories")


def converter_hint(data_root: PathLike) -> str:
    """How to create a dataset's missing annotation files (for the ``hint`` of :func:`read_coco_json`)."""
    return f"run tools/convert_imaterialist_to_coco.py --data_root {data_root} first"


def load_json(path: PathLike, what: str, hint: str = "") -> Any:
    """The JSON value in ``path``; UserError naming the file (and ``what`` it is) if missing, unreadable or invalid."""
    return _load(Path(path), what, hint)


def _load(path: Path, what: str, hint: str) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def read_coco_json(path: PathLike, what: str = "annotation file", keys: Sequence[str] = COCO_LISTS,
                   hint: str = "", fill_boxes: bool = False) -> Dict:
    """The JSON object in ``path``, which must hold a list under each of ``keys``, its entries checked as the
    module docstring says (``images``, ``annotations`` and ``categories`` among ``keys``; others unchecked).

    ``what`` names the file in errors ("annotation file", "label descriptions", ...); ``hint`` says how to
    get a missing file. UserError for a missing or unreadable file, invalid JSON, a missing list or an entry
    of the wrong shape (naming the entry: its ``id``, or its index where it has none). ``fill_boxes``: an
    annotation without ``bbox`` or ``area`` (Fashionpedia has some) gets them from its mask instead of an error.
    """
    path = Path(path)
    document = _load(path, what, hint)
    needed = ", ".join(f"'{key}'" for key in keys)
    if not isinstance(document, dict):
        raise UserError(f"{path}: expected a JSON object with the lists {needed}, got {type(document).__name__}")
    missing = [key for key in keys if not isinstance(document.get(key), list)]
    if missing:
        raise UserError(f"{path}: no '{missing[0]}' list; expected a JSON object with the lists {needed}")
    images = _check_images(document["images"], path) if "images" in keys else None
    category_ids = _check_categories(document["categories"], path) if "categories" in keys else None
    if "annotations" in keys:
        if fill_boxes:
            _fill_boxes(document["annotations"], path, images)
        _check_annotations(document["annotations"], path, images, category_ids)
    return document


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> Tuple[Optional[Dict], List[int]]:
    """(compressed COCO RLE with str counts, as pycocotools rasterises ``polygons`` on a ``height x width`` grid;
    indices of the polygons left out for having fewer than 3 points). The RLE is None when no polygon is left.

    Polygons of fewer than 3 points are left out on purpose: they have no area, and pycocotools would read one of
    exactly 2 points (4 numbers) as a box."""
    from pycocotools import mask as coco_mask  # here, so that importing this module stays cheap
    kept = [[float(v) for v in polygon] for polygon in polygons if len(polygon) >= 6]
    degenerate = [index for index, polygon in enumerate(polygons) if len(polygon) < 6]
    if not kept:
        return None, degenerate
    merged = coco_mask.merge(coco_mask.frPyObjects(kept, int(height), int(width)))
    return {"size": [int(height), int(width)], "counts": merged["counts"].decode("ascii")}, degenerate


def _fill_boxes(annotations: List[Any], path: Path, images: Optional[Mapping[int, Mapping]]) -> None:
    """Give annotations without ``bbox``/``area`` those of their mask (entries of another shape are left for
    ``_check_annotations`` to name)."""
    from pycocotools import mask as coco_mask
    for ann in annotations:
        if not isinstance(ann, dict) or ("bbox" in ann and "area" in ann) or images is None:
            continue
        image, segm = images.get(ann.get("image_id")), ann.get("segmentation")
        if image is None or _segmentation_problem(segm, image) is not None:
            continue
        if isinstance(segm, list):
            rle, _ = polygons_to_rle(segm, image["height"], image["width"])
        else:
            rle = segm
        if rle is None:
            box, area = [0.0, 0.0, 0.0, 0.0], 0.0
        else:
            counts = rle["counts"]
            encoded = (coco_mask.frPyObjects(rle, *rle["size"]) if isinstance(counts, list)
                       else {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
            box, area = coco_mask.toBbox(encoded).tolist(), float(coco_mask.area(encoded))
        ann.setdefault("bbox", box)
        ann.setdefault("area", area)


#: Files larger than this are searched from their end for the categories (see read_categories).
_PEEK_LIMIT = 64 << 20


def read_categories(path: PathLike, hint: str = "") -> List[Dict]:
    """The ``categories`` list of a COCO annotation file, checked (integer ids, names).

    A file of up to 64 MB is read and checked whole (as :func:`read_coco_json` with ``fill_boxes``), so that a
    trainer reading its class list first reports any malformed entry at once, naming it. The converters write the
    categories last, so in a larger file they are first looked for in the last few MB (parsing a GB of masks for a
    class list would cost a minute); a file where they are not found there is read whole."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > _PEEK_LIMIT:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - (4 << 20)))
            tail = handle.read().decode("utf-8", "replace")
        at = tail.rfind('"categories":')
        if at >= 0:
            try:
                categories, _ = json.JSONDecoder().raw_decode(tail[at + len('"categories":'):].lstrip())
            except ValueError:
                categories = None
            if isinstance(categories, list):
                _check_categories(categories, path)
                return categories
    return read_coco_json(path, hint=hint, fill_boxes=True)["categories"]


def read_attribute_table(path: PathLike, category_ids: Optional[Sequence[int]] = None, hint: str = "") -> List[Dict]:
    """``[{"id", "name"}]`` of the attributes the annotations of ``path`` use (of ``category_ids`` only, if
    given), by id; names from the file's ``attributes`` list (the id where it has none). The attributes a model
    can learn from these annotations: one no annotation carries would only ever be a negative.
    UserError naming the file when an ``attribute_ids`` is not a list of integers, or no annotation has one."""
    path = Path(path)
    doc = read_coco_json(path, hint=hint, keys=("annotations",))
    wanted = None if category_ids is None else set(int(c) for c in category_ids)
    used = set()
    for index, ann in enumerate(doc["annotations"]):
        ids = ann.get("attribute_ids", [])
        _require(isinstance(ids, list) and all(is_integer(a) for a in ids), path,
                 _entry_name("annotation", ann, index), f"'attribute_ids' must be a list of integers, got {ids!r:.40}")
        if wanted is None or ann.get("category_id") in wanted:
            used.update(int(a) for a in ids)
    if not used:
        raise UserError(f"{path}: no annotation{' of the trained classes' if wanted else ''} has attribute_ids, "
                        "so there are no attributes to learn (train without --attributes)")
    names = {int(a["id"]): str(a.get("name", a["id"])) for a in doc.get("attributes") or []
             if isinstance(a, Mapping) and is_integer(a.get("id"))}
    return [{"id": a, "name": names.get(a, str(a))} for a in sorted(used)]


def read_coco_results(path: PathLike) -> List[Dict]:
    """COCO detection results in ``path``: a JSON list of detections (their fields are the caller's to check)."""
    path = Path(path)
    results = _load(path, "results file", "")
    if not isinstance(results, list):
        raise UserError(f"{path}: results must be a JSON list of detections, got {type(results).__name__}")
    return results


# ------------------------------------------------------------------------------------------- entry checks
def is_integer(value: Any) -> bool:
    """An integer, NumPy's included (``True``/``False`` are not, nor are floats such as ``3.0``)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (Python's JSON reader accepts ``NaN`` and ``Infinity``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


#: The list each kind of entry lives in.
_LIST_OF = {"image": "images", "annotation": "annotations", "category": "categories"}


def _entry_name(kind: str, entry: Any, index: int) -> str:
    """``image 7 (images[3])`` by its id where it has an integer one, else ``images[3]`` by its place."""
    place = f"{_LIST_OF[kind]}[{index}]"
    if isinstance(entry, dict) and is_integer(entry.get("id")):
        return f"{kind} {entry['id']} ({place})"
    return place


def _require(ok: bool, path: Path, name: str, problem: str) -> None:
    if not ok:
        raise UserError(f"{path}: {name}: {problem}")


def _check_unique_id(seen: Dict[int, int], entry: Dict, index: int, path: Path, kind: str) -> None:
    first = seen.setdefault(entry["id"], index)
    _require(first == index, path, _entry_name(kind, entry, index),
             f"id {entry['id']} is also the id of {_LIST_OF[kind]}[{first}]")


def _check_images(images: List[Any], path: Path) -> Dict[int, Mapping]:
    """Image id -> entry, every entry checked."""
    by_id: Dict[int, int] = {}
    for index, entry in enumerate(images):
        name = _entry_name("image", entry, index)
        _require(isinstance(entry, dict), path, name, f"expected an object, got {entry!r:.80}")
        _require(is_integer(entry.get("id")), path, name, f"'id' must be an integer, got {entry.get('id')!r:.40}")
        optional_sizes = tuple(key for key in ("orig_width", "orig_height") if key in entry)  # the 512x512 file's
        for key in ("width", "height") + optional_sizes:
            value = entry.get(key)
            _require(is_integer(value) and value > 0, path, name,
                     f"'{key}' must be a positive integer, got {value!r:.40}")
        file_name = entry.get("file_name")
        _require(isinstance(file_name, str) and bool(file_name), path, name,
                 f"'file_name' must be a non-empty string, got {file_name!r:.60}")
        _check_unique_id(by_id, entry, index, path, "image")
    return {image_id: images[index] for image_id, index in by_id.items()}


def _check_categories(categories: List[Any], path: Path) -> Dict[int, int]:
    """Category id -> index, every entry checked."""
    by_id: Dict[int, int] = {}
    for index, entry in enumerate(categories):
        name = _entry_name("category", entry, index)
        _require(isinstance(entry, dict), path, name, f"expected an object, got {entry!r:.80}")
        _require(is_integer(entry.get("id")), path, name, f"'id' must be an integer, got {entry.get('id')!r:.40}")
        _require(isinstance(entry.get("name"), str), path, name,
                 f"'name' must be a string, got {entry.get('name')!r:.40}")
        _check_unique_id(by_id, entry, index, path, "category")
    return by_id


def rle_shape_problem(segm: Mapping, expected_size: Optional[Sequence[int]] = None) -> Optional[str]:
    """Why ``segm`` is not a COCO RLE ``{"size": [h, w], "counts": string or list}`` (of ``expected_size``
    (h, w), if given); None when it is one. Whether the counts decode to that size is not checked here."""
    size, counts = segm.get("size"), segm.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(is_integer(v) and v >= 0 for v in size)):
        return f"RLE 'size' must be [height, width], got {size!r:.40}"
    if not isinstance(counts, (str, list)):
        return f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"
    if expected_size is not None and size != list(expected_size):
        return f"mask size {size} differs from its image's size {list(expected_size)}"
    return None


def _segmentation_problem(segm: Any, image: Optional[Mapping]) -> Optional[str]:
    """Why ``segm`` is not a COCO RLE of its image's size or a list of polygons (None when it is one)."""
    if isinstance(segm, dict):
        return rle_shape_problem(segm, None if image is None else (image["height"], image["width"]))
    if isinstance(segm, list) and all(isinstance(polygon, list) and all(is_finite_number(v) for v in polygon)
                                      for polygon in segm):
        odd = next((i for i, polygon in enumerate(segm) if len(polygon) % 2), None)
        if odd is not None:
            return f"polygon {odd} of 'segmentation' has an odd number of coordinates ({len(segm[odd])}): not x, y pairs"
        return None
    return f"'segmentation' must be a COCO RLE {{'size': [h, w], 'counts': ...}} or polygons, got {segm!r:.60}"


def _check_annotations(annotations: List[Any], path: Path, images: Optional[Mapping[int, Mapping]],
                       category_ids: Optional[Mapping[int, int]]) -> None:
    by_id: Dict[int, int] = {}
    for index, ann in enumerate(annotations):
        name = _entry_name("annotation", ann, index)
        _require(isinstance(ann, dict), path, name, f"expected an object, got {ann!r:.80}")
        for key in ("id", "image_id", "category_id"):
            _require(is_integer(ann.get(key)), path, name, f"'{key}' must be an integer, got {ann.get(key)!r:.40}")
        _check_unique_id(by_id, ann, index, path, "annotation")
        image = None
        if images is not None:
            image = images.get(ann["image_id"])
            _require(image is not None, path, name, f"image_id {ann['image_id']} is not in 'images'")
        if category_ids is not None:
            _require(ann["category_id"] in category_ids, path, name,
                     f"category_id {ann['category_id']} is not in 'categories'")
        _require("segmentation" in ann, path, name, "no 'segmentation'")
        problem = _segmentation_problem(ann["segmentation"], image)
        _require(problem is None, path, name, problem or "")
        box = ann.get("bbox")
        _require(isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)
                 and box[2] >= 0 and box[3] >= 0, path, name,
                 f"'bbox' must be [x, y, width, height] of finite numbers, width and height >= 0, got {box!r:.60}")
        area = ann.get("area")
        _require(is_finite_number(area) and area >= 0, path, name,
                 f"'area' must be a finite number >= 0, got {area!r:.40}")
