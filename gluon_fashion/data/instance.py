"""Instance dataset (Mask R-CNN) over COCO JSON, with masks kept run-length encoded.

Reads the converters' output, and any COCO-style instance JSON directly: masks as compressed or uncompressed
RLE, or as polygons (rasterised by pycocotools at the image's size when the file is read; polygons of fewer than
3 points are left out, with a warning); ``bbox``/``area`` are computed from the mask where an annotation lacks
them. Anything else is one UserError naming the file and the annotation (``data.coco_json``).

GluonCV's ``COCOInstance`` expects polygon masks and reads every image through ``mx.image.imread``; here
the masks stay compressed RLE until the transform decodes them straight at the training resolution
(``gluon_fashion.transforms.instance``), and images are decoded RGB whatever their JPEG mode.

Indices may carry the epoch (``epoch * len(dataset) + i``, see ``data.samplers.EpochTaggedBatches``): the
augmentation of sample ``i`` in epoch ``e`` is then seeded by ``(seed, e, i)`` alone, so a resumed run and
any number of loader workers draw the same flips as an uninterrupted one.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from gluoncv.data import COCOInstance

from ..errors import UserError
from ..images import read_rgb_at_least
from ..labels import CATEGORY_NAMES, NUM_CATEGORIES, has_imaterialist_classes
from .coco_json import converter_hint, polygons_to_rle, read_coco_json
from .truncated import find_truncated_images

log = logging.getLogger(__name__)

TRAIN_ANNOTATIONS = "annotations/rle_instances_train.json"
VAL_ANNOTATIONS = "annotations/rle_instances_val.json"
VAL_RESIZED_ANNOTATIONS = "annotations/resize_rle_instances_val.json"
_IMAGE_DIRS = {TRAIN_ANNOTATIONS: "train", VAL_ANNOTATIONS: "val", VAL_RESIZED_ANNOTATIONS: "val"}


def split_files(root: str, split: str) -> Tuple[Path, Path]:
    """(annotation JSON, image folder) of ``split``: "train", "val" or "val_resized" (512x512 masks)."""
    names = {"train": TRAIN_ANNOTATIONS, "val": VAL_ANNOTATIONS, "val_resized": VAL_RESIZED_ANNOTATIONS}
    if split not in names:
        raise ValueError(f"split must be one of {sorted(names)}, got {split!r}")
    return Path(root) / names[split], Path(root) / _IMAGE_DIRS[names[split]]


class FashionInstance(COCOInstance):
    """iMaterialist instances: ``dataset[i] -> (rgb uint8 HxWx3, label (N, 5) float32, [COCO RLE] * N)``.

    ``label`` rows are ``x1, y1, x2, y2, contiguous class`` (boxes clipped to the image), then, with
    ``attribute_ids``, one 0/1 column per attribute (has it or not; ids outside the list are ignored): padded
    with the boxes by the batchify, they reach the training step beside each ground truth. The class index
    ``k`` stands for category ``category_ids[k]``. ``category_ids`` selects and orders the trained
    categories (default: all 46 of iMaterialist, or every category of a file with other classes); annotations of other categories are dropped, and with ``skip_empty``
    so are images left without any. Truncated JPEGs are left out with a warning (``truncated_images``). With a transform that has ``pick_size`` (the training transform) and
    ``reduced_decode``, a JPEG is decoded at the smallest 1/2^k scale that still covers the training size.
    """

    def __init__(self, annotation_file: str, image_dir: str, category_ids: Optional[Sequence[int]] = None,
                 transform: Optional[Callable] = None, min_object_area: float = 1, skip_empty: bool = True,
                 seed: int = 0, reduced_decode: bool = True, attribute_ids: Optional[Sequence[int]] = None):
        self.annotation_file = Path(annotation_file)
        #: attribute ids whose multi-hot columns follow the class in every label row (None: no columns)
        self.attribute_ids = None if attribute_ids is None else tuple(int(a) for a in attribute_ids)
        self._attribute_column = {a: k for k, a in enumerate(self.attribute_ids or ())}
        self.image_dir = Path(image_dir)
        ids = tuple(range(NUM_CATEGORIES)) if category_ids is None else tuple(int(i) for i in category_ids)
        if not ids or len(set(ids)) != len(ids):
            raise UserError(f"category ids must be distinct and not empty, got {list(ids)}")
        self.category_ids: Tuple[int, ...] = ids
        self._ids_from_data = category_ids is None  # another dataset's file: its own categories (_load_jsons)
        self.seed = int(seed)
        self.reduced_decode = bool(reduced_decode)
        self.image_records: List[Dict] = []
        #: paths of the truncated JPEGs left out (see ``data.truncated``)
        self.truncated_images: List[str] = []
        self._class_names = [CATEGORY_NAMES[i] if i < NUM_CATEGORIES else str(i) for i in ids]
        if not self.image_dir.is_dir():
            raise UserError(f"{self.image_dir}: image folder not found (images of {self.annotation_file})")
        super().__init__(root=str(self.image_dir), splits=(str(self.annotation_file),), transform=transform,
                         min_object_area=min_object_area, skip_empty=skip_empty)

    def __str__(self) -> str:
        return f"FashionInstance({self.annotation_file}, {len(self)} images, {self.num_class} classes)"

    @property
    def classes(self) -> List[str]:
        """Category names in label order."""
        return list(self._class_names)

    @property
    def coco(self):
        """pycocotools COCO of the annotation file (for evaluation)."""
        if not self._coco:
            from ..evaluation.coco import coco_from_dict
            self._coco.append(coco_from_dict(self._read_annotations()))
        return self._coco[0]

    def _read_annotations(self) -> Dict:
        # The converter writes <root>/annotations/<name>.json: say how to make a missing one.
        return read_coco_json(self.annotation_file, hint=converter_hint(self.annotation_file.parent.parent),
                              fill_boxes=True)

    def _load_jsons(self):
        """Four lists, as GluonCV's samplers expect: image paths, labels, RLE masks, aspect ratios.

        Truncated JPEGs are left out (``data.truncated``; listed in ``truncated_images``)."""
        data = self._read_annotations()  # checked: ids, sizes, boxes, and every annotation's image and category
        if self._ids_from_data and not has_imaterialist_classes(data["categories"]):
            self.category_ids = tuple(sorted(c["id"] for c in data["categories"]))
            self._class_names = [str(c) for c in self.category_ids]  # named from the data just below
        self.json_id_to_contiguous = {cid: k for k, cid in enumerate(self.category_ids)}
        self.contiguous_id_to_json = {k: cid for cid, k in self.json_id_to_contiguous.items()}
        names = {c["id"]: c["name"] for c in data["categories"]}
        self._class_names = [names.get(cid, name) for cid, name in zip(self.category_ids, self._class_names)]
        self._polygons_to_rle(data)  # before grouping: the annotations it drops must not reach an image
        by_image: Dict[int, List[Dict]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        entries = sorted(data["images"], key=lambda e: e["id"])
        paths = [self.image_dir / entry["file_name"] for entry in entries]
        for entry, path in zip(entries, paths):
            if not path.is_file():
                raise UserError(f"{path}: image listed in {self.annotation_file} (id {entry['id']}) is missing")
        truncated = set(find_truncated_images(paths, self.annotation_file))
        self.truncated_images = [str(paths[i]) for i in sorted(truncated)]
        items, labels, segms, ratios = [], [], [], []
        for index, (entry, path) in enumerate(zip(entries, paths)):
            if index in truncated:
                continue
            label, segm = self._valid_objects(entry, by_image.get(entry["id"], []))
            if self._skip_empty and label is None:
                continue
            height = entry.get("orig_height", entry["height"])
            width = entry.get("orig_width", entry["width"])
            items.append(str(path))
            labels.append(label)
            segms.append(segm)
            ratios.append(float(width) / float(height))
            self.image_records.append(entry)
        if not items:
            raise UserError(f"{self.annotation_file}: no image with an annotation of the selected categories "
                            f"{list(self.category_ids)}"
                            + (f" ({len(truncated)} truncated JPEG(s) left out)" if truncated else ""))
        return items, labels, segms, ratios

    def _polygons_to_rle(self, data: Dict) -> None:
        """Replace polygon masks by pycocotools' RLE of them at their image's size (in place); annotations whose
        polygons all have fewer than 3 points are dropped. Warns once with the counts."""
        sizes = {entry["id"]: (entry["height"], entry["width"]) for entry in data["images"]}
        kept, parts, dropped = [], 0, []
        for ann in data["annotations"]:
            if isinstance(ann["segmentation"], list):
                rle, degenerate = polygons_to_rle(ann["segmentation"], *sizes[ann["image_id"]])
                parts += len(degenerate)
                if rle is None:
                    dropped.append(ann["id"])
                    continue
                ann["segmentation"] = rle
            kept.append(ann)
        data["annotations"] = kept
        if parts or dropped:
            log.warning("%s: %d polygon(s) of fewer than 3 points left out; %d annotation(s) with no other polygon "
                        "dropped%s (convert with tools/convert_*_to_coco.py for a report)", self.annotation_file,
                        parts, len(dropped), f", ids {dropped[:5]}" if dropped else "")

    def _valid_objects(self, entry: Dict, anns: List[Dict]):
        """GluonCV's rules (no crowd, clipped box of at least 4 px^2 and area > min) on RLE annotations."""
        width, height = entry["width"], entry["height"]
        boxes, rles = [], []
        for ann in anns:
            label = self.json_id_to_contiguous.get(ann["category_id"])
            if label is None or ann.get("iscrowd", 0) or ann.get("ignore", 0):
                continue
            x, y, w, h = ann["bbox"]
            x1, y1 = min(max(0.0, x), width), min(max(0.0, y), height)
            x2, y2 = min(max(0.0, x + max(0.0, w)), width), min(max(0.0, y + max(0.0, h)), height)
            if ann["area"] > self._min_object_area and x2 > x1 and y2 > y1 and (x2 - x1) * (y2 - y1) >= 4:
                row = [x1, y1, x2, y2, label]
                if self.attribute_ids is not None:
                    multi_hot = [0.0] * len(self.attribute_ids)
                    for a in ann.get("attribute_ids", []):
                        if a in self._attribute_column:
                            multi_hot[self._attribute_column[a]] = 1.0
                    row += multi_hot
                boxes.append(row)
                rles.append(ann["segmentation"])  # an RLE of the image's size: see _polygons_to_rle
        if not boxes:
            return None, None
        return np.asarray(boxes, dtype=np.float32), rles

    def __len__(self) -> int:
        return len(self._items)

    def image_path(self, index: int) -> str:
        """Path of image ``index``."""
        return self._items[index]

    def rng_seed(self, index: int, epoch: int = 0) -> int:
        """Seed of sample ``index``'s augmentation in ``epoch`` (32 bits, for ``np.random.seed``)."""
        return int(np.random.SeedSequence([self.seed % 2**32, int(epoch), int(index)]).generate_state(1)[0])

    def image_size(self, index: int) -> Tuple[int, int]:
        """(height, width) of image ``index`` as recorded in the JSON (the original photo's size)."""
        record = self.image_records[index]
        return int(record.get("orig_height", record["height"])), int(record.get("orig_width", record["width"]))

    def read_image(self, index: int, min_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """RGB pixels of image ``index``; with ``min_size`` (h, w) possibly decoded smaller, down to that size."""
        height, width = self.image_size(index)
        min_height, min_width = min_size or (height, width)
        return read_rgb_at_least(self._items[index], height, width, min_height, min_width,
                                 source=str(self.annotation_file))

    def __getitem__(self, index: int):
        epoch, index = divmod(int(index), len(self._items))
        label, segms = self._labels[index], self._segms[index]
        if self._transform is None:
            return self.read_image(index), label, segms
        # GluonCV's RPN target sampler draws from NumPy's global generator: seed it per sample.
        np.random.seed(self.rng_seed(index, epoch))
        pick_size = getattr(self._transform, "pick_size", None)
        if pick_size is None or not self.reduced_decode:
            return self._transform(self.read_image(index), label, segms)
        size = self.image_size(index)
        out_size = pick_size(*size)
        return self._transform(self.read_image(index, out_size), label, segms, orig_size=size, out_size=out_size)

