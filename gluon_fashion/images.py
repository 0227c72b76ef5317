"""Image files: size from the header alone, and decoding to RGB whatever the JPEG mode (also at a reduced scale)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

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


def read_rgb_at_least(path: PathLike, height: int, width: int, min_height: int, min_width: int,
                      source: str = "the annotations", full: Optional[np.ndarray] = None) -> np.ndarray:
    """RGB pixels of a ``height x width`` image, decoded as small as possible but covering ``min_height x
    min_width``: JPEGs at 1/2, 1/4 or 1/8 scale through libjpeg's DCT scaling (several times faster than a
    full decode of a photo, and no full-size buffer), anything else at full size with :func:`read_rgb`.

    ``full``: the file's full-size decode when the caller already holds it; returned as it is (no second
    decode) where no reduced decode applies. UserError when the pixels do not have the size ``source`` records.
    """
    factor = next((f for f in (8, 4, 2) if -(-height // f) >= min_height and -(-width // f) >= min_width), 1)
    if factor > 1 and _is_jpeg(path):
        flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
        decoded = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
        if decoded is None:
            raise UserError(f"{path}: cannot decode image")
        image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    else:
        factor, image = 1, (read_rgb(path) if full is None else full)
    expected = (-(-height // factor), -(-width // factor))
    if image.shape[:2] != expected:
        shape = (f"{image.shape[0]}x{image.shape[1]}" if factor == 1 else
                 f"about {image.shape[0] * factor}x{image.shape[1] * factor} (decoded at 1/{factor} scale)")
        raise UserError(f"{path}: image is {shape} but {source} says {height}x{width}")
    return image


def _is_jpeg(path: PathLike) -> bool:
    with open(path, "rb") as handle:
        return handle.read(3) == b"\xff\xd8\xff"


def jpeg_is_truncated(data: bytes) -> bool:
    """True for JPEG bytes that stop before the end-of-image marker (a cut-off download or copy).

    libjpeg decodes such a file without an error, filling the missing rows with grey (OpenCV only warns on
    stderr), so a complete decode proves nothing; the marker does. Trailing padding after the marker (zeros,
    or the newline some tools append) is allowed. Not a JPEG: False.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return False
    return not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def jpeg_file_is_truncated(path: PathLike) -> bool:
    """:func:`jpeg_is_truncated` for a file, reading only its first 3 and last 64 bytes."""
    with open(path, "rb") as handle:
        head = handle.read(3)
        handle.seek(0, 2)
        handle.seek(max(3, handle.tell() - 64))
        return jpeg_is_truncated(head + handle.read())
