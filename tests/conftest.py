"""Shared fixtures: a tiny Kaggle-layout iMaterialist dataset built on the fly (seeded, a few KB, no network)."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from gluon_fashion import labels, rle

#: (height, width) of the generated photos, cycled; odd-numbered photos are grayscale JPEGs.
SAMPLE_SIZES = [(48, 64), (64, 48), (40, 40), (30, 70), (56, 36)]


@dataclass
class KaggleRow:
    """One instance of the generated dataset: what train.csv says and the mask it encodes."""

    image_id: str
    height: int
    width: int
    category: int
    attributes: List[int]
    mask: np.ndarray

    @property
    def file_name(self) -> str:
        return self.image_id if self.image_id.endswith(".jpg") else self.image_id + ".jpg"


def csv_line(fmt: str, image_id: str, encoded: str, height, width, category: str, attributes: str = "") -> str:
    """A train.csv line in the 2019 (ClassId 'cat_attr_attr') or 2020 (separate AttributesIds) layout."""
    if fmt == "2019":
        class_id = "_".join([category] + ([attributes.replace(",", "_")] if attributes else []))
        fields = [image_id, encoded, height, width, class_id]
    else:
        fields = [image_id, encoded, height, width, category, attributes]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue()


def write_kaggle_dataset(root: Path, fmt: str = "2019", num_images: int = 6, seed: int = 0) -> List[KaggleRow]:
    """Write train/, test/, train.csv and label_descriptions.json under ``root``; return the rows written.

    Each photo holds 1-3 ellipse masks; category 0 appears (COCO tools must accept id 0) and some rows
    carry attributes.
    """
    rng = np.random.RandomState(seed)
    root = Path(root)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows: List[KaggleRow] = []
    for i in range(num_images):
        height, width = SAMPLE_SIZES[i % len(SAMPLE_SIZES)]
        digest = hashlib.md5(f"{seed}-{i}".encode()).hexdigest()
        image_id = digest + ".jpg" if fmt == "2019" else digest
        photo = rng.randint(0, 255, (height, width, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "train" / (digest + ".jpg")), photo[:, :, 0] if i % 2 else photo)
        for k in range(rng.randint(1, 4)):
            mask = np.zeros((height, width), np.uint8)
            centre = (int(rng.randint(5, width - 5)), int(rng.randint(5, height - 5)))
            axes = (int(rng.randint(3, width // 2)), int(rng.randint(3, height // 2)))
            cv2.ellipse(mask, centre, axes, float(rng.randint(0, 180)), 0, 360, 1, -1)
            category = 0 if not rows else int(rng.randint(0, labels.NUM_CATEGORIES))
            attributes = sorted(rng.choice(labels.NUM_ATTRIBUTES, rng.randint(0, 3), replace=False).tolist())
            rows.append(KaggleRow(image_id, height, width, category, attributes, mask))
    cv2.imwrite(str(root / "test" / "test0.jpg"), rng.randint(0, 255, (32, 32, 3), dtype=np.uint8))
    header = ",".join(["ImageId", "EncodedPixels", "Height", "Width", "ClassId"]
                      + (["AttributesIds"] if fmt == "2020" else [])) + "\n"
    with open(root / "train.csv", "w", encoding="utf-8", newline="") as handle:
        handle.write(header)
        for row in rows:
            handle.write(csv_line(fmt, row.image_id, rle.mask_to_kaggle(row.mask), row.height, row.width,
                                  str(row.category), ",".join(map(str, row.attributes))))
    with open(root / "label_descriptions.json", "w", encoding="utf-8") as handle:
        json.dump(labels.label_descriptions(), handle)
    return rows


@pytest.fixture(params=["2019", "2020"])
def kaggle_dataset(request, tmp_path):
    """(data_root, csv format, rows) of a freshly written tiny dataset, once per CSV format."""
    root = tmp_path / "imaterialist"
    rows = write_kaggle_dataset(root, fmt=request.param)
    return root, request.param, rows
