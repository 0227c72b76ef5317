"""Image files: size from the header alone, and decoding to RGB whatever the JPEG mode."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserError

PathLike = Union[str, Path]


def image_size(path: PathLike) -> Tuple[int, int]:
    """(height, width) of an image, read from its header without decoding the pixels.

    Raises FileNotFoundError if it is missing and UserError if the file is not a readable image.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None
    return int(height), int(width)


def read_rgb(path: PathLike) -> np.ndarray:
    """Decode an image to an H x W x 3 uint8 RGB array (grayscale and CMYK JPEGs included).

    EXIF orientation is ignored on purpose: Kaggle's masks index the stored pixel grid.
    """
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise UserError(f"{path}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
