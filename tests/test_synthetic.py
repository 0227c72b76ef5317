"""The bundled sample dataset generator: Kaggle layout, valid RLE, determinism, visible-pixel masks, CLI."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gluon_fashion import labels, synthetic
from gluon_fashion.errors import UserError
from gluon_fashion.images import image_size, read_rgb
from gluon_fashion.labels import MAIN_APPAREL_IDS, NUM_ATTRIBUTES, NUM_CATEGORIES, label_descriptions
from gluon_fashion.rle import kaggle_to_mask, parse_kaggle_rle

REPO = Path(__file__).resolve().parents[1]
PARTS = {synthetic.SLEEVE, synthetic.NECKLINE}
TINY = dict(num_train=4, num_test=2, min_size=128, max_size=256, progress=False)


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _categories(df: pd.DataFrame) -> pd.Series:
    return df.ClassId.str.split("_").str[0].astype(int)


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_sample(tmp_path_factory):
    """The dataset as `make_sample_dataset` writes it with default settings (2019 format)."""
    out = tmp_path_factory.mktemp("sample") / "sample"
    summary = synthetic.make_sample_dataset(out, progress=False)
    return out, summary, _read_csv(out / "train.csv")


def test_default_layout_matches_kaggle_2019(default_sample):
    out, summary, df = default_sample
    assert list(df.columns) == ["ImageId", "EncodedPixels", "Height", "Width", "ClassId"]
    train = sorted(p.name for p in (out / "train").iterdir())
    test = sorted(p.name for p in (out / "test").iterdir())
    assert len(train) == synthetic.DEFAULT_NUM_TRAIN and len(test) == synthetic.DEFAULT_NUM_TEST
    assert all(re.fullmatch(r"[0-9a-f]{32}\.jpg", name) for name in train + test)
    assert not set(train) & set(test)
    assert set(df.ImageId) == set(train)  # every training image is annotated, every row names a real file
    assert summary.num_instances == len(df)

    submission = _read_csv(out / "sample_submission.csv")
    assert list(submission.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert sorted(submission.ImageId) == test
    assert set(submission.EncodedPixels) == {"1 1"} and set(submission.ClassId) == {"23"}

    labels = json.loads((out / "label_descriptions.json").read_text())
    assert labels == label_descriptions()
    assert len(labels["categories"]) == NUM_CATEGORIES and len(labels["attributes"]) == NUM_ATTRIBUTES


def test_every_row_is_valid_rle_of_its_image_size(default_sample):
    out, _, df = default_sample
    sizes = {name: image_size(out / "train" / name) for name in df.ImageId.unique()}
    for row in df.itertuples():
        height, width = int(row.Height), int(row.Width)
        assert sizes[row.ImageId] == (height, width), row.ImageId
        starts, lengths = parse_kaggle_rle(row.EncodedPixels, height, width)
        assert lengths.sum() >= synthetic.MIN_AREA_OTHER  # no empty or near-invisible instances
        ids = [int(v) for v in row.ClassId.split("_")]
        assert 0 <= ids[0] < NUM_CATEGORIES
        attributes = ids[1:]
        assert attributes == sorted(set(attributes)) and all(0 <= a < NUM_ATTRIBUTES for a in attributes)


def test_content_covers_main_apparel_attributes_and_grayscale(default_sample):
    out, summary, df = default_sample
    categories = _categories(df)
    assert set(MAIN_APPAREL_IDS) <= set(categories)
    assert {synthetic.SLEEVE, synthetic.SHOE, synthetic.BAG} <= set(categories)
    assert summary.category_counts == categories.value_counts().to_dict()
    assert 0 < df.ClassId.str.contains("_").sum() < len(df)

    modes = [Image.open(p).mode for p in sorted((out / "train").iterdir()) + sorted((out / "test").iterdir())]
    assert modes.count("L") == summary.num_grayscale > 0  # real 1-channel JPEGs, not gray RGB
    assert modes.count("RGB") == len(modes) - summary.num_grayscale

    sizes = {(int(h), int(w)) for h, w in zip(df.Height, df.Width)}
    assert any(h > w for h, w in sizes) and any(w > h for h, w in sizes)
    assert min(min(s) for s in sizes) >= synthetic.DEFAULT_MIN_SIZE
    assert max(max(s) for s in sizes) <= synthetic.DEFAULT_MAX_SIZE


def test_masks_are_visible_pixels_and_parts_lie_inside_their_garment(default_sample):
    _, _, df = default_sample
    df = df.assign(category=_categories(df))
    parts_checked = 0
    for image_id in list(df.ImageId.unique())[:40]:
        rows = df[df.ImageId == image_id]
        height, width = int(rows.Height.iloc[0]), int(rows.Width.iloc[0])
        masks = [(r.category, kaggle_to_mask(r.EncodedPixels, height, width).astype(bool)) for r in rows.itertuples()]
        whole = [m for c, m in masks if c not in PARTS]
        coverage = np.sum(whole, axis=0)
        assert coverage.max() <= 1  # whole objects never share a pixel: each keeps only what is visible
        garments = np.any([m for c, m in masks if c in MAIN_APPAREL_IDS] or [np.zeros((height, width), bool)], axis=0)
        for category, mask in masks:
            if category in PARTS:
                assert (mask & garments).sum() >= 0.95 * mask.sum()
                parts_checked += 1
    assert parts_checked > 20


def test_each_main_category_has_a_distinctive_colour(default_sample):
    """A nearest-colour-centroid rule fitted on half the images must classify the other half's garments:
    the appearance cue that makes the sample learnable in a short training."""
    out, _, df = default_sample
    df = df.assign(category=_categories(df))
    df = df[df.category.isin(MAIN_APPAREL_IDS)]
    image_ids = [i for i in df.ImageId.unique() if Image.open(out / "train" / i).mode == "RGB"]
    features, labels, first_half = [], [], []
    for n, image_id in enumerate(image_ids):
        image = read_rgb(out / "train" / image_id).astype(np.float32)
        for r in df[df.ImageId == image_id].itertuples():
            mask = kaggle_to_mask(r.EncodedPixels, int(r.Height), int(r.Width)).astype(bool)
            features.append(image[mask].mean(0))
            labels.append(r.category)
            first_half.append(n < len(image_ids) // 2)
    features, labels, first_half = np.array(features), np.array(labels), np.array(first_half)
    centroids = np.array([features[first_half & (labels == c)].mean(0) for c in MAIN_APPAREL_IDS])
    distances = ((features[~first_half, None] - centroids[None]) ** 2).sum(-1)
    accuracy = (np.argmin(distances, 1) == labels[~first_half]).mean()
    assert accuracy >= 0.9


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path):
    synthetic.make_sample_dataset(tmp_path / "a", seed=3, **TINY)
    synthetic.make_sample_dataset(tmp_path / "b", seed=3, **TINY)
    synthetic.make_sample_dataset(tmp_path / "c", seed=4, **TINY)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "c" / "train.csv").read_bytes()
    assert not {k for k in a if k.endswith(".jpg")} & {k for k in c if k.endswith(".jpg")}


def test_2020_format(tmp_path):
    out = tmp_path / "s2020"
    synthetic.make_sample_dataset(out, fmt="2020", seed=1, num_train=12, num_test=2, min_size=128, max_size=256,
                               progress=False)
    df = _read_csv(out / "train.csv")
    assert list(df.columns) == ["ImageId", "EncodedPixels", "Height", "Width", "ClassId", "AttributesIds"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in df.ImageId)
    assert all((out / "train" / f"{i}.jpg").is_file() for i in df.ImageId.unique())
    assert all(re.fullmatch(r"\d+", c) for c in df.ClassId)
    assert all(re.fullmatch(r"(\d+(,\d+)*)?", a) for a in df.AttributesIds)
    assert json.loads((out / "label_descriptions.json").read_text()) == label_descriptions(2020)
    used = {int(a) for text in df.AttributesIds if text for a in text.split(",")}
    assert max(used) > 300 and used <= {a["id"] for a in labels.ATTRIBUTES_2020}  # patterns have ids 317-340
    assert (df.AttributesIds != "").any() and (df.AttributesIds == "").any()
    for row in df.itertuples():
        parse_kaggle_rle(row.EncodedPixels, int(row.Height), int(row.Width))
    submission = _read_csv(out / "sample_submission.csv")
    assert list(submission.columns) == ["ImageId", "EncodedPixels", "ClassId", "AttributesIds"]
    assert sorted(f"{i}.jpg" for i in submission.ImageId) == sorted(p.name for p in (out / "test").iterdir())


def test_refuses_non_empty_folder_and_overwrite_replaces_only_its_own(tmp_path):
    out = tmp_path / "s"
    synthetic.make_sample_dataset(out, seed=0, **TINY)
    before = _files(out)
    with pytest.raises(UserError, match="--overwrite"):
        synthetic.make_sample_dataset(out, seed=1, **TINY)
    assert _files(out) == before

    synthetic.make_sample_dataset(out, seed=1, overwrite=True, **TINY)
    df = _read_csv(out / "train.csv")
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(df.ImageId.unique())  # old images gone
    assert len(list((out / "test").iterdir())) == TINY["num_test"]

    foreign = tmp_path / "kaggle"
    foreign.mkdir()
    (foreign / "train.csv").write_text("ImageId,EncodedPixels,Height,Width,ClassId\n")
    with pytest.raises(UserError, match="not made by this generator"):
        synthetic.make_sample_dataset(foreign, overwrite=True, **TINY)
    assert [p.name for p in foreign.iterdir()] == ["train.csv"]


@pytest.mark.parametrize("kwargs, flag", [
    (dict(num_train=0), "--num-train"), (dict(num_test=-1), "--num-test"), (dict(fmt="2018"), "--format"),
    (dict(min_size=64), "--min-size"), (dict(min_size=300, max_size=200), "--max-size"),
])
def test_bad_arguments_name_the_flag(tmp_path, kwargs, flag):
    with pytest.raises(UserError, match=flag):
        synthetic.make_sample_dataset(tmp_path / "s", **{**TINY, **kwargs})
    assert not (tmp_path / "s").exists()


def test_render_image_returns_image_and_visible_masks():
    image, instances = synthetic.render_image(np.random.default_rng(7), 240, 360)
    assert image.shape == (240, 360, 3) and image.dtype == np.uint8
    assert instances and all(i.mask.shape == (240, 360) and i.mask.dtype == bool and i.mask.any() for i in instances)
    assert any(i.category_id in MAIN_APPAREL_IDS for i in instances)


def _rendered_instances(count: int):
    for index in range(count):
        rng = np.random.default_rng([0, 2, index])
        height, width = synthetic._image_size(rng, 200, 400)
        yield synthetic.render_image(rng, height, width)[1]


SLEEVE_LENGTHS = {"sleeveless", "short (length)", "wrist-length"}
HEM_LENGTHS = ("mini (length)", "knee (length)", "midi")


def test_attributes_name_what_is_drawn():
    """Every garment names one pattern and, if it has sleeves, their length; none of a sleeveless garment's sleeve
    parts exist; only garments carry attributes; the 2019 ids are the names the 2019 list has (nicknames)."""
    patterns = {a["name"] for a in labels.ATTRIBUTES_2020 if a["supercategory"] == "textile pattern"}
    sleeved = {synthetic.SHIRT, synthetic.TOP, synthetic.SWEATER, synthetic.CARDIGAN, synthetic.JACKET, synthetic.VEST,
               synthetic.COAT, synthetic.DRESS, synthetic.JUMPSUIT}  # a vest says it is sleeveless
    seen = set()
    for instances in _rendered_instances(40):
        sleeves = [i.mask for i in instances if i.category_id == synthetic.SLEEVE]
        for garment in instances:
            names = set(garment.attributes)
            seen |= names
            assert set(garment.attribute_ids(2019)) == {a["id"] for a in labels.ATTRIBUTES if a["name"] in names}
            if garment.category_id not in MAIN_APPAREL_IDS:
                assert not names
                continue
            assert len(names & patterns) == 1, names
            assert len(names & SLEEVE_LENGTHS) == (garment.category_id in sleeved), names
            if "sleeveless" in names:
                assert not [m for m in sleeves if not (m & ~garment.mask).any()]  # parts lie inside their garment
    assert SLEEVE_LENGTHS | set(HEM_LENGTHS) | {"stripe", "dot", "check", "plain (pattern)"} <= seen


def _painted(category: int, seed: int):
    """One figure wearing ``category`` on a plain canvas: (body, the garment's instance, its sleeve parts)."""
    rng = np.random.default_rng([seed, 99])
    canvas = synthetic._Canvas(np.full((480, 320, 3), 128, np.float32), rng)
    body = synthetic._Body(rng, 160, 20, 440)
    painter = synthetic._FigurePainter(canvas, body)
    if category in (synthetic.DRESS, synthetic.JUMPSUIT):
        painter.whole(category)
    elif category in (synthetic.SHIRT, synthetic.TOP):
        painter.inner(category)
    elif category == synthetic.COAT:
        painter.outer(category, closed=False)
    else:
        painter.bottoms(category)
    instances = canvas.instances()
    (garment,) = [i for i in instances if i.category_id == category]
    return body, garment, [i.mask for i in instances if i.category_id == synthetic.SLEEVE]


@pytest.mark.parametrize("category", ["SKIRT", "DRESS", "COAT"])
def test_hem_length_attribute_matches_where_the_hem_falls(category):
    tolerance = 0.2  # head heights: the hem's lowest point hangs a little below the hem line
    found = set()
    for seed in range(30):
        body, garment, _ = _painted(getattr(synthetic, category), seed)
        (length,) = set(garment.attributes).intersection(HEM_LENGTHS)
        found.add(length)
        above_knee = (body.knee_y - np.nonzero(garment.mask.any(axis=1))[0][-1]) / body.u
        low, high = {"mini (length)": (0.35, 9), "knee (length)": (-0.35, 0.35), "midi": (-9, -0.35)}[length]
        assert low - tolerance < above_knee <= high + 0.02, (length, above_knee)
    assert len(found) >= 2


@pytest.mark.parametrize("category", ["SHIRT", "TOP", "DRESS", "JUMPSUIT"])
def test_sleeve_length_attribute_matches_the_sleeves(category):
    reach = {"sleeveless": [], "short (length)": [], "wrist-length": []}
    for seed in range(30):
        body, garment, sleeves = _painted(getattr(synthetic, category), seed)
        (length,) = set(garment.attributes) & SLEEVE_LENGTHS
        rows = [np.nonzero(m.any(axis=1))[0] for m in sleeves]
        reach[length].append(max((r[-1] - r[0] for r in rows), default=0) / body.u)
    assert all(r == 0 for r in reach["sleeveless"])
    assert all(0 < r < 1.3 for r in reach["short (length)"]) and all(r > 1.8 for r in reach["wrist-length"]), reach
    assert sum(bool(r) for r in reach.values()) >= 2


def test_cli_writes_sample_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, str(REPO / "tools" / "make_sample_dataset.py"), "--out", str(out), "--num-train", "3",
               "--num-test", "1", "--min-size", "128", "--max-size", "200", "--format", "2020", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote 3 train + 1 test images")
    assert len(list((out / "train").iterdir())) == 3 and "AttributesIds" in (out / "train.csv").read_text()

    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2
    assert again.stderr.startswith("error: ") and "--overwrite" in again.stderr and "Traceback" not in again.stderr
