"""``--class-map FILE``: rename, merge or drop a source dataset's categories while converting.

The file is JSON::

    {"description": "...",
     "target": "imaterialist",            # or a list of {"id": ..., "name": ...}; absent: the mapped names
     "map": {"bag": "bag, wallet",        # source category name (or id, as a string) -> target name
             "3": "shoe",
             "scarf/tie": null}}          # null: drop this category (counted in the report)

Every source category must be named (by name or id): a category left out of the map is an error, so nothing is
dropped without saying so. ``"target": "imaterialist"`` writes the 46 iMaterialist categories with their ids
(``labels.CATEGORIES``), so a model trained on the result has iMaterialist's classes; a list gives its own; with
no ``target`` the distinct target names become categories 1..K in the order they first appear.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..data.coco_json import is_integer, load_json
from ..errors import UserError
from ..fileio import PathLike
from ..labels import CATEGORIES

#: The class maps that ship with the project (``datasets/class_maps/``).
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "datasets" / "class_maps"


@dataclass(frozen=True)
class ClassMap:
    """Source category id -> target category id (None: dropped), and the target category list."""

    target_of: Dict[int, Optional[int]]
    categories: List[Dict]
    path: str

    def dropped(self) -> List[int]:
        """Source category ids the map drops."""
        return [source for source, target in self.target_of.items() if target is None]


def identity_map(categories: Sequence[Dict]) -> ClassMap:
    """No ``--class-map``: every source category kept with its id and name."""
    kept = [{k: c[k] for k in ("id", "name", "supercategory") if k in c} for c in categories]
    return ClassMap({c["id"]: c["id"] for c in categories}, kept, "")


def read_class_map(path: PathLike, source_categories: Sequence[Dict]) -> ClassMap:
    """Read a class-map file against the source's categories (UserError naming the file and the entry)."""
    path = Path(path)
    if not path.is_file() and (SHIPPED_DIR / path.name).is_file() and not path.parent.name:
        path = SHIPPED_DIR / path.name  # a shipped map may be named by its file name alone
    doc = load_json(path, "class map", f"see {SHIPPED_DIR} for examples")
    if not isinstance(doc, dict) or not isinstance(doc.get("map"), dict):
        raise UserError(f"{path}: expected a JSON object with a 'map' object (source category -> target name)")
    target = doc.get("target")
    if target == "imaterialist":
        categories = [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]} for c in CATEGORIES]
    elif isinstance(target, list):
        if not all(isinstance(c, dict) and is_integer(c.get("id")) and isinstance(c.get("name"), str) for c in target):
            raise UserError(f"{path}: 'target' must be \"imaterialist\" or a list of {{\"id\": int, \"name\": str}}")
        categories = [dict(c) for c in target]
    elif target is None:
        names = list(dict.fromkeys(v for v in doc["map"].values() if isinstance(v, str)))
        categories = [{"id": i, "name": name} for i, name in enumerate(names, start=1)]
    else:
        raise UserError(f"{path}: 'target' must be \"imaterialist\", a list of categories or absent, got {target!r:.40}")
    target_ids = {c["name"]: c["id"] for c in categories}
    by_name = {c["name"]: c["id"] for c in source_categories}
    by_id = {str(c["id"]): c["id"] for c in source_categories}
    target_of: Dict[int, Optional[int]] = {}
    for key, value in doc["map"].items():
        source = by_name.get(key, by_id.get(key))
        if source is None:
            raise UserError(f"{path}: map key {key!r} is neither the name nor the id of a source category "
                            f"(source categories: {', '.join(repr(n) for n in by_name)})")
        if value is not None and value not in target_ids:
            raise UserError(f"{path}: {key!r} maps to {value!r}, which is not a target category")
        if source in target_of:
            raise UserError(f"{path}: source category {key!r} is mapped twice (by name and by id)")
        target_of[source] = None if value is None else target_ids[value]
    missing = [c["name"] for c in source_categories if c["id"] not in target_of]
    if missing:
        raise UserError(f"{path}: source categories not in the map: {', '.join(repr(n) for n in missing)} "
                        "(map each to a target name, or to null to drop it)")
    return ClassMap(target_of, categories, str(path))
