"""Run-length encodings: Kaggle's ``EncodedPixels`` and COCO's compressed RLE, without dense full-size masks.

Kaggle format: whitespace-separated ``start length`` pairs; starts are 1-indexed and pixels are numbered
top-to-bottom, then left-to-right (column-major). COCO's RLE counts pixels in the same column-major order
(alternating background/foreground run lengths, starting with background), so converting between the two
only rewrites the run list: no H x W array is ever built for a full-resolution photo.

Resizing uses nearest neighbour with pixel centres aligned: output pixel ``d`` samples input pixel
``floor((d + 0.5) * in / out)``, computed straight from the runs. Every tool resizes masks
through this one rule, so ground truth and predictions at 512x512 are sampled alike.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Tuple

import numpy as np
from pycocotools import mask as coco_mask

CocoRLE = Dict  # {"size": [h, w], "counts": str | bytes}
Runs = Tuple[np.ndarray, np.ndarray]  # (0-based starts, lengths), int64, sorted, non-overlapping


class RLEError(ValueError):
    """An EncodedPixels string that does not describe a valid mask; the message says what is wrong."""


def parse_kaggle_rle(encoded: str, height: int, width: int, allow_empty: bool = False) -> Runs:
    """Validate a Kaggle ``EncodedPixels`` string and return its runs as (0-based starts, lengths).

    Raises RLEError naming the problem: odd token count, non-integer token, start < 1, zero-length run,
    run past height*width, unsorted runs, overlapping runs, or (unless ``allow_empty``) no runs at all.
    """
    if not isinstance(encoded, str):
        raise RLEError(f"EncodedPixels must be a string, got {type(encoded).__name__}")
    values = _fast_ints(encoded)
    if values is None:
        values = _checked_ints(encoded.split())
    if not len(values):
        if allow_empty:
            return values, values.copy()
        raise RLEError("EncodedPixels is empty")
    if len(values) % 2:
        raise RLEError(f"odd number of tokens ({len(values)}): expected 'start length' pairs")
    starts = values[0::2] - 1
    lengths = values[1::2]
    total = int(height) * int(width)
    # A few whole-array tests pass every valid row (values <= total also keeps starts + lengths from
    # overflowing); the step-by-step checks run only to name what is wrong.
    if values.min() < 1 or values.max() > total:
        _raise_invalid(encoded, height, width)
    ends = starts + lengths
    gaps = starts[1:] - ends[:-1]
    if ends[-1] > total or (len(gaps) and gaps.min() < 0):
        _raise_invalid(encoded, height, width)
    if len(gaps) and not gaps.all():
        return _merge_touching(starts, lengths)
    return starts, lengths


def _raise_invalid(encoded: str, height: int, width: int) -> None:
    """Raise RLEError for the first problem of an encoding, checked in a fixed order on the exact tokens."""
    values = _checked_ints(encoded.split())  # the fast parser saturates out-of-range numbers
    starts = values[0::2] - 1
    lengths = values[1::2]
    total = int(height) * int(width)
    if starts.min() < 0:
        i = int(np.argmax(starts < 0))
        raise RLEError(f"run {i} starts at {starts[i] + 1}: starts are 1-indexed and must be >= 1")
    if lengths.min() < 1:
        i = int(np.argmax(lengths < 1))
        raise RLEError(f"run {i} (start {starts[i] + 1}) has length {lengths[i]}: zero-length or negative run")
    # Compared as ``length > total - start`` so that huge tokens cannot overflow int64 into a "valid" end.
    past = (starts >= total) | (lengths > total - starts)
    if past.any():
        i = int(np.argmax(past))
        raise RLEError(
            f"run {i} (start {starts[i] + 1}, length {lengths[i]}) ends at pixel {int(starts[i]) + int(lengths[i])}, "
            f"past height*width = {height}*{width} = {total}"
        )
    ends = starts + lengths
    if np.any(starts[1:] < starts[:-1]):
        i = int(np.argmax(starts[1:] < starts[:-1])) + 1
        raise RLEError(f"runs are not sorted: run {i} starts at {starts[i] + 1}, before run {i - 1} at {starts[i - 1] + 1}")
    if np.any(starts[1:] < ends[:-1]):
        i = int(np.argmax(starts[1:] < ends[:-1])) + 1
        raise RLEError(f"runs overlap: run {i} starts at {starts[i] + 1}, inside run {i - 1} (ends at {ends[i - 1]})")
    raise RLEError("invalid EncodedPixels")  # not reached: callers come here only after a failed check


def _fast_ints(encoded: str) -> Optional[np.ndarray]:
    """The whitespace-separated integers of ``encoded`` as int64, or None where only the exact parser will do.

    np.fromstring parses several times faster than int() per token, which matters for a 333k-row CSV. Its
    reading equals ``[int(t) for t in encoded.split()]`` when it consumed the whole text (no warning) and the
    text has no sign: it would read "1-2" as two numbers. Out-of-range numbers saturate; the range checks
    then send them to the exact parser for the error message.
    """
    if "-" in encoded or "+" in encoded or not encoded.strip():
        return None  # (whitespace alone reads as [0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return np.fromstring(encoded, dtype=np.int64, sep=" ")
        except (DeprecationWarning, ValueError):
            return None


def _checked_ints(tokens) -> np.ndarray:
    """The tokens as int64; RLEError naming the first token that is not an integer or does not fit."""
    for token in tokens:
        try:
            value = int(token)
        except ValueError:
            raise RLEError(f"non-integer token {token!r}") from None
        if not -2**63 <= value < 2**63:
            raise RLEError(f"token {token!r} is out of range")
    return np.array([int(t) for t in tokens], dtype=np.int64)


def _merge_touching(starts: np.ndarray, lengths: np.ndarray) -> Runs:
    """Join runs that touch end-to-start, so equal masks have equal run lists."""
    if len(starts) < 2:
        return starts, lengths
    ends = starts + lengths
    new_group = np.ones(len(starts), dtype=bool)
    new_group[1:] = starts[1:] != ends[:-1]
    if new_group.all():
        return starts, lengths
    group_starts = starts[new_group]
    last_in_group = np.append(np.flatnonzero(new_group)[1:] - 1, len(starts) - 1)
    return group_starts, ends[last_in_group] - group_starts


def runs_to_coco(starts: np.ndarray, lengths: np.ndarray, height: int, width: int) -> CocoRLE:
    """Compressed COCO RLE (``counts`` as str) from sorted, non-overlapping 0-based runs."""
    total = int(height) * int(width)
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    if len(starts):
        ends = starts + lengths
        counts[0] = starts[0]
        counts[1:-1:2] = lengths
        counts[2:-1:2] = starts[1:] - ends[:-1]
        counts[-1] = total - ends[-1]
    else:
        counts[0] = total
    return _counts_to_coco(counts, height, width)


def _counts_to_coco(counts: np.ndarray, height: int, width: int) -> CocoRLE:
    if len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]  # a mask that reaches the last pixel has no trailing background run
    # frPyObjects takes the uint32 array as is; a Python list would cost 5x more on long masks.
    rle = coco_mask.frPyObjects({"size": [int(height), int(width)], "counts": counts.astype(np.uint32)},
                                int(height), int(width))
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def kaggle_to_coco(encoded: str, height: int, width: int) -> CocoRLE:
    """Kaggle EncodedPixels -> compressed COCO RLE, straight from the runs (validated; raises RLEError).

    Same result and errors as ``runs_to_coco(*parse_kaggle_rle(...))``, in fewer array passes: the COCO
    counts are the differences of the run boundaries, and one test on them checks a valid row.
    """
    values = _fast_ints(encoded) if isinstance(encoded, str) else None
    total = int(height) * int(width)
    # Tokens above the pixel count are invalid anyway; ruling them out here keeps the sums below from
    # overflowing int64 into counts that look valid (the fast parser saturates absurd numbers at 2**63 - 1).
    if values is None or len(values) < 2 or len(values) % 2 or values.max() > total:
        return runs_to_coco(*parse_kaggle_rle(encoded, height, width), height, width)
    bounds = np.empty(len(values) + 2, dtype=np.int64)  # 0, start0, end0, start1, end1, ..., total
    bounds[0] = 0
    bounds[1:-1] = values
    bounds[-1] = total
    bounds[1:-1:2] -= 1
    bounds[2:-1:2] += bounds[1:-2:2]
    counts = bounds[1:] - bounds[:-1]  # start0, length0, gap1, length1, ..., trailing background
    # Valid with no touching runs <=> lengths and inner gaps >= 1, first start and trailing background >= 0.
    # Anything else takes the exact path, which names the problem or merges touching runs.
    if counts[0] < 0 or counts[-1] < 0 or counts[1:-1].min() < 1:
        return runs_to_coco(*parse_kaggle_rle(encoded, height, width), height, width)
    return _counts_to_coco(counts, height, width)


def coco_counts(rle: CocoRLE) -> np.ndarray:
    """The uncompressed run counts of a COCO RLE (compressed string or list form)."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return np.asarray(counts, dtype=np.int64)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return _decode_counts_string(counts)


def _decode_counts_string(text: str) -> np.ndarray:
    # COCO's compact form: each count is stored in 5-bit groups (6th bit = "more follows", value + 48 as
    # ASCII), sign-extended, and from the fourth count (index 3) on as a difference to the count two places back.
    out = []
    pos, n = 0, len(text)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            c = ord(text[pos]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and (c & 0x10):
                value |= -1 << shift
        if len(out) > 2:
            value += out[-2]
        out.append(value)
    return np.asarray(out, dtype=np.int64)


def coco_to_runs(rle: CocoRLE) -> Runs:
    """(0-based starts, lengths) of the foreground runs of a COCO RLE."""
    counts = coco_counts(rle)
    boundaries = np.concatenate([[0], np.cumsum(counts)])
    starts = boundaries[1:-1:2]
    lengths = counts[1::2]
    keep = lengths > 0
    return _merge_touching(starts[keep], lengths[keep])


def runs_to_kaggle(starts: np.ndarray, lengths: np.ndarray) -> str:
    """Kaggle EncodedPixels from 0-based runs."""
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = np.asarray(starts) + 1
    pairs[1::2] = lengths
    return " ".join(map(str, pairs.tolist()))


def coco_to_kaggle(rle: CocoRLE) -> str:
    """Compressed (or list) COCO RLE -> Kaggle EncodedPixels."""
    return runs_to_kaggle(*coco_to_runs(rle))


def mask_to_runs(mask: np.ndarray) -> Runs:
    """Runs of a binary H x W mask in column-major order."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F").view(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    starts = edges[0::2].astype(np.int64)
    return starts, edges[1::2] - starts


def mask_to_kaggle(mask: np.ndarray) -> str:
    """Binary H x W mask -> Kaggle EncodedPixels ('' for an empty mask)."""
    return runs_to_kaggle(*mask_to_runs(mask))


def mask_to_coco(mask: np.ndarray) -> CocoRLE:
    """Binary H x W mask -> compressed COCO RLE with str counts (JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_to_mask(rle: CocoRLE) -> np.ndarray:
    """Compressed COCO RLE -> dense uint8 H x W mask (use only at working resolution)."""
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = coco_mask.frPyObjects(rle, *rle["size"])
    elif isinstance(counts, str):
        rle = {"size": rle["size"], "counts": counts.encode("ascii")}
    return coco_mask.decode(rle)


def kaggle_to_mask(encoded: str, height: int, width: int) -> np.ndarray:
    """Kaggle EncodedPixels -> dense uint8 H x W mask (validated; use only at working resolution)."""
    starts, lengths = parse_kaggle_rle(encoded, height, width, allow_empty=True)
    flat = _runs_to_flat(starts, lengths, int(height) * int(width))
    return flat.reshape((int(width), int(height))).T.copy()


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output index for centre-aligned nearest-neighbour resizing.

    ``floor((d + 0.5) * in / out)`` in exact integer arithmetic: in floating point the product can land
    just below a whole number (e.g. 2 -> 49 at d = 24) and pick the pixel before.
    """
    in_size, out_size = int(in_size), int(out_size)
    return (2 * np.arange(out_size, dtype=np.int64) + 1) * in_size // (2 * out_size)


def resize_runs(starts: np.ndarray, lengths: np.ndarray, height: int, width: int,
                out_height: int, out_width: int) -> Runs:
    """Nearest-neighbour resize of a run-encoded mask, returning the runs of the ``out_height x out_width`` mask.

    Works on run boundaries, not pixels: output pixels sampled in column-major order have increasing source
    indices, so each source run covers one contiguous stretch of them, found by two binary searches.
    """
    height, width, out_height, out_width = int(height), int(width), int(out_height), int(out_width)
    if len(starts) == 0 or out_height == 0 or out_width == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    rows = nearest_indices(height, out_height)
    cols = nearest_indices(width, out_width)
    first_of_col = np.ones(len(cols), dtype=bool)
    first_of_col[1:] = cols[1:] != cols[:-1]
    unique_cols = cols[first_of_col]  # upscaling repeats columns; the search needs strictly increasing ones
    starts = np.asarray(starts, dtype=np.int64)
    ends = starts + np.asarray(lengths, dtype=np.int64)

    def sampled_before(pixels: np.ndarray) -> np.ndarray:
        # How many sampled pixels (unique columns x rows, column-major) have a source index < pixel.
        col, row = np.divmod(pixels, height)
        col_pos = np.searchsorted(unique_cols, col, side="left")
        in_sampled_col = unique_cols[np.minimum(col_pos, len(unique_cols) - 1)] == col
        row_pos = np.searchsorted(rows, row, side="left")
        return col_pos * out_height + np.where(in_sampled_col & (col_pos < len(unique_cols)), row_pos, 0)

    first = sampled_before(starts)
    stop = sampled_before(ends)
    hit = stop > first
    runs = _merge_touching(first[hit], (stop - first)[hit])
    if len(unique_cols) == out_width:
        return runs
    flat = _runs_to_flat(runs[0], runs[1], out_height * len(unique_cols))
    column_of_output = np.cumsum(first_of_col) - 1
    return mask_to_runs(flat.reshape(len(unique_cols), out_height)[column_of_output].T)


def _runs_to_flat(starts: np.ndarray, lengths: np.ndarray, size: int) -> np.ndarray:
    """Dense uint8 vector of ``size`` pixels with the runs set to 1 (runs merged, as every Runs here is)."""
    edges = np.zeros(size + 1, dtype=np.int8)
    edges[starts] = 1
    edges[starts + lengths] = -1  # merged runs: no run ends where another starts, so no index is set twice
    return np.cumsum(edges[:-1], dtype=np.int8).view(np.uint8)


def resize_runs_to_mask(starts: np.ndarray, lengths: np.ndarray, height: int, width: int,
                        out_height: int, out_width: int) -> np.ndarray:
    """Nearest-neighbour resize of a run-encoded mask to a dense ``out_height x out_width`` uint8 mask.

    Memory is O(output + runs), never O(input).
    """
    out_starts, out_lengths = resize_runs(starts, lengths, height, width, out_height, out_width)
    flat = _runs_to_flat(out_starts, out_lengths, int(out_height) * int(out_width))
    return flat.reshape(int(out_width), int(out_height)).T.copy()


def resize_coco_rle(rle: CocoRLE, out_height: int, out_width: int) -> CocoRLE:
    """Nearest-neighbour resize of a COCO RLE to ``out_height x out_width`` (centre-aligned)."""
    height, width = rle["size"]
    starts, lengths = coco_to_runs(rle)
    return mask_to_coco(resize_runs_to_mask(starts, lengths, height, width, out_height, out_width))


def resize_kaggle_rle(encoded: str, height: int, width: int, out_height: int, out_width: int) -> str:
    """Nearest-neighbour resize of Kaggle EncodedPixels to another image size."""
    starts, lengths = parse_kaggle_rle(encoded, height, width, allow_empty=True)
    return mask_to_kaggle(resize_runs_to_mask(starts, lengths, height, width, out_height, out_width))
