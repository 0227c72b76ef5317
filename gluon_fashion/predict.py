"""Predictions from a checkpoint file alone: the one code path behind tools/predict.py and tools/write_submission.py.

A checkpoint is ``<x>.params`` with ``<x>.json`` beside it; the JSON's ``task`` picks the network
("mask_rcnn": ``models.mask_rcnn.load_mask_rcnn``, "segmentation": ``models.segmentation.load_segmentation_model``)
and its ``image_scale`` the test-time scale, so predictions see images exactly as validation did.

Every prediction is a list of instances (Kaggle category id, score, box, COCO RLE) on a grid of the caller's
choosing: the image's own grid (overlays), an annotation file's grid (``--annotations``, e.g. the 512 x 512
``resize_rle_instances_val.json``) or a submission format's grid:

* Mask R-CNN: its detections, one image per device at a time (``--gpus 0,1`` predicts two images at once).
  The network sees each image as validation does, and every grid gets its masks pasted straight from the
  mask probabilities (``models.mask_rcnn``'s one rule), so tools/evaluate.py on ``--annotations`` results
  reproduces the validation mAP the trainer logged for the same checkpoint.
* Segmentation (FCN/PSP/DeepLab): the label map, plus one instance per class present in it (score 1.0, the
  network gives no per-instance confidence), so a semantic model can be scored with COCO mAP and write a
  submission too. Label maps for any grid come from the class scores upsampled straight onto that grid
  (``models.segmentation.upsample_argmax``); test-time augmentation (scales, flip) is optional. Binary
  (garment/background) checkpoints have no category to report: they give label maps only.

Unreadable images are skipped with a warning and counted, never fatal. Truncated JPEGs are predicted from the
part before the cut, with a warning, and marked in the outputs and the printed summary.
"""
from __future__ import annotations

import collections.abc
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .engine.checkpoint import TASKS, checkpoint_base, read_checkpoint_meta
from .engine.progress import progress as progress_bar
from .errors import UserError
from .fileio import atomic_write_json
from .images import image_size, jpeg_file_is_truncated, read_rgb
from .labels import CATEGORY_NAMES, ClassSet
from .rle import coco_to_mask, mask_to_coco

PathLike = Union[str, Path]
log = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
IMAGES_NAME = "images.json"
CLASSES_NAME = "classes.json"
DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_MASK_THRESHOLD = 0.5
DEFAULT_MAX_DETECTIONS = 100


# ------------------------------------------------------------------------------------------- checkpoints
def read_meta(weights: PathLike) -> Dict:
    """The description of the checkpoint ``weights`` (``.params``; its ``.json`` must lie beside it).

    UserError when the weights file, its ``.json`` or a known ``task`` in it is missing.
    """
    text = str(weights)
    if Path(text).suffix not in (".params", ".json"):
        raise UserError(f"--weights {text}: expected a checkpoint .params file (with its .json beside it)")
    params = checkpoint_base(text) + ".params"
    if not Path(params).is_file():
        raise UserError(f"--weights {text}: weights file {params} not found")
    meta = read_checkpoint_meta(params)
    if meta.get("task") not in TASKS:
        raise UserError(f"{checkpoint_base(text)}.json: unknown task {meta.get('task')!r}; expected one of "
                        f"{', '.join(TASKS)}")
    return meta


@dataclass
class LoadedModel:
    """A network rebuilt from its checkpoint, with what prediction needs to know about it."""

    weights: str
    task: str
    net: object
    meta: Dict
    contexts: list
    #: Mask R-CNN: {"short", "max_size"}; segmentation: {"base_size", "crop_size"}
    scale: Dict[str, int]
    #: Kaggle category of each network class (Mask R-CNN: class index; segmentation: label k + 1 -> entry k).
    #: Empty for a binary segmentation checkpoint.
    category_ids: Tuple[int, ...]
    #: segmentation only: number of labels (background included) and their names
    num_labels: int = 0
    label_names: List[str] = field(default_factory=list)
    #: segmentation only: test-time augmentation (scales of ``base_size``, mirror images)
    test_scales: Tuple[float, ...] = (1.0,)
    flip: bool = False

    @property
    def class_names(self) -> List[str]:
        """Name of every Kaggle category id (for overlays), the checkpoint's own names where it has them."""
        names = list(CATEGORY_NAMES)
        if self.task == "mask_rcnn":
            for entry in self.meta.get("classes") or []:
                if isinstance(entry, dict) and 0 <= int(entry["id"]) < len(names):
                    names[int(entry["id"])] = str(entry.get("name", names[int(entry["id"])]))
        return names

    @property
    def attribute_names(self) -> Optional[Dict[int, str]]:
        """``{attribute id: name}`` a Mask R-CNN checkpoint with attributes predicts; None without attributes."""
        table = self.meta.get("attributes") if self.task == "mask_rcnn" else None
        return None if not table else {int(a["id"]): str(a.get("name", a["id"])) for a in table}

    @property
    def gives_instances(self) -> bool:
        """False for binary segmentation checkpoints (no category to report)."""
        return bool(self.category_ids)


def _positive(value: Optional[int], flag: str) -> Optional[int]:
    if value is not None and int(value) < 1:
        raise UserError(f"{flag} must be a positive number of pixels, got {value}")
    return None if value is None else int(value)


def _scale_overrides(task: str, short, max_size, base_size, crop_size, scales: Optional[Sequence[float]] = None,
                     flip: bool = False) -> Dict[str, Optional[int]]:
    """The scale flags given, checked against the checkpoint's task (each task has its own)."""
    if task == "mask_rcnn":
        wrong = [("--base-size", base_size), ("--crop-size", crop_size), ("--scales", scales),
                 ("--flip", True if flip else None)]
        own = "--short/--max-size"
    else:
        wrong, own = [("--short", short), ("--max-size", max_size)], "--base-size/--crop-size/--scales/--flip"
    given = [flag for flag, value in wrong if value is not None]
    if given:
        raise UserError(f"{', '.join(given)} do not apply to a {task} checkpoint; its scale flags are {own}")
    if scales is not None:
        from .models.segmentation import check_scales

        check_scales(scales)
    return {"short": _positive(short, "--short"), "max_size": _positive(max_size, "--max-size"),
            "base_size": _positive(base_size, "--base-size"), "crop_size": _positive(crop_size, "--crop-size")}


def load_model(weights: PathLike, contexts: Optional[Sequence] = None, short: Optional[int] = None,
               max_size: Optional[int] = None, base_size: Optional[int] = None, crop_size: Optional[int] = None,
               scales: Optional[Sequence[float]] = None, flip: bool = False,
               test_budgets: Optional[Mapping[str, Optional[int]]] = None) -> LoadedModel:
    """Rebuild the network of a checkpoint from the file alone, on ``contexts`` (default: CPU).

    The test-time scale is the checkpoint's (``image_scale``) unless overridden: ``short``/``max_size`` for
    Mask R-CNN, ``base_size`` (long side)/``crop_size`` (window) for segmentation, which also takes test-time
    augmentation (``scales`` of the base size, default (1.0,); ``flip``). Another task's flags are a UserError.
    ``test_budgets``: Mask R-CNN proposal/detection budgets replacing the checkpoint's
    (``models.mask_rcnn.TEST_BUDGET_KEYS``; None values keep the checkpoint's).
    """
    import mxnet as mx

    meta = read_meta(weights)
    task = meta["task"]
    overrides = _scale_overrides(task, short, max_size, base_size, crop_size, scales, flip)
    contexts = list(contexts) if contexts else [mx.cpu()]
    params = checkpoint_base(str(weights)) + ".params"
    if task != "mask_rcnn" and any(v is not None for v in (test_budgets or {}).values()):
        flags = ", ".join("--" + k.replace("_", "-") for k, v in test_budgets.items() if v is not None)
        raise UserError(f"{flags}: Mask R-CNN test-time budgets, and --weights {weights} is a {task} checkpoint")
    if task == "mask_rcnn":
        from .models.mask_rcnn import image_scale, load_mask_rcnn

        net, meta = load_mask_rcnn(params, ctx=contexts, test_budgets=test_budgets)
        default_short, default_max = image_scale(meta)
        scale = {"short": overrides["short"] or default_short, "max_size": overrides["max_size"] or default_max}
        category_ids = tuple(int(c) for c in net.category_ids)
        return LoadedModel(str(weights), task, net, meta, contexts, scale, category_ids)
    from .models.segmentation import image_scale as segmentation_scale
    from .models.segmentation import load_segmentation_model

    net, meta = load_segmentation_model(params, contexts)
    default_base, default_crop = segmentation_scale(meta)
    scale = {"base_size": overrides["base_size"] or default_base, "crop_size": overrides["crop_size"] or default_crop}
    class_set = ClassSet.from_dict(meta["classes"])
    if len(contexts) > 1:
        log.info("segmentation predicts on %s only (one device per image)", contexts[0])
    return LoadedModel(str(weights), task, net, meta, contexts, scale,
                       () if class_set.binary else tuple(class_set.category_ids),
                       num_labels=class_set.num_classes, label_names=class_set.class_names,
                       test_scales=tuple(float(x) for x in scales) if scales else (1.0,), flip=bool(flip))


# ------------------------------------------------------------------------------------------------ images
def find_images(path: PathLike, flag: str = "--images") -> List[Path]:
    """One image file, or the image files directly inside a folder (sorted); UserError if there are none."""
    from .transforms.segmentation import list_images

    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise UserError(f"{flag} {path}: no such file or folder")
    return list_images(str(path), flag)


class ImageReader:
    """Decodes image files in order; an unreadable one is skipped with a warning and kept in ``skipped``.

    A truncated JPEG (no end-of-image marker: libjpeg decodes the part before the cut and fills the rest with
    grey) is still predicted, since a tool must answer for every image, but with a warning, and kept in
    ``truncated`` so that the outputs can mark it.
    """

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)
        self.skipped: List[Path] = []
        self.truncated: List[Path] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Tuple[Path, Optional[np.ndarray]]]:
        """(path, RGB image), or (path, None) for a file that could not be read."""
        for path in self.paths:
            try:
                image = read_rgb(path)
                truncated = jpeg_file_is_truncated(path)
            except (UserError, OSError) as exc:
                log.warning("skipping %s: %s", path, exc)
                self.skipped.append(path)
                yield path, None
                continue
            if truncated:
                log.warning("%s: truncated JPEG (no end-of-image marker): predicted from the part before the cut "
                            "(the rest decodes as grey) and marked as truncated", path)
                self.truncated.append(path)
            yield path, image


# ------------------------------------------------------------------------------------------- prediction
Grid = Tuple[int, int]


@dataclass
class ImagePrediction:
    """What the model made of one image.

    ``instances`` (None for binary segmentation) and, for segmentation, ``label_map`` lie on the image's own
    grid; :meth:`instances_at` gives the instances on any other grid from the network's outputs directly (the
    one rule of the module docstring, never a resize of the image-grid masks). All are computed on first use.
    """

    path: Path
    image: np.ndarray
    _instances_at: Callable[[Grid], Optional[list]] = field(repr=False)
    _label_map_at: Optional[Callable[[Grid], np.ndarray]] = field(default=None, repr=False)

    def instances_at(self, size: Grid) -> Optional[list]:
        """Instances with boxes and masks on an ``size`` (height, width) grid."""
        return self._instances_at((int(size[0]), int(size[1])))

    @functools.cached_property
    def instances(self) -> Optional[list]:
        """Instances on the image's own grid."""
        return self.instances_at(self.image.shape[:2])

    @functools.cached_property
    def label_map(self) -> Optional[np.ndarray]:
        """Segmentation: int32 labels on the image's own grid (None for Mask R-CNN)."""
        return None if self._label_map_at is None else self._label_map_at(self.image.shape[:2])


def _check_thresholds(score_threshold: float, mask_threshold: float) -> None:
    if not 0.0 <= score_threshold <= 1.0:
        raise UserError(f"--score-threshold must lie in [0, 1], got {score_threshold}")
    if not 0.0 < mask_threshold < 1.0:
        raise UserError(f"--mask-threshold must lie strictly between 0 and 1, got {mask_threshold}")


def _mask_rcnn_batch(model: LoadedModel, pending: Sequence[Tuple[Path, np.ndarray]], score_threshold: float,
                     mask_threshold: float, max_detections: int) -> List[Callable[[Grid], list]]:
    """Per image (up to one per context), its instances on any grid: every device is started before any
    result is read back."""
    import mxnet as mx

    from .models.mask_rcnn import decode_outputs, outputs_to_instances, read_network_input, run_network

    started = []
    for (path, image), ctx in zip(pending, model.contexts):
        data = read_network_input(path, model.scale["short"], model.scale["max_size"], image.shape[:2],
                                  full_image=image, source="its full decode")
        started.append((data.shape[1:], run_network(model.net, mx.nd.array(data[None], ctx=ctx))))

    def on_any_grid(input_size: Grid, outputs) -> Callable[[Grid], list]:
        decoded = decode_outputs(outputs)
        return lambda size: outputs_to_instances(model.net, decoded, input_size, size, model.category_ids,
                                                 score_threshold=score_threshold, max_detections=max_detections,
                                                 mask_threshold=mask_threshold)

    return [on_any_grid(input_size, outputs) for input_size, outputs in started]


def semantic_instances(label_map: np.ndarray, category_ids: Sequence[int]) -> list:
    """One instance (score 1.0) per label present in ``label_map`` (label k + 1 -> ``category_ids[k]``; 0 is
    background), its mask being every pixel of that label, in label order."""
    from .models.mask_rcnn import Instance

    out = []
    for label in np.unique(label_map):
        if label < 1 or label > len(category_ids):
            continue
        mask = label_map == label
        cols = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)
        out.append(Instance(int(category_ids[label - 1]), 1.0, box, mask_to_coco(mask)))
    return out


def predict_images(model: LoadedModel, reader: ImageReader, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                   mask_threshold: float = DEFAULT_MASK_THRESHOLD, max_detections: int = DEFAULT_MAX_DETECTIONS,
                   progress: bool = True, desc: str = "predicting", postprocess=None, tta=None,
                   ensemble: Sequence[LoadedModel] = ()) -> Iterator[ImagePrediction]:
    """Predict every readable image of ``reader``, in order, with a tqdm bar over all of them.

    Mask R-CNN keeps detections scoring ``>= score_threshold`` (at most ``max_detections``), their masks
    binarised at ``mask_threshold``; segmentation ignores both thresholds. Mask R-CNN only:
    ``postprocess`` (``postprocess.PostprocessSettings``) replaces the three, ``tta`` (``postprocess.Tta``)
    adds passes and ``ensemble`` more checkpoints (loaded models of one class set), merged as
    ``gluon_fashion.postprocess`` describes.
    """
    _check_thresholds(score_threshold, mask_threshold)
    if max_detections < 1:
        raise UserError(f"--max-detections must be >= 1, got {max_detections}")
    tuned = model.task == "mask_rcnn" and (postprocess is not None or bool(ensemble) or
                                           (tta is not None and (tta.flip or bool(tta.scales))))
    if tuned:
        from .postprocess import PostprocessSettings, Tta

        settings = postprocess or PostprocessSettings(score_threshold, mask_threshold, max_detections)
        yield from _predict_tuned(model, list(ensemble), reader, settings, tta or Tta(), progress, desc)
        return
    batch_size = len(model.contexts) if model.task == "mask_rcnn" else 1
    bar = progress_bar(total=len(reader), desc=desc, unit="img", disable=None if progress else True)
    try:
        pending: List[Tuple[Path, np.ndarray]] = []
        for path, image in reader:
            if image is not None:
                pending.append((path, image))
            else:
                bar.update(1)
            if len(pending) == batch_size:
                yield from _predict_pending(model, pending, score_threshold, mask_threshold, max_detections, bar)
                pending = []
        if pending:
            yield from _predict_pending(model, pending, score_threshold, mask_threshold, max_detections, bar)
    finally:
        bar.close()


def _predict_tuned(model: LoadedModel, ensemble: List[LoadedModel], reader: ImageReader, settings, tta, progress: bool,
                   desc: str) -> Iterator[ImagePrediction]:
    """predict_images through ``postprocess``: every pass of every checkpoint merged, then ``settings``."""
    from .postprocess import apply_postprocess, iter_detections

    def on_any_grid(det) -> Callable[[Grid], list]:
        return lambda size: apply_postprocess(det, settings, size)

    bar = progress_bar(total=len(reader), desc=desc, unit="img", disable=None if progress else True)
    try:
        for path, image, det in iter_detections([model] + ensemble, reader, tta, bar):
            yield ImagePrediction(path, image, on_any_grid(det))
    finally:
        bar.close()


def _predict_pending(model: LoadedModel, pending: List[Tuple[Path, np.ndarray]], score_threshold: float,
                     mask_threshold: float, max_detections: int, bar) -> Iterator[ImagePrediction]:
    if model.task == "mask_rcnn":
        batch = _mask_rcnn_batch(model, pending, score_threshold, mask_threshold, max_detections)
        for (path, image), instances_at in zip(pending, batch):
            bar.update(1)
            yield ImagePrediction(path, image, instances_at)
        return
    from .models.segmentation import label_scores

    for path, image in pending:
        scores = label_scores(model.net, image, model.contexts[0], scales=model.test_scales, flip=model.flip,
                              base_size=model.scale["base_size"], crop_size=model.scale["crop_size"])
        bar.update(1)
        yield ImagePrediction(path, image, *_segmentation_grids(model, scores))


def _segmentation_grids(model: LoadedModel, scores: np.ndarray):
    """(instances on a grid, label map on a grid) from one image's class scores; the last two label maps kept."""
    from .models.segmentation import upsample_argmax

    labels_at = functools.lru_cache(maxsize=2)(lambda size: upsample_argmax(scores, *size))
    if not model.gives_instances:
        return (lambda size: None), labels_at
    return (lambda size: semantic_instances(labels_at(size), model.category_ids)), labels_at


class _LazyMasks(collections.abc.Sequence):
    """Instance masks decoded one at a time, so drawing 100 detections on a 50-megapixel photo holds one mask."""

    def __init__(self, instances: Sequence):
        self._instances = instances

    def __len__(self) -> int:
        return len(self._instances)

    def __getitem__(self, index):
        return coco_to_mask(self._instances[index].rle)


def render_instances(image: np.ndarray, instances: Sequence, class_names: Sequence[str],
                     alpha: float = 0.5, attribute_names: Optional[Mapping[int, str]] = None,
                     attribute_threshold: float = 0.5) -> np.ndarray:
    """Overlay of instances (masks in class colours, boxes, "name score" labels) on a copy of ``image``; with
    ``attribute_names``, the names of each instance's attributes of probability >= ``attribute_threshold``
    follow its label."""
    from .models.mask_rcnn import predicted_attributes
    from .visualize import overlay_instances

    boxes = np.array([inst.box for inst in instances], dtype=np.float64).reshape(-1, 4)
    extra = None
    if attribute_names is not None:
        extra = [", ".join(attribute_names.get(a, str(a))
                           for a in predicted_attributes(getattr(inst, "attributes", None) or {}, attribute_threshold))
                 for inst in instances]
    return overlay_instances(image, _LazyMasks(instances), boxes, [inst.category_id for inst in instances],
                             [inst.score for inst in instances], class_names=class_names, alpha=alpha,
                             extra_labels=extra)


# ------------------------------------------------------------------- ensembles, TTA and tuned settings
def _weights_list(weights: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """One checkpoint or several (an ensemble), as a list of paths."""
    if isinstance(weights, (str, Path)):
        return [str(weights)]
    listed = [str(w) for w in weights]
    if not listed:
        raise UserError("--weights: give at least one checkpoint")
    return listed


@dataclass
class _Inference:
    """What the tools predict with: the first checkpoint, the rest of the ensemble and the tuned file."""

    model: LoadedModel
    ensemble: List[LoadedModel]
    tta: object  # postprocess.Tta
    postprocess: object = None  # postprocess.PostprocessFile

    @property
    def settings(self):
        return None if self.postprocess is None else self.postprocess.settings


def _check_inference(weights: List[str], postprocess: Optional[PathLike], tta) -> Tuple[Dict, object, object]:
    """(first checkpoint's meta, Tta, PostprocessFile or None), refusing what cannot be combined, before any
    network is built."""
    from .postprocess import Tta, check_ensemble, read_postprocess, warn_if_tuned_elsewhere

    tta = tta or Tta()
    metas = [(w, read_meta(w)) for w in weights]
    check_ensemble(metas, tta)
    record = None
    if postprocess is not None:
        if metas[0][1]["task"] != "mask_rcnn":
            raise UserError(f"--postprocess {postprocess}: tuned settings are for Mask R-CNN checkpoints, and "
                            f"--weights {weights[0]} is a {metas[0][1]['task']} one")
        record = read_postprocess(postprocess)
        warn_if_tuned_elsewhere(record, weights, tta)
    return metas[0][1], tta, record


def _load_inference(weights: List[str], contexts, tta, record, test_budgets=None, **scale) -> _Inference:
    model = load_model(weights[0], contexts, test_budgets=test_budgets, **scale)
    ensemble = [load_model(w, contexts, short=scale.get("short"), max_size=scale.get("max_size"),
                           test_budgets=test_budgets) for w in weights[1:]]
    return _Inference(model, ensemble, tta, record)


# ------------------------------------------------------------------------------------- tools/predict.py
@dataclass
class _GroundTruthImages:
    """Image records of a COCO file, by file name, and its category ids."""

    by_name: Dict[str, Dict]
    category_ids: set
    path: str


def _read_ground_truth(annotations: PathLike) -> _GroundTruthImages:
    from .evaluation.coco import load_coco_gt

    coco = load_coco_gt(annotations)
    by_name: Dict[str, Dict] = {}
    for record in coco.dataset["images"]:
        name = Path(str(record.get("file_name", ""))).name
        if name in by_name:
            raise UserError(f"--annotations {annotations}: file name {name!r} appears for two images "
                            f"(ids {by_name[name]['id']} and {record['id']})")
        by_name[name] = record
    return _GroundTruthImages(by_name, set(coco.getCatIds()), str(annotations))


def _expected_size(record: Mapping) -> Tuple[int, int]:
    """Size of the photo a GT record describes: the original size for the 512 x 512 resize file."""
    return (int(record.get("orig_height") or record["height"]), int(record.get("orig_width") or record["width"]))


def _check_image_sizes(paths: Sequence[Path], gt: _GroundTruthImages) -> None:
    """Refuse, before predicting anything, images whose size is not the one the ground truth describes."""
    for path in paths:
        record = gt.by_name.get(path.name)
        if record is None:
            continue
        try:
            size = image_size(path)
        except (UserError, OSError):
            continue  # reported (and skipped) when the image is read
        if size != _expected_size(record):
            raise UserError(f"{path} is {size[0]}x{size[1]} but --annotations {gt.path} describes image "
                            f"{record['id']} ({record['file_name']}) as {_expected_size(record)[0]}x"
                            f"{_expected_size(record)[1]}: are these the images of that file?")


@dataclass
class PredictSummary:
    """What :func:`predict_to_folder` wrote."""

    output: str
    task: str
    images: int = 0
    predicted: int = 0
    skipped: List[str] = field(default_factory=list)
    #: predicted, but from a truncated JPEG (marked in images.json and results.json)
    truncated: List[str] = field(default_factory=list)
    detections: int = 0
    not_in_annotations: int = 0
    dropped_categories: int = 0
    files: List[str] = field(default_factory=list)
    results: Optional[str] = None

    def __str__(self) -> str:
        text = f"{self.output}: {self.predicted} of {self.images} images predicted ({self.task})"
        if self.results:
            text += f", {self.detections} instances in {self.results}"
        if self.skipped:
            text += f"; {len(self.skipped)} unreadable image(s) skipped"
        if self.truncated:
            text += f"; {_truncated_note(self.truncated)}"
        if self.not_in_annotations:
            text += f"; {self.not_in_annotations} image(s) not in --annotations left out of the results"
        if self.dropped_categories:
            text += f"; {self.dropped_categories} instance(s) of categories --annotations lacks left out"
        return text


def _truncated_note(paths: Sequence[PathLike]) -> str:
    """The summary's words for images predicted from truncated JPEGs, naming the first few."""
    names = ", ".join(Path(path).name for path in paths[:5]) + (", ..." if len(paths) > 5 else "")
    return f"{len(paths)} truncated JPEG(s) predicted from the part before the cut: {names}"


def _output_files(task: str, paths: Sequence[Path], output: Path, with_results: bool) -> List[Path]:
    per_image = ("_labels.png", "_overlay.png") if task == "segmentation" else ("_overlay.png",)
    files = [output / f"{path.stem}{suffix}" for path in paths for suffix in per_image]
    if task == "segmentation":
        files.append(output / CLASSES_NAME)
    if with_results:
        files += [output / RESULTS_NAME, output / IMAGES_NAME]
    return files


def _save_pictures(pred: ImagePrediction, model: LoadedModel, output: Path, alpha: float,
                   draw_threshold: Optional[float] = None) -> List[str]:
    """``<stem>_overlay.png`` (and for segmentation ``<stem>_labels.png``) of one prediction; the paths written.
    Instances scoring below ``draw_threshold`` are left out of the picture (not of the results)."""
    from .visualize import colorize_labels, overlay_semantic, save_image

    written = []
    if pred.label_map is not None:
        labels_png = output / f"{pred.path.stem}_labels.png"
        colors = (model.meta.get("classes") or {}).get("colors")  # a label-map folder's own (labels.ClassSet)
        save_image(labels_png, colorize_labels(pred.label_map, model.num_labels, colors))
        written.append(str(labels_png))
        overlay = overlay_semantic(pred.image, pred.label_map, model.num_labels, alpha, colors)
    else:
        drawn = [inst for inst in pred.instances if draw_threshold is None or inst.score >= draw_threshold]
        overlay = render_instances(pred.image, drawn, model.class_names, alpha, model.attribute_names)
    overlay_png = output / f"{pred.path.stem}_overlay.png"
    save_image(overlay_png, overlay)
    return written + [str(overlay_png)]


def predict_to_folder(weights: PathLike, images: PathLike, output: PathLike, contexts: Optional[Sequence] = None,
                      score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                      mask_threshold: float = DEFAULT_MASK_THRESHOLD, max_detections: int = DEFAULT_MAX_DETECTIONS,
                      annotations: Optional[PathLike] = None, short: Optional[int] = None,
                      max_size: Optional[int] = None, base_size: Optional[int] = None,
                      crop_size: Optional[int] = None, scales: Optional[Sequence[float]] = None, flip: bool = False,
                      alpha: float = 0.5, overwrite: bool = False, progress: bool = True,
                      postprocess: Optional[PathLike] = None, tta=None,
                      test_budgets: Optional[Mapping[str, Optional[int]]] = None,
                      draw_threshold: Optional[float] = None) -> PredictSummary:
    """What tools/predict.py (and tools/eval_segmentation.py --images) does: predict ``images`` (a file or
    folder) with a checkpoint (or, Mask R-CNN, several: an ensemble) and write to ``output``.

    Per image ``<stem>_overlay.png`` (and for segmentation ``<stem>_labels.png``, colour-coded labels, with
    ``classes.json`` as legend). When the model gives instances: ``results.json`` (COCO results, masks as
    compressed RLE) and ``images.json`` (``{"images": [{id, file_name, height, width, path}], ...}``, the
    ids and mask grids of ``results.json``). Image ids are 1.. in file-name order, or with ``annotations``
    the ids of that COCO file, boxes and masks made straight on its image grids (the 512 x 512 resize file
    included), so tools/evaluate.py takes the results as they are. Images predicted from a truncated JPEG are
    marked: ``"truncated": true`` in their ``images.json`` record (and the file's ``truncated`` list),
    ``"truncated_image": true`` on their detections in ``results.json``. ``scales``/``flip``: segmentation
    test-time augmentation. Mask R-CNN: ``postprocess`` (a file of tools/tune_postprocess.py) replaces the
    three thresholds, ``tta`` (``postprocess.Tta``) adds passes, ``test_budgets`` replace the checkpoints'
    (:func:`load_model`). ``draw_threshold``: the overlays draw only the instances scoring at least this (None: all
    kept). Existing outputs are refused unless ``overwrite``.
    """
    output = Path(output)
    weights_list = _weights_list(weights)
    paths = find_images(images)
    stems: Dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise UserError(f"--images: {stems[path.stem].name} and {path.name} would write the same outputs "
                            f"({path.stem}_*.png); rename one")
        stems[path.stem] = path
    meta, tta, tuned_file = _check_inference(weights_list, postprocess, tta)
    task = meta["task"]
    _scale_overrides(task, short, max_size, base_size, crop_size, scales, flip)
    _check_thresholds(score_threshold, mask_threshold)
    if draw_threshold is not None and not 0.0 <= draw_threshold <= 1.0:
        raise UserError(f"--draw-threshold must lie in [0, 1], got {draw_threshold}")
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: exists and is not a folder")
    binary = task == "segmentation" and bool((meta.get("classes") or {}).get("binary"))
    targets = _output_files(task, paths, output, with_results=not binary)
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise UserError(f"--output {output}: {len(existing)} output file(s) already exist, e.g. {existing[0]}; "
                        "pass --overwrite to replace them")
    gt = _read_ground_truth(annotations) if annotations else None
    if gt is not None:
        _check_image_sizes(paths, gt)
    inference = _load_inference(weights_list, contexts, tta, tuned_file, test_budgets, short=short, max_size=max_size,
                                base_size=base_size, crop_size=crop_size, scales=scales, flip=flip)
    model = inference.model
    output.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(str(output), task, images=len(paths))
    ids = {path: index + 1 for index, path in enumerate(paths)}
    results: List[Dict] = []
    image_records: List[Dict] = []
    reader = ImageReader(paths)
    from .models.mask_rcnn import to_coco_results

    for pred in predict_images(model, reader, score_threshold, mask_threshold, max_detections, progress=progress,
                               postprocess=inference.settings, tta=inference.tta, ensemble=inference.ensemble):
        summary.predicted += 1
        summary.files += _save_pictures(pred, model, output, alpha, draw_threshold)
        if not model.gives_instances:
            continue
        image_id, grid = ids[pred.path], pred.image.shape[:2]
        if gt is not None:
            record = gt.by_name.get(pred.path.name)
            if record is None:
                summary.not_in_annotations += 1
                continue
            image_id, grid = record["id"], (int(record["height"]), int(record["width"]))
        instances = pred.instances_at(grid)
        if gt is not None:
            kept = [inst for inst in instances if inst.category_id in gt.category_ids]
            summary.dropped_categories += len(instances) - len(kept)
            instances = kept
        record = {"id": image_id, "file_name": pred.path.name, "height": int(grid[0]), "width": int(grid[1]),
                  "path": str(pred.path)}
        detections = to_coco_results(image_id, instances)
        if model.attribute_names is not None:  # the names beside the ids, for a reader of the file
            detections = [dict(det, attribute_names=[model.attribute_names.get(a, str(a))
                                                     for a in det.get("attribute_ids", [])]) for det in detections]
        if pred.path in reader.truncated:
            # Marked where a reader of either file sees it; COCO tools ignore the extra key.
            record["truncated"] = True
            detections = [dict(det, truncated_image=True) for det in detections]
        results += detections
        image_records.append(record)
    summary.skipped = [str(p) for p in reader.skipped]
    summary.truncated = [str(p) for p in reader.truncated]
    if summary.predicted == 0:
        raise UserError(f"--images {images}: none of the {len(paths)} image(s) could be read")
    if summary.not_in_annotations:
        log.warning("%d of the %d predicted image(s) are not in --annotations %s (matched by file name): left out "
                    "of %s", summary.not_in_annotations, summary.predicted, gt.path, RESULTS_NAME)
    if summary.dropped_categories:
        log.warning("%d instance(s) of categories that --annotations %s does not list were left out of %s",
                    summary.dropped_categories, gt.path, RESULTS_NAME)
    if task == "segmentation":
        atomic_write_json(output / CLASSES_NAME, {str(i): n for i, n in enumerate(model.label_names)}, indent=2)
        summary.files.append(str(output / CLASSES_NAME))
    if not binary:
        summary.detections = len(results)
        summary.results = str(output / RESULTS_NAME)
        atomic_write_json(output / RESULTS_NAME, results)
        settings = {"weights": weights_list[0] if len(weights_list) == 1 else weights_list, "task": task,
                    "scale": model.scale, "score_threshold": score_threshold, "mask_threshold": mask_threshold}
        if task == "mask_rcnn":
            settings.update(tta=inference.tta.as_dict(), postprocess=None if tuned_file is None else {
                "file": str(postprocess), "settings": tuned_file.settings.as_dict()})
        if task == "segmentation":
            settings.update(scales=list(model.test_scales), flip=model.flip)
        atomic_write_json(output / IMAGES_NAME, dict(settings, annotations=None if gt is None else gt.path,
                                                     images=image_records, skipped=summary.skipped,
                                                     truncated=summary.truncated), indent=2)
        summary.files += [summary.results, str(output / IMAGES_NAME)]
    else:
        log.info("binary segmentation checkpoint: no category per pixel, so no %s", RESULTS_NAME)
    return summary


# ----------------------------------------------------------------------------- tools/write_submission.py
def _test_image_paths(test_root: Path, image_ids: Iterable[str]) -> Tuple[Dict[str, Path], List[str]]:
    """ImageId -> ``<test_root>/<ImageId without extension>.jpg`` for those present, and the missing ids."""
    from .submission import image_key

    found, missing = {}, []
    for image_id in image_ids:
        path = test_root / f"{image_key(image_id)}.jpg"
        if path.is_file():
            found[image_id] = path
        else:
            missing.append(image_id)
    return found, missing


@dataclass
class SubmissionResult:
    """What :func:`write_submission_from_checkpoint` wrote, and what the checker said about it."""

    summary: object  # submission.SubmissionSummary
    missing: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    #: rows predicted from truncated JPEGs
    truncated: List[str] = field(default_factory=list)
    violations: list = field(default_factory=list)

    def __str__(self) -> str:
        text = str(self.summary)
        if self.missing:
            text += f"; {len(self.missing)} ImageId(s) without an image file got '1 1' rows"
        if self.skipped:
            text += f"; {len(self.skipped)} unreadable image(s) got '1 1' rows"
        if self.truncated:
            text += f"; {_truncated_note(self.truncated)}"
        return text


def write_submission_from_checkpoint(weights: PathLike, test_root: PathLike, sample_csv: PathLike,
                                     output: PathLike, contexts: Optional[Sequence] = None, fmt: str = "2019",
                                     score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                                     mask_threshold: float = DEFAULT_MASK_THRESHOLD,
                                     max_detections: int = DEFAULT_MAX_DETECTIONS, allow_missing: bool = False,
                                     overwrite: bool = False, progress: bool = True,
                                     postprocess: Optional[PathLike] = None, tta=None,
                                     test_budgets: Optional[Mapping[str, Optional[int]]] = None,
                                     attribute_threshold: Optional[float] = None) -> SubmissionResult:
    """What tools/write_submission.py does: predict every sample ImageId's image in ``test_root`` at the
    checkpoint's validation scale and write a Kaggle CSV with :func:`submission.write_submission`.

    Masks are made straight on the format's grid (512 x 512 for 2019) by the rule validation uses (module
    docstring), overlaps are resolved by score, and every sample ImageId gets a row (``1 1`` where nothing
    was detected or the image was unreadable; a truncated JPEG is predicted from the part before the cut,
    with a warning, and listed in the result's ``truncated``). Sample ImageIds without an image file are a UserError
    naming them, unless ``allow_missing`` (then ``1 1`` rows, with a warning). The written file is checked
    again with :func:`submission.check_submission`; violations (none expected) are returned.
    Segmentation checkpoints give one instance per class present (score 1.0); binary ones are refused.
    Mask R-CNN: ``weights`` may list several checkpoints (an ensemble of one class set), ``tta``
    (``postprocess.Tta``) adds passes, ``postprocess`` (tools/tune_postprocess.py's file) replaces the
    three thresholds (``gluon_fashion.postprocess``); ``test_budgets`` replace the checkpoints' (:func:`load_model`).
    A checkpoint with attributes fills the 2020 format's AttributesIds (and, 2019, nothing: not scored) with the
    attributes of probability >= ``attribute_threshold`` (None: the one tuned in ``postprocess``, else 0.5).
    """
    from .evaluation.attributes import check_attribute_threshold
    from .models.mask_rcnn import ATTRIBUTE_THRESHOLD, predicted_attributes
    from .submission import FORMATS, check_submission, read_sample_ids, submission_size, write_submission

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    _check_thresholds(score_threshold, mask_threshold)
    if attribute_threshold is not None:
        check_attribute_threshold(attribute_threshold)
    output, test_root = Path(output), Path(test_root)
    if output.exists() and not overwrite:
        raise UserError(f"--output {output} exists; pass --overwrite to replace it")
    weights_list = _weights_list(weights)
    meta, tta, record = _check_inference(weights_list, postprocess, tta)
    if attribute_threshold is None:
        tuned_threshold = None if record is None else record.settings.attribute_threshold
        attribute_threshold = ATTRIBUTE_THRESHOLD if tuned_threshold is None else tuned_threshold
        if tuned_threshold is not None and meta.get("attributes"):
            log.info("attribute threshold %.2f, tuned in %s", attribute_threshold, postprocess)
    if meta["task"] == "segmentation" and (meta.get("classes") or {}).get("binary"):
        raise UserError(f"--weights {weights}: a binary (garment/background) segmentation checkpoint predicts no "
                        "category, so it cannot write a submission")
    if not test_root.is_dir():
        raise UserError(f"--test-root {test_root}: not a folder")
    sample = read_sample_ids(sample_csv)
    found, missing = _test_image_paths(test_root, sample)
    if missing:
        listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        if not allow_missing:
            raise UserError(f"--test-root {test_root}: {len(missing)} of the {len(sample)} ImageIds of "
                            f"--sample-csv {sample_csv} have no image file ({listed}); pass --allow-missing to "
                            "write '1 1' rows for them")
        log.warning("%d of the %d sample ImageIds have no image in %s (%s): writing '1 1' rows for them",
                    len(missing), len(sample), test_root, listed)
    inference = _load_inference(weights_list, contexts, tta, record, test_budgets)
    model = inference.model
    log.info("%s checkpoint %s at %s", model.task, ", ".join(weights_list),
             ", ".join(f"{k} {v}" for k, v in model.scale.items()))
    reader = ImageReader(list(found.values()))
    image_id_of = {path: image_id for image_id, path in found.items()}
    sizes: Dict[str, Tuple[int, int]] = {}

    def predictions():
        from .submission import Instance

        # write_submission shows the progress bar; this generator feeds it one image at a time.
        for pred in predict_images(model, reader, score_threshold, mask_threshold, max_detections, progress=False,
                                   postprocess=inference.settings, tta=inference.tta, ensemble=inference.ensemble):
            size = pred.image.shape[:2]
            sizes[image_id_of[pred.path]] = size
            yield image_id_of[pred.path], [
                Instance(inst.category_id, inst.score, inst.rle,
                         tuple(predicted_attributes(getattr(inst, "attributes", None) or {}, attribute_threshold)))
                for inst in pred.instances_at(submission_size(fmt, *size))]

    # Tuned settings (per-category thresholds included) were applied to the instances already.
    summary = write_submission(predictions(), sample_csv, output, fmt=fmt,
                               score_threshold=score_threshold if record is None else 0.0,
                               mask_threshold=mask_threshold, overwrite=overwrite, progress=progress)
    if reader.skipped:
        log.warning("%d unreadable test image(s) got '1 1' rows: %s", len(reader.skipped),
                    ", ".join(p.name for p in reader.skipped[:5]))
    violations = check_submission(output, sample_csv=sample_csv, fmt=fmt, image_sizes=sizes)
    return SubmissionResult(summary, missing, [str(p) for p in reader.skipped], [str(p) for p in reader.truncated],
                            violations)


__all__ = ["ImagePrediction", "ImageReader", "LoadedModel", "PredictSummary", "SubmissionResult", "find_images",
           "load_model", "predict_images", "predict_to_folder", "read_meta", "render_instances",
           "semantic_instances", "write_submission_from_checkpoint"]
