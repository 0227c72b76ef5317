"""The wheel set that travels to a machine with no package index, as fetch_wheels.py lays it out and
device_steps.py / plan.py read it (standard library only: it also runs on the rented machine).

Layout under ``.gpu_wheels/<variant>/``::

    wheels/                 every wheel, whole (what pip downloaded)
    bundles/b00 ... bNN/    what one device command carries (<= part size each): whole small wheels (hard
                            links into wheels/) or one numbered part of a big wheel, plus manifest.json
    manifest.json           wheels, their sha256, their pieces and the bundle of each piece
    SHA256SUMS              sha256sum-style lines for the wheels and the parts

A big wheel ``W.whl`` is cut into ``W.whl.part00``, ``W.whl.part01``... of ``part_bytes`` each (the last one
shorter); joining them in order gives the wheel back, which its sha256 confirms.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Sequence

MANIFEST = "manifest.json"
MIB = 1 << 20


def sha256_file(path: Path, chunk: int = 4 * MIB) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def split_file(path: Path, part_bytes: int, out_dir: Path) -> List[Dict]:
    """Cut ``path`` into ``out_dir/<name>.partNN`` of ``part_bytes`` each; returns ``[{file, size, sha256}]``."""
    parts = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as source:
        index = 0
        while True:
            block = source.read(part_bytes)
            if not block:
                break
            name = f"{path.name}.part{index:02d}"
            (out_dir / name).write_bytes(block)
            parts.append({"file": name, "size": len(block), "sha256": hashlib.sha256(block).hexdigest()})
            index += 1
    return parts


def join_parts(parts: Sequence[Path], out: Path) -> None:
    """Concatenate ``parts`` in order into ``out`` (written to a temporary name, then renamed)."""
    tmp = out.with_name(out.name + ".joining")
    with open(tmp, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                for block in iter(lambda: source.read(4 * MIB), b""):
                    sink.write(block)
    os.replace(tmp, out)


def load_manifest(path: Path) -> Dict:
    """The manifest at ``path`` (a manifest.json, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise SystemExit(f"error: no {MANIFEST} at {path}: run benchmarks/gpu/fetch_wheels.py first")
    return json.loads(path.read_text())


def pieces(manifest: Dict) -> List[Dict]:
    """Every piece (whole wheel or part) of the manifest, with the wheel it belongs to as ``wheel``."""
    return [dict(piece, wheel=wheel["file"]) for wheel in manifest["wheels"] for piece in wheel["pieces"]]


def bundle_sizes(manifest: Dict) -> Dict[str, int]:
    """``{bundle name: bytes}`` (pieces only; each bundle also carries a copy of the manifest)."""
    sizes: Dict[str, int] = {}
    for piece in pieces(manifest):
        sizes[piece["bundle"]] = sizes.get(piece["bundle"], 0) + piece["size"]
    return dict(sorted(sizes.items()))


def pack_bundles(items: Sequence[Dict], capacity: int) -> Dict[str, List[Dict]]:
    """First-fit decreasing: ``items`` (dicts with ``size``) into bundles ``b00``, ``b01``... of at most
    ``capacity`` bytes. Parts of a big wheel are ``capacity`` long and get a bundle each."""
    bins: List[List[Dict]] = []
    free: List[int] = []
    for item in sorted(items, key=lambda i: (-i["size"], i["file"])):
        for index, room in enumerate(free):
            if item["size"] <= room:
                bins[index].append(item)
                free[index] -= item["size"]
                break
        else:
            bins.append([item])
            free.append(capacity - item["size"])
    return {f"b{index:02d}": content for index, content in enumerate(bins)}
