"""Label ids used everywhere in napari-pandg.

AMOS 2022 ids (pancreas = 10) so that models trained on the phantom evaluate directly on
AMOS / TotalSegmentator-MRI. Ids >= 16 are phantom-only structures.
"""

from __future__ import annotations

PANCREAS = 10

#: id -> (name, RGB colour 0-255)
LABELS: dict[int, tuple[str, tuple[int, int, int]]] = {
    1: ("spleen", (157, 108, 162)),
    2: ("right_kidney", (185, 102, 83)),
    3: ("left_kidney", (205, 122, 103)),
    4: ("gallbladder", (139, 150, 98)),
    5: ("esophagus", (211, 171, 143)),
    6: ("liver", (221, 130, 101)),
    7: ("stomach", (216, 132, 105)),
    8: ("aorta", (224, 40, 40)),
    9: ("ivc", (0, 110, 220)),
    10: ("pancreas", (255, 220, 0)),
    11: ("right_adrenal", (220, 90, 200)),
    12: ("left_adrenal", (200, 70, 220)),
    13: ("duodenum", (255, 150, 60)),
    14: ("bladder", (220, 200, 100)),
    15: ("prostate_uterus", (230, 160, 180)),
    16: ("portal_splenic_vein", (0, 170, 255)),
    17: ("bone", (241, 214, 145)),  # vertebrae (cortex + marrow), discs, ribs
    18: ("spinal_canal", (120, 200, 255)),
    19: ("muscle", (192, 104, 88)),
    20: ("subcutaneous_fat", (230, 220, 170)),
    21: ("visceral_fat", (240, 235, 190)),
    22: ("bowel", (190, 140, 100)),
    23: ("mesenteric_artery", (255, 90, 90)),
}

NAMES: dict[int, str] = {k: v[0] for k, v in LABELS.items()}
IDS: dict[str, int] = {v[0]: k for k, v in LABELS.items()}

#: AMOS abdominal organ ids (1-15): what a real AMOS label map may contain.
AMOS_IDS = frozenset(range(0, 16))


def colour_dict(opacity: float = 1.0) -> dict[int | None, tuple[float, float, float, float]]:
    """A ``DirectLabelColormap`` colour dict: fixed colour per class, background clear."""
    out: dict[int | None, tuple[float, float, float, float]] = {
        0: (0.0, 0.0, 0.0, 0.0),
        None: (0.6, 0.6, 0.6, opacity),
    }
    for k, (_, rgb) in LABELS.items():
        out[k] = (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255, opacity)
    return out
