"""Paired image/label transforms for semantic segmentation, with labels decoded at the working resolution.

A transform never receives a full-resolution label map. It receives the photo and a ``decode_label(height,
width)`` callable, picks the working size first, and asks for the label map at exactly that size (the dataset
samples it straight from the run-length encoded instances, see ``gluon_fashion.data.segmentation``). Images are
resized with area averaging when shrinking and bilinear interpolation when enlarging; labels with the
centre-aligned nearest-neighbour rule of ``gluon_fashion.rle``.

Padding is always labelled ``IGNORE_LABEL`` (-1) and never counted in the loss or the metrics; it is added
only where the image really is padded, so a square image has no ignored pixels at all.

Randomness comes from the ``numpy.random.Generator`` passed in by the caller (the dataset derives it from
the run seed, the epoch and the image index), so augmentation is reproducible and independent of the number
of data-loader workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import UserError
from ..images import read_rgb

IGNORE_LABEL = -1
#: ImageNet statistics: every GluonCV backbone was pretrained on images normalised with them.
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
#: The mean colour as uint8: padding with it gives zeros after normalisation.
_MEAN_UINT8 = tuple(int(round(255 * m)) for m in MEAN_RGB)

LabelDecoder = Callable[[int, int], np.ndarray]
Sample = Tuple[np.ndarray, np.ndarray]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def normalize_image(image_rgb: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 RGB -> float32 3 x H x W, scaled to [0, 1] and normalised with the ImageNet statistics."""
    image = image_rgb.astype(np.float32) * (1.0 / 255.0)
    image -= np.asarray(MEAN_RGB, dtype=np.float32)
    image /= np.asarray(STD_RGB, dtype=np.float32)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def scaled_size(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """(height, width) with the longer side set to ``long_side`` and the aspect ratio kept (each side >= 1)."""
    if height >= width:
        return int(long_side), max(1, int(width * long_side / height + 0.5))
    return max(1, int(height * long_side / width + 0.5)), int(long_side)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an H x W x C image: area averaging when shrinking (no aliasing), bilinear when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def pad_to(image: np.ndarray, label: np.ndarray, height: int, width: int) -> Sample:
    """Pad image (mean colour) and label (IGNORE_LABEL) at the bottom/right up to at least ``height x width``."""
    pad_h = max(0, height - image.shape[0])
    pad_w = max(0, width - image.shape[1])
    if pad_h == 0 and pad_w == 0:
        return image, label
    image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=_MEAN_UINT8)
    label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_LABEL)
    return image, label


class TrainTransform:
    """GluonCV's training recipe: random long side in ``scale_range * base_size``, pad, random crop, flip, blur.

    ``background`` (optional) replaces background pixels (label 0) after cropping, before the blur.
    """

    def __init__(self, base_size: int, crop_size: int, scale_range: Tuple[float, float] = (0.5, 2.0),
                 flip_prob: float = 0.5, blur_prob: float = 0.5,
                 background: Optional["BackgroundReplacer"] = None):
        if crop_size < 1 or base_size < 1:
            raise UserError(f"--crop-size and --base-size must be positive, got {crop_size} and {base_size}")
        low, high = scale_range
        if not 0 < low <= high:
            raise UserError(f"scale range must satisfy 0 < low <= high, got {scale_range}")
        self.base_size = int(base_size)
        self.crop_size = int(crop_size)
        self.scale_range = (float(low), float(high))
        self.flip_prob = float(flip_prob)
        self.blur_prob = float(blur_prob)
        self.background = background

    def __call__(self, image: np.ndarray, decode_label: LabelDecoder, rng: np.random.Generator) -> Sample:
        """(normalised float32 3 x crop x crop image, int32 crop x crop label)."""
        low = max(1, int(self.base_size * self.scale_range[0]))
        high = max(low, int(self.base_size * self.scale_range[1]))
        height, width = scaled_size(image.shape[0], image.shape[1], int(rng.integers(low, high + 1)))
        image = resize_image(image, height, width)
        label = decode_label(height, width)
        crop = self.crop_size
        image, label = pad_to(image, label, crop, crop)
        top = int(rng.integers(0, image.shape[0] - crop + 1))
        left = int(rng.integers(0, image.shape[1] - crop + 1))
        image = image[top:top + crop, left:left + crop]
        label = label[top:top + crop, left:left + crop]
        if rng.random() < self.flip_prob:
            image = image[:, ::-1]
            label = label[:, ::-1]
        image = np.ascontiguousarray(image)
        if self.background is not None:
            image = self.background(image, label, rng)
        if rng.random() < self.blur_prob:
            sigma = float(rng.random())
            if sigma > 0.05:
                image = cv2.GaussianBlur(image, (0, 0), sigma)
        return normalize_image(image), np.ascontiguousarray(label, dtype=np.int32)


class EvalTransform:
    """Validation during training: long side resized to ``size``, padded to ``size x size`` (padding ignored).

    Every image keeps its whole content and its aspect ratio, and batches have one shape.
    """

    def __init__(self, size: int):
        if size < 1:
            raise UserError(f"evaluation size must be positive, got {size}")
        self.size = int(size)

    def __call__(self, image: np.ndarray, decode_label: LabelDecoder,
                 rng: Optional[np.random.Generator] = None) -> Sample:
        """(normalised float32 3 x size x size image, int32 size x size label)."""
        height, width = scaled_size(image.shape[0], image.shape[1], self.size)
        image = resize_image(image, height, width)
        label = decode_label(height, width)
        image, label = pad_to(image, label, self.size, self.size)
        return normalize_image(image), np.ascontiguousarray(label, dtype=np.int32)


class BackgroundReplacer:
    """With probability ``prob``, paste the labelled pixels onto a new background, then re-encode as JPEG.

    The idea comes from the original project's binary garment model: a model that only ever sees studio
    backgrounds learns the backdrop, not the garment. Backgrounds are random crops of the images in
    ``background_dir`` when given (textures, scenes without people), otherwise synthetic: a near-white or
    grey backdrop, a random solid colour, a colour gradient or smooth colour noise. Only label-0 pixels are
    replaced (padding keeps its mean colour); the JPEG round trip at a random quality hides the paste edges.
    """

    def __init__(self, prob: float, background_dir: Optional[str] = None,
                 jpeg_quality: Tuple[int, int] = (75, 100)):
        if not 0.0 <= prob <= 1.0:
            raise UserError(f"background replacement probability must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self.jpeg_quality = jpeg_quality
        self.paths: Sequence[Path] = list_images(background_dir, "--bg-dir") if background_dir else ()

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``image`` (uint8 H x W x 3) with its label-0 pixels replaced, or unchanged (probability 1 - prob)."""
        if self.prob == 0.0 or rng.random() >= self.prob:
            return image
        background = self._background(image.shape[0], image.shape[1], rng)
        out = image.copy()
        replace = label == 0
        out[replace] = background[replace]
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        ok, encoded = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1].copy() if ok else out

    def _background(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        if self.paths:
            source = read_rgb(self.paths[int(rng.integers(len(self.paths)))])
            # Cover the crop at a random scale, then take a random window of it.
            scale = max(height / source.shape[0], width / source.shape[1]) * float(rng.uniform(1.0, 1.5))
            source = resize_image(source, max(height, int(round(source.shape[0] * scale))),
                                  max(width, int(round(source.shape[1] * scale))))
            top = int(rng.integers(0, source.shape[0] - height + 1))
            left = int(rng.integers(0, source.shape[1] - width + 1))
            return source[top:top + height, left:left + width]
        kind = rng.random()
        if kind < 0.3:  # studio backdrops: grey or near-white, as in product photos
            value = int(rng.integers(220, 250)) if rng.random() < 0.5 else int(rng.integers(250, 256))
            return np.full((height, width, 3), value, dtype=np.uint8)
        if kind < 0.55:
            return np.broadcast_to(rng.integers(0, 256, size=3, dtype=np.uint8), (height, width, 3)).copy()
        if kind < 0.8:
            start, end = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
            ramp = np.linspace(0.0, 1.0, width if rng.random() < 0.5 else height, dtype=np.float32)
            line = start[None, :] * (1 - ramp[:, None]) + end[None, :] * ramp[:, None]
            grid = line[None, :, :] if len(ramp) == width else line[:, None, :]
            return np.broadcast_to(grid, (height, width, 3)).astype(np.uint8)
        cells = int(rng.integers(2, 9))
        noise = rng.integers(0, 256, size=(cells, cells, 3)).astype(np.uint8)
        return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def list_images(folder: str, flag: str = "") -> list:
    """Image files directly inside ``folder`` (sorted); UserError (naming ``flag`` and the folder) if none."""
    where = f"{flag} {folder}" if flag else str(folder)
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"{where}: not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return files


