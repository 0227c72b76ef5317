"""Reading COCO-style JSON files: annotations, label descriptions and detection results.

Every reader of such a file goes through here, so a missing file, invalid JSON or a document without the
keys its caller needs is one :class:`~gluon_fashion.errors.UserError` naming the file and the problem.
Checks that only one caller needs (an annotation's fields, an RLE's size) stay with that caller. Cheap to
import: no MXNet, no pycocotools.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from ..errors import UserError
from ..fileio import PathLike


def converter_hint(data_root: PathLike) -> str:
    """How to create a dataset's missing annotation files (for the ``hint`` of :func:`read_coco_json`)."""
    return f"run tools/convert_imaterialist_to_coco.py --data_root {data_root} first"


def _load(path: Path, what: str, hint: str) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def read_coco_json(path: PathLike, what: str = "annotation file", keys: Sequence[str] = ("images", "annotations"),
                   hint: str = "") -> Dict:
    """The JSON object in ``path``, which must hold a list under each of ``keys``.

    ``what`` names the file in errors ("annotation file", "label descriptions", ...); ``hint`` says how to
    get a missing file. UserError for a missing or unreadable file, invalid JSON, or a missing key.
    """
    path = Path(path)
    document = _load(path, what, hint)
    needed = ", ".join(f"'{key}'" for key in keys)
    if not isinstance(document, dict):
        raise UserError(f"{path}: expected a JSON object with the lists {needed}, got {type(document).__name__}")
    missing = [key for key in keys if not isinstance(document.get(key), list)]
    if missing:
        raise UserError(f"{path}: no '{missing[0]}' list; expected a JSON object with the lists {needed}")
    return document


def read_coco_results(path: PathLike) -> List[Dict]:
    """COCO detection results in ``path``: a JSON list of detections (their fields are the caller's to check)."""
    path = Path(path)
    results = _load(path, "results file", "")
    if not isinstance(results, list):
        raise UserError(f"{path}: results must be a JSON list of detections, got {type(results).__name__}")
    return results
