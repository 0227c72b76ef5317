"""Kaggle iMaterialist (Fashion) ``train.csv`` -> COCO instance annotations (compressed RLE masks).

Reads ``<data_root>/train.csv`` (2019 or 2020 layout, told apart by its columns), ``label_descriptions.json``
and the headers and last bytes of ``train/*.jpg``; writes under ``<data_root>``:

- ``annotations/rle_instances_train.json`` (file names relative to ``train/``),
- ``annotations/rle_instances_val.json`` and ``annotations/resize_rle_instances_val.json`` (relative to ``val/``;
  the latter with masks, boxes and areas at 512x512 and the true size kept as ``orig_height``/``orig_width``),
- ``val/``: the validation images, hard-linked from ``train/`` (copied where linking fails or on request),
- ``annotations/conversion_report.json``: every skipped row with its line number and reason, every repaired one.

Rows that cannot be converted (missing, unreadable or truncated photo, photo size not the CSV's, unknown
category or attribute, malformed ClassId/AttributesIds/row, invalid EncodedPixels, a repeat of an earlier row)
are skipped, counted on screen and listed in the report with their line number (the header is line 1);
``strict`` turns the first into an error before anything is written. A photo left with no valid row is left
out of both splits (a photo with none of its garments marked would teach and score "nothing here"); the
report lists it. The split is by photo: a seeded permutation of the sorted ImageIds, so it does not depend
on CSV row order. An explicit ``val_num`` is honoured (an error if it leaves no training photo); the default
is cut to 20% of the usable photos on small datasets. Masks that keep no pixel at 512x512 (thin parts of
large photos) are left out of the resize file and counted in the report: no prediction could match them.

Duplicate rows: a row with the same image, category and mask (compared as the converted mask, so
differently written runs of one mask match) as an earlier row is skipped as ``duplicate_row``, whatever its
attributes: it is the same garment again, and a second copy would be a second ground-truth instance that
every evaluation counts as missed. The first row, attributes included, is kept; the report says when the
attributes differed. Rows giving one mask different categories are all kept (nothing says which label is
right, and the metric scores each category on its own) and listed together in the report.

Truncated photos: a JPEG that stops before its end-of-image marker (a cut-off download or copy) would decode
without an error, the missing rows filled with grey, so its rows are skipped as ``truncated_image``. That
check reads the last bytes of each photo. A file with the marker but damaged data inside (a cut file with the
marker appended, a zero-filled hole, garbled bytes) passes it; ``verify_images`` decodes every JPEG at 1/8
scale and skips the rows of any that libjpeg reports corrupt (``corrupt_image``). That costs a decode per
photo (on real photos more than the whole conversion without it: BENCHMARKS.md), so it is off by default.

Height/Width swapped in the CSV (two real 2019 photos): the runs index an H_csv x W_csv grid while the photo
is W_csv x H_csv. The mask is rotated onto the photo's grid; see :data:`SWAPPED_SIZE_FIX` for the choice and
its source. The report lists every such row so they can be checked by eye (``tools/visualize_dataset.py
--images ID,...``).

Outputs as a set: everything is built in staging folders beside the outputs (``annotations/.conversion-new/``,
``.val.conversion-new/``) and swapped in at the end: the previous outputs are moved aside, the new ones moved
in, then the old ones deleted, with Ctrl-C (and SIGTERM) held back for those few renames. A journal file
(``annotations/.conversion-swap``) exists only during the swap, so a run killed inside it is rolled back by
the next run before it does anything else; a run stopped at any other point leaves the previous outputs as
they were, and its staging folders are removed (by itself or by the next run). A folder that cannot be
written is a one-line error before any work.

How it stays fast at 333k rows / 1-2 GB of CSV text: the CSV is cut into fixed-size byte chunks at line
ends, and worker processes parse, validate and convert the rows of a chunk straight from Kaggle runs to
COCO's compressed counts (no full-resolution mask is built). Only these compact results (about a third
of the CSV's size) travel back; the main process groups them by image, drops duplicate rows, splits by image
and streams the JSON out. The 512x512 masks of the val rows are made in a second, small pass that re-reads
just those lines by byte offset. Results do not depend on the number of workers: everything is put back in
CSV line order before ids are given.
"""
from __future__ import annotations

import contextlib
import csv
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import rle
from .data.coco_json import read_coco_json
from .errors import UserError
from .fileio import atomic_write_json
from .converters.common import (_OutputSet, _annotation_tails, _check_photo, _only_conversion_of, _place_images,
                                _require_folder, _write_coco)
from .converters.common import _check_outputs_free as check_outputs_free

PathLike = Union[str, "os.PathLike[str]"]

#: Val photos when --val_num is not given; cut to MAX_VAL_FRACTION of the usable photos on small datasets.
DEFAULT_VAL_NUM = 1000
#: The default val size is cut to this fraction of the usable images (an explicit --val_num is not).
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
    "truncated_image",
    "corrupt_image",
    "size_mismatch",
    "invalid_rle",
    "duplicate_row",
)

#: What is done to the mask of a row whose Height/Width are the photo's swapped (the report's "fix").
#: Evidence, not proof: the only public account from someone who looked at the two real 2019 photos concerned,
#: the original GluonCV iMaterialist project (github.com/maktu6/garment_segmentation,
#: tools/convert_imaterialist_to_coco.py), lists them as WRONG_IMG_IDS (f4d6e71fbffc3e891e5009fef2c8bf6b.jpg,
#: 2ab8c02ce17612733ddee218b4ce1fd1.jpg) with "Do transpose and vertical flip on their mask", i.e.
#: ``mask.transpose()[::-1, :]``: a rotation by 90 degrees counter-clockwise. A plain transpose (this
#: converter's earlier choice) is a different picture (mirrored). Without the photos here neither can be
#: proven; check by eye with ``tools/visualize_dataset.py --images ID,...`` (README, "Convert train.csv").
SWAPPED_SIZE_FIX = "mask rotated 90 degrees counter-clockwise (transposed, then flipped vertically)"


def rotate_swapped_mask(mask_on_csv_grid: np.ndarray) -> np.ndarray:
    """The mask of a swapped-size row on the photo's grid: :data:`SWAPPED_SIZE_FIX`, the one place it is done."""
    return mask_on_csv_grid.T[::-1, :]


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
    data_root: Path = Path(".")
    shared_masks: List[Dict] = field(default_factory=list)
    recovered: Optional[str] = None
    val_empty_at_512: int = 0
    val_linked: int = 0
    val_copied: int = 0
    timings: Dict[str, float] = field(default_factory=dict)

    def skipped_by_reason(self) -> Dict[str, int]:
        return count_reasons(self.skipped)

    def summary_table(self) -> str:
        """Human-readable end-of-run summary."""
        lines = [f"note: {self.recovered}"] if self.recovered else []
        lines += [
            f"{'split':<8}{'images':>10}{'annotations':>14}",
            f"{'train':<8}{self.train_images:>10}{self.train_annotations:>14}",
            f"{'val':<8}{self.val_images:>10}{self.val_annotations:>14}",
            f"CSV rows read: {self.data_rows} ({self.csv_format} format)",
            f"skipped rows: {len(self.skipped)}",
        ]
        lines += [f"  {reason:<24}{n:>8}" for reason, n in self.skipped_by_reason().items()]
        if self.shared_masks:
            rows = sum(len(group["lines"]) for group in self.shared_masks)
            lines.append(f"masks given two or more categories (all kept, listed in the report): "
                         f"{len(self.shared_masks)} masks, {rows} rows")
        swapped_images = list(dict.fromkeys(entry["image_id"] for entry in self.swapped))
        lines.append(f"swapped Height/Width (masks rotated onto the photo, see the report): {len(self.swapped)} "
                     f"rows, {len(swapped_images)} images")
        if swapped_images:
            lines.append(f"  check them by eye: python tools/visualize_dataset.py --data_root {self.data_root} "
                         f"--images {','.join(swapped_images)} --output swapped_check")
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
    verify_images: bool = False


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


def choose_val_count(num_images: int, val_num: Optional[int]) -> Tuple[int, Optional[str]]:
    """Number of val images and, when the default had to be cut, a note saying why.

    ``val_num=None`` (the flag not given): DEFAULT_VAL_NUM, cut to 20% of the usable images (at least one
    when there are two or more) so that a small dataset keeps most images for training. An explicit
    ``val_num`` is honoured as it is; UserError if it leaves no image for training.
    """
    if val_num is not None:
        if val_num > 0 and val_num >= num_images:
            raise UserError(f"--val_num {val_num} leaves no training photo: only {num_images} photos have a "
                            f"valid row (ask for at most {num_images - 1}); nothing was written")
        return val_num, None
    cap = max(1, int(MAX_VAL_FRACTION * num_images)) if num_images >= 2 else 0
    if DEFAULT_VAL_NUM <= cap:
        return DEFAULT_VAL_NUM, None
    return cap, (f"only {num_images} usable images: the default --val_num {DEFAULT_VAL_NUM} is more than "
                 f"{MAX_VAL_FRACTION:.0%} of them, so {cap} go to val instead (pass --val_num to choose)")


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
    """(height, width) from the photo's header, checked once per worker; _Skip if the photo is missing,
    unreadable, truncated or (with ``verify_images``) corrupt."""
    cached = _SIZE_CACHE.get(file_name)
    if cached is None:
        cached = _SIZE_CACHE[file_name] = _check_photo(os.path.join(config.train_dir, file_name),
                                                       f"train/{file_name}", config.verify_images)
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
    """The mask's runs on the photo's own pixel grid (SWAPPED_SIZE_FIX when the CSV swapped Height and Width)."""
    if swapped:
        # Dense on purpose: only swapped rows come here (two photos in the real data), and rotating a run
        # list is a re-scan that a dense array states most plainly.
        return rle.mask_to_runs(rotate_swapped_mask(rle.kaggle_to_mask(encoded, *csv_size)))
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

class _Row(NamedTuple):
    """A converted row as the main process keeps it until the JSON is written."""

    line: int
    tail: str  # the annotation's JSON without its leading '{"id":..,"image_id":..,' (see _annotation_tails)
    offset: int  # byte offset and length of the CSV line, to re-read it for the 512x512 pass
    length: int
    swapped: bool


@dataclass
class _Image:
    height: int
    width: int
    rows: List[_Row] = field(default_factory=list)


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


# ------------------------------------------------------------------------------------ duplicate rows

_SEGMENTATION_KEY = '"segmentation":'
_AREA_KEY = ',"area":'
_ISCROWD_KEY = ',"iscrowd":'
_ATTRIBUTES_KEY = '"attribute_ids":['


def _tail_category(tail: str) -> int:
    return int(tail[len('"category_id":'):tail.index(",")])


def _tail_attributes(tail: str) -> List[int]:
    text = tail[tail.rindex(_ATTRIBUTES_KEY) + len(_ATTRIBUTES_KEY):tail.rindex("]")]
    return [int(part) for part in text.split(",")] if text else []


def _tail_mask(tail: str) -> str:
    """The segmentation's JSON: equal for two rows exactly when their masks are (COCO counts are canonical)."""
    return tail[tail.index(_SEGMENTATION_KEY):tail.rindex(_AREA_KEY)]


def _drop_duplicate_rows(images: Dict[str, _Image]) -> Tuple[List[SkippedRow], List[Dict]]:
    """Remove rows that repeat an earlier row of their image (same category and mask, attributes aside) and
    return them as skipped rows; also return the masks given more than one category (all their rows kept).

    Masks are compared as converted (the COCO counts), so two spellings of one mask match. Area and box
    (a few characters at the tail's end, found from the right) pick the candidates first, so the KB-long
    masks are compared only when those agree.
    """
    duplicates: List[SkippedRow] = []
    shared_masks: List[Dict] = []
    for image_id, image in images.items():
        if len(image.rows) < 2:
            continue
        by_area_and_box: Dict[str, List[List[_Row]]] = {}  # area+box text -> groups of rows with one mask
        kept: List[_Row] = []
        for row in image.rows:
            tail = row.tail
            groups = by_area_and_box.setdefault(tail[tail.rindex(_AREA_KEY):tail.rindex(_ISCROWD_KEY)], [])
            group = next((g for g in groups if _tail_mask(g[0].tail) == _tail_mask(tail)), None)
            if group is None:
                groups.append([row])
                kept.append(row)
                continue
            category = _tail_category(tail)
            same = next((earlier for earlier in group if _tail_category(earlier.tail) == category), None)
            if same is None:
                group.append(row)
                kept.append(row)
                continue
            detail = f"same image, category {category} and mask as line {same.line}, which is kept"
            if _tail_attributes(tail) != _tail_attributes(same.tail):
                detail += (f" with its attributes {_tail_attributes(same.tail)} (this row's: "
                           f"{_tail_attributes(tail)})")
            duplicates.append(SkippedRow(row.line, image_id, "duplicate_row", detail))
        if len(kept) < len(image.rows):
            image.rows = kept
        for groups in by_area_and_box.values():
            shared_masks += [{"image_id": image_id, "lines": [row.line for row in group],
                              "category_ids": [_tail_category(row.tail) for row in group]}
                             for group in groups if len(group) > 1]
    shared_masks.sort(key=lambda entry: entry["lines"][0])
    return duplicates, shared_masks


# ------------------------------------------------------------------------------ outputs, as one set

OUTPUT_KEYS = ("train", "val", "resize_val", "report", "val_dir")


def _check_outputs_free(paths: Dict[str, Path], overwrite: bool) -> None:
    check_outputs_free(paths, OUTPUT_KEYS, overwrite)


def _place_val_images(names: List[str], train_dir: Path, val_dir: Path, copy: bool,
                      progress: bool) -> Tuple[int, int]:
    """Hard-link (or copy) the val images into ``val_dir``, a new empty folder; returns (linked, copied)."""
    return _place_images(names, train_dir, val_dir, copy, progress)


def convert_imaterialist(data_root: PathLike, val_num: Optional[int] = None, seed: int = 0,
                         num_workers: Optional[int] = None, copy_val: bool = False, overwrite: bool = False,
                         strict: bool = False, progress: bool = True, verify_images: bool = False,
                         chunk_bytes: int = CHUNK_BYTES) -> ConversionResult:
    """Convert ``<data_root>/train.csv`` to COCO JSON under ``<data_root>/annotations`` plus ``val/`` images.

    Rows that cannot be converted are skipped and reported (``strict``: UserError at the first one, nothing
    written). ``val_num``: val photos (None: DEFAULT_VAL_NUM, cut to 20% on small datasets). ``verify_images``:
    also decode every JPEG at 1/8 scale and skip those libjpeg reports corrupt (slow). The outputs are
    replaced as one set, or not at all. Output is byte-identical for the same input and ``seed`` whatever
    ``num_workers``.
    """
    started = time.perf_counter()
    root = Path(data_root)
    _require_folder(root, f"--data_root {root}",
                    "the dataset folder holding train.csv, label_descriptions.json and train/")
    if val_num is not None and val_num < 0:
        raise UserError(f"--val_num must be >= 0, got {val_num}")
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_workers < 1:
        raise UserError(f"--num_workers must be >= 1, got {num_workers}")
    csv_path, train_dir = root / "train.csv", root / "train"
    labels = read_label_descriptions(root / "label_descriptions.json")
    csv_format, column_index, num_columns = read_csv_header(csv_path)
    _require_folder(train_dir, str(train_dir), "the training images there")
    config = _Config(str(csv_path), str(train_dir), csv_format, column_index, num_columns,
                     frozenset(c["id"] for c in labels["categories"]),
                     frozenset(a["id"] for a in labels["attributes"]), verify_images)
    paths = output_paths(root)
    outputs = _OutputSet.beside(paths, OUTPUT_KEYS)
    annotations_existed = paths["train"].parent.exists()

    with _only_conversion_of(root):
        recovered = outputs.recover()
        _check_outputs_free(paths, overwrite)
        try:
            outputs.prepare(overwrite)
            result = _convert_into(outputs, config, labels, val_num, seed, num_workers, copy_val, strict, progress,
                                   chunk_bytes, started)
        except BaseException:
            outputs.discard()
            if not annotations_existed:
                with contextlib.suppress(OSError):
                    paths["train"].parent.rmdir()  # made by this run and empty: as it was
            raise
    result.recovered = recovered
    result.timings["total"] = time.perf_counter() - started
    return result


def _convert_into(outputs: _OutputSet, config: _Config, labels: Dict, val_num: Optional[int], seed: int,
                  num_workers: int, copy_val: bool, strict: bool, progress: bool, chunk_bytes: int,
                  started: float) -> ConversionResult:
    """The conversion proper: read and convert, split, build every output in staging, swap them in."""
    csv_path, train_dir, csv_format = Path(config.csv_path), Path(config.train_dir), config.csv_format
    ranges, csv_bytes = _chunk_ranges(csv_path, chunk_bytes)
    workers = _Workers(min(num_workers, max(1, len(ranges))), config)
    try:
        images, skipped, data_rows = _convert_all(workers, ranges, csv_bytes, progress)
        duplicates, shared_masks = _drop_duplicate_rows(images)
        skipped = sorted(skipped + duplicates, key=lambda row: row.line)
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

    staged = outputs.staged
    linked, copied = _place_val_images([image_file_name(i) for i in val_images], train_dir, staged["val_dir"],
                                       copy_val, progress)
    _write_annotation_files(staged, labels, csv_format, seed, train_images, val_images, resized_annotations,
                            progress)
    result = ConversionResult(
        csv_format=csv_format, data_rows=data_rows,
        train_images=len(train_images), train_annotations=_num_rows(train_images),
        val_images=len(val_images), val_annotations=_num_rows(val_images),
        skipped=skipped, swapped=_swapped_rows(images, train_dir),
        images_without_annotations=_left_out(images, skipped), val_note=val_note,
        outputs=[outputs.final[key] for key in OUTPUT_KEYS], data_root=train_dir.parent, shared_masks=shared_masks,
        val_empty_at_512=empty_at_512, val_linked=linked, val_copied=copied)
    atomic_write_json(staged["report"], _report(result, val_num, seed, config.verify_images), indent=1)
    outputs.commit()
    finished = time.perf_counter()
    result.timings = {"read+convert": converted - started, "val 512 masks": resized - converted,
                      "val links + write": finished - resized}
    return result


def _write_annotation_files(paths: Dict[str, Path], labels: Dict, csv_format: str, seed: int,
                            train_images: Dict[str, _Image], val_images: Dict[str, _Image],
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


def _exif_orientation(path: Path) -> Optional[int]:
    """The photo's EXIF orientation tag (1-8), None without one: evidence for checking a swapped size."""
    try:
        with Image.open(path) as img:
            value = img.getexif().get(0x0112)
    except Exception:  # unreadable EXIF says nothing either way
        return None
    return int(value) if isinstance(value, int) else None


def _swapped_rows(images: Dict[str, _Image], train_dir: Path) -> List[Dict]:
    """Report entries for rows whose CSV Height/Width were the photo's swapped (their masks were rotated)."""
    entries = []
    orientation: Dict[str, Optional[int]] = {}
    for image_id, image in images.items():
        for row in image.rows:
            if not row.swapped:
                continue
            if image_id not in orientation:
                orientation[image_id] = _exif_orientation(train_dir / image_file_name(image_id))
            entries.append({"line": row.line, "image_id": image_id, "csv_height": image.width,
                            "csv_width": image.height, "file_height": image.height, "file_width": image.width,
                            "file_exif_orientation": orientation[image_id], "fix": SWAPPED_SIZE_FIX})
    return entries


def _left_out(images: Dict[str, _Image], skipped: List[SkippedRow]) -> List[str]:
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
            image.rows.append(_Row(first_line + index, tail, offset, length, swapped))
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
    rows = [(row.offset, row.length) for image in val_images.values() for row in image.rows]
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
        for row in image.rows:
            yield number, row.tail


def _num_rows(images: Dict[str, _Image]) -> int:
    return sum(len(image.rows) for image in images.values())


def count_reasons(skipped: Iterable[SkippedRow]) -> Dict[str, int]:
    """Skipped rows per reason, in SKIP_REASONS order, reasons with none left out."""
    counts = {reason: 0 for reason in SKIP_REASONS}
    for row in skipped:
        counts[row.reason] += 1
    return {reason: n for reason, n in counts.items() if n}


def _report(result: ConversionResult, val_num: Optional[int], seed: int, verify_images: bool) -> Dict:
    """conversion_report.json: deterministic (no timings, no absolute paths)."""
    return {
        "source": {"csv": "train.csv", "format": result.csv_format, "data_rows": result.data_rows,
                   "label_descriptions": "label_descriptions.json"},
        "settings": {"val_num": val_num, "default_val_num": DEFAULT_VAL_NUM,
                     "max_val_fraction_of_default": MAX_VAL_FRACTION, "seed": seed,
                     "resize_size": RESIZE_SIZE, "verify_images": verify_images},
        "val_note": result.val_note,
        "splits": {"train": {"images": result.train_images, "annotations": result.train_annotations},
                   "val": {"images": result.val_images, "annotations": result.val_annotations}},
        "val_annotations_empty_at_512": result.val_empty_at_512,
        "skipped_rows": len(result.skipped),
        "skipped_rows_by_reason": result.skipped_by_reason(),
        "skipped": [row.as_dict() for row in result.skipped],
        "same_mask_different_categories": result.shared_masks,
        "swapped_size": result.swapped,
        "images_without_valid_annotations": result.images_without_annotations,
        "outputs": [f"annotations/{TRAIN_JSON}", f"annotations/{VAL_JSON}", f"annotations/{RESIZE_VAL_JSON}",
                    f"annotations/{REPORT_JSON}", "val/"],
    }
