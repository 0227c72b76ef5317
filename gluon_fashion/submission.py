"""Kaggle submission CSVs: write one from model predictions, and check one before uploading it.

2019 format (iMaterialist Fashion 2019): header ``ImageId,EncodedPixels,ClassId``; ImageIds spelt as in the
sample submission (with ``.jpg``); every mask on a 512 x 512 grid whatever the image's size.
2020 format (iMaterialist Fashion 2020): header ``ImageId,EncodedPixels,ClassId,AttributesIds``; ImageIds
without extension; masks on the image's grid scaled so its longest edge is 1024 (aspect ratio kept, sides
rounded to the nearest pixel); AttributesIds comma-separated.

Both: one row per instance, masks in Kaggle RLE (1-based starts, column-major), no two masks of one image
sharing a pixel, every ImageId of the sample present. An image without detections gets one ``1 1`` row
with the sample's ClassId (a one-pixel mask, the placeholder the sample submission itself uses).
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from .errors import UserError
from .fileio import atomic_open
from .labels import NUM_CATEGORIES
from .rle import CocoRLE, RLEError, coco_to_mask, mask_to_kaggle, nearest_indices, parse_kaggle_rle, resize_coco_rle
from .labels import class_id_string

PathLike = Union[str, Path]
FORMATS = ("2019", "2020")
HEADERS = {
    "2019": ["ImageId", "EncodedPixels", "ClassId"],
    "2020": ["ImageId", "EncodedPixels", "ClassId", "AttributesIds"],
}
SIZE_2019 = 512
LONG_EDGE_2020 = 1024
EMPTY_ENCODING = "1 1"
DEFAULT_EMPTY_CLASS = "23"


@dataclass
class Instance:
    """One predicted object. ``mask``: H x W array (bool, 0/1 or probabilities) at any size, or a COCO RLE."""

    category_id: int
    score: float
    mask: Union[np.ndarray, CocoRLE]
    attribute_ids: Sequence[int] = ()


Predictions = Union[Mapping[str, Sequence[Instance]], Iterable[Tuple[str, Sequence[Instance]]]]


@dataclass
class SubmissionSummary:
    """What write_submission did, for the log."""

    path: str
    images: int = 0
    images_with_detections: int = 0
    rows: int = 0
    below_score_threshold: int = 0
    dropped_after_overlap: int = 0

    def __str__(self) -> str:
        return (f"{self.path}: {self.rows} rows for {self.images} images ({self.images_with_detections} with "
                f"detections); {self.below_score_threshold} instances under the score threshold, "
                f"{self.dropped_after_overlap} dropped as empty or tiny after overlap removal")


def image_key(image_id: str) -> str:
    """ImageId without a trailing .jpg/.jpeg/.png, so 2019 and 2020 spellings and file names match."""
    stem, dot, ext = str(image_id).rpartition(".")
    return stem if dot and ext.lower() in ("jpg", "jpeg", "png") else str(image_id)


def submission_size(fmt: str, height: Optional[int] = None, width: Optional[int] = None) -> Tuple[int, int]:
    """Grid (height, width) of the masks of an image of ``height x width`` in format ``fmt``."""
    _check_format(fmt)
    if fmt == "2019":
        return SIZE_2019, SIZE_2019
    if not height or not width:
        raise ValueError("the 2020 format needs the image size")
    scale = LONG_EDGE_2020 / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown submission format {fmt!r}: use one of {', '.join(FORMATS)}")


@dataclass
class _SampleImage:
    image_id: str
    class_id: str
    attributes: str = ""


def read_sample_ids(sample_csv: PathLike) -> Dict[str, _SampleImage]:
    """ImageIds of a sample submission (in file order) with the ClassId/AttributesIds of their first row."""
    path = Path(sample_csv)
    if not path.is_file():
        raise UserError(f"{path}: sample submission not found")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "ImageId" not in reader.fieldnames:
            raise UserError(f"{path}: no ImageId column in the header {reader.fieldnames}")
        out: Dict[str, _SampleImage] = {}
        for row in reader:
            image_id = (row.get("ImageId") or "").strip()
            if not image_id:
                raise UserError(f"{path}, line {reader.line_num}: empty ImageId")
            if image_id not in out:
                out[image_id] = _SampleImage(image_id, (row.get("ClassId") or "").strip() or DEFAULT_EMPTY_CLASS,
                                             (row.get("AttributesIds") or "").strip())
    if not out:
        raise UserError(f"{path}: the sample submission lists no images")
    return out


def _binary_at(mask: Union[np.ndarray, CocoRLE], size: Tuple[int, int], mask_threshold: float) -> np.ndarray:
    """A prediction's mask as a bool array on the submission grid (one nearest rule for every resize)."""
    if isinstance(mask, dict):
        if list(mask["size"]) != list(size):
            mask = resize_coco_rle(mask, *size)
        return coco_to_mask(mask).astype(bool)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"instance masks must be H x W, got shape {mask.shape}")
    binary = mask.astype(np.float32, copy=False) > mask_threshold if mask.dtype != bool else mask
    if binary.shape != tuple(size):
        binary = binary[np.ix_(nearest_indices(binary.shape[0], size[0]), nearest_indices(binary.shape[1], size[1]))]
    return binary


def _mask_size(mask: Union[np.ndarray, CocoRLE]) -> Tuple[int, int]:
    if isinstance(mask, dict):
        return int(mask["size"][0]), int(mask["size"][1])
    return int(np.shape(mask)[0]), int(np.shape(mask)[1])


def resolve_overlaps(masks: Sequence[np.ndarray], scores: Sequence[float], min_area: int = 1) -> List[Optional[np.ndarray]]:
    """Make masks disjoint: a higher-score mask keeps the pixels it shares with lower-score ones.

    Returns, in input order, each trimmed mask, or None where fewer than ``min_area`` pixels remain.
    """
    out: List[Optional[np.ndarray]] = [None] * len(masks)
    if not len(masks):
        return out
    taken = np.zeros(masks[0].shape, dtype=bool)
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        own = masks[i] & ~taken
        if int(own.sum()) >= max(min_area, 1):
            taken |= own
            out[i] = own
    return out


def instances_from_coco_results(results: Iterable[Mapping], file_names: Mapping[int, str]) -> Dict[str, List[Instance]]:
    """Group COCO results ({image_id, category_id, score, segmentation[, attribute_ids]}) by ImageId, the
    ImageId being the image's ``file_names[image_id]`` (e.g. from the COCO JSON's images); ready for
    write_submission."""
    out: Dict[str, List[Instance]] = {}
    for det in results:
        if det["image_id"] not in file_names:
            raise UserError(f"result for image_id {det['image_id']!r}, which has no file name")
        out.setdefault(str(file_names[det["image_id"]]), []).append(
            Instance(int(det["category_id"]), float(det["score"]), det["segmentation"],
                     tuple(det.get("attribute_ids", ()))))
    return out


def _iter_predictions(predictions: Predictions):
    return predictions.items() if isinstance(predictions, Mapping) else predictions


def write_submission(predictions: Predictions, sample_csv: PathLike, output: PathLike, fmt: str = "2019",
                     score_threshold: float = 0.5, mask_threshold: float = 0.5, min_area: int = 10,
                     image_sizes: Optional[Mapping[str, Tuple[int, int]]] = None, include_attributes: bool = False,
                     overwrite: bool = False, progress: bool = True) -> SubmissionSummary:
    """Write a Kaggle submission CSV (atomically) from ``predictions``: (ImageId, [Instance, ...]) pairs or a dict.

    Instances scoring below ``score_threshold`` are dropped; array masks are binarised as ``mask >
    mask_threshold``; masks are resized to the format's grid, then made disjoint by score, and those left
    with fewer than ``min_area`` pixels dropped. ImageIds may be given with or without extension; the
    file spells them as the sample does. ``image_sizes`` (ImageId -> original (height, width)) is only used
    by the 2020 format; without it a mask's own size is taken as its image's size. ``include_attributes``
    (2019 only) writes ClassId as in train.csv, category then attribute ids ('6_28_36'); 2019 did not score
    attributes, so the default writes the category alone. 2020 always fills AttributesIds.
    """
    _check_format(fmt)
    output = Path(output)
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    sample = read_sample_ids(sample_csv)
    by_key = {image_key(i): s for i, s in sample.items()}
    sizes = {image_key(k): v for k, v in (image_sizes or {}).items()}
    summary = SubmissionSummary(path=str(output), images=len(sample))
    written: set = set()
    header = HEADERS[fmt]
    with atomic_open(output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for image_id, instances in tqdm(_iter_predictions(predictions), total=len(sample), unit="image",
                                        desc="writing submission", disable=not progress):
            key = image_key(image_id)
            entry = by_key.get(key)
            if entry is None:
                raise UserError(f"predictions for image {image_id!r}, which the sample submission {sample_csv} "
                                f"does not list (predicting on the wrong split?)")
            if key in written:
                raise UserError(f"predictions for image {image_id!r} given twice")
            written.add(key)
            rows = _instance_rows(entry, instances, fmt, score_threshold, mask_threshold, min_area,
                                  sizes.get(key), include_attributes, summary)
            if rows:
                summary.images_with_detections += 1
            else:
                rows = [_empty_row(entry, fmt)]
            writer.writerows(rows)
            summary.rows += len(rows)
        for key, entry in by_key.items():
            if key not in written:
                writer.writerow(_empty_row(entry, fmt))
                summary.rows += 1
    return summary


def _empty_row(entry: _SampleImage, fmt: str) -> List[str]:
    row = [_spelt(entry.image_id, fmt), EMPTY_ENCODING, entry.class_id]
    return row + [entry.attributes] if fmt == "2020" else row


def _spelt(image_id: str, fmt: str) -> str:
    return image_key(image_id) if fmt == "2020" else image_id


def _instance_rows(entry: _SampleImage, instances: Sequence[Instance], fmt: str, score_threshold: float,
                   mask_threshold: float, min_area: int, image_size: Optional[Tuple[int, int]],
                   include_attributes: bool, summary: SubmissionSummary) -> List[List[str]]:
    kept = [inst for inst in instances if inst.score >= score_threshold]
    summary.below_score_threshold += len(instances) - len(kept)
    if not kept:
        return []
    for inst in kept:
        if not 0 <= int(inst.category_id) < NUM_CATEGORIES:
            raise UserError(f"image {entry.image_id}: category id {inst.category_id} outside 0..{NUM_CATEGORIES - 1}")
    size = submission_size(fmt, *(image_size or _mask_size(kept[0].mask)))
    masks = [_binary_at(inst.mask, size, mask_threshold) for inst in kept]
    trimmed = resolve_overlaps(masks, [inst.score for inst in kept], min_area)
    order = np.argsort(-np.asarray([inst.score for inst in kept], dtype=np.float64), kind="stable")
    rows = []
    for i in order:
        if trimmed[i] is None:
            summary.dropped_after_overlap += 1
            continue
        inst = kept[i]
        attributes = sorted({int(a) for a in inst.attribute_ids})
        if fmt == "2019":
            class_id = class_id_string(int(inst.category_id), attributes if include_attributes else ())
            row = [_spelt(entry.image_id, fmt), mask_to_kaggle(trimmed[i]), class_id]
        else:
            row = [_spelt(entry.image_id, fmt), mask_to_kaggle(trimmed[i]), str(int(inst.category_id)),
                   ",".join(map(str, attributes))]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# Checking


@dataclass
class Violation:
    """One problem found in a submission; ``row`` is the file's line number (the header is line 1)."""

    kind: str
    message: str
    row: Optional[int] = None

    def __str__(self) -> str:
        where = f"line {self.row}" if self.row is not None else "file"
        return f"{where}: [{self.kind}] {self.message}"


@dataclass
class _ImageRuns:
    image_id: str  # as first spelt in the file
    lines: List[int] = field(default_factory=list)
    starts: List[np.ndarray] = field(default_factory=list)
    ends: List[np.ndarray] = field(default_factory=list)


def check_submission(path: PathLike, sample_csv: Optional[PathLike] = None, fmt: str = "auto",
                     image_sizes: Optional[Mapping[str, Tuple[int, int]]] = None,
                     log: Optional[Callable[[str], None]] = None) -> List[Violation]:
    """Every rule a submission breaks: header, column count, ImageIds missing from or unknown to the sample,
    malformed or out-of-bounds RLE, masks of one image overlapping, invalid ClassId or AttributesIds.

    ImageIds are matched by :func:`image_key` (with or without ``.jpg``), as :func:`write_submission` matches
    them; ids spelt otherwise than in the sample are said via ``log``.

    ``fmt`` "auto" reads the format from the header. For 2020 without ``image_sizes`` (original sizes) the
    exact grid is unknown: masks are then bounded by 1024 x 1024 (the longest-edge rule), said via ``log``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: submission file not found")
    sample = read_sample_ids(sample_csv) if sample_csv is not None else None
    sizes = {image_key(k): v for k, v in (image_sizes or {}).items()}
    violations: List[Violation] = []
    runs_by_image: Dict[str, _ImageRuns] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return [Violation("header", "the file is empty")]
        if fmt == "auto":
            fmt = "2020" if "AttributesIds" in header else "2019"
        _check_format(fmt)
        expected = HEADERS[fmt]
        if header != expected:
            violations.append(Violation("header", f"header is {','.join(header)!r}; the {fmt} format needs "
                                                  f"exactly {','.join(expected)!r}", 1))
        missing_columns = [c for c in expected if c not in header]
        if missing_columns:
            violations.append(Violation("header", f"missing column(s) {', '.join(missing_columns)}: rows not checked", 1))
            return violations
        column = {name: header.index(name) for name in expected}
        if fmt == "2020" and not sizes and log is not None:
            log("image sizes unknown: masks are only checked to lie within 1024 x 1024 (the longest-edge rule), "
                "not within each image's exact grid")
        for fields in reader:
            line = reader.line_num
            if len(fields) != len(header):
                violations.append(Violation("columns", f"{len(fields)} fields, the header has {len(header)}", line))
                continue
            image_id = fields[column["ImageId"]].strip()
            problems = _check_row(image_id, fields[column["EncodedPixels"]], fields[column["ClassId"]],
                                  fields[column["AttributesIds"]] if fmt == "2020" else None, fmt, sizes, line)
            violations.extend(problems.violations)
            if not image_id:
                continue
            runs = runs_by_image.setdefault(image_key(image_id), _ImageRuns(image_id))
            if problems.runs is not None:
                runs.lines.append(line)
                runs.starts.append(problems.runs[0])
                runs.ends.append(problems.runs[0] + problems.runs[1])
    for runs in runs_by_image.values():
        violations.extend(_overlaps(runs.image_id, runs))
    if sample is not None:
        violations.extend(_compare_with_sample(runs_by_image, sample, sample_csv, log))
    return sorted(violations, key=lambda v: (v.row is None, v.row or 0))


@dataclass
class _RowCheck:
    violations: List[Violation]
    runs: Optional[Tuple[np.ndarray, np.ndarray]] = None


def _check_row(image_id: str, encoded: str, class_id: str, attributes: Optional[str], fmt: str,
               sizes: Mapping[str, Tuple[int, int]], line: int) -> _RowCheck:
    out = _RowCheck([])
    if not image_id:
        out.violations.append(Violation("image_id", "empty ImageId", line))
    elif fmt == "2020" and image_key(image_id) != image_id:
        out.violations.append(Violation("image_id", f"ImageId {image_id!r} has an extension; 2020 ImageIds have none", line))
    if not _valid_class_id(class_id, fmt):
        form = "" if fmt == "2020" else ", optionally followed by _attribute ids (e.g. '6_28_36')"
        out.violations.append(Violation("class_id", f"ClassId {class_id!r} is not a category id in "
                                                    f"0..{NUM_CATEGORIES - 1}{form}", line))
    if attributes is not None and attributes.strip():
        tokens = attributes.split(",")
        if not all(t.strip().isdigit() for t in tokens):
            out.violations.append(Violation("attributes", f"AttributesIds {attributes!r} is not a comma-separated "
                                                          f"list of non-negative integers", line))
    if fmt == "2019":
        height, width = SIZE_2019, SIZE_2019
    elif image_key(image_id) in sizes:
        height, width = submission_size(fmt, *sizes[image_key(image_id)])
    else:
        height, width = LONG_EDGE_2020, LONG_EDGE_2020
    try:
        out.runs = parse_kaggle_rle(encoded, height, width)
    except RLEError as exc:
        kind = "bounds" if "past height*width" in str(exc) else "rle"
        out.violations.append(Violation(kind, f"EncodedPixels: {exc}", line))
    return out


def _valid_class_id(class_id: str, fmt: str) -> bool:
    # 2019's ClassId may carry the attributes as in train.csv ('6_28_36'); they are not scored.
    parts = class_id.split("_") if fmt == "2019" else [class_id]
    if not all(p.isdigit() for p in parts):
        return False
    return 0 <= int(parts[0]) < NUM_CATEGORIES


def _overlaps(image_id: str, runs: _ImageRuns) -> List[Violation]:
    """Masks of one image sharing pixels, found from the runs alone (flat pixel indices need no image size)."""
    if len(runs.lines) < 2:
        return []
    owner = np.concatenate([np.full(len(s), k) for k, s in enumerate(runs.starts)])
    starts = np.concatenate(runs.starts)
    ends = np.concatenate(runs.ends)
    order = np.argsort(starts, kind="stable")
    starts, ends, owner = starts[order], ends[order], owner[order]
    running_end = np.maximum.accumulate(ends)
    # index of the run that holds the furthest end so far, carried forward
    holder = np.maximum.accumulate(np.where(ends == running_end, np.arange(len(ends)), 0))
    hits = np.flatnonzero(starts[1:] < running_end[:-1]) + 1
    pairs = set()
    for i in hits.tolist():
        a, b = int(owner[holder[i - 1]]), int(owner[i])
        if a != b:
            pairs.add((min(a, b), max(a, b)))
    return [Violation("overlap", f"mask of image {image_id} overlaps the mask on line {runs.lines[a]}", runs.lines[b])
            for a, b in sorted(pairs)]


def _compare_with_sample(seen: Mapping[str, _ImageRuns], sample: Mapping[str, _SampleImage],
                         sample_csv: PathLike, log: Optional[Callable[[str], None]] = None) -> List[Violation]:
    """Unknown and missing ImageIds, matched by :func:`image_key` as write_submission matches them."""
    sample_keys = {image_key(i): i for i in sample}
    out, respelt = [], []
    for key, runs in seen.items():
        if key not in sample_keys:
            where = runs.lines[0] if runs.lines else None
            out.append(Violation("unknown_image", f"ImageId {runs.image_id!r} is not in the sample submission "
                                                  f"{sample_csv}", where))
        elif runs.image_id != sample_keys[key]:
            respelt.append((runs.image_id, sample_keys[key]))
    for key, image_id in sample_keys.items():
        if key not in seen:
            out.append(Violation("missing_image", f"ImageId {image_id!r} of the sample submission has no row"))
    if respelt and log is not None:
        log(f"{len(respelt)} ImageId(s) spelt differently from the sample submission (e.g. {respelt[0][0]!r} for "
            f"{respelt[0][1]!r}), matched without the extension")
    return out


def format_violations(violations: Sequence[Violation], limit: Optional[int] = None) -> str:
    """One line per violation, then a count by kind."""
    shown = list(violations if limit is None else violations[:limit])
    lines = [str(v) for v in shown]
    if limit is not None and len(violations) > limit:
        lines.append(f"... and {len(violations) - limit} more")
    counts: Dict[str, int] = {}
    for v in violations:
        counts[v.kind] = counts.get(v.kind, 0) + 1
    lines.append(f"{len(violations)} violation(s)" + (": " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
                                                       if counts else ""))
    return "\n".join(lines)


def image_sizes_from_dir(image_dir: PathLike, image_ids: Iterable[str]) -> Dict[str, Tuple[int, int]]:
    """Original (height, width) of each ImageId from the image headers in ``image_dir`` (``<id>.jpg``)."""
    from .images import image_size

    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise UserError(f"{image_dir}: image folder not found")
    sizes = {}
    for image_id in image_ids:
        path = image_dir / f"{image_key(image_id)}.jpg"
        try:
            sizes[image_key(image_id)] = image_size(path)
        except FileNotFoundError:
            raise UserError(f"{path}: image of ImageId {image_id!r} not found") from None
    return sizes


def check_submission_file(path: PathLike, sample_csv: Optional[PathLike] = None, fmt: str = "auto",
                          image_dir: Optional[PathLike] = None, max_lines: Optional[int] = None,
                          echo: Callable[[str], None] = print) -> bool:
    """What tools/check_submission.py does: check, print one line per violation and a summary; True if clean."""
    def note(text: str) -> None:
        print(f"note: {text}", file=sys.stderr)

    if not Path(path).is_file():
        raise UserError(f"{path}: submission file not found")
    sizes = None
    if image_dir is not None:
        ids = _submission_image_ids(path) if sample_csv is None else list(read_sample_ids(sample_csv))
        sizes = image_sizes_from_dir(image_dir, ids)
    violations = check_submission(path, sample_csv=sample_csv, fmt=fmt, image_sizes=sizes, log=note)
    if violations:
        echo(format_violations(violations, limit=max_lines))
        return False
    echo(f"{path}: no violations found")
    return True


def _submission_image_ids(path: PathLike) -> List[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(dict.fromkeys((row.get("ImageId") or "").strip() for row in reader if row.get("ImageId")))
