"""Class tables of Kaggle iMaterialist (Fashion) 2019: the one place that names categories and attributes.

The 46 category names and 92 attribute names are those of the competition's label_descriptions.json; the
2020 competition (Fashionpedia's taxonomy) kept the categories and widened the attributes to 294 with ids
0-340, not consecutive (:data:`ATTRIBUTES_2020`): its first 92 are the 2019 list, then come silhouettes,
lengths, necklines, openings, materials, finishings and patterns.
The ``level`` values are our own grouping (1 = whole garment or accessory, 2 = garment part, closure or
decoration); the converter always takes categories from the user's label_descriptions.json, so they only
matter for the bundled sample dataset. :class:`ClassSet` is a choice of categories to train on
(``--classes``), shared by both tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import UserError

_CATEGORY_TABLE = [
    # (name, supercategory)
    ("shirt, blouse", "upperbody"),
    ("top, t-shirt, sweatshirt", "upperbody"),
    ("sweater", "upperbody"),
    ("cardigan", "upperbody"),
    ("jacket", "upperbody"),
    ("vest", "upperbody"),
    ("pants", "lowerbody"),
    ("shorts", "lowerbody"),
    ("skirt", "lowerbody"),
    ("coat", "wholebody"),
    ("dress", "wholebody"),
    ("jumpsuit", "wholebody"),
    ("cape", "wholebody"),
    ("glasses", "head"),
    ("hat", "head"),
    ("headband, head covering, hair accessory", "head"),
    ("tie", "neck"),
    ("glove", "arms and hands"),
    ("watch", "arms and hands"),
    ("belt", "waist"),
    ("leg warmer", "legs and feet"),
    ("tights, stockings", "legs and feet"),
    ("sock", "legs and feet"),
    ("shoe", "legs and feet"),
    ("bag, wallet", "others"),
    ("scarf", "others"),
    ("umbrella", "others"),
    ("hood", "garment parts"),
    ("collar", "garment parts"),
    ("lapel", "garment parts"),
    ("epaulette", "garment parts"),
    ("sleeve", "garment parts"),
    ("pocket", "garment parts"),
    ("neckline", "garment parts"),
    ("buckle", "closures"),
    ("zipper", "closures"),
    ("applique", "decorations"),
    ("bead", "decorations"),
    ("bow", "decorations"),
    ("flower", "decorations"),
    ("fringe", "decorations"),
    ("ribbon", "decorations"),
    ("rivet", "decorations"),
    ("ruffle", "decorations"),
    ("sequin", "decorations"),
    ("tassel", "decorations"),
]

_ATTRIBUTE_NAMES = [
    "classic (t-shirt)", "polo (shirt)", "undershirt", "henley (shirt)", "ringer (t-shirt)",
    "raglan (t-shirt)", "rugby (shirt)", "sailor (shirt)", "crop (top)", "halter (top)", "camisole",
    "tank (top)", "peasant (top)", "tube (top)", "tunic (top)", "smock (top)", "hoodie", "blazer",
    "pea (jacket)", "puffer (jacket)", "biker (jacket)", "trucker (jacket)", "bomber (jacket)", "anorak",
    "safari (jacket)", "mao (jacket)", "nehru (jacket)", "norfolk (jacket)", "classic military (jacket)",
    "track (jacket)", "windbreaker", "chanel (jacket)", "bolero", "tuxedo (jacket)", "varsity (jacket)",
    "crop (jacket)", "jeans", "sweatpants", "leggings", "hip-huggers (pants)", "cargo (pants)", "culottes",
    "capri (pants)", "harem (pants)", "sailor (pants)", "jodhpur", "peg (pants)", "camo (pants)",
    "track (pants)", "crop (pants)", "short (shorts)", "booty (shorts)", "bermuda (shorts)",
    "cargo (shorts)", "trunks", "boardshorts", "skort", "roll-up (shorts)", "tie-up (shorts)",
    "culotte (shorts)", "lounge (shorts)", "bloomers", "tutu (skirt)", "kilt", "wrap (skirt)",
    "skater (skirt)", "cargo (skirt)", "hobble (skirt)", "sheath (skirt)", "ball gown (skirt)",
    "gypsy (skirt)", "rah-rah (skirt)", "prairie (skirt)", "flamenco (skirt)", "accordion (skirt)",
    "sarong (skirt)", "tulip (skirt)", "dirndl (skirt)", "godet (skirt)", "blanket (coat)", "parka",
    "trench (coat)", "pea (coat)", "shearling (coat)", "teddy bear (coat)", "puffer (coat)",
    "duster (coat)", "raincoat", "kimono", "robe", "dress (coat )", "duffle (coat)",
]

# The 2020 attributes as (first id, supercategory, names with consecutive ids); a name prefixed "^" is a
# level-2 attribute (an animal pattern, a kind of leather) under the one before the run.
_ATTRIBUTE_RUNS_2020 = [
    (0, "nickname", tuple(_ATTRIBUTE_NAMES) + (
        "wrap (coat)", "military (coat)", "swing (coat)", "halter (dress)", "wrap (dress)", "chemise (dress)",
        "slip (dress)", "cheongsams", "jumper (dress)", "shift (dress)", "sheath (dress)", "shirt (dress)",
        "sundress", "kaftan", "bodycon (dress)", "nightgown", "gown", "sweater (dress)", "tea (dress)",
        "blouson (dress)", "tunic (dress)", "skater (dress)")),
    (114, "silhouette", (
        "asymmetrical", "symmetrical", "peplum", "circle", "flare", "fit and flare", "trumpet", "mermaid",
        "balloon", "bell", "bell bottom", "bootcut", "peg", "pencil", "straight", "a-line", "tent", "baggy",
        "wide leg", "high low", "curved (fit)", "tight (fit)", "regular (fit)", "loose (fit)", "oversized")),
    (139, "waistline", (
        "empire waistline", "dropped waistline", "high waist", "normal waist", "low waist", "basque (wasitline)",
        "no waistline")),
    (146, "length", (
        "above-the-hip (length)", "hip (length)", "micro (length)", "mini (length)", "above-the-knee (length)",
        "knee (length)", "below the knee (length)", "midi", "maxi (length)", "floor (length)", "sleeveless",
        "short (length)", "elbow-length", "three quarter (length)", "wrist-length")),
    (161, "nickname", (
        "asymmetric (collar)", "regular (collar)", "shirt (collar)", "polo (collar)", "chelsea (collar)",
        "banded (collar)", "mandarin (collar)", "peter pan (collar)", "bow (collar)", "stand-away (collar)",
        "jabot (collar)", "sailor (collar)", "oversized (collar)", "notched (lapel)", "peak (lapel)",
        "shawl (lapel)", "napoleon (lapel)", "oversized (lapel)")),
    (179, "neckline type", (
        "collarless", "asymmetric (neckline)", "crew (neck)", "round (neck)", "v-neck", "surplice (neck)",
        "oval (neck)", "u-neck", "sweetheart (neckline)", "queen anne (neck)", "boat (neck)", "scoop (neck)",
        "square (neckline)", "plunging (neckline)", "keyhole (neck)", "halter (neck)", "crossover (neck)",
        "choker (neck)", "high (neck)", "turtle (neck)", "cowl (neck)", "straight across (neck)",
        "illusion (neck)", "off-the-shoulder", "one shoulder")),
    (204, "nickname", (
        "set-in sleeve", "dropped-shoulder sleeve", "raglan (sleeve)", "cap (sleeve)", "tulip (sleeve)",
        "puff (sleeve)", "bell (sleeve)", "circular flounce (sleeve)", "poet (sleeve)",
        "dolman (sleeve), batwing (sleeve)", "bishop (sleeve)", "leg of mutton (sleeve)", "kimono (sleeve)",
        "cargo (pocket)", "patch (pocket)", "welt (pocket)", "kangaroo (pocket)", "seam (pocket)",
        "slash (pocket)", "curved (pocket)", "flap (pocket)")),
    (225, "opening type", (
        "single breasted", "double breasted", "lace up", "wrapping", "zip-up", "fly (opening)",
        "chained (opening)", "buckled (opening)", "toggled (opening)", "no opening")),
    (281, "non-textile material type", ("plastic", "rubber", "metal")),
    (285, "non-textile material type", (
        "feather", "gem", "bone", "ivory", "fur", "^suede", "^shearling", "^crocodile", "^snakeskin", "wood",
        "no non-textile material")),
    (296, "textile finishing, manufacturing techniques", (
        "burnout", "distressed", "washed", "embossed", "frayed", "printed", "ruched", "quilted", "pleat",
        "gathering", "smocking", "tiered", "cutout", "slit", "perforated", "lining", "applique(a)", "bead(a)",
        "rivet(a)", "sequin(a)", "no special manufacturing technique")),
    (317, "textile pattern", (
        "plain (pattern)", "abstract", "cartoon", "letters, numbers", "camouflage", "check", "dot", "fair isle",
        "floral", "geometric", "paisley", "stripe", "houndstooth (pattern)", "herringbone (pattern)", "chevron",
        "argyle", "^leopard", "^snakeskin (pattern)", "^cheetah", "^peacock", "^zebra", "^giraffe",
        "toile de jouy", "plant")),
]

NUM_CATEGORIES = 46
NUM_ATTRIBUTES = 92

CATEGORIES: List[Dict] = [
    {"id": i, "name": name, "supercategory": sup, "level": 1 if i <= 26 else 2}
    for i, (name, sup) in enumerate(_CATEGORY_TABLE)
]
ATTRIBUTES: List[Dict] = [
    {"id": i, "name": name, "supercategory": "nickname", "level": 1}
    for i, name in enumerate(_ATTRIBUTE_NAMES)
]
#: The 2020 competition's (and Fashionpedia's) 294 attributes, by id.
ATTRIBUTES_2020: List[Dict] = [
    {"id": start + k, "name": name.lstrip("^"), "supercategory": sup, "level": 2 if name.startswith("^") else 1}
    for start, sup, names in _ATTRIBUTE_RUNS_2020 for k, name in enumerate(names)
]
NUM_ATTRIBUTES_2020 = 294
CATEGORY_NAMES: List[str] = [c["name"] for c in CATEGORIES]

#: The main apparel categories (shirt ... cape), the classes of the semantic segmentation task.
MAIN_APPAREL_IDS = tuple(range(13))

#: Fashion category id -> COCO class name whose pretrained detector weights are a sound start.
COCO_CLASS_FOR_CATEGORY: Dict[int, str] = {
    16: "tie",
    24: "handbag",
    26: "umbrella",
}

assert len(CATEGORIES) == NUM_CATEGORIES and len(ATTRIBUTES) == NUM_ATTRIBUTES
assert len(ATTRIBUTES_2020) == NUM_ATTRIBUTES_2020 and len({a["id"] for a in ATTRIBUTES_2020}) == NUM_ATTRIBUTES_2020


def label_descriptions(year: int = 2019) -> Dict:
    """The label_descriptions.json document of the 2019 or 2020 competition (info, categories, attributes)."""
    if year not in (2019, 2020):
        raise ValueError(f"no label descriptions for year {year}")
    fgvc = 6 if year == 2019 else 7
    return {
        "info": {"year": year, "version": "1.0",
                 "description": f"The {year} FGVC^{fgvc} iMaterialist Competition - Fashion track"},
        "categories": [dict(c) for c in CATEGORIES],
        "attributes": [dict(a) for a in (ATTRIBUTES if year == 2019 else ATTRIBUTES_2020)],
    }


def class_id_string(category_id: int, attribute_ids: Sequence[int] = ()) -> str:
    """The 2019 ClassId field: the category id, then attribute ids joined by '_' (e.g. '6_28_36')."""
    return "_".join(str(v) for v in (category_id, *sorted(attribute_ids)))


def short_name(name: str) -> str:
    """First word-group of a category name, handy for plot labels ('top, t-shirt, sweatshirt' -> 'top')."""
    return name.split(",")[0].strip()


@dataclass(frozen=True)
class ClassSet:
    """Which categories are labelled, and how: label ``k + 1`` for the k-th id, or 1 for all (binary).

    ``names``: the name of every label value, background first (None: iMaterialist's category names), for
    datasets that bring their own classes (a label-map folder's ``classes.json``); ``colors``: an RGB colour per
    label value for overlays (None: the project's palette). Both are kept in checkpoint metadata.
    """

    category_ids: Tuple[int, ...] = MAIN_APPAREL_IDS
    binary: bool = False
    names: Optional[Tuple[str, ...]] = None
    colors: Optional[Tuple[Tuple[int, int, int], ...]] = None

    @property
    def num_classes(self) -> int:
        """Number of output classes, background included."""
        return 2 if self.binary else len(self.category_ids) + 1

    @property
    def class_names(self) -> List[str]:
        """Name of each label value: 'background' first."""
        if self.names is not None:
            return list(self.names)
        if self.binary:
            return ["background", "garment"]
        return ["background"] + [CATEGORY_NAMES[i] for i in self.category_ids]

    def label_of(self, category_id: int) -> int:
        """Label value for a Kaggle category id (0 = not in the set: not painted)."""
        try:
            index = self.category_ids.index(int(category_id))
        except ValueError:
            return 0
        return 1 if self.binary else index + 1

    def to_dict(self) -> Dict:
        """JSON-ready description (stored in checkpoint metadata)."""
        data = {"category_ids": list(self.category_ids), "binary": self.binary, "names": self.class_names}
        if self.names is not None:
            data["own_names"] = True
        if self.colors is not None:
            data["colors"] = [list(c) for c in self.colors]
        return data

    @classmethod
    def from_dict(cls, data: Dict) -> "ClassSet":
        """Inverse of ``to_dict``."""
        names = tuple(data["names"]) if data.get("own_names") else None
        colors = tuple(tuple(int(v) for v in c) for c in data["colors"]) if data.get("colors") else None
        return cls(tuple(int(i) for i in data["category_ids"]), bool(data.get("binary", False)), names, colors)


def parse_class_set(spec: str = "main", binary: bool = False) -> ClassSet:
    """``--classes`` value -> ClassSet: 'main' (ids 0-12), 'all' (0-45) or ids/ranges such as '0,1,6-8'."""
    text = (spec or "main").strip().lower()
    if text == "main":
        return ClassSet(MAIN_APPAREL_IDS, binary)
    if text == "all":
        return ClassSet(tuple(range(NUM_CATEGORIES)), binary)
    ids: List[int] = []
    for part in text.split(","):
        part = part.strip()
        bounds = part.split("-")
        if not part or len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
            raise UserError(f"--classes {spec!r}: {part!r} is not a category id or range (use e.g. '0,1,6-8', "
                            "'main' or 'all')")
        low, high = int(bounds[0]), int(bounds[-1])
        if low > high:
            raise UserError(f"--classes {spec!r}: range {part!r} runs backwards")
        ids.extend(range(low, high + 1))
    bad = [i for i in ids if i >= NUM_CATEGORIES]
    if bad:
        raise UserError(f"--classes {spec!r}: category id {bad[0]} does not exist (ids are 0..{NUM_CATEGORIES - 1})")
    if len(set(ids)) != len(ids):
        raise UserError(f"--classes {spec!r}: a category id is listed twice")
    return ClassSet(tuple(ids), binary)


# ------------------------------------------------------------------------------ other datasets' classes
#: ModaNet's 13 categories (ids 1-13), as in its ``modanet2018_instances_*.json``.
MODANET_CATEGORIES: List[Dict] = [
    {"id": i, "name": name, "supercategory": "fashion"}
    for i, name in enumerate(["bag", "belt", "boots", "footwear", "outer", "dress", "sunglasses", "pants", "top",
                              "shorts", "skirt", "headwear", "scarf/tie"], start=1)
]

#: DeepFashion2's 13 categories (ids 1-13), as the ``category_name`` of its per-image JSON items.
DEEPFASHION2_CATEGORIES: List[Dict] = [
    {"id": i, "name": name, "supercategory": "clothes"}
    for i, name in enumerate(["short sleeve top", "long sleeve top", "short sleeve outwear", "long sleeve outwear",
                              "vest", "sling", "shorts", "trousers", "skirt", "short sleeve dress",
                              "long sleeve dress", "vest dress", "sling dress"], start=1)
]


def has_imaterialist_classes(categories: Sequence[Dict]) -> bool:
    """Whether a dataset's ``categories`` are iMaterialist's (each id 0-45 with its iMaterialist name), so that
    ``--classes main``/``all`` and the category ids keep their iMaterialist meaning."""
    def same(entry: Dict) -> bool:
        cid = entry.get("id")
        return (isinstance(cid, int) and 0 <= cid < NUM_CATEGORIES
                and str(entry.get("name", "")).strip().lower() == CATEGORY_NAMES[cid])
    return bool(categories) and all(same(c) for c in categories)


def class_table_for(categories: Sequence[Dict], spec: str = "all") -> List[Dict]:
    """``[{"id", "name"}]`` of the classes ``--classes spec`` selects from a dataset's ``categories``.

    iMaterialist's categories (:func:`has_imaterialist_classes`): as :func:`parse_class_set`. Any other dataset
    (ModaNet, DeepFashion2, a user's own): 'all' and 'main' select every category of the data, in id order;
    ids/ranges select those, each of which must be a category of the data. Names come from the data."""
    names = {int(c["id"]): str(c["name"]) for c in categories}
    if has_imaterialist_classes(categories):
        ids = parse_class_set(spec).category_ids
        return [{"id": i, "name": names.get(i, CATEGORY_NAMES[i])} for i in ids]
    text = (spec or "all").strip().lower()
    if text in ("all", "main"):
        return [{"id": i, "name": names[i]} for i in sorted(names)]
    ids: List[int] = []
    for part in text.split(","):
        bounds = part.strip().split("-")
        if not part.strip() or len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
            raise UserError(f"--classes {spec!r}: {part!r} is not a category id or range (use e.g. '1,3-5' or 'all')")
        ids.extend(range(int(bounds[0]), int(bounds[-1]) + 1))
    unknown = [i for i in ids if i not in names]
    if unknown:
        raise UserError(f"--classes {spec!r}: category id {unknown[0]} is not in the data (its ids: "
                        f"{', '.join(map(str, sorted(names)))})")
    if not ids or len(set(ids)) != len(ids):
        raise UserError(f"--classes {spec!r}: a category id is listed twice, or none is")
    return [{"id": i, "name": names[i]} for i in ids]


def class_set_for(categories: Sequence[Dict], spec: str = "main", binary: bool = False) -> ClassSet:
    """The semantic ClassSet ``--classes spec`` selects from a dataset's ``categories`` (see :func:`class_table_for`);
    on iMaterialist's categories exactly :func:`parse_class_set`'s."""
    if has_imaterialist_classes(categories):
        return parse_class_set(spec, binary)
    table = class_table_for(categories, spec)
    names = ("background", "garment") if binary else ("background",) + tuple(c["name"] for c in table)
    return ClassSet(tuple(c["id"] for c in table), binary, names)
