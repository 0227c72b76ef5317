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

from typing import Dict, Tuple

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
    tokens = encoded.split()
    if not tokens:
        if allow_empty:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy()
        raise RLEError("EncodedPixels is empty")
    if len(tokens) % 2:
        raise RLEError(f"odd number of tokens ({len(tokens)}): expected 'start length' pairs")
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next(t for t in tokens if not _is_int(t))
        raise RLEError(f"non-integer token {bad!r}") from None
    starts = values[0::2] - 1
    lengths = values[1::2]
    total = int(height) * int(width)
    if starts.min() < 0:
        i = int(np.argmax(starts < 0))
        raise RLEError(f"run {i} starts at {starts[i] + 1}: starts are 1-indexed and must be >= 1")
    if lengths.min() < 1:
        i = int(np.argmax(lengths < 1))
        raise RLEError(f"run {i} (start {starts[i] + 1}) has length {lengths[i]}: zero-length or negative run")
    ends = starts + lengths
    if ends.max() > total:
        i = int(np.argmax(ends > total))
        raise RLEError(
            f"run {i} (start {starts[i] + 1}, length {lengths[i]}) ends at pixel {ends[i]}, "
            f"past height*width = {height}*{width} = {total}"
        )
    if len(starts) > 1:
        if np.any(starts[1:] < starts[:-1]):
            i = int(np.argmax(starts[1:] < starts[:-1])) + 1
            raise RLEError(f"runs are not sorted: run {i} starts at {starts[i] + 1}, before run {i - 1} at {starts[i - 1] + 1}")
        if np.any(starts[1:] < ends[:-1]):
            i = int(np.argmax(starts[1:] < ends[:-1])) + 1
            raise RLEError(f"runs overlap: run {i} starts at {starts[i] + 1}, inside run {i - 1} (ends at {ends[i - 1]})")
    return _merge_touching(starts, lengths)


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


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
    if len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]  # a mask that reaches the last pixel has no trailing background run
    rle = coco_mask.frPyObjects({"size": [int(height), int(width)], "counts": counts.astype(np.uint32).tolist()},
                                int(height), int(width))
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def kaggle_to_coco(encoded: str, height: int, width: int) -> CocoRLE:
    """Kaggle EncodedPixels -> compressed COCO RLE, straight from the runs (validated; raises RLEError)."""
    starts, lengths = parse_kaggle_rle(encoded, height, width)
    return runs_to_coco(starts, lengths, height, width)


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
    # ASCII), sign-extended, and from the third count on as a difference to the count two places back.
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
    flat = np.zeros(int(height) * int(width), dtype=np.uint8)
    for s, n in zip(starts.tolist(), lengths.tolist()):
        flat[s:s + n] = 1
    return flat.reshape((int(width), int(height))).T.copy()


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output index for centre-aligned nearest-neighbour resizing."""
    idx = np.floor((np.arange(out_size) + 0.5) * (in_size / out_size)).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def resize_runs_to_mask(starts: np.ndarray, lengths: np.ndarray, height: int, width: int,
                        out_height: int, out_width: int) -> np.ndarray:
    """Nearest-neighbour resize of a run-encoded mask to a dense ``out_height x out_width`` uint8 mask.

    Samples the runs directly (binary search per output pixel), so memory is O(output), not O(input).
    """
    rows = nearest_indices(int(height), int(out_height))
    cols = nearest_indices(int(width), int(out_width))
    if len(starts) == 0:
        return np.zeros((out_height, out_width), dtype=np.uint8)
    query = cols[None, :] * int(height) + rows[:, None]  # column-major source pixel index
    run = np.searchsorted(starts, query, side="right") - 1
    inside = (run >= 0) & (query < (starts + lengths)[np.maximum(run, 0)])
    return inside.astype(np.uint8)


def resize_coco_rle(rle: CocoRLE, out_height: int, out_width: int) -> CocoRLE:
    """Nearest-neighbour resize of a COCO RLE to ``out_height x out_width`` (centre-aligned)."""
    height, width = rle["size"]
    starts, lengths = coco_to_runs(rle)
    return mask_to_coco(resize_runs_to_mask(starts, lengths, height, width, out_height, out_width))


def resize_kaggle_rle(encoded: str, height: int, width: int, out_height: int, out_width: int) -> str:
    """Nearest-neighbour resize of Kaggle EncodedPixels to another image size."""
    starts, lengths = parse_kaggle_rle(encoded, height, width, allow_empty=True)
    return mask_to_kaggle(resize_runs_to_mask(starts, lengths, height, width, out_height, out_width))
