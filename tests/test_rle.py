"""Kaggle/COCO run-length encodings against pycocotools' own encoder/decoder, and RLE validation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from gluon_fashion import rle

PROPERTY = settings(max_examples=200, deadline=None)


@st.composite
def masks(draw, max_side: int = 24) -> np.ndarray:
    """Binary masks of any shape from 1x1 (1xN and Nx1 included), empty, full, sparse or dense."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    kind = draw(st.sampled_from(["random", "random", "random", "empty", "full"]))
    if kind == "empty":
        return np.zeros((height, width), np.uint8)
    if kind == "full":
        return np.ones((height, width), np.uint8)
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.05, 0.3, 0.5, 0.9]))
    return (np.random.RandomState(seed).random_sample((height, width)) < density).astype(np.uint8)


def pycoco_encode(mask: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(mask))


def centre_aligned(in_size: int, out_size: int) -> np.ndarray:
    """Reference rule, written independently: output d samples floor((d + 0.5) * in / out), exactly."""
    return np.array([(2 * d + 1) * in_size // (2 * out_size) for d in range(out_size)], dtype=np.int64)


# --------------------------------------------------------------------------------------- round trips

@PROPERTY
@given(masks())
def test_mask_to_kaggle_to_coco_equals_pycocotools_encode(mask):
    encoded = rle.mask_to_kaggle(mask)
    height, width = mask.shape
    expected = pycoco_encode(mask)
    if mask.any():
        got = rle.kaggle_to_coco(encoded, height, width)
    else:
        assert encoded == ""
        got = rle.runs_to_coco(*rle.parse_kaggle_rle(encoded, height, width, allow_empty=True), height, width)
    assert got["size"] == [height, width]
    assert isinstance(got["counts"], str)
    assert got["counts"].encode("ascii") == expected["counts"]


@PROPERTY
@given(masks())
def test_coco_to_kaggle_to_mask_round_trip(mask):
    height, width = mask.shape
    compressed = pycoco_encode(mask)
    encoded = rle.coco_to_kaggle(compressed)
    assert np.array_equal(rle.kaggle_to_mask(encoded, height, width), mask)
    as_text = {"size": [height, width], "counts": compressed["counts"].decode("ascii")}
    assert np.array_equal(rle.coco_to_mask(as_text), mask)
    assert rle.coco_counts(as_text).sum() == height * width


@PROPERTY
@given(masks())
def test_kaggle_text_matches_column_major_pixel_numbering(mask):
    # Independent of rle.py: Kaggle numbers pixels 1.. top-to-bottom, then left-to-right.
    height, width = mask.shape
    expected = set((np.flatnonzero(mask.ravel(order="F")) + 1).tolist())
    tokens = [int(t) for t in rle.mask_to_kaggle(mask).split()]
    pixels = {start + k for start, length in zip(tokens[0::2], tokens[1::2]) for k in range(length)}
    assert pixels == expected


@PROPERTY
@given(masks(), st.sampled_from(["\t", "  ", "\n"]))
def test_unusual_whitespace_parses_like_single_spaces(mask, separator):
    # Plain single-space text takes a fast parser; anything else takes the exact one: same runs either way.
    height, width = mask.shape
    encoded = rle.mask_to_kaggle(mask)
    if not encoded:
        return
    plain = rle.parse_kaggle_rle(encoded, height, width)
    spaced = rle.parse_kaggle_rle(" " + encoded.replace(" ", separator) + " ", height, width)
    assert all(np.array_equal(a, b) for a, b in zip(plain, spaced))


# ------------------------------------------------------------------------------------------- resize

@PROPERTY
@given(masks(max_side=30), st.integers(1, 40), st.integers(1, 40))
def test_resize_matches_numpy_reference(mask, out_height, out_width):
    height, width = mask.shape
    expected = mask[np.ix_(centre_aligned(height, out_height), centre_aligned(width, out_width))]
    starts, lengths = rle.mask_to_runs(mask)
    dense = rle.resize_runs_to_mask(starts, lengths, height, width, out_height, out_width)
    assert dense.shape == (out_height, out_width) and dense.dtype == np.uint8
    assert np.array_equal(dense, expected)
    run_starts, run_lengths = rle.resize_runs(starts, lengths, height, width, out_height, out_width)
    assert np.array_equal(rle.kaggle_to_mask(rle.runs_to_kaggle(run_starts, run_lengths), out_height, out_width),
                          expected)
    compressed = rle.resize_coco_rle(rle.mask_to_coco(mask), out_height, out_width)
    assert np.array_equal(rle.coco_to_mask(compressed), expected)
    assert rle.resize_kaggle_rle(rle.mask_to_kaggle(mask), height, width, out_height, out_width) == \
        rle.mask_to_kaggle(expected)


def test_nearest_indices_follow_the_exact_rule_where_floats_round_down():
    # (24 + 0.5) * 2 / 49 is exactly 1; computed in floating point it lands just below and picks pixel 0.
    assert rle.nearest_indices(2, 49)[24] == 1
    for in_size, out_size in [(2, 49), (6, 47), (3000, 512), (683, 512), (5792, 512), (7, 7), (1, 5)]:
        assert np.array_equal(rle.nearest_indices(in_size, out_size), centre_aligned(in_size, out_size))


def test_resize_of_a_large_mask_never_builds_it():
    # A 8688 x 5792 photo would need 50 MB as a dense mask; the run-based resize works from two runs.
    height, width = 8688, 5792
    starts = np.array([100 * height + 10, 4000 * height], dtype=np.int64)
    lengths = np.array([5 * height, 3 * height + 7], dtype=np.int64)
    small = rle.resize_runs_to_mask(starts, lengths, height, width, 512, 512)
    cols = centre_aligned(width, 512)
    assert small.shape == (512, 512)
    hit = [(100 <= c < 105) or (4000 <= c < 4003) for c in cols]
    assert np.array_equal(small.any(axis=0), np.array(hit))


# ---------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("encoded, message", [
    ("1 2 3", "odd number of tokens"),
    ("1 2.5", "non-integer token '2.5'"),
    ("1 x", "non-integer token 'x'"),
    ("1-2 3 4 5", "non-integer token '1-2'"),
    ("0 3", "1-indexed"),
    ("-4 3", "1-indexed"),
    ("1 0", "zero-length"),
    ("2 -1", "zero-length or negative"),
    ("10 4", "past height*width = 3*4 = 12"),
    ("12 2", "past height*width"),
    ("9223372036854775806 5", "past height*width"),
    ("99999999999999999999 1", "out of range"),
    ("99999999999999999999 2 0 1", "out of range"),  # once wrapped round int64 into counts that looked valid
    ("5 1 1 1", "not sorted"),
    ("1 3 2 2", "overlap"),
    ("", "empty"),
    ("   ", "empty"),
])
def test_invalid_encodings_raise_rle_error_naming_the_problem(encoded, message):
    pattern = message.replace("*", r"\*").replace(".", r"\.")
    with pytest.raises(rle.RLEError, match=pattern):
        rle.parse_kaggle_rle(encoded, 3, 4)
    with pytest.raises(rle.RLEError, match=pattern):
        rle.kaggle_to_coco(encoded, 3, 4)


def test_non_string_encoding_is_an_rle_error():
    with pytest.raises(rle.RLEError, match="must be a string"):
        rle.parse_kaggle_rle(float("nan"), 3, 4)


def test_empty_allowed_on_request_and_a_run_may_end_on_the_last_pixel():
    starts, lengths = rle.parse_kaggle_rle("", 3, 4, allow_empty=True)
    assert len(starts) == len(lengths) == 0
    starts, lengths = rle.parse_kaggle_rle("12 1", 3, 4)
    assert starts.tolist() == [11] and lengths.tolist() == [1]
    assert rle.kaggle_to_coco("12 1", 3, 4)["counts"].encode() == pycoco_encode(
        np.pad(np.ones((1, 1), np.uint8), ((2, 0), (3, 0))))["counts"]


def test_touching_runs_are_merged():
    starts, lengths = rle.parse_kaggle_rle("1 2 3 2 7 1", 3, 4)
    assert starts.tolist() == [0, 6] and lengths.tolist() == [4, 1]
    mask = rle.kaggle_to_mask("1 2 3 2 7 1", 3, 4)
    assert rle.kaggle_to_coco("1 2 3 2 7 1", 3, 4)["counts"].encode() == pycoco_encode(mask)["counts"]
    # Uncompressed COCO counts with an empty foreground run describe touching runs too.
    starts, lengths = rle.coco_to_runs({"size": [3, 4], "counts": [1, 2, 0, 3, 6]})
    assert starts.tolist() == [1] and lengths.tolist() == [5]


JUNK = ["1-2", "+3", "-4", "x", "1.5", "99999999999999999999", "\u0663", "0x1f", "\u00a0"]


@st.composite
def encoded_texts(draw) -> str:
    """Kaggle-like text with assorted whitespace and, sometimes, a token that is not a plain integer."""
    values = draw(st.lists(st.integers(0, 60), max_size=12))
    tokens = [str(v) for v in values]
    if draw(st.booleans()):
        tokens.insert(draw(st.integers(0, len(tokens))), draw(st.sampled_from(JUNK)))
    separators = draw(st.lists(st.sampled_from([" ", " ", " ", "  ", "\t", "\n"]), min_size=len(tokens) + 1,
                               max_size=len(tokens) + 1))
    inner = "".join(t + s for t, s in zip(tokens, separators[1:]))
    return draw(st.sampled_from(["", " ", "\t"])) + (inner[:-1] if draw(st.booleans()) else inner)


def reference_runs(text: str, height: int, width: int):
    """Straightforward reading of the Kaggle format: None where the text is invalid."""
    try:
        values = [int(t) for t in text.split()]
    except ValueError:
        return None
    if not values or len(values) % 2:
        return None
    pixels = []
    last_end = 0
    for start, length in zip(values[0::2], values[1::2]):
        if start < 1 or length < 1 or start - 1 < last_end or start - 1 + length > height * width:
            return None
        pixels.extend(range(start - 1, start - 1 + length))
        last_end = start - 1 + length
    return pixels


@PROPERTY
@given(encoded_texts())
def test_parser_agrees_with_a_plain_reading_of_the_format(text):
    expected = reference_runs(text, 10, 10)
    if expected is None:
        with pytest.raises(rle.RLEError):
            rle.parse_kaggle_rle(text, 10, 10)
        with pytest.raises(rle.RLEError):
            rle.kaggle_to_coco(text, 10, 10)
    else:
        starts, lengths = rle.parse_kaggle_rle(text, 10, 10)
        assert [p for s, n in zip(starts.tolist(), lengths.tolist()) for p in range(s, s + n)] == expected
        assert np.all(starts[1:] > starts[:-1] + lengths[:-1])  # touching runs were merged
        mask = np.zeros(100, np.uint8)
        mask[expected] = 1
        assert rle.kaggle_to_coco(text, 10, 10)["counts"].encode() == \
            pycoco_encode(mask.reshape(10, 10).T.copy())["counts"]
