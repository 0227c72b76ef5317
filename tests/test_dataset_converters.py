"""Fashionpedia, ModaNet, DeepFashion2 and COCO-style sources: the converters (masks equal to pycocotools' decoding
of the source at the photo's size, every object left out reported, class maps), the instance dataset reading a
source JSON directly, and label-map folders for semantic segmentation.

The sources are the sample generator's (``synthetic.make_format_sample``): a few small images per format.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from gluon_fashion import labels, synthetic
from gluon_fashion.convert import rotate_swapped_mask
from gluon_fashion.converters.coco_sources import convert_coco_source
from gluon_fashion.data.instance import FashionInstance
from gluon_fashion.data.segmentation import LabelMapFolder, dataset_class_set, folder_class_set
from gluon_fashion.errors import UserError
from gluon_fashion.images import image_size
from gluon_fashion.rle import coco_to_mask
from gluon_fashion.transforms.segmentation import IGNORE_LABEL

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("fashionpedia", "modanet", "deepfashion2")
SAMPLE = dict(num_train=4, num_val=2, min_size=128, max_size=160, progress=False)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Dict[str, Path]:
    """Each format's sample, written once for this file (read-only for the tests)."""
    base = tmp_path_factory.mktemp("formats")
    out = {}
    for fmt in FORMATS + ("labelmap",):
        out[fmt] = base / fmt
        synthetic.make_format_sample(out[fmt], fmt, seed=5, **SAMPLE)
    return out


def convert(samples: Dict[str, Path], fmt: str, data_root: Path, split: str = "train", **kwargs):
    images, annotations = synthetic.format_sample_paths(samples[fmt], fmt, split)
    kwargs.setdefault("annotations", annotations)
    return convert_coco_source(fmt, kwargs.pop("annotations"), images, data_root, split=split, progress=False,
                               **kwargs)


def expected_mask(segmentation, height: int, width: int) -> Optional[np.ndarray]:
    """What pycocotools decodes from a source segmentation (polygons of fewer than 3 points left out); None when
    nothing is left."""
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        encoded = (coco_mask.frPyObjects(segmentation, height, width) if isinstance(counts, list)
                   else {"size": segmentation["size"], "counts": counts.encode("ascii")})
    else:
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return None
        encoded = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    mask = coco_mask.decode(encoded)
    return mask if mask.any() else None


def source_objects(samples: Dict[str, Path], fmt: str, split: str):
    """[(file name, JSON size or None, [(category, segmentation, attribute ids)])] of a sample split, in order."""
    images_dir, annotations = synthetic.format_sample_paths(samples[fmt], fmt, split)
    if fmt == "deepfashion2":
        out = []
        for path in sorted(annotations.glob("*.json")):
            doc = json.loads(path.read_text())
            items = sorted((k for k in doc if k.startswith("item")), key=lambda k: int(k[4:]))
            out.append((path.stem + ".jpg", None, [(doc[k]["category_id"], doc[k]["segmentation"], [])
                                                   for k in items]))
        return out
    doc = json.loads(annotations.read_text())
    by_image: Dict[int, List] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(
            (ann["category_id"], ann["segmentation"], ann.get("attribute_ids", [])))
    return [(image["file_name"], (image["height"], image["width"]), by_image.get(image["id"], []))
            for image in sorted(doc["images"], key=lambda image: image["id"])]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_converts_to_pycocotools_masks_and_reports_every_object_left_out(samples, fmt, tmp_path):
    data_root = tmp_path / "out"
    reasons, degenerate_parts = set(), []
    for split in ("train", "val"):
        result = convert(samples, fmt, data_root, split)
        reasons |= result.skipped_by_reason().keys()
        degenerate_parts += result.degenerate_parts
        written = json.loads((data_root / "annotations" / f"rle_instances_{split}.json").read_text())
        report = json.loads((data_root / "annotations" / f"conversion_report_{split}.json").read_text())
        images_dir = synthetic.format_sample_paths(samples[fmt], fmt, split)[0]
        by_name = {image["file_name"]: image for image in written["images"]}
        anns = {image["id"]: [] for image in written["images"]}
        for ann in written["annotations"]:
            anns[ann["image_id"]].append(ann)
        total = kept = 0
        for file_name, json_size, objects in source_objects(samples, fmt, split):
            height, width = image_size(str(images_dir / file_name))
            assert json_size in (None, (height, width))
            expected = [(cat, attrs, m) for cat, segm, attrs in objects
                        for m in [expected_mask(segm, height, width)] if m is not None]
            total += len(objects)
            kept += len(expected)
            if not expected:
                assert file_name not in by_name
                continue
            image = by_name[file_name]
            assert (image["height"], image["width"]) == (height, width)
            assert (data_root / split / file_name).samefile(images_dir / file_name)  # hard-linked, not copied
            got = anns[image["id"]]
            assert [a["category_id"] for a in got] == [cat for cat, _, _ in expected]
            assert [a["attribute_ids"] for a in got] == [attrs for _, attrs, _ in expected]
            for ann, (_, _, mask) in zip(got, expected):
                np.testing.assert_array_equal(coco_to_mask(ann["segmentation"]), mask)
                assert ann["area"] == int(mask.sum()) and ann["iscrowd"] == 0
                ys, xs = np.nonzero(mask)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        # Nothing dropped silently: every source object is written or listed with its reason.
        assert len(written["annotations"]) == kept == result.annotations
        assert report["skipped_objects"] == total - kept == sum(report["skipped_objects_by_reason"].values())
        assert {entry["reason"] for entry in report["skipped"]} <= {"degenerate_polygon", "empty_mask"}
        names = {c["id"]: c["name"] for c in written["categories"]}
        if fmt == "fashionpedia":
            assert len(names) == 46 and written["attributes"] == labels.ATTRIBUTES_2020  # ids 0-340, with gaps
            assert any(a["attribute_ids"] and max(a["attribute_ids"]) > 92 for a in written["annotations"])
        else:
            source = labels.MODANET_CATEGORIES if fmt == "modanet" else labels.DEEPFASHION2_CATEGORIES
            assert names == {c["id"]: c["name"] for c in source}
    if fmt == "modanet":  # the sample holds each kind of degenerate object, and several-polygon objects
        assert reasons == {"degenerate_polygon", "empty_mask"}
        assert degenerate_parts and all(part["polygon"] >= 1 for part in degenerate_parts)
    resized = json.loads((data_root / "annotations" / "resize_rle_instances_val.json").read_text())
    assert all((i["height"], i["width"]) == (512, 512) and i["orig_height"] == by_name[i["file_name"]]["height"]
               for i in resized["images"])
    assert resized["annotations"] and all(a["segmentation"]["size"] == [512, 512] for a in resized["annotations"])


def test_sizes_that_disagree_with_the_photo_strict_and_overwrite(samples, tmp_path):
    doc = json.loads(synthetic.format_sample_paths(samples["modanet"], "modanet", "train")[1].read_text())
    swapped, wrong = doc["images"][0], doc["images"][1]
    swapped["height"], swapped["width"] = swapped["width"], swapped["height"]
    wrong["height"] += 3
    doc["annotations"] += [dict(doc["annotations"][0], id=9001, image_id=[1]),
                           dict(doc["annotations"][0], id=9002, category_id=99),
                           dict(doc["annotations"][0], id=9003, iscrowd=1)]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    data_root = tmp_path / "out"
    with pytest.raises(UserError, match=r"edited\.json: annotation \d+: (malformed_annotation|unknown_category|crowd_"
                                        r"region|size_mismatch|degenerate_polygon|empty_mask).*--strict: nothing was "
                                        r"written"):
        convert(samples, "modanet", data_root, annotations=edited, strict=True)
    assert not (data_root / "annotations").exists() and not (data_root / "train").exists()

    result = convert(samples, "modanet", data_root, annotations=edited)
    report = json.loads((data_root / "annotations" / "conversion_report_train.json").read_text())
    assert [s["file_name"] for s in report["swapped_size"]] == [swapped["file_name"]]
    assert wrong["file_name"] in report["images_without_valid_annotations"]
    mismatched = [s for s in report["skipped"] if s["reason"] == "size_mismatch"]
    assert len(mismatched) == sum(a["image_id"] == wrong["id"] for a in doc["annotations"][:-3]) > 0
    assert {(s["source"], s["reason"]) for s in report["skipped"]} >= {
        ("annotation 9001", "malformed_annotation"), ("annotation 9002", "unknown_category"),
        ("annotation 9003", "crowd_region")}
    written = json.loads((data_root / "annotations" / "rle_instances_train.json").read_text())
    image = next(i for i in written["images"] if i["file_name"] == swapped["file_name"])
    assert (image["height"], image["width"]) == (swapped["width"], swapped["height"])  # the photo's
    first = next(a for a in doc["annotations"] if a["image_id"] == swapped["id"]
                 and expected_mask(a["segmentation"], swapped["height"], swapped["width"]) is not None)
    got = next(a for a in written["annotations"] if a["image_id"] == image["id"])
    np.testing.assert_array_equal(
        coco_to_mask(got["segmentation"]),
        rotate_swapped_mask(expected_mask(first["segmentation"], swapped["height"], swapped["width"])))
    assert result.swapped and result.images == len(doc["images"]) - 1

    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        convert(samples, "modanet", data_root)
    before = (data_root / "annotations" / "rle_instances_train.json").read_bytes()
    convert(samples, "modanet", data_root, overwrite=True)
    assert (data_root / "annotations" / "rle_instances_train.json").read_bytes() != before
    assert not list((data_root / "annotations").glob(".conversion-*"))


def test_class_maps_rename_merge_and_drop_and_are_checked(samples, tmp_path):
    # The shipped map: ModaNet onto iMaterialist's 46 (boots and footwear both become 'shoe').
    result = convert(samples, "modanet", tmp_path / "imat", class_map="modanet_to_imaterialist.json")
    written = json.loads((tmp_path / "imat" / "annotations" / "rle_instances_train.json").read_text())
    assert written["categories"] == [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]}
                                     for c in labels.CATEGORIES]
    source = {c["id"]: c["name"] for c in labels.MODANET_CATEGORIES}
    shipped = json.loads((ROOT / "datasets" / "class_maps" / "modanet_to_imaterialist.json").read_text())["map"]
    plain = json.loads(convert(samples, "modanet", tmp_path / "plain").outputs[0].read_text())
    assert [labels.CATEGORY_NAMES[a["category_id"]] for a in written["annotations"]] == \
        [shipped[source[a["category_id"]]] for a in plain["annotations"]]
    assert labels.has_imaterialist_classes(written["categories"]) and result.annotations == len(plain["annotations"])
    for name, target in json.loads((ROOT / "datasets" / "class_maps" /
                                    "deepfashion2_to_imaterialist.json").read_text())["map"].items():
        assert target in labels.CATEGORY_NAMES, name

    # Own targets, by name or id; null drops (counted, never silent).
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"map": {"bag": None, "2": "accessory", "sunglasses": "accessory",
                                       **{n: "garment" for i, n in source.items() if i not in (1, 2, 7)}}}))
    result = convert(samples, "modanet", tmp_path / "own", class_map=own)
    written = json.loads((tmp_path / "own" / "annotations" / "rle_instances_train.json").read_text())
    assert written["categories"] == [{"id": 1, "name": "accessory"}, {"id": 2, "name": "garment"}]
    bags = sum(a["category_id"] == 1 for a in plain["annotations"])
    assert bags and result.dropped_by_class_map["bag"] >= bags
    report = json.loads((tmp_path / "own" / "annotations" / "conversion_report_train.json").read_text())
    assert report["dropped_by_class_map"] == result.dropped_by_class_map

    for broken, message in [({"target": "imaterialist", "map": {"bag": "x"}},
                             r"'bag' maps to 'x', which is not a target category"),
                            ({"map": {"bag": None}}, r"source categories not in the map: 'belt'"),
                            ({"map": {"handbag": None}}, r"map key 'handbag' is neither"),
                            ({"mapping": {}}, r"expected a JSON object with a 'map' object")]:
        own.write_text(json.dumps(broken))
        with pytest.raises(UserError, match=r"own\.json: " + message):
            convert(samples, "modanet", tmp_path / "broken", class_map=own)
    assert not (tmp_path / "broken" / "annotations").exists()


def test_format_samples_are_deterministic_and_made_by_the_tool(samples, tmp_path, capsys):
    tool = _load_tool("make_sample_dataset")
    for fmt in ("modanet", "labelmap"):
        argv = ["--out", str(tmp_path / fmt), "--format", fmt, "--seed", "5", "--no-progress"] + [
            f"--{k.replace('_', '-')}={v}" for k, v in SAMPLE.items() if k != "progress"]
        assert tool.main(argv) == 0
        files = sorted(p.relative_to(samples[fmt]) for p in samples[fmt].rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(tmp_path / fmt) for p in (tmp_path / fmt).rglob("*") if p.is_file())
        for name in files:
            assert (samples[fmt] / name).read_bytes() == (tmp_path / fmt / name).read_bytes(), name
    assert "val images" in capsys.readouterr().out


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tools_convert_and_refuse_bad_input_in_one_line(samples, tmp_path, capsys):
    tool = _load_tool("convert_deepfashion2_to_coco")
    images, annos = synthetic.format_sample_paths(samples["deepfashion2"], "deepfashion2", "val")
    argv = ["--annotations", str(annos), "--images", str(images), "--data_root", str(tmp_path / "df2"),
            "--split", "val", "--no_progress", "--class-map", "deepfashion2_to_imaterialist.json"]
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert "DeepFashion2 -> val:" in out and "resize_rle_instances_val.json" in out
    assert tool.main(argv) == 2 and "pass --overwrite" in capsys.readouterr().err
    # DeepFashion2's annotations are a folder; a file is refused, naming the flag.
    assert tool.main(["--annotations", str(next(annos.glob("*.json"))), "--images", str(images),
                      "--data_root", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --annotations ") and err.count("\n") == 1
    tool = _load_tool("convert_fashionpedia_to_coco")
    assert tool.main(["--annotations", str(tmp_path / "nope.json"), "--images", str(images),
                      "--data_root", str(tmp_path / "x")]) == 2
    assert "nope.json: Fashionpedia annotation file not found" in capsys.readouterr().err
    tool = _load_tool("convert_modanet_to_coco")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 0, "height": 5}],
                               "annotations": [], "categories": []}))
    assert tool.main(["--annotations", str(bad), "--images", str(images), "--data_root", str(tmp_path / "x")]) == 2
    assert "bad.json: image 1 (images[0]): 'width' must be a positive integer" in capsys.readouterr().err


# ------------------------------------------------------------------------------- source JSON read directly
def test_instance_dataset_reads_polygon_and_rle_sources_directly(samples, caplog):
    images, annotations = synthetic.format_sample_paths(samples["modanet"], "modanet", "train")
    with caplog.at_level(logging.WARNING):
        dataset = FashionInstance(annotations, images)
    assert dataset.category_ids == tuple(range(1, 14))  # the data's categories, not iMaterialist's 46
    assert dataset.classes == [c["name"] for c in labels.MODANET_CATEGORIES]
    assert "polygon(s) of fewer than 3 points left out" in caplog.text
    doc = json.loads(annotations.read_text())
    sizes = {i["file_name"]: (i["height"], i["width"]) for i in doc["images"]}
    by_name = {name: objs for name, _, objs in source_objects(samples, "modanet", "train")}
    for index in range(len(dataset)):
        name = Path(dataset.image_path(index)).name
        expected = [m for _, segm, _ in by_name[name] for m in [expected_mask(segm, *sizes[name])]
                    if m is not None and m.sum() > 1]
        image, label, segms = dataset[index]
        assert image.shape[:2] == sizes[name] and len(segms) == len(expected) == len(label)
        for segm, mask in zip(segms, expected):
            np.testing.assert_array_equal(coco_to_mask(segm), mask)

    # Fashionpedia: polygons and RLE in one file, some annotations without a bbox; iMaterialist's classes.
    images, annotations = synthetic.format_sample_paths(samples["fashionpedia"], "fashionpedia", "train")
    dataset = FashionInstance(annotations, images)
    doc = json.loads(annotations.read_text())
    assert dataset.category_ids == tuple(range(46))
    assert sum(len(label) for _, label, _ in (dataset[i] for i in range(len(dataset)))) == len(doc["annotations"])


def test_uncompressed_rle_and_polygons_read_directly_by_both_datasets(samples, tmp_path):
    images, annotations = synthetic.format_sample_paths(samples["modanet"], "modanet", "val")
    doc = json.loads(annotations.read_text())
    sizes = {i["id"]: (i["height"], i["width"]) for i in doc["images"]}
    first = doc["annotations"][0]
    mask = expected_mask(first["segmentation"], *sizes[first["image_id"]])
    counts = [len(list(run)) for _, run in __import__("itertools").groupby(np.concatenate([[0], mask.T.ravel()]))]
    counts[0] -= 1  # the leading 0 added above: COCO counts start with a background run, maybe empty
    first["segmentation"] = {"size": list(mask.shape), "counts": counts}
    root = tmp_path / "direct"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "rle_instances_val.json").write_text(json.dumps(doc))
    shutil.copytree(images, root / "val")
    dataset = FashionInstance(root / "annotations" / "rle_instances_val.json", root / "val")
    index = [Path(dataset.image_path(i)).name for i in range(len(dataset))].index(
        next(i["file_name"] for i in doc["images"] if i["id"] == first["image_id"]))
    np.testing.assert_array_equal(coco_to_mask(dataset[index][2][0]), mask)

    # The semantic dataset paints polygon masks as pycocotools decodes them (larger objects first).
    from gluon_fashion.data.segmentation import SemanticSegmentation
    class_set = dataset_class_set("imaterialist", str(root), "all")
    assert class_set.class_names == ["background"] + [c["name"] for c in labels.MODANET_CATEGORIES]
    semantic = SemanticSegmentation(str(root), "val", class_set=class_set)
    for record_index, record in enumerate(semantic.records):
        painted = np.zeros((record.height, record.width), np.int32)
        objects = [(ann["category_id"], expected_mask(ann["segmentation"], record.height, record.width))
                   for ann in doc["annotations"] if ann["image_id"] == record.image_id]
        for category, m in sorted((o for o in objects if o[1] is not None), key=lambda o: -int(o[1].sum())):
            painted[m > 0] = category
        np.testing.assert_array_equal(semantic.decode_label(record_index), painted)


def test_instance_dataset_names_what_it_cannot_read(samples, tmp_path):
    images, annotations = synthetic.format_sample_paths(samples["modanet"], "modanet", "train")
    doc = json.loads(annotations.read_text())
    doc["annotations"][2]["segmentation"] = [[1.0, 2.0, 3.0]]
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=rf"odd\.json: annotation {doc['annotations'][2]['id']} .*polygon 0 of "
                                        r"'segmentation' has an odd number of coordinates"):
        FashionInstance(path, images)
    doc["annotations"][2]["segmentation"] = {"counts": "abc"}
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"odd\.json: annotation \d+ .*RLE 'size' must be"):
        FashionInstance(path, images)


# ------------------------------------------------------------------------------------------ label-map folders
def test_label_map_folder_reads_classes_colours_ignore_and_splits(samples, tmp_path):
    root = samples["labelmap"]
    class_set = dataset_class_set("folder", str(root), "all")
    assert class_set.class_names == list(synthetic.LABELMAP_CLASSES)
    assert class_set.colors == synthetic.LABELMAP_COLORS
    splits = json.loads((root / "splits.json").read_text())
    seen_ignore = False
    for split in ("train", "val"):
        dataset = LabelMapFolder(str(root), split)
        assert [r.path.stem for r in dataset.records] == splits[split]
        for index in range(len(dataset)):
            image, label = dataset[index]
            raw = cv2.imread(str(root / "labels" / f"{splits[split][index]}.png"), cv2.IMREAD_UNCHANGED)
            assert image.shape[:2] == raw.shape and label.dtype == np.int32
            expected = np.where(raw == synthetic.LABELMAP_IGNORE, IGNORE_LABEL, raw)
            np.testing.assert_array_equal(label, expected)
            seen_ignore |= bool((label == IGNORE_LABEL).any())
    assert seen_ignore  # the sample marks glasses and belts "not labelled"

    # --classes picks classes (the others become background), --binary merges them.
    picked = folder_class_set(root, "1,3")
    assert picked.class_names == ["background", "top", "pants"] and picked.colors[2] == synthetic.LABELMAP_COLORS[3]
    dataset = LabelMapFolder(str(root), "val", class_set=picked)
    raw = cv2.imread(str(dataset.records[0].label_path), cv2.IMREAD_UNCHANGED)
    lut = {0: 0, 1: 1, 3: 2, synthetic.LABELMAP_IGNORE: IGNORE_LABEL}
    np.testing.assert_array_equal(dataset.decode_label(0), np.vectorize(lambda v: lut.get(v, 0))(raw))
    assert folder_class_set(root, "all", binary=True).num_classes == 2
    with pytest.raises(UserError, match=r"--classes '12'.*classes 1\.\.9"):
        folder_class_set(root, "12")

    # train/ and val/ subfolders instead of splits.json; without either, a seeded split of images/.
    other = tmp_path / "sub"
    for split in ("train", "val"):
        for kind, suffix in (("images", ".jpg"), ("labels", ".png")):
            (other / split / kind).mkdir(parents=True)
            for stem in splits[split]:
                shutil.copy(root / kind / f"{stem}{suffix}", other / split / kind)
    shutil.copy(root / "classes.json", other)
    assert [r.path.stem for r in LabelMapFolder(str(other), "val").records] == splits["val"]
    plain = tmp_path / "plain"
    shutil.copytree(root / "images", plain / "images")
    shutil.copytree(root / "labels", plain / "labels")
    shutil.copy(root / "classes.json", plain)
    train = {r.path.stem for r in LabelMapFolder(str(plain), "train").records}
    val = {r.path.stem for r in LabelMapFolder(str(plain), "val").records}
    assert train and val and not train & val and train | val == set(splits["train"] + splits["val"])


def test_label_map_folder_names_what_is_wrong(samples, tmp_path):
    root = tmp_path / "lm"
    shutil.copytree(samples["labelmap"], root)
    classes = json.loads((root / "classes.json").read_text())
    for change, message in [({"colors": [[0, 0, 0]]}, r"'colors' must be one \[r, g, b\]"),
                            ({"ignore_value": 3}, r"'ignore_value' must be an integer from 10 to 255"),
                            ({"names": ["background"]}, r"'names' must be a list of at least 2")]:
        (root / "classes.json").write_text(json.dumps(dict(classes, **change)))
        with pytest.raises(UserError, match=r"classes\.json: " + message):
            LabelMapFolder(str(root), "train")
    (root / "classes.json").write_text(json.dumps(classes))
    stem = json.loads((root / "splits.json").read_text())["val"][0]
    label = cv2.imread(str(root / "labels" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 42
    cv2.imwrite(str(root / "labels" / f"{stem}.png"), label)
    with pytest.raises(UserError, match=rf"{stem}\.png: pixel value 42 is neither a class"):
        LabelMapFolder(str(root), "val")[0]
    cv2.imwrite(str(root / "labels" / f"{stem}.png"), label[:-2])
    with pytest.raises(UserError, match=rf"{stem}\.jpg: image is \d+x\d+ but its label map {stem}\.png is"):
        LabelMapFolder(str(root), "val")[0]
    (root / "labels" / f"{stem}.png").unlink()
    with pytest.raises(UserError, match=rf"no label map {stem}\.png for image {stem}\.jpg"):
        LabelMapFolder(str(root), "val")
