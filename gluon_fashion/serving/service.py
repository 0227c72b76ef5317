"""The model behind the HTTP server: uploads checked, queued, batched and predicted through ``predict.py``.

One worker thread owns the network (MXNet is not safe to call from several threads at once). Requests wait
in a bounded queue; when it is full :meth:`PredictionService.submit` raises :class:`QueueFull` at once, so
the server answers 503 instead of letting clients pile up. The worker takes the first waiting request and
every other one already queued, up to ``max_batch`` (default: one per device for Mask R-CNN, which predicts
one image per device at a time; one for segmentation), and hands them to :func:`predict.predict_images` in
one call, so several devices work at once on requests that arrive together.

Uploads are checked before they are queued (:func:`check_upload`): every bad input is a :class:`BadInput`
carrying the HTTP status and a message naming the problem.
"""
from __future__ import annotations

import concurrent.futures
import io
import logging
import math
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np

from ..images import jpeg_is_truncated
from ..predict import (DEFAULT_MASK_THRESHOLD, DEFAULT_MAX_DETECTIONS, ImageReader, LoadedModel, predict_images,
                       render_instances)
from ..rle import mask_to_coco

log = logging.getLogger(__name__)

#: Default limits of one upload: 20 MB and 40 megapixels (a 12-megapixel phone photo is 3-6 MB).
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_QUEUE_SIZE = 16
#: The server keeps every detection down to this score, so the page's slider can filter without asking again.
DEFAULT_SERVE_SCORE_THRESHOLD = 0.05
#: Image formats PIL may recognise that the decoder (OpenCV) reads too.
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "PPM": ".ppm"}


class BadInput(Exception):
    """An upload the server refuses: ``status`` (4xx), a short ``code`` and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class QueueFull(Exception):
    """Every queue slot is taken; ``retry_after`` is the estimated wait in whole seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the prediction queue is full; retry in about {retry_after} s")
        self.retry_after = retry_after


class ServiceStopped(Exception):
    """The server is shutting down and takes no more work."""


@dataclass(frozen=True)
class Upload:
    """Checked image bytes: size and format read from the header."""

    data: bytes
    height: int
    width: int
    suffix: str
    name: str = "upload"


def check_upload(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                 name: str = "upload") -> Upload:
    """The upload ``data`` if it is an image the model can take; :class:`BadInput` naming the problem if not.

    Checks, in order: empty (400), more than ``max_bytes`` (413), a JPEG cut before its end-of-image marker
    (400: a cut-off upload decodes without an error but is grey below the cut), not an image (400, from its
    header), more than ``max_pixels`` (413). The pixels are decoded later, by the worker.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput(400, "empty", f"{name}: the upload is empty (zero bytes); send an image file")
    if len(data) > max_bytes:
        raise BadInput(413, "too_many_bytes", f"{name}: {len(data)} bytes is more than the server's limit of "
                                              f"{max_bytes} bytes")
    if jpeg_is_truncated(data):
        raise BadInput(400, "truncated_jpeg", f"{name}: truncated JPEG (it stops before its end-of-image marker); "
                                              "the upload was cut off, send the whole file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt = img.format
    except Image.DecompressionBombError as exc:
        raise BadInput(413, "too_many_pixels", f"{name}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInput(400, "not_an_image", f"{name}: not an image file PIL can identify ({exc})") from None
    if fmt not in _SUFFIX:
        raise BadInput(400, "unsupported_format", f"{name}: {fmt} images are not supported; send one of "
                                                  f"{', '.join(sorted(_SUFFIX))}")
    if width * height > max_pixels:
        raise BadInput(413, "too_many_pixels", f"{name}: {width}x{height} is {width * height} pixels, more than "
                                               f"the server's limit of {max_pixels}")
    return Upload(data, int(height), int(width), _SUFFIX[fmt], name)


@dataclass
class _Job:
    upload: Upload
    want_png: bool
    score_threshold: float
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class Prediction:
    """The answer to one request: JSON-ready ``result``, and the overlay PNG bytes when asked for."""

    result: Dict
    png: Optional[bytes] = None


class PredictionService:
    """A loaded checkpoint behind a bounded queue and one worker thread (see the module docstring)."""

    def __init__(self, model: LoadedModel, queue_size: int = DEFAULT_QUEUE_SIZE, max_batch: Optional[int] = None,
                 score_threshold: float = DEFAULT_SERVE_SCORE_THRESHOLD,
                 mask_threshold: float = DEFAULT_MASK_THRESHOLD, max_detections: int = DEFAULT_MAX_DETECTIONS,
                 alpha: float = 0.5):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.model = model
        self.max_batch = int(max_batch or (len(model.contexts) if model.task == "mask_rcnn" else 1))
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_detections = int(max_detections)
        self.alpha = float(alpha)
        self._queue: "queue.Queue[Optional[_Job]]" = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._seconds_per_image = 1.0  # running estimate for Retry-After
        self.served = 0
        self.batches: List[int] = []  # size of every batch predicted (for tests and the benchmark)
        self._tmp = tempfile.TemporaryDirectory(prefix="gluon-fashion-serve-")
        self._thread = threading.Thread(target=self._work, name="prediction-worker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ API
    @property
    def queue_size(self) -> int:
        """Slots in the queue."""
        return self._queue.maxsize

    @property
    def waiting(self) -> int:
        """Requests queued now (not counting the batch being predicted)."""
        return self._queue.qsize()

    def submit(self, upload: Upload, want_png: bool = False,
               score_threshold: Optional[float] = None) -> concurrent.futures.Future:
        """Queue one checked upload; a Future of its :class:`Prediction`. QueueFull or ServiceStopped at once."""
        if self._stopping.is_set():
            raise ServiceStopped("the server is stopping")
        threshold = self.score_threshold if score_threshold is None else max(float(score_threshold),
                                                                             self.score_threshold)
        job = _Job(upload, want_png, threshold)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            wait = (self._queue.qsize() + self.max_batch) / self.max_batch * self._seconds_per_image
            raise QueueFull(max(1, math.ceil(wait))) from None
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking work, let the batch in hand finish, answer the queued requests ServiceStopped."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and not job.future.done():
                job.future.set_exception(ServiceStopped("the server stopped before predicting this image"))
        try:
            self._queue.put_nowait(None)  # wakes the worker
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._tmp.cleanup()

    def model_info(self) -> Dict:
        """The checkpoint's metadata as ``GET /model`` shows it: task, architecture, classes (with colours)."""
        from ..visualize import category_colors, palette

        model = self.model
        info = {"weights": model.weights, "task": model.task, "architecture": model.meta.get("model"),
                "scale": dict(model.scale), "devices": [str(ctx) for ctx in model.contexts],
                "gives_instances": model.gives_instances, "score_threshold": self.score_threshold,
                "mask_threshold": self.mask_threshold, "max_batch": self.max_batch, "queue_size": self.queue_size}
        names = model.class_names
        colors = category_colors(model.category_ids)
        info["classes"] = [{"id": int(cid), "name": names[cid], "color": [int(c) for c in colors[i]]}
                           for i, cid in enumerate(model.category_ids)]
        if model.task == "segmentation":
            label_colors = palette(model.num_labels)
            info["labels"] = [{"label": k, "name": name, "color": [int(c) for c in label_colors[k]]}
                              for k, name in enumerate(model.label_names)]
            info["test_scales"], info["flip"] = list(model.test_scales), model.flip
        for key in ("epoch", "metric", "metric_name"):
            if key in model.meta:
                info[key] = model.meta[key]
        return info

    # ---------------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while not self._stopping.is_set():
            job = self._queue.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stopping.set()
                    break
                batch.append(more)
            try:
                self._predict_batch(batch)
            except Exception as exc:  # one bad batch must not kill the server: its requests get the error
                log.exception("prediction failed for a batch of %d", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)

    def _predict_batch(self, batch: Sequence[_Job]) -> None:
        started = time.perf_counter()
        paths: List[Path] = []
        for job in batch:
            path = Path(self._tmp.name) / f"upload-{id(job)}{job.upload.suffix}"
            path.write_bytes(job.upload.data)
            paths.append(path)
        by_path = dict(zip(paths, batch))
        reader = ImageReader(paths)
        try:
            # The lowest threshold in the batch; each request keeps its own afterwards.
            lowest = min(job.score_threshold for job in batch)
            predictions = list(predict_images(self.model, reader, lowest, self.mask_threshold, self.max_detections,
                                              progress=False))
            elapsed = time.perf_counter() - started
            for pred in predictions:
                job = by_path[pred.path]
                job.future.set_result(self._answer(job, pred, started, elapsed, len(batch)))
            for path in reader.skipped:
                by_path[path].future.set_exception(BadInput(
                    400, "cannot_decode", f"{by_path[path].upload.name}: the image header is readable but its "
                                          "pixels cannot be decoded (a damaged or unsupported file)"))
        finally:
            for path in paths:
                path.unlink(missing_ok=True)
        self.served += len(batch)
        self.batches.append(len(batch))
        per_image = (time.perf_counter() - started) / len(batch)
        self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * per_image

    def _answer(self, job: _Job, pred, started: float, elapsed: float, batch_size: int) -> Prediction:
        model = self.model
        height, width = pred.image.shape[:2]
        result: Dict = {"image": {"name": job.upload.name, "height": int(height), "width": int(width)},
                        "checkpoint": {"weights": model.weights, "task": model.task,
                                       "architecture": model.meta.get("model")},
                        "score_threshold": job.score_threshold}
        names = model.class_names
        instances = None
        if pred.instances is not None:
            instances = [inst for inst in pred.instances if inst.score >= job.score_threshold]
            result["instances"] = [{"category_id": int(inst.category_id), "name": names[int(inst.category_id)],
                                    "score": round(float(inst.score), 5),
                                    "box": [round(float(v), 2) for v in inst.box], "mask": inst.rle,
                                    **_attribute_fields(inst, model.attribute_names)}
                                   for inst in instances]
        if pred.label_map is not None:
            result["labels"] = [{"label": int(k), "name": model.label_names[int(k)],
                                 "category_id": int(model.category_ids[k - 1]) if model.category_ids else None,
                                 "pixels": int((pred.label_map == k).sum()),
                                 "mask": mask_to_coco(pred.label_map == k)}
                                for k in np.unique(pred.label_map) if 0 < k < model.num_labels]
        png = None
        if job.want_png:
            png = _encode_png(self._overlay(pred, instances))
        done = time.perf_counter()
        result["timing"] = {"queue_ms": round((started - job.queued_at) * 1000, 1),
                            "predict_ms": round(elapsed * 1000, 1), "total_ms": round((done - job.queued_at) * 1000, 1),
                            "batch_size": batch_size}
        return Prediction(result, png)

    def _overlay(self, pred, instances) -> np.ndarray:
        if pred.label_map is not None:
            from ..visualize import overlay_semantic

            return overlay_semantic(pred.image, pred.label_map, self.model.num_labels, self.alpha)
        return render_instances(pred.image, instances or [], self.model.class_names, self.alpha,
                                self.model.attribute_names)


def _attribute_fields(inst, attribute_names: Optional[Mapping[int, str]]) -> Dict:
    """A model with attributes: the instance's ``attribute_ids`` (probability >= 0.5), their names and every
    attribute's probability; nothing for a model without."""
    from ..models.mask_rcnn import predicted_attributes

    probabilities = getattr(inst, "attributes", None)
    if attribute_names is None or probabilities is None:
        return {}
    scores = {str(a): round(float(p), 4) for a, p in probabilities.items()}
    ids = predicted_attributes(scores)  # from the rounded values the answer shows, as predict.py's results
    return {"attribute_ids": ids, "attribute_names": [attribute_names.get(a, str(a)) for a in ids],
            "attribute_scores": scores}


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()
