"""Kaggle iMaterialist (Fashion) ``train.csv`` -> COCO instance annotations (compressed RLE masks).

Reads ``<data_root>/train.csv`` (2019 or 2020 layout, told apart by its columns), ``label_descriptions.json``
and the headers of ``train/*.jpg``; writes under ``<data_root>``:

- ``annotations/rle_instances_train.json`` (file names relative to ``train/``),
- ``annotations/rle_instances_val.json`` and ``annotations/resize_rle_instances_val.json`` (relative to ``val/``;
  the latter with masks, boxes and areas at 512x512 and the true size kept as ``orig_height``/``orig_width``),
- ``val/``: the validation images, hard-linked from ``train/`` (copied where linking fails or on request),
- ``annotations/conversion_report.json``: every skipped row with its line number and reason, every repaired one.

Rows that cannot be converted (missing or unreadable photo, photo size not the CSV's, unknown category or
attribute, malformed ClassId/AttributesIds/row, invalid EncodedPixels) are skipped, counted on screen and
listed in the report with their line number (the header is line 1); ``strict`` turns the first into an
error before anything is written. A photo left with no valid row is left out of both splits (a photo with
none of its garments marked would teach and score "nothing here"); the report lists it. The split is by
photo: a seeded permutation of the sorted ImageIds, so it does not depend on CSV row order; ``val_num`` is
cut to 20% of the usable photos when it asks for more. Masks that keep no pixel at 512x512 (thin parts of
large photos) are left out of the resize file and counted in the report: no prediction could match them.

Height/Width swapped in the CSV (two real 2019 photos): the runs then index an H_csv x W_csv grid while the
photo is W_csv x H_csv, and the mask is transposed onto the photo's grid. Had the encoder flattened the
true mask in row-major order (instead of Kaggle's column-major) and so written the size swapped, the CSV's
mask is exactly the transpose of the true one, and transposing recovers it pixel for pixel. It also keeps
the shape, whereas re-reading the same pixel indices on the photo's grid would shear it into stripes. A 90
degree rotation would be right only if the photo had been rotated after annotation, which the CSV cannot
tell; the report lists every such row so they can be checked by eye.

How it stays fast at 333k rows / 1-2 GB of CSV text: the CSV is cut into fixed-size byte chunks at line
ends, and worker processes parse, validate and convert the rows of a chunk straight from Kaggle runs to
COCO's compressed counts (no full-resolution mask is built). Only these compact results (about a third
of the CSV's size) travel back; the main process groups them by image, splits by image and streams the
JSON out. The 512x512 masks of the val rows are made in a second, small pass that re-reads just those
lines by byte offset. Results do not depend on the number of workers: everything is put back in CSV line
order before ids are given.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

from . import rle
from .data.coco_json import read_coco_json
from .errors import UserError
from .fileio import atomic_open, atomic_save, atomic_write_json
from .images import image_size

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_VAL_NUM = 1000
#: --val_num is cut to this fraction of the usable images when it asks for more (small datasets).
MAX_VAL_FRACTION = 0.2
RESIZE_SIZE = 512
#: Work unit of the parallel pass. Fixed in bytes (not derived from the worker count) to keep it simple to
#: reason about; the output never depends on it.
CHUNK_BYTES = 4 << 20
_VAL_BATCH_ROWS = 256

TRAIN_JSON = "rle_instances_train.json"
VAL_JSON = "rle_instances_val.json"
RESIZE_VAL_JSON = "resize_rle_instances_val.json"
REPORT_JSON = "conversion_report.json"

COLUMNS_2019 = ("ImageId", "EncodedPixels", "Height", "Width", "ClassId")
COLUMNS_2020 = COLUMNS_2019 + ("AttributesIds",)

#: Why a row can be skipped (the keys of the report's ``skipped_rows_by_reason``).
SKIP_REASONS = (
    "malformed_row",
    "malformed_class_id",
    "malformed_attribute_ids",
    "unknown_category",
    "unknown_attribute",
    "missing_image",
    "unreadable_image",
    "size_mismatch",
    "invalid_rle",
)


@dataclass
class SkippedRow:
    """A CSV row left out of the output, with its 1-based line number in the file (header = line 1)."""

    line: int
    image_id: Optional[str]
    reason: str
    detail: str

    def as_dict(self) -> Dict:
        return {"line": self.line, "image_id": self.image_id, "reason": self.reason, "detail": self.detail}


@dataclass
class ConversionResult:
    """What a conversion produced: counts per split, skipped and repaired rows, output paths, timings."""

    csv_format: str
    data_rows: int
    train_images: int
    train_annotations: int
    val_images: int
    val_annotations: int
    skipped: List[SkippedRow]
    swapped: List[Dict]
    images_without_annotations: List[str]
    val_note: Optional[str]
    outputs: List[Path]
    val_empty_at_512: int = 0
    val_linked: int = 0
    val_copied: int = 0
    timings: Dict[str, float] = field(default_factory=dict)

    def skipped_by_reason(self) -> Dict[str, int]:
        return count_reasons(self.skipped)

    def summary_table(self) -> str:
        """Human-readable end-of-run summary."""
        lines = [
            f"{'split':<8}{'images':>10}{'annotations':>14}",
            f"{'train':<8}{self.train_images:>10}{self.train_annotations:>14}",
            f"{'val':<8}{self.val_images:>10}{self.val_annotations:>14}",
            f"CSV rows read: {self.data_rows} ({self.csv_format} format)",
            f"skipped rows: {len(self.skipped)}",
        ]
        lines += [f"  {reason:<24}{n:>8}" for reason, n in self.skipped_by_reason().items()]
        swapped_images = len({entry["image_id"] for entry in self.swapped})
        lines.append(f"swapped Height/Width (mask transposed onto the image): {len(self.swapped)} rows, "
                     f"{swapped_images} images")
        if self.images_without_annotations:
            lines.append(f"images left out (no valid row): {len(self.images_without_annotations)}")
        if self.val_empty_at_512:
            lines.append(f"val masks empty at {RESIZE_SIZE}x{RESIZE_SIZE}, left out of {RESIZE_VAL_JSON}: "
                         f"{self.val_empty_at_512}")
        if self.val_note:
            lines.append(f"note: {self.val_note}")
        lines.append(f"val images: {self.val_linked} hard-linked, {self.val_copied} copied")
        lines.append("time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.timings.items()))
        lines += [f"wrote {path}" for path in self.outputs]
        if self.skipped:
            lines.append("every skipped row is listed in the report, with its line number and reason")
        return "\n".join(lines)


class _Skip(Exception):
    """A row that cannot be converted; carries the report reason and detail."""

    def __init__(self, reason: str, detail: str, image_id: Optional[str] = None):
        super().__init__(detail)
        self.reason, self.detail, self.image_id = reason, detail, image_id


@dataclass(frozen=True)
class _Config:
    """What a worker needs to turn CSV lines into annotations (sent once per worker)."""

    csv_path: str
    train_dir: str
    csv_format: str
    column_index: Dict[str, int]
    num_columns: int
    category_ids: frozenset
    attribute_ids: frozenset


# --------------------------------------------------------------------------------------------- inputs

def read_label_descriptions(path: PathLike) -> Dict:
    """Load label_descriptions.json; UserError naming the file if it is missing or not the expected shape."""
    doc = read_coco_json(path, "label descriptions", keys=("categories", "attributes"),
                         hint="expected Kaggle's label_descriptions.json here")
    for key in ("categories", "attributes"):
        if not all(isinstance(e, dict) and isinstance(e.get("id"), int) and isinstance(e.get("name"), str)
                   for e in doc[key]):
            raise UserError(f"{path}: '{key}' must be a list of objects with an integer 'id' and a 'name'")
    if not doc["categories"]:
        raise UserError(f"{path}: 'categories' is empty")
    return doc


def read_csv_header(csv_path: PathLike) -> Tuple[str, Dict[str, int], int]:
    """(format '2019' | '2020', column name -> index, number of columns) of a Kaggle train.csv.

    The format is told by the columns: 2020 adds ``AttributesIds`` (and its ClassId is a plain category).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: not found (expected Kaggle's train.csv here)")
    with open(csv_path, "rb") as handle:
        first = handle.readline(1 << 16)
    if not first.strip():
        raise UserError(f"{csv_path}: empty file, expected a CSV with a header line")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{csv_path}: not a CSV text file (the first line is not UTF-8 text)") from None
    try:
        names = [name.strip() for name in next(csv.reader([text.rstrip("\r\n")]))]
    except csv.Error as exc:
        raise UserError(f"{csv_path}: cannot read the header line as CSV ({exc})") from None
    csv_format = "2020" if "AttributesIds" in names else "2019"
    required = COLUMNS_2020 if csv_format == "2020" else COLUMNS_2019
    missing = [name for name in required if name not in names]
    if missing:
        raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; found {', '.join(names) or 'none'} "
                        f"(expected {','.join(COLUMNS_2019)}[,AttributesIds])")
    return csv_format, {name: names.index(name) for name in required}, len(names)


def image_file_name(image_id: str) -> str:
    """File name of an ImageId (2019 ids end in .jpg, 2020 ids do not)."""
    return image_id if image_id.lower().endswith(".jpg") else image_id + ".jpg"


def output_paths(data_root: PathLike) -> Dict[str, Path]:
    """Where the converter writes: train/val/resize-val JSON, the report and the val image folder."""
    root = Path(data_root)
    ann = root / "annotations"
    return {"train": ann / TRAIN_JSON, "val": ann / VAL_JSON, "resize_val": ann / RESIZE_VAL_JSON,
            "report": ann / REPORT_JSON, "val_dir": root / "val"}


def choose_val_count(num_images: int, val_num: int) -> Tuple[int, Optional[str]]:
    """Number of val images and, when --val_num had to be cut, a note saying why.

    --val_num is honoured while it is at most 20% of the usable images; beyond that the split is cut to
    20% (at least one image when there are two or more), so a small dataset keeps most images for training.
    """
    cap = max(1, int(MAX_VAL_FRACTION * num_images)) if num_images >= 2 else 0
    if val_num <= cap:
        return val_num, None
    return cap, (f"only {num_images} usable images: --val_num {val_num} is more than "
                 f"{MAX_VAL_FRACTION:.0%} of them, so {cap} go to val instead")


def split_images(image_ids: Sequence[str], val_count: int, seed: int) -> set:
    """ImageIds drawn for val: a seeded permutation of the sorted ids (independent of CSV row order)."""
    ordered = sorted(image_ids)
    picks = np.random.RandomState(seed).permutation(len(ordered))[:val_count]
    return {ordered[i] for i in picks.tolist()}


# ------------------------------------------------------------------------------------- worker side

_CONFIG: Optional[_Config] = None
_SIZE_CACHE: Dict[str, Tuple] = {}  # file name -> (height, width) or (skip reason, detail)


def _init_worker(config: _Config, in_pool: bool = False) -> None:
    global _CONFIG
    _CONFIG = config
    _SIZE_CACHE.clear()
    if in_pool:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle, once


def _parse_fields(raw: bytes, config: _Config) -> List[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Skip("malformed_row", "not UTF-8 text") from None
    if '"' in text:
        try:
            fields = next(csv.reader([text]))
        except csv.Error as exc:
            raise _Skip("malformed_row", f"not a CSV line ({exc})") from None
    else:
        fields = text.split(",")  # no quotes, so commas are separators: 10x faster than csv on KB-long rows
    if len(fields) != config.num_columns:
        raise _Skip("malformed_row", f"{len(fields)} fields, the header has {config.num_columns}")
    return fields


def _id_list(text: str, separator: str) -> List[int]:
    """Non-negative integer ids joined by ``separator``; ValueError unless every part is plain digits."""
    parts = [part.strip() for part in text.split(separator)]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(text)
    return [int(part) for part in parts]


def _parse_labels(fields: List[str], config: _Config, image_id: str) -> Tuple[int, List[int]]:
    class_text = fields[config.column_index["ClassId"]].strip()
    if config.csv_format == "2019":
        try:
            ids = _id_list(class_text, "_")
        except ValueError:
            raise _Skip("malformed_class_id", f"ClassId {class_text!r} is not 'category[_attribute...]' "
                        "with integer ids", image_id) from None
        category, attributes = ids[0], ids[1:]
    else:
        if not (class_text.isascii() and class_text.isdigit()):
            raise _Skip("malformed_class_id", f"ClassId {class_text!r} is not an integer category id "
                        "(2020 format: attributes go in AttributesIds)", image_id)
        category = int(class_text)
        attr_text = fields[config.column_index["AttributesIds"]].strip()
        try:
            attributes = [] if attr_text in ("", "nan", "NaN") else _id_list(attr_text, ",")
        except ValueError:
            raise _Skip("malformed_attribute_ids", f"AttributesIds {attr_text!r} is not a comma-separated "
                        "list of integer ids", image_id) from None
    if category not in config.category_ids:
        raise _Skip("unknown_category", f"category {category} is not in label_descriptions.json", image_id)
    unknown = [a for a in attributes if a not in config.attribute_ids]
    if unknown:
        raise _Skip("unknown_attribute", f"attribute id(s) {unknown} not in label_descriptions.json", image_id)
    return category, attributes


def _real_size(file_name: str, config: _Config, image_id: str) -> Tuple[int, int]:
    """(height, width) from the photo's header, read once per worker; _Skip if missing or unreadable."""
    cached = _SIZE_CACHE.get(file_name)
    if cached is None:
        path = os.path.join(config.train_dir, file_name)
        try:
            cached = image_size(path)
        except FileNotFoundError:
            cached = ("missing_image", f"train/{file_name} does not exist")
        except Exception as exc:  # PIL raises many types on damaged files (UserError, DecompressionBombError...)
            cached = ("unreadable_image", f"train/{file_name} is not a readable image ({exc})")
        _SIZE_CACHE[file_name] = cached
    if isinstance(cached[0], str):
        raise _Skip(*cached, image_id)
    return cached


def _parse_row(raw: bytes, config: _Config):
    """One CSV line, checked up to its mask: (image_id, category, attributes, EncodedPixels, CSV (h, w),
    photo (h, w), swapped). Raises _Skip with the reason."""
    fields = _parse_fields(raw, config)
    image_id = fields[config.column_index["ImageId"]].strip()
    if not image_id or "/" in image_id or "\\" in image_id or image_id.startswith("."):
        raise _Skip("malformed_row", f"ImageId {image_id!r} is not a plain file name")
    try:
        height = int(fields[config.column_index["Height"]])
        width = int(fields[config.column_index["Width"]])
    except ValueError:
        raise _Skip("malformed_row", "Height/Width are not integers", image_id) from None
    if height < 1 or width < 1:
        raise _Skip("malformed_row", f"Height/Width {height}x{width} are not positive", image_id)
    category, attributes = _parse_labels(fields, config, image_id)
    real = _real_size(image_file_name(image_id), config, image_id)
    swapped = real != (height, width)
    if swapped and real != (width, height):
        raise _Skip("size_mismatch", f"CSV size {height}x{width} (HxW) but the image is {real[0]}x{real[1]}",
                    image_id)
    encoded = fields[config.column_index["EncodedPixels"]]
    return image_id, category, attributes, encoded, (height, width), real, swapped


def _runs_on_photo(encoded: str, csv_size: Tuple[int, int], swapped: bool) -> rle.Runs:
    """The mask's runs on the photo's own pixel grid (transposed when the CSV swapped Height and Width)."""
    if swapped:
        # Dense on purpose: only swapped rows come here (two photos in the real data), and transposing a run
        # list is a row-major re-scan that a dense array states most plainly.
        return rle.mask_to_runs(rle.kaggle_to_mask(encoded, *csv_size).T)
    return rle.parse_kaggle_rle(encoded, *csv_size)


def _full_size_segmentation(encoded: str, csv_size: Tuple[int, int], real: Tuple[int, int],
                            swapped: bool, image_id: str) -> rle.CocoRLE:
    try:
        if not swapped:
            return rle.kaggle_to_coco(encoded, *csv_size)
        rle.parse_kaggle_rle(encoded, *csv_size)  # validate on the grid the runs were written for
        return rle.runs_to_coco(*_runs_on_photo(encoded, csv_size, swapped), *real)
    except rle.RLEError as exc:
        raise _Skip("invalid_rle", f"EncodedPixels: {exc}", image_id) from None


def _annotation_tails(items: List[Tuple[int, List[int], rle.CocoRLE]]) -> List[str]:
    """JSON of annotations given as (category, attributes, segmentation), each without its leading
    '{"id":..,"image_id":..,' (ids are given after the split). Area and box come from pycocotools, called
    once for the whole batch: per-call overhead would otherwise cost as much as the work."""
    if not items:
        return []
    compressed = [{"size": seg["size"], "counts": seg["counts"].encode("ascii")} for _, _, seg in items]
    areas = coco_mask.area(compressed).tolist()
    boxes = coco_mask.toBbox(compressed).tolist()
    tails = []
    for (category, attributes, segmentation), area, (x, y, w, h) in zip(items, areas, boxes):
        height, width = segmentation["size"]
        # Formatted by hand: json.dumps spends most of its time scanning the KB-long counts string. COCO
        # counts use characters 48..111, of which only the backslash needs escaping; floats print as in json.
        escaped = segmentation["counts"].replace("\\", "\\\\")
        tails.append(f'"category_id":{category},"segmentation":{{"size":[{height},{width}],"counts":"{escaped}"}},'
                     f'"area":{int(area)},"bbox":[{x!r},{y!r},{w!r},{h!r}],"iscrowd":0,'
                     f'"attribute_ids":[{",".join(map(str, attributes))}]}}')
    return tails


def _split_lines(data: bytes) -> Iterator[Tuple[int, bytes]]:
    """(offset in ``data``, line without its line end) for every line of a chunk."""
    offset = 0
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    for line in lines:
        yield offset, line.rstrip(b"\r")
        offset += len(line) + 1


def _convert_chunk(task: Tuple[int, int]):
    """Worker: convert the CSV lines in bytes [start, end) at full resolution.

    Returns (number of lines, valid rows, skipped rows, photo sizes). A valid row is
    (line index in chunk, image_id, annotation JSON tail, byte offset, byte length, swapped);
    a skipped one is (line index in chunk, image_id or None, reason, detail).
    """
    start, end = task
    config = _CONFIG
    with open(config.csv_path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    valid, items, skipped, sizes = [], [], [], {}
    num_lines = 0
    for index, (offset, raw) in enumerate(_split_lines(data)):
        num_lines = index + 1
        if not raw.strip():
            continue  # blank lines hold no row (pandas skips them too)
        try:
            image_id, category, attributes, encoded, csv_size, real, swapped = _parse_row(raw, config)
            segmentation = _full_size_segmentation(encoded, csv_size, real, swapped, image_id)
        except _Skip as skip:
            skipped.append((index, skip.image_id, skip.reason, skip.detail))
            continue
        valid.append((index, image_id, start + offset, len(raw), swapped))
        items.append((category, attributes, segmentation))
        sizes[image_id] = real
    rows = [(index, image_id, tail, offset, length, swapped)
            for (index, image_id, offset, length, swapped), tail in zip(valid, _annotation_tails(items))]
    return num_lines, rows, skipped, sizes


def _resize_rows(rows: List[Tuple[int, int]]) -> List[Optional[str]]:
    """Worker: annotation JSON tails at RESIZE_SIZE x RESIZE_SIZE for lines given by (byte offset, length);
    None for a mask that loses every pixel in the resize (a thin part of a large photo can)."""
    config = _CONFIG
    items, kept = [], []
    with open(config.csv_path, "rb") as handle:
        for offset, length in rows:
            handle.seek(offset)
            _, category, attributes, encoded, csv_size, real, swapped = _parse_row(handle.read(length), config)
            runs = _runs_on_photo(encoded, csv_size, swapped)
            small = rle.resize_runs(*runs, *real, RESIZE_SIZE, RESIZE_SIZE)
            kept.append(bool(len(small[0])))
            if kept[-1]:
                items.append((category, attributes, rle.runs_to_coco(*small, RESIZE_SIZE, RESIZE_SIZE)))
    tails = iter(_annotation_tails(items))
    return [next(tails) if keep else None for keep in kept]


# -------------------------------------------------------------------------------------- main side

@dataclass
class _Image:
    height: int
    width: int
    rows: List[Tuple[int, str, int, int, bool]] = field(default_factory=list)  # line, tail, offset, len, swapped


def _chunk_ranges(csv_path: Path, chunk_bytes: int) -> Tuple[List[Tuple[int, int]], int]:
    """Byte ranges of the data lines, cut just after a line end every ~chunk_bytes; and the file size."""
    size = csv_path.stat().st_size
    ranges = []
    with open(csv_path, "rb") as handle:
        handle.readline()
        pos = handle.tell()
        while pos < size:
            handle.seek(min(pos + max(1, chunk_bytes), size))
            handle.readline()
            end = handle.tell()
            ranges.append((pos, end))
            pos = end
    return ranges, size


class _Workers:
    """A process pool (or, with one worker, plain calls in this process) running the worker functions."""

    def __init__(self, num_workers: int, config: _Config):
        self.pool = None
        if num_workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = context.Pool(num_workers, initializer=_init_worker, initargs=(config, True))
        else:
            _init_worker(config)

    def imap(self, func: Callable, tasks: Iterable) -> Iterator:
        return self.pool.imap(func, tasks) if self.pool else map(func, tasks)

    def close(self) -> None:
        if self.pool:
            self.pool.terminate()
            self.pool.join()


def _check_outputs_free(paths: Dict[str, Path], overwrite: bool) -> None:
    if overwrite:
        return
    for key in ("train", "val", "resize_val", "report"):
        if paths[key].exists():
            raise UserError(f"{paths[key]} already exists; pass --overwrite to replace it (nothing was changed)")
    val_dir = paths["val_dir"]
    if val_dir.is_dir() and any(val_dir.iterdir()):
        raise UserError(f"{val_dir} already holds files; pass --overwrite to rebuild it (nothing was changed)")


def _place_val_images(names: List[str], train_dir: Path, val_dir: Path, copy: bool,
                      progress: bool) -> Tuple[int, int]:
    """Hard-link (or copy) the val images; returns (linked, copied). Never writes through an existing link."""
    val_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(names)
    for stale in sorted(val_dir.iterdir()):
        if stale.name not in wanted and (stale.is_file() or stale.is_symlink()):
            stale.unlink()  # left by an earlier split (only reached with --overwrite)
    linked = copied = 0
    for name in tqdm(names, desc="val images", unit="img", disable=not progress):
        source, target = train_dir / name, val_dir / name
        if not copy:
            temp = val_dir / f".{name}.link-tmp"
            try:
                if temp.exists() or temp.is_symlink():
                    temp.unlink()
                os.link(source, temp)
                os.replace(temp, target)  # replaces the entry; an old link's inode (a train file) is untouched
                linked += 1
                continue
            except OSError:
                pass  # other file system, no link support, too many links: copy instead
        atomic_save(target, lambda temp_path: shutil.copyfile(source, temp_path))
        copied += 1
    return linked, copied


def _write_coco(path: Path, info: Dict, images: List[Dict], annotations: Iterable[Tuple[int, str]],
                num_annotations: int, categories: List[Dict], attributes: List[Dict], progress: bool) -> None:
    """Stream a COCO JSON file: the annotations arrive as (image id, pre-rendered JSON tail)."""
    dumps = lambda obj: json.dumps(obj, separators=(",", ":"))  # noqa: E731
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(f'{{"info":{dumps(info)},"images":{dumps(images)},"annotations":[')
        bar = tqdm(total=num_annotations, desc=f"write {path.name}", unit="ann", disable=not progress,
                   mininterval=0.5)
        for annotation_id, (image_id, tail) in enumerate(annotations, start=1):
            handle.write(f'{"," if annotation_id > 1 else ""}{{"id":{annotation_id},"image_id":{image_id},{tail}')
            if annotation_id % 4096 == 0:
                bar.update(4096)
        bar.update(num_annotations - bar.n)
        bar.close()
        handle.write(f'],"categories":{dumps(categories)},"attributes":{dumps(attributes)}}}')


def convert_imaterialist(data_root: PathLike, val_num: int = DEFAULT_VAL_NUM, seed: int = 0,
                         num_workers: Optional[int] = None, copy_val: bool = False, overwrite: bool = False,
                         strict: bool = False, progress: bool = True,
                         chunk_bytes: int = CHUNK_BYTES) -> ConversionResult:
    """Convert ``<data_root>/train.csv`` to COCO JSON under ``<data_root>/annotations`` plus ``val/`` images.

    Rows that cannot be converted are skipped and reported (``strict``: UserError at the first one, nothing
    written). Output is byte-identical for the same input and ``seed`` whatever ``num_workers``.
    """
    started = time.perf_counter()
    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"--data_root {root}: no such folder")
    if val_num < 0:
        raise UserError(f"--val_num must be >= 0, got {val_num}")
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_workers < 1:
        raise UserError(f"--num_workers must be >= 1, got {num_workers}")
    csv_path, train_dir = root / "train.csv", root / "train"
    labels = read_label_descriptions(root / "label_descriptions.json")
    csv_format, column_index, num_columns = read_csv_header(csv_path)
    if not train_dir.is_dir():
        raise UserError(f"{train_dir}: no such folder (expected the training images there)")
    paths = output_paths(root)
    _check_outputs_free(paths, overwrite)

    config = _Config(str(csv_path), str(train_dir), csv_format, column_index, num_columns,
                     frozenset(c["id"] for c in labels["categories"]),
                     frozenset(a["id"] for a in labels["attributes"]))
    ranges, csv_bytes = _chunk_ranges(csv_path, chunk_bytes)
    workers = _Workers(min(num_workers, max(1, len(ranges))), config)
    try:
        images, skipped, data_rows = _convert_all(workers, ranges, csv_bytes, progress)
        converted = time.perf_counter()
        if strict and skipped:
            first = skipped[0]
            raise UserError(f"{csv_path}: line {first.line}: {first.reason}: {first.detail} "
                            f"({len(skipped)} bad row(s) in all; --strict: nothing was written)")
        if not images:
            reasons = ", ".join(f"{r} {n}" for r, n in count_reasons(skipped).items()) or "no data rows"
            raise UserError(f"{csv_path}: no row could be converted ({reasons}); nothing was written")
        val_count, val_note = choose_val_count(len(images), val_num)
        val_ids = split_images(list(images), val_count, seed)
        val_images = {image_id: image for image_id, image in images.items() if image_id in val_ids}
        train_images = {image_id: image for image_id, image in images.items() if image_id not in val_ids}
        resized_annotations, empty_at_512 = _resize_val(workers, val_images, progress)
        resized = time.perf_counter()
    finally:
        workers.close()

    linked, copied = _place_val_images([image_file_name(i) for i in val_images], train_dir, paths["val_dir"],
                                       copy_val, progress)
    _write_annotation_files(paths, labels, csv_format, seed, train_images, val_images, resized_annotations,
                            progress)
    result = ConversionResult(
        csv_format=csv_format, data_rows=data_rows,
        train_images=len(train_images), train_annotations=_num_rows(train_images),
        val_images=len(val_images), val_annotations=_num_rows(val_images),
        skipped=skipped, swapped=_swapped_rows(images), images_without_annotations=_left_out(images, skipped),
        val_note=val_note, outputs=[paths[k] for k in ("train", "val", "resize_val", "report", "val_dir")],
        val_empty_at_512=empty_at_512, val_linked=linked, val_copied=copied)
    atomic_write_json(paths["report"], _report(result, val_num, seed), indent=1)
    finished = time.perf_counter()
    result.timings = {"read+convert": converted - started, "val 512 masks": resized - converted,
                      "val links + write": finished - resized, "total": finished - started}
    return result


def _write_annotation_files(paths: Dict[str, Path], labels: Dict, csv_format: str, seed: int,
                            train_images: Dict[str, "_Image"], val_images: Dict[str, "_Image"],
                            resized_annotations: List[Tuple[int, str]], progress: bool) -> None:
    categories = [{"id": c["id"], "name": c["name"], "supercategory": c.get("supercategory", "")}
                  for c in labels["categories"]]
    attributes = [{k: a[k] for k in ("id", "name", "supercategory", "level") if k in a}
                  for a in labels["attributes"]]
    info = {"description": "Kaggle iMaterialist (Fashion) train.csv converted by gluon_fashion.convert",
            "source_format": csv_format, "seed": seed}
    common = dict(categories=categories, attributes=attributes, progress=progress)
    val_entries = _image_entries(val_images)
    _write_coco(paths["resize_val"], dict(info, split="val", mask_size=RESIZE_SIZE),
                [dict(entry, height=RESIZE_SIZE, width=RESIZE_SIZE, orig_height=entry["height"],
                      orig_width=entry["width"]) for entry in val_entries],
                resized_annotations, len(resized_annotations), **common)
    _write_coco(paths["val"], dict(info, split="val"), val_entries, _annotations(val_images),
                _num_rows(val_images), **common)
    _write_coco(paths["train"], dict(info, split="train"), _image_entries(train_images),
                _annotations(train_images), _num_rows(train_images), **common)


def _swapped_rows(images: Dict[str, "_Image"]) -> List[Dict]:
    """Report entries for rows whose CSV Height/Width were the photo's transposed (their masks were)."""
    return [{"line": line, "image_id": image_id, "csv_height": image.width, "csv_width": image.height,
             "file_height": image.height, "file_width": image.width, "fix": "mask transposed"}
            for image_id, image in images.items() for line, _, _, _, swapped in image.rows if swapped]


def _left_out(images: Dict[str, "_Image"], skipped: List[SkippedRow]) -> List[str]:
    """ImageIds named in the CSV with no convertible row: an image with none of its garments marked would
    teach and score 'nothing here', so it is left out of both splits (and listed in the report)."""
    seen, left_out = set(images), []
    for row in skipped:
        if row.image_id is not None and row.image_id not in seen:
            seen.add(row.image_id)
            left_out.append(row.image_id)
    return left_out


def _convert_all(workers: _Workers, ranges: List[Tuple[int, int]], csv_bytes: int,
                 progress: bool) -> Tuple[Dict[str, _Image], List[SkippedRow], int]:
    """Run the chunk pass and gather rows by image, in CSV line order."""
    images: Dict[str, _Image] = {}
    skipped: List[SkippedRow] = []
    first_line = 2  # line 1 is the header
    data_rows = 0
    bar = tqdm(total=csv_bytes, desc="convert train.csv", unit="B", unit_scale=True, disable=not progress)
    for (start, end), (num_lines, valid, bad, sizes) in zip(ranges, workers.imap(_convert_chunk, ranges)):
        for index, image_id, tail, offset, length, swapped in valid:
            image = images.get(image_id)
            if image is None:
                height, width = sizes[image_id]
                image = images[image_id] = _Image(height, width)
            image.rows.append((first_line + index, tail, offset, length, swapped))
        skipped.extend(SkippedRow(first_line + index, image_id, reason, detail)
                       for index, image_id, reason, detail in bad)
        data_rows += len(valid) + len(bad)
        first_line += num_lines
        bar.update(end - start)
    bar.close()
    return images, skipped, data_rows


def _resize_val(workers: _Workers, val_images: Dict[str, _Image],
                progress: bool) -> Tuple[List[Tuple[int, str]], int]:
    """(val image number, annotation JSON tail at 512x512) for every val row, in output order, leaving out
    masks that are empty at 512x512 (nothing to detect there: as ground truth they could never be matched);
    and how many were left out."""
    numbers = [number for number, image in enumerate(val_images.values(), start=1) for _ in image.rows]
    rows = [(offset, length) for image in val_images.values() for _, _, offset, length, _ in image.rows]
    batches = [rows[i:i + _VAL_BATCH_ROWS] for i in range(0, len(rows), _VAL_BATCH_ROWS)]
    tails: List[Optional[str]] = []
    with tqdm(total=len(rows), desc=f"val masks at {RESIZE_SIZE}", unit="ann", disable=not progress) as bar:
        for batch_tails in workers.imap(_resize_rows, batches):
            tails.extend(batch_tails)
            bar.update(len(batch_tails))
    kept = [(number, tail) for number, tail in zip(numbers, tails) if tail is not None]
    return kept, len(tails) - len(kept)


def _image_entries(images: Dict[str, _Image]) -> List[Dict]:
    return [{"id": number, "file_name": image_file_name(image_id), "height": image.height, "width": image.width}
            for number, (image_id, image) in enumerate(images.items(), start=1)]


def _annotations(images: Dict[str, _Image]) -> Iterator[Tuple[int, str]]:
    for number, image in enumerate(images.values(), start=1):
        for _, tail, _, _, _ in image.rows:
            yield number, tail


def _num_rows(images: Dict[str, _Image]) -> int:
    return sum(len(image.rows) for image in images.values())


def count_reasons(skipped: Iterable[SkippedRow]) -> Dict[str, int]:
    """Skipped rows per reason, in SKIP_REASONS order, reasons with none left out."""
    counts = {reason: 0 for reason in SKIP_REASONS}
    for row in skipped:
        counts[row.reason] += 1
    return {reason: n for reason, n in counts.items() if n}


def _report(result: ConversionResult, val_num: int, seed: int) -> Dict:
    """conversion_report.json: deterministic (no timings, no absolute paths)."""
    return {
        "source": {"csv": "train.csv", "format": result.csv_format, "data_rows": result.data_rows,
                   "label_descriptions": "label_descriptions.json"},
        "settings": {"val_num": val_num, "seed": seed, "max_val_fraction": MAX_VAL_FRACTION,
                     "resize_size": RESIZE_SIZE},
        "val_note": result.val_note,
        "splits": {"train": {"images": result.train_images, "annotations": result.train_annotations},
                   "val": {"images": result.val_images, "annotations": result.val_annotations}},
        "val_annotations_empty_at_512": result.val_empty_at_512,
        "skipped_rows": len(result.skipped),
        "skipped_rows_by_reason": result.skipped_by_reason(),
        "skipped": [row.as_dict() for row in result.skipped],
        "swapped_size": result.swapped,
        "images_without_valid_annotations": result.images_without_annotations,
        "outputs": [f"annotations/{TRAIN_JSON}", f"annotations/{VAL_JSON}", f"annotations/{RESIZE_VAL_JSON}",
                    f"annotations/{REPORT_JSON}", "val/"],
    }
