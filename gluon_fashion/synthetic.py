"""The bundled sample dataset: synthetic clothed figures in the exact Kaggle iMaterialist (Fashion) layout.

Every category has a characteristic shape (pants = two legs, skirt = trapezoid below the waist, coat = long
with sleeves, ...) and a characteristic colour family and texture (hue band with jitter, stripes, knit, dots),
so a model trained briefly from random initialisation can learn it on a CPU.

Mask semantics follow the real annotations:
  * a garment's mask holds only its *visible* pixels: a top under an open jacket is just the strip the jacket
    leaves open, a figure in front hides the figure behind it;
  * garment parts (sleeve, neckline) lie inside their garment's visible mask, overlapping it, as in the real
    data where a sleeve is also part of its shirt.

Attributes name what is drawn (sleeve length, hem length, pattern, opening, a few nicknames), with the
2020 competition's names (Fashionpedia's taxonomy): an instance carries those names, and each format writes
the ids its own attribute list has for them (the 2019 list has only the nicknames).

Output is a pure function of the seed: every image draws from its own ``numpy`` Generator seeded by
(seed, split, index), so the same seed writes byte-identical files.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from .errors import UserError
from .fileio import PathLike, atomic_open, atomic_write_bytes, atomic_write_json
from .labels import (ATTRIBUTES, ATTRIBUTES_2020, CATEGORY_NAMES, DEEPFASHION2_CATEGORIES, MAIN_APPAREL_IDS,
                     MODANET_CATEGORIES, class_id_string, label_descriptions, short_name)
from .rle import mask_to_coco, mask_to_runs, runs_to_kaggle

SHIRT, TOP, SWEATER, CARDIGAN, JACKET, VEST, PANTS, SHORTS, SKIRT, COAT, DRESS, JUMPSUIT, CAPE = range(13)
GLASSES, HAT, BELT, SHOE, BAG, SLEEVE, NECKLINE = 13, 14, 19, 23, 24, 31, 33

INNER_TOPS = (SHIRT, TOP, SWEATER)
OUTERWEAR = (CARDIGAN, JACKET, VEST, COAT, CAPE)
BOTTOMS = (PANTS, SHORTS, SKIRT)

#: Changes whenever a seed's images or annotations change, so caches of a sample (benchmarks/_work) can tell a
#: stale one. Revision 2 (this one) names the attributes of what revision 1 draws, with the same images and
#: masks; revision 1 drew random nicknames no picture showed. (A redrawing that changed the category cues was
#: tried and taken back: see BENCHMARKS.md.)
REVISION = 2
#: Marker file that says a folder was written by this generator (so ``overwrite`` may replace it).
MARKER_NAME = ".gluon_fashion_sample.json"
FORMATS = ("2019", "2020")
DEFAULT_NUM_TRAIN = 160
DEFAULT_NUM_TEST = 20
DEFAULT_MIN_SIZE = 200
DEFAULT_MAX_SIZE = 600
GRAYSCALE_FRACTION = 0.08
JPEG_QUALITY = 90
# Instances smaller than this (after occlusion and cropping) are dropped, as an annotator would skip them.
MIN_AREA_MAIN = 120
MIN_AREA_OTHER = 30


@dataclass(frozen=True)
class _Look:
    """Appearance family of a category: HSV centre (hue in degrees, sat/val in 0..1) and a texture."""
    hue: float
    sat: float
    val: float
    texture: str


# Hues are spread round the colour wheel; neighbours in hue differ in value or texture, so grayscale
# images still separate most classes by texture and shape.
_LOOKS: Dict[int, _Look] = {
    SHIRT: _Look(205, 0.30, 0.93, "pinstripes"),
    TOP: _Look(0, 0.80, 0.85, "solid"),
    SWEATER: _Look(125, 0.55, 0.60, "knit"),
    CARDIGAN: _Look(280, 0.45, 0.65, "rib"),
    JACKET: _Look(22, 0.70, 0.35, "solid"),
    VEST: _Look(52, 0.85, 0.92, "check"),
    PANTS: _Look(222, 0.65, 0.48, "denim"),
    SHORTS: _Look(88, 0.60, 0.78, "solid"),
    SKIRT: _Look(322, 0.55, 0.88, "pleats"),
    COAT: _Look(36, 0.50, 0.72, "tweed"),
    DRESS: _Look(175, 0.65, 0.75, "dots"),
    JUMPSUIT: _Look(252, 0.50, 0.70, "solid"),
    CAPE: _Look(345, 0.75, 0.38, "solid"),
}

# Revision 1 drew random nicknames from these ids here; the draws are still made (and thrown away) so that
# every later draw, and so every image, stays as it was (see _revision1_nickname_draw).
_REVISION1_NICKNAMES: Dict[int, Tuple[int, ...]] = {
    SHIRT: (1, 3),              # polo, henley
    SWEATER: (16,),             # hoodie
    JACKET: (17, 20, 22, 29),   # blazer, biker, bomber, track
    PANTS: (36, 37, 38, 40),    # jeans, sweatpants, leggings, cargo
    SHORTS: (50, 52, 53),       # short, bermuda, cargo
    SKIRT: (64, 65, 68, 74),    # wrap, skater, sheath, accordion
    COAT: (81, 82, 91),         # trench, pea, duffle
}
_TOP_CLASSIC, _TOP_CROP, _TOP_TANK = 0, 8, 11

# The pattern each category's texture shows, by its 2020 attribute name.
_PATTERN_OF_TEXTURE = {"pinstripes": "stripe", "check": "check", "dots": "dot"}
_PLAIN = "plain (pattern)"
_ATTRIBUTE_ID_2019 = {a["name"]: a["id"] for a in ATTRIBUTES}
_ATTRIBUTE_ID_2020 = {a["name"]: a["id"] for a in ATTRIBUTES_2020}

_SKIN_TONES = ((241, 204, 176), (226, 176, 140), (198, 137, 100), (146, 94, 62), (96, 62, 42))
_HAIR_COLOURS = ((28, 22, 18), (74, 48, 30), (150, 110, 62), (205, 172, 112))
_SHOE_COLOURS = ((28, 26, 26), (70, 42, 26), (236, 234, 228))
_BAG_COLOURS = ((190, 140, 90), (30, 28, 30), (170, 30, 40), (232, 226, 214))
_HAT_COLOURS = ((25, 25, 28), (214, 190, 130), (35, 45, 90))
_BELT_COLOURS = ((25, 22, 20), (92, 56, 30))
_GOLD = (212, 175, 70)


@dataclass(frozen=True)
class Instance:
    """One annotated object: category, the names of its attributes (2020 names, sorted) and its binary mask
    (bool H x W)."""
    category_id: int
    attributes: Tuple[str, ...]
    mask: np.ndarray

    def attribute_ids(self, year: int) -> Tuple[int, ...]:
        """Sorted ids of the attributes in the ``year`` (2019 or 2020) list; 2019 has only the nicknames."""
        table = _ATTRIBUTE_ID_2019 if year == 2019 else _ATTRIBUTE_ID_2020
        return tuple(sorted(table[name] for name in self.attributes if name in table))


@dataclass
class SampleSummary:
    """What ``make_sample_dataset`` wrote; ``category_counts`` counts the training instances per category."""
    out_dir: Path
    fmt: str
    num_train: int
    num_test: int
    num_grayscale: int
    num_instances: int
    category_counts: Dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def report(self) -> str:
        """A one-line summary followed by a small table of instances per category."""
        lines = [
            f"wrote {self.num_train} train + {self.num_test} test images ({self.num_grayscale} grayscale), "
            f"{self.num_instances} instances, format {self.fmt}, to {self.out_dir} in {self.seconds:.1f} s"
        ]
        for cat in sorted(self.category_counts):
            lines.append(f"  {cat:>3}  {short_name(CATEGORY_NAMES[cat]):<10} {self.category_counts[cat]:>6}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- drawing

def _fixed(points) -> np.ndarray:
    # cv2 draws with sub-pixel precision when coordinates are fixed-point (shift=4 -> 1/16 px).
    return np.round(np.asarray(points, dtype=np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)


def _polygon(shape: Tuple[int, int], points) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [_fixed(points)], 1, cv2.LINE_8, 4)
    return mask


def _ellipse(shape: Tuple[int, int], centre, axes, angle: float = 0.0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    c = tuple(int(round(v * 16)) for v in centre)
    a = tuple(max(16, int(round(v * 16))) for v in axes)
    cv2.ellipse(mask, c, a, angle, 0, 360, 1, -1, cv2.LINE_8, 4)
    return mask


def _polyline(shape: Tuple[int, int], points, thickness: float) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.polylines(mask, [_fixed(points)], False, 1, max(1, int(round(thickness))), cv2.LINE_8, 4)
    return mask


def _rows(shape: Tuple[int, int], y0: float, y1: float) -> np.ndarray:
    """Mask of the image rows in [y0, y1), clamped to the image."""
    mask = np.zeros(shape, np.uint8)
    mask[int(np.clip(round(y0), 0, shape[0])):int(np.clip(round(y1), 0, shape[0]))] = 1
    return mask


def _box(cx: float, cy: float, half_width: float, half_height: float) -> np.ndarray:
    """Corners of an axis-aligned rectangle."""
    return np.array([(cx - half_width, cy - half_height), (cx + half_width, cy - half_height),
                     (cx + half_width, cy + half_height), (cx - half_width, cy + half_height)])


def _limb(p0, p1, width0: float, width1: float) -> np.ndarray:
    """Quadrilateral along p0 -> p1 with the given widths at each end."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    d /= max(np.hypot(*d), 1e-6)
    n = np.array([-d[1], d[0]])
    return np.array([p0 + n * width0 / 2, p1 + n * width1 / 2, p1 - n * width1 / 2, p0 - n * width0 / 2])


def _hsv_to_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    pixel = np.array([[[hue % 360 / 2, np.clip(sat, 0, 1) * 255, np.clip(val, 0, 1) * 255]]], np.float32)
    return cv2.cvtColor(pixel.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _jitter_rgb(rng: np.random.Generator, rgb, amount: float = 12.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _texture_factor(kind: str, yy: np.ndarray, xx: np.ndarray, u: float, rng: np.random.Generator):
    """Brightness factor of a texture over a box (``yy`` a column, ``xx`` a row of coordinates; the result
    broadcasts to the box), and an optional (alpha mask, rgb) overlay such as dots."""
    phase = rng.uniform(0, 100)
    if kind == "pinstripes":
        period = max(4.0, 0.17 * u)
        return np.where((xx + phase) % period < max(1.0, 0.28 * period), 0.68, 1.0), None
    if kind == "knit":
        period = max(3.0, 0.09 * u)
        return 1 + 0.14 * np.sin(2 * np.pi * (yy + phase) / period), None
    if kind == "rib":
        period = max(3.0, 0.10 * u)
        return 1 + 0.16 * np.sin(2 * np.pi * (xx + phase) / period), None
    if kind == "denim":
        noise = 0.05 * rng.standard_normal((yy.shape[0], xx.shape[1]), dtype=np.float32)
        return 1 + 0.09 * np.sin(2 * np.pi * (xx + yy) / 3.0) + noise, None
    if kind == "pleats":
        period = max(5.0, 0.22 * u)
        return 0.86 + 0.14 * np.cos(2 * np.pi * (xx + phase) / period), None
    if kind == "check":
        period = max(6.0, 0.30 * u)
        return np.where(((xx + phase) // period + yy // period) % 2 == 0, 1.0, 0.72), None
    if kind == "tweed":
        return 1 + 0.07 * rng.standard_normal((yy.shape[0], xx.shape[1]), dtype=np.float32), None
    if kind == "dots":
        period = max(7.0, 0.30 * u)
        radius = 0.22 * period
        stagger = ((xx + phase) // period) % 2 * period / 2
        dx = (xx + phase) % period - period / 2
        dy = (yy + stagger) % period - period / 2
        return np.float32(1), (dx * dx + dy * dy < radius * radius, (244.0, 242.0, 236.0))
    return np.float32(1), None


class _Canvas:
    """The image being painted plus an owner map: which whole-object instance each pixel shows (-1: none)."""

    def __init__(self, background: np.ndarray, rng: np.random.Generator):
        self.image = background
        self.shape = background.shape[:2]
        self.owner = np.full(self.shape, -1, np.int32)
        self.rng = rng
        self.items: List[Tuple[int, Tuple[str, ...], Optional[int], Optional[np.ndarray]]] = []

    def paint(self, mask: np.ndarray, rgb, texture: str = "solid", u: float = 20.0, edge: float = 0.72) -> None:
        """Fill ``mask`` with ``rgb`` modulated by a texture, a lighting gradient and darker edges."""
        if not mask.any():
            return
        x0, y0, bw, bh = cv2.boundingRect(mask)
        sub = mask[y0:y0 + bh, x0:x0 + bw].astype(bool)
        yy = np.arange(y0, y0 + bh, dtype=np.float32)[:, None]
        xx = np.arange(x0, x0 + bw, dtype=np.float32)[None, :]
        factor, overlay = _texture_factor(texture, yy, xx, u, self.rng)
        angle = self.rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * (xx - x0 - bw / 2) / max(bw, 1) + np.sin(angle) * (yy - y0 - bh / 2) / max(bh, 1))
        factor = factor * (1 + 0.25 * ramp)  # broadcasts row/column textures to the full box
        if edge < 1:
            inner = cv2.erode(mask[y0:y0 + bh, x0:x0 + bw], np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
            factor = np.where(sub & ~inner.astype(bool), factor * edge, factor)
        fill = np.asarray(rgb, np.float32)[None, None, :] * factor[..., None]
        if overlay is not None:
            alpha, colour = overlay
            fill[alpha] = colour
        region = self.image[y0:y0 + bh, x0:x0 + bw]
        region[sub] = fill[sub]

    def skin(self, mask: np.ndarray, rgb) -> None:
        """Paint something that is not annotated (body, hair, clutter in front): it hides what is behind."""
        self.paint(mask, rgb, edge=0.85)
        self.owner[mask.astype(bool)] = -1

    def obj(self, mask: np.ndarray, category: int, attributes: Sequence[str], rgb, texture: str, u: float) -> int:
        """Paint a whole garment or accessory and return its instance index."""
        self.paint(mask, rgb, texture, u)
        index = len(self.items)
        self.owner[mask.astype(bool)] = index
        self.items.append((category, tuple(sorted(attributes)), None, None))
        return index

    def detail(self, region: np.ndarray, parent: int, rgb) -> None:
        """Paint buttons, trims or a buckle onto the visible pixels of instance ``parent`` (mask unchanged)."""
        self.paint(region & (self.owner == parent), rgb, edge=1.0)

    def part(self, category: int, region: np.ndarray, parent: int) -> None:
        """A garment part: its mask is ``region`` within the final visible pixels of ``parent``."""
        self.items.append((category, (), parent, region.astype(bool)))

    def instances(self) -> List[Instance]:
        kept: Dict[int, np.ndarray] = {}
        out = []
        for index, (category, attributes, parent, region) in enumerate(self.items):
            if parent is None:
                mask = self.owner == index
            elif parent in kept:
                mask = kept[parent] & region
            else:
                continue
            min_area = MIN_AREA_MAIN if category in MAIN_APPAREL_IDS else MIN_AREA_OTHER
            if int(mask.sum()) < min_area:
                continue
            kept[index] = mask
            out.append(Instance(category, attributes, mask))
        return out


# ---------------------------------------------------------------------------------------------- figures

class _Body:
    """Key points of a standing figure, in units of ``u`` (head height = 1, total height 7.4)."""

    def __init__(self, rng: np.random.Generator, cx: float, top: float, height: float):
        self.cx, self.top = cx, top
        self.u = u = height / 7.4
        self.build = rng.uniform(0.88, 1.12)
        self.shoulder_y = self.y(1.35)
        self.armpit_y = self.y(2.1)
        self.waist_y = self.y(3.0)
        self.hip_y = self.y(3.7)
        self.crotch_y = self.y(3.95)
        self.knee_y = self.y(5.4)
        self.ankle_y = self.y(6.95)
        self.arms = []
        for side in (-1, 1):
            angle = rng.uniform(0.06, 0.42)
            shoulder = np.array([cx + side * 0.76 * u * self.build, self.shoulder_y + 0.15 * u])
            wrist = shoulder + 2.55 * u * np.array([side * np.sin(angle), np.cos(angle)])
            self.arms.append((side, shoulder, wrist))
        spread = rng.uniform(-0.05, 0.45)
        self.legs = []
        for side in (-1, 1):
            hip = np.array([cx + side * 0.36 * u * self.build, self.hip_y])
            ankle = np.array([cx + side * (0.36 * self.build + spread) * u, self.ankle_y])
            self.legs.append((side, hip, ankle))

    def y(self, k: float) -> float:
        return self.top + k * self.u

    def half_width(self, y: float) -> float:
        """Half width of the trunk at height ``y`` (beyond the hips it keeps flaring slightly)."""
        ys = [self.armpit_y, self.waist_y, self.hip_y, self.crotch_y, self.knee_y]
        ws = [0.80, 0.58, 0.74, 0.76, 0.80]
        return float(np.interp(y, ys, ws)) * self.u * self.build


def _torso_outline(b: _Body, hem_y: float, hem_half: float, neck_half: float, neck_depth: float,
                   shoulder_half: float, loose: float = 1.08):
    """Polygon of an upper-body garment and its neck curve (for the neckline part)."""
    u, cx = b.u, b.cx
    top_y = b.shoulder_y - 0.12 * u
    t = np.linspace(0, 1, 9)
    neck = np.stack([cx - neck_half + 2 * neck_half * t, top_y + neck_depth * np.sin(np.pi * t)], 1)
    right = [(cx + shoulder_half, b.shoulder_y + 0.02 * u)]
    for y in (b.armpit_y, b.waist_y, b.hip_y):
        if y < hem_y - 0.1 * u:
            right.append((cx + b.half_width(y) * loose, y))
    right.append((cx + hem_half, hem_y))
    right = np.array(right)
    left = right[::-1] * [-1, 1] + [2 * cx, 0]
    return np.concatenate([neck, right, left]), neck


def _sleeves(b: _Body, fraction: float, loose: float = 1.0) -> List[np.ndarray]:
    polys = []
    for side, shoulder, wrist in b.arms:
        start = shoulder + np.array([-side * 0.12 * b.u, -0.1 * b.u])
        end = shoulder + fraction * (wrist - shoulder)
        end_width = (0.44 if fraction < 0.5 else 0.36) * b.u * loose
        polys.append(_limb(start, end, 0.48 * b.u * loose, end_width))
    return polys


def _open_front(b: _Body, hem_y: float, top_half: float, bottom_half: float) -> np.ndarray:
    cx = b.cx
    return np.array([(cx - top_half, b.shoulder_y - b.u), (cx + top_half, b.shoulder_y - b.u),
                     (cx + bottom_half, hem_y + b.u), (cx - bottom_half, hem_y + b.u)])


def _revision1_nickname_draw(rng: np.random.Generator, category: int) -> None:
    """Make revision 1's random nickname draw and drop it: it keeps the images of every seed unchanged."""
    choices = _REVISION1_NICKNAMES.get(category)
    if not choices or rng.random() < 0.45:
        return
    count = 2 if len(choices) > 2 and rng.random() < 0.2 else 1
    rng.choice(choices, size=count, replace=False)


def _sleeve_length(fraction: float) -> str:
    """Sleeve-length attribute of sleeves reaching ``fraction`` of the way from shoulder to wrist."""
    return "sleeveless" if fraction <= 0 else "short (length)" if fraction < 0.5 else "wrist-length"


def _hem_length(b: "_Body", hem_y: float) -> str:
    """Length attribute of a skirt, dress or coat from where its hem falls against the knee (0.35 head heights
    either side of it is knee length)."""
    above_knee = (b.knee_y - hem_y) / b.u
    return "mini (length)" if above_knee > 0.35 else "knee (length)" if above_knee > -0.35 else "midi"


def _garment_colour(rng: np.random.Generator, category: int) -> np.ndarray:
    look = _LOOKS[category]
    return _hsv_to_rgb(look.hue + rng.uniform(-8, 8), look.sat + rng.uniform(-0.08, 0.08),
                       look.val + rng.uniform(-0.08, 0.08))


# How often each main category is the one an outfit is built around. Inner tops and bottoms also come
# with most other outfits, so outerwear and one-pieces are favoured here to even out instance counts.
_FOCUS_WEIGHTS = np.array([0.4, 0.4, 0.4, 1.3, 1.3, 1.9, 0.4, 0.5, 0.4, 1.4, 1.0, 1.6, 1.7])
_FOCUS_WEIGHTS = _FOCUS_WEIGHTS / _FOCUS_WEIGHTS.sum()


@dataclass
class _Outfit:
    lower: Optional[int] = None
    whole: Optional[int] = None
    inner: Optional[int] = None
    outer: Optional[int] = None
    outer_closed: bool = False


def _choose_outfit(rng: np.random.Generator, focus: int) -> _Outfit:
    """An outfit that contains category ``focus``; focus is drawn uniformly so all classes stay frequent."""
    def pick(options):
        return int(options[rng.integers(len(options))])

    outfit = _Outfit()
    if focus in (DRESS, JUMPSUIT):
        outfit.whole = focus
        if rng.random() < 0.3:
            outfit.outer = pick((CARDIGAN, JACKET, COAT, CAPE) if focus == DRESS else (CARDIGAN, JACKET))
        return outfit
    if focus in OUTERWEAR:
        outfit.outer = focus
        closable = focus in (COAT, JACKET)
        outfit.outer_closed = closable and rng.random() < (0.4 if focus == COAT else 0.2)
        if outfit.outer_closed:
            outfit.lower = PANTS if focus == COAT else pick(BOTTOMS)
        elif focus != VEST and rng.random() < 0.25:
            outfit.whole = DRESS
        else:
            outfit.inner, outfit.lower = pick(INNER_TOPS), pick(BOTTOMS)
        return outfit
    outfit.inner = focus if focus in INNER_TOPS else pick(INNER_TOPS)
    outfit.lower = focus if focus in BOTTOMS else pick(BOTTOMS)
    if rng.random() < 0.3:
        outfit.outer = pick((CARDIGAN, JACKET, VEST, COAT, CAPE))
    return outfit


class _FigurePainter:
    """Paints one clothed figure onto a canvas, garment by garment from the skin outwards."""

    def __init__(self, canvas: _Canvas, body: _Body):
        self.c, self.b, self.rng = canvas, body, canvas.rng
        self.shape = canvas.shape

    # ---- body
    def body(self) -> None:
        b, u, shape, rng = self.b, self.b.u, self.shape, self.rng
        skin = _jitter_rgb(rng, _SKIN_TONES[rng.integers(len(_SKIN_TONES))], 8)
        hair = _jitter_rgb(rng, _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], 8)
        if rng.random() < 0.5:  # long hair falls behind the shoulders
            self.c.skin(_polygon(shape, [(b.cx - 0.42 * u, b.y(0.35)), (b.cx + 0.42 * u, b.y(0.35)),
                                         (b.cx + 0.55 * u, b.y(1.9)), (b.cx - 0.55 * u, b.y(1.9))]), hair)
        limbs = np.zeros(shape, np.uint8)
        for _, hip, ankle in b.legs:
            limbs |= _polygon(shape, _limb(hip, ankle, 0.62 * u * b.build, 0.27 * u))
        for _, shoulder, wrist in b.arms:
            limbs |= _polygon(shape, _limb(shoulder, wrist, 0.32 * u, 0.22 * u))
            direction = (wrist - shoulder) / np.hypot(*(wrist - shoulder))
            limbs |= _ellipse(shape, wrist + 0.18 * u * direction, (0.13 * u, 0.2 * u),
                              np.degrees(np.arctan2(direction[1], direction[0])) - 90)
        self.c.skin(limbs, skin)
        trunk, _ = _torso_outline(b, b.crotch_y, b.half_width(b.crotch_y), 0.15 * u, 0.0, 0.82 * u * b.build, 1.0)
        self.c.skin(_polygon(shape, trunk) | _ellipse(shape, (b.cx, b.y(0.5)), (0.37 * u, 0.5 * u))
                    | _polygon(shape, _limb((b.cx, b.y(0.8)), (b.cx, b.shoulder_y), 0.3 * u, 0.34 * u)), skin)
        self.c.skin(_ellipse(shape, (b.cx, b.y(0.42)), (0.41 * u, 0.45 * u)) & _rows(shape, 0, b.y(0.3)), hair)
        eyes = [_ellipse(shape, (b.cx + side * 0.15 * u, b.y(0.48)), (0.05 * u, 0.035 * u)) for side in (-1, 1)]
        self.c.skin(eyes[0] | eyes[1], (35, 30, 30))

    # ---- garments
    def _garment(self, category: int, polys: Sequence[np.ndarray], attributes: Sequence[str] = (),
                 minus: Optional[np.ndarray] = None) -> Tuple[int, np.ndarray]:
        """Paint a garment in its category's look; its attributes are ``attributes`` plus the look's pattern."""
        texture = _LOOKS[category].texture
        attributes = (*attributes, _PATTERN_OF_TEXTURE.get(texture, _PLAIN))
        if texture == "pleats":
            attributes += ("pleat",)
        mask = np.zeros(self.shape, np.uint8)
        for poly in polys:
            mask |= _polygon(self.shape, poly)
        if minus is not None:
            mask &= 1 - _polygon(self.shape, minus)
        index = self.c.obj(mask, category, attributes, _garment_colour(self.rng, category), texture, self.b.u)
        return index, mask

    def _sleeve_parts(self, index: int, sleeves: Sequence[np.ndarray]) -> None:
        for poly in sleeves:
            self.c.part(SLEEVE, _polygon(self.shape, poly), index)

    def _neckline(self, index: int, neck: np.ndarray, colour) -> None:
        band = _polyline(self.shape, neck, max(3.0, 0.3 * self.b.u))
        self.c.detail(band, index, colour)
        self.c.part(NECKLINE, band, index)

    def bottoms(self, category: int) -> None:
        b, u, rng = self.b, self.b.u, self.rng
        _revision1_nickname_draw(rng, category)
        if category == SKIRT:
            hem_y = b.crotch_y + rng.uniform(0.5, 2.3) * u
            flare = b.half_width(b.hip_y) * rng.uniform(1.15, 1.6) + 0.25 * (hem_y - b.crotch_y)
            w = b.half_width(b.waist_y) * 1.08
            poly = [(b.cx - w, b.waist_y - 0.05 * u), (b.cx + w, b.waist_y - 0.05 * u),
                    (b.cx + flare, hem_y), (b.cx, hem_y + 0.12 * u), (b.cx - flare, hem_y)]
            self._garment(SKIRT, [poly], (_hem_length(b, hem_y),))
            return
        length = 1.0 if category == PANTS else rng.uniform(0.28, 0.45)
        # Pants are all denim; shorts reaching more than 3/8 of the way to the ankle are near the knee.
        nickname = "jeans" if category == PANTS else "short (shorts)" if length < 0.375 else "bermuda (shorts)"
        self._garment(category, self._pant_polys(length), (nickname,))

    def _pant_polys(self, length: float) -> List[np.ndarray]:
        b, u = self.b, self.b.u
        w, h, c = (b.half_width(b.waist_y) * 1.06, b.half_width(b.hip_y) * 1.08, b.half_width(b.crotch_y) * 1.06)
        polys = [np.array([(b.cx - w, b.waist_y - 0.05 * u), (b.cx + w, b.waist_y - 0.05 * u), (b.cx + h, b.hip_y),
                           (b.cx + c, b.crotch_y + 0.1 * u), (b.cx - c, b.crotch_y + 0.1 * u), (b.cx - h, b.hip_y)])]
        for _, hip, ankle in b.legs:
            end = hip + length * (ankle - hip) - np.array([0, 0.05 * u])
            polys.append(_limb(hip, end, 0.78 * u * b.build, (0.42 if length > 0.9 else 0.66) * u * b.build))
        return polys

    def whole(self, category: int) -> None:
        b, u, rng = self.b, self.b.u, self.rng
        sleeve_choice = rng.choice([0.0, 0.35, 0.92], p=[0.45, 0.4, 0.15] if category == DRESS else [0.3, 0.3, 0.4])
        sleeves = _sleeves(b, float(sleeve_choice)) if sleeve_choice else []
        shoulder = (0.86 if sleeves else rng.uniform(0.5, 0.75)) * u * b.build
        if category == DRESS:
            torso, neck = _torso_outline(b, b.waist_y + 0.1 * u, b.half_width(b.waist_y) * 1.06,
                                         0.28 * u, rng.uniform(0.15, 0.5) * u, shoulder)
            hem_y = b.knee_y + rng.uniform(-0.7, 0.9) * u
            flare = rng.uniform(1.05, 1.7) * u * b.build
            w = b.half_width(b.waist_y) * 1.06
            skirt = np.array([(b.cx - w, b.waist_y), (b.cx + w, b.waist_y), (b.cx + flare, hem_y),
                              (b.cx, hem_y + 0.15 * u), (b.cx - flare, hem_y)])
            index, _ = self._garment(DRESS, [torso, skirt, *sleeves],
                                     (_sleeve_length(sleeve_choice), _hem_length(b, hem_y)))
        else:
            torso, neck = _torso_outline(b, b.hip_y, b.half_width(b.hip_y) * 1.08, 0.26 * u,
                                         rng.uniform(0.15, 0.45) * u, shoulder)
            index, _ = self._garment(JUMPSUIT, [torso, *self._pant_polys(1.0), *sleeves],
                                     (_sleeve_length(sleeve_choice),))
        self._neckline(index, neck, _garment_colour(rng, category) * 0.55)
        self._sleeve_parts(index, sleeves)

    def inner(self, category: int) -> None:
        b, u, rng = self.b, self.b.u, self.rng
        _revision1_nickname_draw(rng, category)
        nicknames: Tuple[str, ...] = ()
        if category == TOP:
            kind = int(rng.choice([_TOP_CLASSIC, _TOP_TANK, _TOP_CROP])) if rng.random() < 0.6 else _TOP_CLASSIC
            nicknames = (ATTRIBUTES[kind]["name"],)
            sleeve = 0.0 if kind == _TOP_TANK else 0.35
            hem_y = b.waist_y - 0.2 * u if kind == _TOP_CROP else b.waist_y + rng.uniform(0.2, 0.5) * u
            neck_half, depth = 0.25 * u, rng.uniform(0.15, 0.35) * u
        elif category == SHIRT:
            sleeve = 0.92 if rng.random() < 0.7 else 0.35
            hem_y, neck_half, depth = b.hip_y + rng.uniform(-0.3, 0.1) * u, 0.2 * u, 0.45 * u
        else:
            sleeve, hem_y, neck_half, depth = 0.95, b.hip_y + rng.uniform(-0.2, 0.2) * u, 0.24 * u, 0.15 * u
        sleeves = _sleeves(b, sleeve, 1.05 if category == SWEATER else 1.0) if sleeve else []
        shoulder = (0.88 if sleeves else 0.62) * u * b.build
        torso, neck = _torso_outline(b, hem_y, b.half_width(hem_y) * 1.1, neck_half, depth, shoulder)
        index, mask = self._garment(category, [torso, *sleeves], (*nicknames, _sleeve_length(sleeve)))
        colour = _garment_colour(rng, category)
        if category == SHIRT:  # button placket
            self.c.detail(_polyline(self.shape, [(b.cx, b.shoulder_y + depth), (b.cx, hem_y)], 0.07 * u),
                          index, colour * 0.7)
        if category == SWEATER:  # ribbed hem band
            self.c.detail(_rows(self.shape, hem_y - 0.25 * u, hem_y + 1) & mask, index, colour * 0.8)
        self._neckline(index, neck, colour * 0.55)
        self._sleeve_parts(index, sleeves)

    def outer(self, category: int, closed: bool) -> None:
        b, u, rng = self.b, self.b.u, self.rng
        _revision1_nickname_draw(rng, category)
        colour = _garment_colour(rng, category)
        shoulder = 0.92 * u * b.build
        if category == CAPE:
            hem_y = b.hip_y + rng.uniform(-0.3, 0.5) * u
            reach = 0.95 * u * b.build + 0.15 * (hem_y - b.shoulder_y)
            poly = [(b.cx - 0.3 * u, b.shoulder_y - 0.18 * u), (b.cx + 0.3 * u, b.shoulder_y - 0.18 * u),
                    (b.cx + shoulder, b.shoulder_y + 0.2 * u), (b.cx + reach + 0.3 * u, hem_y),
                    (b.cx, hem_y + 0.25 * u), (b.cx - reach - 0.3 * u, hem_y),
                    (b.cx - shoulder, b.shoulder_y + 0.2 * u)]
            gap = _open_front(b, hem_y, 0.06 * u, 0.35 * u) if rng.random() < 0.5 else None
            self._garment(CAPE, [poly], (), gap)
            return
        if category == VEST:
            hem_y = b.waist_y + rng.uniform(0.3, 0.7) * u
            torso, _ = _torso_outline(b, hem_y, b.half_width(hem_y) * 1.14, 0.3 * u, 0.0, 0.6 * u * b.build, 1.14)
            v_neck = np.array([(b.cx - 0.3 * u, b.shoulder_y - u), (b.cx + 0.3 * u, b.shoulder_y - u),
                               (b.cx, b.waist_y - rng.uniform(0.0, 0.6) * u)])
            self._garment(VEST, [torso], ("sleeveless", "v-neck"), v_neck)
            return
        if category == COAT:
            hem_y = b.knee_y + rng.uniform(-0.2, 0.8) * u
            hem_half = rng.uniform(1.0, 1.3) * u * b.build
        elif category == JACKET:
            hem_y = b.hip_y + rng.uniform(-0.2, 0.35) * u
            hem_half = b.half_width(hem_y) * 1.16
        else:  # cardigan
            hem_y = b.hip_y + rng.uniform(-0.1, 0.5) * u
            hem_half = b.half_width(hem_y) * 1.15
        sleeves = _sleeves(b, 0.97, 1.12)  # long enough to hide the sleeves of what is worn under it
        torso, _ = _torso_outline(b, hem_y, hem_half, 0.3 * u, 0.1 * u, shoulder, 1.16)
        gap = None if closed else _open_front(b, hem_y, rng.uniform(0.28, 0.42) * u, rng.uniform(0.25, 0.5) * u)
        attributes = [_sleeve_length(0.97)]
        if category == COAT:  # buttons drawn below: two rows when closed, one along the edge when open
            attributes += [_hem_length(b, hem_y), "single breasted" if gap is not None else "double breasted"]
        elif category == CARDIGAN:
            attributes.append("single breasted")
        index, mask = self._garment(category, [torso, *sleeves], attributes, gap)
        if gap is not None:  # lapel / opening trim
            for side in (-1, 1):
                edge = gap[[0, 3]] if side < 0 else gap[[1, 2]]
                self.c.detail(_polyline(self.shape, edge, 0.22 * u), index, colour * 0.6)
        if category in (COAT, CARDIGAN):  # buttons: two rows when closed, along the right edge when open
            for y in np.arange(b.shoulder_y + 0.6 * u, min(hem_y, b.hip_y + 0.2 * u), 0.6 * u):
                if gap is None:
                    xs = (b.cx - 0.22 * u, b.cx + 0.22 * u)
                else:
                    xs = (float(np.interp(y, gap[1:3, 1], gap[1:3, 0])) + 0.16 * u,)
                for x in xs:
                    self.c.detail(_ellipse(self.shape, (x, y), (0.07 * u, 0.07 * u)), index, (40, 34, 30))
        self._sleeve_parts(index, sleeves)

    # ---- accessories
    def shoes(self) -> None:
        b, u, rng = self.b, self.b.u, self.rng
        colour = _jitter_rgb(rng, _SHOE_COLOURS[rng.integers(len(_SHOE_COLOURS))], 10)
        for side, _, ankle in b.legs:
            mask = _ellipse(self.shape, (ankle[0] + side * 0.08 * u, ankle[1] + 0.2 * u), (0.3 * u, 0.19 * u))
            mask |= _polygon(self.shape, _limb(ankle - [0, 0.08 * u], ankle + [side * 0.05 * u, 0.2 * u],
                                               0.34 * u, 0.4 * u))
            self.c.obj(mask, SHOE, (), colour, "solid", u)

    def belt(self) -> None:
        b, u, rng = self.b, self.b.u, self.rng
        w = b.half_width(b.waist_y) * 1.14
        band = _polygon(self.shape, _box(b.cx, b.waist_y, w, 0.12 * u))
        index = self.c.obj(band, BELT, (), _jitter_rgb(rng, _BELT_COLOURS[rng.integers(2)], 8), "solid", u)
        self.c.detail(_polygon(self.shape, _box(b.cx, b.waist_y, 0.14 * u, 0.11 * u)), index, _GOLD)

    def hat(self) -> None:
        b, u, rng = self.b, self.b.u, self.rng
        mask = _ellipse(self.shape, (b.cx, b.y(0.22)), (rng.uniform(0.6, 0.8) * u, 0.13 * u))
        mask |= _polygon(self.shape, [(b.cx - 0.36 * u, b.y(-0.3)), (b.cx + 0.36 * u, b.y(-0.3)),
                                      (b.cx + 0.4 * u, b.y(0.22)), (b.cx - 0.4 * u, b.y(0.22))])
        colour = _jitter_rgb(rng, _HAT_COLOURS[rng.integers(len(_HAT_COLOURS))], 10)
        index = self.c.obj(mask, HAT, (), colour, "solid", u)
        self.c.detail(_rows(self.shape, b.y(0.08), b.y(0.18)), index, colour * 0.5)

    def glasses(self) -> None:
        b, u = self.b, self.b.u
        mask = _polyline(self.shape, [(b.cx - 0.3 * u, b.y(0.47)), (b.cx + 0.3 * u, b.y(0.47))], 0.05 * u)
        for side in (-1, 1):
            mask |= _ellipse(self.shape, (b.cx + side * 0.16 * u, b.y(0.48)), (0.13 * u, 0.09 * u))
        self.c.obj(mask, GLASSES, (), (20, 20, 24), "solid", u)

    def bag(self) -> None:
        b, u, rng = self.b, self.b.u, self.rng
        side, shoulder, wrist = b.arms[rng.integers(2)]
        colour = _jitter_rgb(rng, _BAG_COLOURS[rng.integers(len(_BAG_COLOURS))], 10)
        w, h = rng.uniform(0.4, 0.6) * u, rng.uniform(0.55, 0.8) * u
        if rng.random() < 0.5:  # handbag held in the hand
            top = wrist + [side * 0.05 * u, 0.45 * u]
            handle = _ellipse(self.shape, top, (0.3 * u, 0.3 * u)) & (1 - _ellipse(self.shape, top, (0.2 * u, 0.2 * u)))
            mask = (handle & _rows(self.shape, 0, top[1])) | _polygon(
                self.shape, [(top[0] - w, top[1]), (top[0] + w, top[1]), (top[0] + w * 1.1, top[1] + h),
                             (top[0] - w * 1.1, top[1] + h)])
        else:  # cross-body bag at the hip, strap from the other shoulder
            top = np.array([b.cx + side * 0.85 * u * b.build, b.hip_y - 0.2 * u])
            strap_from = np.array([b.cx - side * 0.55 * u * b.build, b.shoulder_y])
            mask = _polyline(self.shape, [strap_from, top], max(2.0, 0.09 * u))
            mask |= _polygon(self.shape, _box(top[0], top[1] + h / 2, w, h / 2))
        index = self.c.obj(mask, BAG, (), colour, "solid", u)
        self.c.detail(_ellipse(self.shape, (top[0], top[1] + 0.25 * h), (0.08 * u, 0.06 * u)), index, _GOLD)

    def paint(self, outfit: _Outfit, feet_visible: bool) -> None:
        rng, u = self.rng, self.b.u
        self.body()
        if outfit.whole is not None:
            self.whole(outfit.whole)
        elif outfit.lower is not None:
            self.bottoms(outfit.lower)
        if feet_visible and rng.random() < 0.9:
            self.shoes()
        if outfit.inner is not None:
            self.inner(outfit.inner)
        belted = outfit.lower in (PANTS, SKIRT) or outfit.whole is not None
        if belted and not outfit.outer_closed and outfit.outer not in (VEST, CAPE) and rng.random() < 0.25:
            self.belt()
        if outfit.outer is not None:
            self.outer(outfit.outer, outfit.outer_closed)
        if rng.random() < 0.2:
            self.hat()
        if u >= 30 and rng.random() < 0.2:
            self.glasses()
        if rng.random() < 0.3:
            self.bag()


# ------------------------------------------------------------------------------------------ backgrounds

def _muted(rng: np.random.Generator) -> np.ndarray:
    return _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.95))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:  # gradient
        a, bcol = _muted(rng), _muted(rng)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        image = a[None, None] * (1 - t[..., None]) + bcol[None, None] * t[..., None]
    elif kind == 1:  # smooth noise
        coarse = rng.uniform(0, 1, (rng.integers(3, 8), rng.integers(3, 8), 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        image = _muted(rng)[None, None] * (0.7 + 0.6 * smooth)
    else:  # studio: wall and floor
        horizon = int(height * rng.uniform(0.6, 0.9))
        image = np.empty((height, width, 3), np.float32)
        image[:horizon] = _muted(rng)
        image[horizon:] = _muted(rng)
    image = np.ascontiguousarray(image, dtype=np.float32)
    for _ in range(rng.integers(0, 7)):  # clutter: frames, lamps, poles -- nothing garment-shaped
        colour = _muted(rng)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(0.05, 0.25) * min(height, width)
        shape = rng.integers(3)
        if shape == 0:
            mask = _polygon((height, width), _box(cx, cy, size, size * 0.7))
        elif shape == 1:
            mask = _ellipse((height, width), (cx, cy), (size * 0.6, size * 0.6))
        else:
            end = (cx + rng.uniform(-2, 2) * size, cy + rng.uniform(-2, 2) * size)
            mask = _polyline((height, width), [(cx, cy), end], rng.uniform(2, 8))
        image[mask.astype(bool)] = colour
    return image


# ------------------------------------------------------------------------------------------------ images

def render_image(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, List[Instance]]:
    """Paint 1-3 clothed figures on a background: (H x W x 3 uint8 RGB image, visible-pixel instances)."""
    canvas = _Canvas(_background(rng, height, width), rng)
    landscape = width > height * 1.15
    count = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3] if landscape else [0.65, 0.3, 0.05]))
    slot = width / count
    figures = []
    for i in range(count):
        cropped = count == 1 and rng.random() < 0.15
        if cropped:  # feet below the frame, as in half-length photos
            fig_height = height * rng.uniform(1.05, 1.3)
            top = height * rng.uniform(0.02, 0.08)
        else:
            fig_height = height * (rng.uniform(0.75, 0.95) if count == 1 else rng.uniform(0.55, 0.9))
            fig_height = max(min(fig_height, slot / 0.36, height * 0.97), min(140.0, height * 0.95))
            top = max(0.0, height * rng.uniform(0.9, 0.99) - fig_height)
        cx = (i + 0.5) * slot + rng.uniform(-0.15, 0.15) * slot
        figures.append((fig_height, cx, top, not cropped))
    figures.sort(key=lambda f: f[0])  # smaller figures stand further back and are painted first
    for fig_height, cx, top, feet_visible in figures:
        body = _Body(rng, cx, top, fig_height)
        focus = int(rng.choice(len(_FOCUS_WEIGHTS), p=_FOCUS_WEIGHTS))
        _FigurePainter(canvas, body).paint(_choose_outfit(rng, focus), feet_visible)
    image = canvas.image + rng.integers(-5, 6, canvas.image.shape, dtype=np.int8)  # sensor noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8), canvas.instances()


def _image_size(rng: np.random.Generator, min_size: int, max_size: int) -> Tuple[int, int]:
    short = int(rng.integers(min_size, min(max_size, 2 * min_size) + 1))
    long = int(rng.integers(short, min(max_size, 2 * short) + 1))
    return (long, short) if rng.random() < 0.65 else (short, long)


def _kaggle_rle(mask: np.ndarray) -> str:
    """Kaggle EncodedPixels of a mask, encoding only the columns it occupies (same result, far less work)."""
    x0, _, box_width, _ = cv2.boundingRect(mask.view(np.uint8))
    starts, lengths = mask_to_runs(mask[:, x0:x0 + box_width])
    return runs_to_kaggle(starts + x0 * mask.shape[0], lengths)  # column-major: a column is `height` pixels


def _encode_jpeg(image: np.ndarray, grayscale: bool) -> bytes:
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if grayscale else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


# --------------------------------------------------------------------------------------------- dataset

def _check_arguments(fmt: str, num_train: int, num_test: int, min_size: int, max_size: int) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if num_train < 1:
        raise UserError(f"--num-train must be at least 1, got {num_train}")
    if num_test < 0:
        raise UserError(f"--num-test must be 0 or more, got {num_test}")
    if min_size < 128:
        raise UserError(f"--min-size must be at least 128 pixels (figures need room), got {min_size}")
    if max_size < min_size:
        raise UserError(f"--max-size ({max_size}) must not be smaller than --min-size ({min_size})")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse non-empty folders unless ``overwrite``; even then only replace a folder this generator made."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} exists and is not a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise UserError(f"--out {out_dir} is not empty; pass --overwrite to replace a previously generated sample")
    if not (out_dir / MARKER_NAME).is_file():
        raise UserError(f"--out {out_dir} is not empty and has no {MARKER_NAME}, so it was not made by this "
                        f"generator (it may be real data); refusing to write into it even with --overwrite")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_sample_dataset(out_dir: PathLike, num_train: int = DEFAULT_NUM_TRAIN, num_test: int = DEFAULT_NUM_TEST,
                        seed: int = 0, fmt: str = "2019", min_size: int = DEFAULT_MIN_SIZE,
                        max_size: int = DEFAULT_MAX_SIZE, overwrite: bool = False,
                        progress: bool = True) -> SampleSummary:
    """Write a synthetic dataset in the Kaggle iMaterialist (Fashion) ``fmt`` layout to ``out_dir``.

    Image short sides are drawn from [min_size, min(max_size, 2*min_size)], long sides up to
    min(max_size, 2*short side); about 2/3 are portrait. Raises UserError for bad arguments or an
    ``out_dir`` that is not empty (without ``overwrite``) or was not made by this generator.
    """
    started = time.perf_counter()
    _check_arguments(fmt, num_train, num_test, min_size, max_size)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    settings = {"generator": "gluon_fashion.synthetic", "format": fmt, "seed": seed, "num_train": num_train,
                "num_test": num_test, "min_size": min_size, "max_size": max_size}
    atomic_write_json(out / MARKER_NAME, {**settings, "complete": False}, indent=2)

    id_rng = np.random.default_rng([seed, 0])
    image_ids: List[str] = []
    while len(image_ids) < num_train + num_test:
        candidate = id_rng.bytes(16).hex()
        if candidate not in image_ids:  # a clash is astronomically unlikely, but ids must be unique
            image_ids.append(candidate)
    gray_rng = np.random.default_rng([seed, 1])
    grayscale = set(gray_rng.choice(num_train, round(GRAYSCALE_FRACTION * num_train), replace=False).tolist())
    if num_test:
        grayscale |= {num_train + i for i in gray_rng.choice(num_test, round(GRAYSCALE_FRACTION * num_test),
                                                              replace=False).tolist()}

    rows: List[List] = []
    counts: Dict[int, int] = {}
    written = {"train": set(), "test": set()}
    for index in tqdm(range(num_train + num_test), desc="sample images", unit="img", disable=not progress):
        split = "train" if index < num_train else "test"
        rng = np.random.default_rng([seed, 2, index])
        height, width = _image_size(rng, min_size, max_size)
        image, instances = render_image(rng, height, width)
        file_name = f"{image_ids[index]}.jpg"
        atomic_write_bytes(out / split / file_name, _encode_jpeg(image, index in grayscale))
        written[split].add(file_name)
        if split == "test":
            continue
        image_id = file_name if fmt == "2019" else image_ids[index]
        for inst in instances:
            counts[inst.category_id] = counts.get(inst.category_id, 0) + 1
            encoded = _kaggle_rle(inst.mask)
            if fmt == "2019":
                rows.append([image_id, encoded, height, width,
                             class_id_string(inst.category_id, inst.attribute_ids(2019))])
            else:
                rows.append([image_id, encoded, height, width, inst.category_id,
                             ",".join(str(a) for a in inst.attribute_ids(2020))])

    test_ids = [image_ids[i] for i in range(num_train, num_train + num_test)]
    if fmt == "2019":
        _write_csv(out / "train.csv", ["ImageId", "EncodedPixels", "Height", "Width", "ClassId"], rows)
        _write_csv(out / "sample_submission.csv", ["ImageId", "EncodedPixels", "ClassId"],
                   [[f"{i}.jpg", "1 1", "23"] for i in test_ids])
    else:
        _write_csv(out / "train.csv", ["ImageId", "EncodedPixels", "Height", "Width", "ClassId", "AttributesIds"], rows)
        _write_csv(out / "sample_submission.csv", ["ImageId", "EncodedPixels", "ClassId", "AttributesIds"],
                   [[i, "1 1", "23", ""] for i in test_ids])
    atomic_write_json(out / "label_descriptions.json", label_descriptions(int(fmt)), indent=2)

    for split, names in written.items():  # images left from an earlier generated sample
        for stale in sorted((out / split).glob("*.jpg")):
            if stale.name not in names:
                stale.unlink()
    atomic_write_json(out / MARKER_NAME, {**settings, "complete": True}, indent=2)

    return SampleSummary(out_dir=out, fmt=fmt, num_train=num_train, num_test=num_test,
                         num_grayscale=len(grayscale), num_instances=len(rows),
                         category_counts=dict(sorted(counts.items())), seconds=time.perf_counter() - started)


# ------------------------------------------------------------------------------- the other datasets' formats
# The same synthetic figures written in the formats of Fashionpedia, ModaNet, DeepFashion2 and a label-map
# folder, so that every converter and reader runs on its own format without a download. These layouts have
# annotated train and val images (``num_train``, ``num_val``) and no test images.

#: Formats written by :func:`make_format_sample`, beside the two Kaggle layouts of :data:`FORMATS`.
OTHER_FORMATS = ("fashionpedia", "modanet", "deepfashion2", "labelmap")
DEFAULT_NUM_VAL = 20

#: Synthetic (iMaterialist) category -> ModaNet category id (labels.MODANET_CATEGORIES). Jumpsuits, capes and
#: the garment parts have no ModaNet class and are not annotated, as a ModaNet annotator would not.
MODANET_ID = {SHIRT: 9, TOP: 9, SWEATER: 9, CARDIGAN: 5, JACKET: 5, VEST: 5, COAT: 5, PANTS: 8, SHORTS: 10,
              SKIRT: 11, DRESS: 6, GLASSES: 7, HAT: 12, BELT: 2, SHOE: 4, BAG: 1}
#: Synthetic category -> DeepFashion2 category id (labels.DEEPFASHION2_CATEGORIES); DeepFashion2 has clothes only.
DEEPFASHION2_ID = {SHIRT: 2, TOP: 1, SWEATER: 2, CARDIGAN: 4, JACKET: 4, COAT: 4, VEST: 5, PANTS: 8, SHORTS: 7,
                   SKIRT: 9, DRESS: 10}


#: Label-map sample: a human-parsing-style class list (pixel value = index), with its colours.
LABELMAP_CLASSES = ("background", "top", "outerwear", "pants", "shorts", "skirt", "dress", "shoes", "bag", "hat")
LABELMAP_COLORS = ((0, 0, 0), (220, 20, 60), (119, 11, 32), (0, 0, 142), (0, 60, 100), (250, 170, 30),
                   (0, 160, 160), (100, 80, 0), (190, 153, 153), (70, 130, 180))
LABELMAP_IGNORE = 255
#: Synthetic category -> label value; glasses and belts are marked "not labelled" (the ignore value), as is every
#: boundary between two classes.
LABELMAP_VALUE = {SHIRT: 1, TOP: 1, SWEATER: 1, CARDIGAN: 2, JACKET: 2, VEST: 2, COAT: 2, CAPE: 2, PANTS: 3,
                  SHORTS: 4, SKIRT: 5, DRESS: 6, JUMPSUIT: 6, SHOE: 7, BAG: 8, HAT: 9,
                  GLASSES: LABELMAP_IGNORE, BELT: LABELMAP_IGNORE}


def mask_polygons(mask: np.ndarray) -> List[List[float]]:
    """Outer contours of a binary mask as COCO polygons ``[x0, y0, x1, y1, ...]`` (pixel centres, holes lost);
    contours of fewer than 3 points are left out."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2)
        if len(points) >= 3:
            polygons.append([float(v) + 0.5 for v in points.ravel()])
    return polygons


def _mask_box(mask: np.ndarray) -> List[float]:
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return [float(x), float(y), float(w), float(h)]


def _format_layout(fmt: str, split: str) -> Tuple[str, str]:
    """(image folder, annotation path or folder) of ``split`` in the sample of ``fmt``, relative to its root."""
    val = split == "val"
    return {
        "fashionpedia": ("test" if val else "train", f"instances_attributes_{'val' if val else 'train'}2020.json"),
        "modanet": ("images", f"modanet2018_instances_{split}.json"),
        "deepfashion2": (f"{'validation' if val else 'train'}/image", f"{'validation' if val else 'train'}/annos"),
        "labelmap": ("images", "labels"),
    }[fmt]


def format_sample_paths(out_dir: PathLike, fmt: str, split: str) -> Tuple[Path, Path]:
    """(image folder, annotations) that :func:`make_format_sample` writes for ``split`` ("train"/"val")."""
    images, annotations = _format_layout(fmt, split)
    return Path(out_dir) / images, Path(out_dir) / annotations


def make_format_sample(out_dir: PathLike, fmt: str, num_train: int = DEFAULT_NUM_TRAIN,
                       num_val: int = DEFAULT_NUM_VAL, seed: int = 0, min_size: int = DEFAULT_MIN_SIZE,
                       max_size: int = DEFAULT_MAX_SIZE, overwrite: bool = False, progress: bool = True) -> SampleSummary:
    """Write the synthetic figures in another dataset's format (``fmt`` in :data:`OTHER_FORMATS`) to ``out_dir``:

    * ``fashionpedia``: ``train/``, ``test/`` (the val images, as Fashionpedia ships them) and
      ``instances_attributes_{train,val}2020.json``: 46 categories, polygons and compressed RLE mixed in one
      file, Fashionpedia's 294 attributes (ids 0-340, not consecutive), some annotations without
      ``bbox``, image ids not consecutive;
    * ``modanet``: ``images/`` and ``modanet2018_instances_{train,val}.json``: 13 categories, polygons only,
      objects split into several polygons, and degenerate ones (fewer than 3 points, or no area) as in the real
      file;
    * ``deepfashion2``: ``{train,validation}/image/NNNNNN.jpg`` and ``.../annos/NNNNNN.json`` (``item1``, ...);
    * ``labelmap``: ``images/*.jpg``, ``labels/*.png`` (pixel = class index, 255 = not labelled: glasses, belts and
      the boundaries between classes),
      ``classes.json`` (names, colours, ignore value) and ``splits.json``.

    The same seed writes byte-identical files.
    """
    started = time.perf_counter()
    if fmt not in OTHER_FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS + OTHER_FORMATS)}, got {fmt!r}")
    _check_arguments("2019", num_train, 0, min_size, max_size)
    if num_val < 1:
        raise UserError(f"--num-val must be at least 1 for --format {fmt}, got {num_val}")
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    settings = {"generator": "gluon_fashion.synthetic", "format": fmt, "seed": seed, "num_train": num_train,
                "num_val": num_val, "min_size": min_size, "max_size": max_size}
    atomic_write_json(out / MARKER_NAME, {**settings, "complete": False}, indent=2)
    total = num_train + num_val
    gray_rng = np.random.default_rng([seed, 1])
    grayscale = set(gray_rng.choice(total, round(GRAYSCALE_FRACTION * total), replace=False).tolist())
    writer = _FORMAT_WRITERS[fmt](out)
    counts: Dict[int, int] = {}
    num_instances = 0
    written: set = set()
    for index in tqdm(range(total), desc=f"{fmt} sample", unit="img", disable=not progress):
        split = "train" if index < num_train else "val"
        rng = np.random.default_rng([seed, 2, index])
        height, width = _image_size(rng, min_size, max_size)
        image, instances = render_image(rng, height, width)
        image_dir, _ = format_sample_paths(out, fmt, split)
        name = writer.file_name(index)
        atomic_write_bytes(image_dir / name, _encode_jpeg(image, index in grayscale))
        written.add(image_dir / name)
        for inst in instances:
            counts[inst.category_id] = counts.get(inst.category_id, 0) + 1
        num_instances += writer.add(split, index, name, height, width, instances)
    writer.finish(num_train, num_val)
    for folder in {format_sample_paths(out, fmt, split)[0] for split in ("train", "val")}:
        for stale in sorted(folder.glob("*.jpg")):  # images of an earlier generated sample
            if stale not in written:
                stale.unlink()
    atomic_write_json(out / MARKER_NAME, {**settings, "complete": True}, indent=2)
    return SampleSummary(out_dir=out, fmt=fmt, num_train=num_train, num_test=num_val, num_grayscale=len(grayscale),
                         num_instances=num_instances, category_counts=dict(sorted(counts.items())),
                         seconds=time.perf_counter() - started)


class _CocoWriter:
    """Fashionpedia and ModaNet: one COCO JSON per split."""

    def __init__(self, out: Path, fmt: str, categories: List[Dict], attributes: Optional[List[Dict]]):
        self.out, self.fmt, self.categories, self.attributes = out, fmt, categories, attributes
        self.docs = {split: {"images": [], "annotations": []} for split in ("train", "val")}
        self.next_annotation = 1

    def file_name(self, index: int) -> str:
        return f"{np.random.default_rng([index, 7]).bytes(8).hex()}.jpg"

    def image_id(self, index: int) -> int:
        return 100 + 7 * index if self.fmt == "fashionpedia" else index + 1

    def add(self, split: str, index: int, name: str, height: int, width: int, instances: List[Instance]) -> int:
        doc = self.docs[split]
        image_id = self.image_id(index)
        doc["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
        before = len(doc["annotations"])
        for inst in instances:
            entry = self.annotation(index, inst)
            if entry is not None:
                doc["annotations"].append(dict(entry, image_id=image_id))
        doc["annotations"] += [dict(entry, image_id=image_id) for entry in self.extra(index, height, width)]
        for entry in doc["annotations"][before:]:
            entry["id"] = self.next_annotation
            self.next_annotation += 1
        return len(doc["annotations"]) - before

    def annotation(self, index: int, inst: Instance) -> Optional[Dict]:
        number = self.next_annotation + index  # any fixed rule would do: mixes the kinds across images
        if self.fmt == "fashionpedia":
            as_rle = inst.category_id in (SLEEVE, NECKLINE) or number % 3 == 0
            segmentation = mask_to_coco(inst.mask) if as_rle else mask_polygons(inst.mask)
            if not segmentation:
                return None
            entry = {"category_id": inst.category_id, "segmentation": segmentation, "area": int(inst.mask.sum()),
                     "iscrowd": 0, "attribute_ids": list(inst.attribute_ids(2020))}
            if number % 4 != 1:  # some Fashionpedia annotations have no bbox
                entry["bbox"] = _mask_box(inst.mask)
            return entry
        category = MODANET_ID.get(inst.category_id)
        polygons = mask_polygons(inst.mask) if category else []
        if not polygons:
            return None
        if index % 3 == 1 and len(polygons) == 1:
            x, y = polygons[0][:2]
            polygons.append([x, y, x + 4.0, y])  # a degenerate extra part: 2 points
        return {"category_id": category, "segmentation": polygons, "area": float(inst.mask.sum()),
                "bbox": _mask_box(inst.mask), "iscrowd": 0}

    def extra(self, index: int, height: int, width: int) -> List[Dict]:
        """ModaNet's degenerate objects: a 2-point polygon, and 3 points on a line (no area)."""
        if self.fmt != "modanet":
            return []
        x, y = width / 3.0, height / 3.0
        entries = []
        if index % 3 == 0:
            entries.append({"category_id": 1, "segmentation": [[x, y, x + 6.0, y + 2.0]], "area": 0.0,
                            "bbox": [x, y, 6.0, 2.0], "iscrowd": 0})
        if index % 4 == 2:
            entries.append({"category_id": 2, "segmentation": [[x, y, x + 10.0, y, x + 20.0, y]], "area": 0.0,
                            "bbox": [x, y, 20.0, 0.0], "iscrowd": 0})
        return entries

    def finish(self, num_train: int, num_val: int) -> None:
        for split, doc in self.docs.items():
            document = {"info": {"description": f"gluon_fashion synthetic sample in the {self.fmt} format",
                                 "year": 2020 if self.fmt == "fashionpedia" else 2018},
                        "images": doc["images"], "annotations": doc["annotations"], "categories": self.categories}
            if self.attributes is not None:
                document["attributes"] = self.attributes
            atomic_write_json(format_sample_paths(self.out, self.fmt, split)[1], document)


class _DeepFashion2Writer:
    """One JSON per image (``item1``, ``item2``, ...), no image size in it, as DeepFashion2."""

    def __init__(self, out: Path):
        self.out = out

    def file_name(self, index: int) -> str:
        return f"{index + 1:06d}.jpg"

    def add(self, split: str, index: int, name: str, height: int, width: int, instances: List[Instance]) -> int:
        names = {c["id"]: c["name"] for c in DEEPFASHION2_CATEGORIES}
        document: Dict = {"source": "user" if index % 2 else "shop", "pair_id": index // 2 + 1}
        for inst in instances:
            category = DEEPFASHION2_ID.get(inst.category_id)
            polygons = mask_polygons(inst.mask) if category else []
            if not polygons:
                continue
            x, y, w, h = _mask_box(inst.mask)
            document[f"item{len(document) - 1}"] = {
                "category_id": category, "category_name": names[category], "style": 0,
                "bounding_box": [int(x), int(y), int(x + w), int(y + h)], "segmentation": polygons,
                "landmarks": [], "scale": 2, "occlusion": 1, "zoom_in": 1, "viewpoint": 2}
        annos = format_sample_paths(self.out, "deepfashion2", split)[1]
        atomic_write_json(annos / f"{index + 1:06d}.json", document)
        return len(document) - 2

    def finish(self, num_train: int, num_val: int) -> None:
        pass


class _LabelMapWriter:
    """``images/``, ``labels/`` (PNG, pixel = class index), ``classes.json``, ``splits.json``."""

    def __init__(self, out: Path):
        self.out = out
        self.splits: Dict[str, List[str]] = {"train": [], "val": []}

    def file_name(self, index: int) -> str:
        return f"img_{index:05d}.jpg"

    def add(self, split: str, index: int, name: str, height: int, width: int, instances: List[Instance]) -> int:
        label = np.zeros((height, width), dtype=np.uint8)
        painted = [inst for inst in instances if inst.category_id in LABELMAP_VALUE]
        for inst in sorted(painted, key=lambda inst: -int(inst.mask.sum())):  # smaller objects on top
            label[inst.mask] = LABELMAP_VALUE[inst.category_id]
        # Where two classes meet is left unlabelled, as Pascal VOC's label maps do (1 pixel either side).
        kernel = np.ones((3, 3), np.uint8)
        label[cv2.dilate(label, kernel) != cv2.erode(label, kernel)] = LABELMAP_IGNORE
        ok, data = cv2.imencode(".png", label)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        stem = Path(name).stem
        atomic_write_bytes(self.out / "labels" / f"{stem}.png", data.tobytes())
        self.splits[split].append(stem)
        return len(painted)

    def finish(self, num_train: int, num_val: int) -> None:
        atomic_write_json(self.out / "classes.json", {"names": list(LABELMAP_CLASSES),
                                                      "colors": [list(c) for c in LABELMAP_COLORS],
                                                      "ignore_value": LABELMAP_IGNORE}, indent=1)
        atomic_write_json(self.out / "splits.json", self.splits, indent=1)


def _fashionpedia_writer(out: Path) -> _CocoWriter:
    attributes = [dict(a) for a in ATTRIBUTES_2020]
    categories = [{k: c[k] for k in ("id", "name", "supercategory", "level")} for c in label_descriptions()["categories"]]
    return _CocoWriter(out, "fashionpedia", categories, attributes)


_FORMAT_WRITERS = {
    "fashionpedia": _fashionpedia_writer,
    "modanet": lambda out: _CocoWriter(out, "modanet", [dict(c) for c in MODANET_CATEGORIES], None),
    "deepfashion2": _DeepFashion2Writer,
    "labelmap": _LabelMapWriter,
}
