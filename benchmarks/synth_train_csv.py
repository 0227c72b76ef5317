#!/usr/bin/env python
"""Synthesize a Kaggle-layout iMaterialist 2019 dataset at real scale for benchmarking the converter.

    python benchmarks/synth_train_csv.py --out benchmarks/_work/synth [--images 45625 --rows 333415]

What is realistic: the row and image counts, the photo sizes (mostly 3000x2000, 1500x1000, 1024x683,
1000x667, 1200x800 HxW, a few 8688x5792), and the masks: 1-3 blob-like shapes per row, each spanning tens
to thousands of columns with ragged edges and some holes, so EncodedPixels runs to several KB a row and
the file to ~1-2 GB, like the real train.csv. Two photos have Height/Width swapped in the CSV, as in 2019.

What is cheap: the converter reads only each photo's header and last bytes (it decodes photos only with
--verify_images, and these smooth ones decode faster than real photos), so one real JPEG is written per
distinct size (a small file, since it is a smooth gradient) and every ImageId is a hard link to it (a symlink
where the file system refuses links). 45,625 photos then cost a few MB and a second of disk work.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from gluon_fashion import labels

FULL_IMAGES = 45_625
FULL_ROWS = 333_415
#: (height, width) of the photos and how often each occurs.
SIZES: List[Tuple[Tuple[int, int], float]] = [
    ((3000, 2000), 0.30), ((1500, 1000), 0.18), ((1024, 683), 0.16), ((1000, 667), 0.12),
    ((1200, 800), 0.14), ((683, 1024), 0.04), ((2000, 3000), 0.04), ((4000, 6000), 0.01), ((8688, 5792), 0.01),
]
NUM_SWAPPED = 2
BLOCK_IMAGES = 500


def blob_runs(rng: np.random.RandomState, height: int, width: int, band: Tuple[int, int]) -> np.ndarray:
    """0-based (start, length) runs of one ragged blob inside rows ``band``, column-major, one or two per column."""
    top_limit, bottom_limit = band
    span = max(2, int(width * np.exp(rng.uniform(np.log(0.01), np.log(0.6)))))  # parts small, garments wide
    x0 = rng.randint(0, max(1, width - span))
    columns = np.arange(x0, min(width, x0 + span))
    n = len(columns)
    band_height = bottom_limit - top_limit
    centre = top_limit + band_height * rng.uniform(0.35, 0.65)
    half = band_height * rng.uniform(0.2, 0.48) * np.sqrt(np.sin(np.linspace(0.05, np.pi - 0.05, n)))
    wobble = np.cumsum(rng.normal(0, max(1.0, band_height / 400), n))
    top = np.clip(centre - half + wobble, top_limit, bottom_limit - 2).astype(np.int64)
    bottom = np.clip(centre + half + wobble, top + 1, bottom_limit - 1).astype(np.int64)
    starts = columns * height + top
    lengths = bottom - top
    # Holes (straps, gaps between garment parts) split about one column in eight into two runs.
    holed = (rng.random_sample(n) < 0.125) & (lengths > 8)
    cut = lengths[holed] // 3
    gap = np.maximum(1, lengths[holed] // 6)
    first = np.stack([starts[holed], cut], axis=1)
    second = np.stack([starts[holed] + cut + gap, lengths[holed] - cut - gap], axis=1)
    whole = np.stack([starts[~holed], lengths[~holed]], axis=1)
    runs = np.concatenate([whole, first, second])
    return runs[runs[:, 1] > 0]


def row_encoding(rng: np.random.RandomState, height: int, width: int) -> str:
    """Kaggle EncodedPixels of 1-3 blobs stacked in separate row bands (so runs never overlap)."""
    count = rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])
    edges = np.linspace(0, height, count + 1).astype(int)
    runs = np.concatenate([blob_runs(rng, height, width, (edges[i] + 1, edges[i + 1] - 1)) for i in range(count)])
    runs = runs[np.argsort(runs[:, 0], kind="stable")]
    runs[:, 0] += 1  # Kaggle starts are 1-indexed
    return " ".join(map(str, runs.ravel().tolist()))


def class_id(rng: np.random.RandomState) -> str:
    category = int(rng.randint(0, labels.NUM_CATEGORIES))
    if category in labels.MAIN_APPAREL_IDS and rng.random_sample() < 0.7:
        attributes = sorted(rng.choice(labels.NUM_ATTRIBUTES, rng.randint(1, 5), replace=False).tolist())
        return "_".join(map(str, [category] + attributes))
    return str(category)


def block_text(block) -> Tuple[str, int]:
    """CSV lines of a block of photos, from an RNG seeded by the block (same text whatever the process)."""
    seed, first, image_sizes, rows_per_image, swapped = block
    rng = np.random.RandomState([seed, first])
    lines = []
    for k, (image_id, (height, width)) in enumerate(image_sizes):
        if k in swapped:  # the CSV states the size transposed; the masks index the CSV's grid
            height, width = width, height
        lines += [f"{image_id},{row_encoding(rng, height, width)},{height},{width},{class_id(rng)}\n"
                  for _ in range(rows_per_image[k])]
    return "".join(lines), len(lines)


def write_photos(train_dir: Path, image_sizes: List[Tuple[str, Tuple[int, int]]]) -> None:
    """One real JPEG per distinct size; every ImageId a hard link (or symlink) to the one of its size."""
    templates = train_dir.parent / "_size_templates"
    templates.mkdir(parents=True, exist_ok=True)
    train_dir.mkdir(parents=True, exist_ok=True)
    for image_id, (height, width) in tqdm(image_sizes, desc="photos (links)", unit="img", mininterval=2):
        template = templates / f"{height}x{width}.jpg"
        if not template.exists():
            gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0).astype(np.uint8)
            cv2.imwrite(str(template), cv2.merge([gradient, gradient[::-1], gradient]))
        target = train_dir / image_id
        try:
            os.link(template, target)
        except OSError:
            os.symlink(template.resolve(), target)


def synthesize(out: Path, num_images: int, num_rows: int, seed: int = 0) -> Path:
    """Write train.csv, label_descriptions.json and train/ under ``out``; return the CSV path."""
    if num_rows < num_images:
        raise SystemExit("--rows must be at least --images (every photo has one row or more)")
    rng = np.random.RandomState(seed)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [s for s, _ in SIZES]
    picks = rng.choice(len(sizes), num_images, p=np.array([w for _, w in SIZES]) / sum(w for _, w in SIZES))
    rows_per_image = 1 + rng.multinomial(num_rows - num_images, np.full(num_images, 1.0 / num_images))
    image_ids = [hashlib.md5(f"synth-{seed}-{i}".encode()).hexdigest() + ".jpg" for i in range(num_images)]
    image_sizes = [(image_ids[i], sizes[picks[i]]) for i in range(num_images)]
    swapped = {i for i in rng.choice(num_images, min(NUM_SWAPPED, num_images), replace=False).tolist()
               if sizes[picks[i]][0] != sizes[picks[i]][1]}
    write_photos(out / "train", image_sizes)
    (out / "test").mkdir(exist_ok=True)
    with open(out / "label_descriptions.json", "w", encoding="utf-8") as handle:
        json.dump(labels.label_descriptions(), handle)
    csv_path = out / "train.csv"
    blocks = [(seed, b, image_sizes[b:b + BLOCK_IMAGES], rows_per_image[b:b + BLOCK_IMAGES].tolist(),
               sorted(i - b for i in swapped if b <= i < b + BLOCK_IMAGES))
              for b in range(0, num_images, BLOCK_IMAGES)]
    with open(csv_path, "w", encoding="ascii", newline="") as handle, multiprocessing.Pool() as pool:
        handle.write("ImageId,EncodedPixels,Height,Width,ClassId\n")
        with tqdm(total=num_rows, desc="train.csv rows", unit="row", mininterval=2) as bar:
            for text, count in pool.imap(block_text, blocks):  # in order, so the file is the same every time
                handle.write(text)
                bar.update(count)
    return csv_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the dataset into")
    parser.add_argument("--images", type=int, default=FULL_IMAGES)
    parser.add_argument("--rows", type=int, default=None, help=f"default: images * {FULL_ROWS}/{FULL_IMAGES}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = args.rows or round(args.images * FULL_ROWS / FULL_IMAGES)
    if (args.out / "train.csv").exists():
        raise SystemExit(f"{args.out}/train.csv already exists; pick another --out")
    started = time.perf_counter()
    csv_path = synthesize(args.out, args.images, rows, args.seed)
    print(f"wrote {csv_path} ({csv_path.stat().st_size / 1e9:.2f} GB, {rows} rows, {args.images} images) "
          f"in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
