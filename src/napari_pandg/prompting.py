"""napari prompt layers <-> SAM prompts, as plain numpy (no Qt, no napari import).

The SAM engine (:mod:`napari_pandg.sam`) works on an (X, Y, Z) array whose slice ``z`` is
shown to the model with rows = Y and columns = X. In napari we hand it the displayed layer
array ``data[s, a, r]`` transposed to ``(r, a, s)``: slices are napari's first (axial) axis,
rows its second axis and columns its third, exactly what the user sees on screen (the
radiological flip is only a camera setting). Prompt coordinates are taken in the image
layer's *data* coordinates (the widget converts from each prompt layer's world coordinates
first), so anisotropic spacing and translations are respected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

POSITIVE, NEGATIVE = "positive", "negative"


def to_sam(array_sar: np.ndarray) -> np.ndarray:
    """napari (S, A, R) layer array -> the engine's (X, Y, Z) view (no copy)."""
    return np.asarray(array_sar).transpose(2, 1, 0)


def from_sam(array_xyz: np.ndarray) -> np.ndarray:
    """The engine's (X, Y, Z) array -> napari (S, A, R) (no copy)."""
    return np.asarray(array_xyz).transpose(2, 1, 0)


def slice_to_napari(mask_xy: np.ndarray) -> np.ndarray:
    """One engine slice (X, Y) -> the napari slice (A, R)."""
    return np.asarray(mask_xy).T


def slice_from_napari(mask_ar: np.ndarray) -> np.ndarray:
    """One napari slice (A, R) -> the engine slice (X, Y)."""
    return np.asarray(mask_ar).T


def _sign(label: object) -> int:
    if isinstance(label, str):
        if label.lower() in (POSITIVE, "pos", "+", "1", "true"):
            return 1
        if label.lower() in (NEGATIVE, "neg", "-", "-1", "0", "false"):
            return -1
        raise ValueError(f"unknown point label {label!r}: use 'positive' or 'negative'")
    return 1 if int(label) > 0 else -1  # type: ignore[call-overload]


def points_by_slice(coords_sar: np.ndarray, labels: Sequence[object]) -> dict[int, list[tuple[float, float, int]]]:
    """Point prompts (N, 3) in image data coordinates -> ``{z: [(x, y, +1/-1), ...]}``."""
    coords = np.asarray(coords_sar, dtype=float).reshape(-1, 3)
    if len(labels) != len(coords):
        raise ValueError(f"{len(coords)} points but {len(labels)} labels")
    out: dict[int, list[tuple[float, float, int]]] = {}
    for (s, a, r), lab in zip(coords, labels, strict=True):
        out.setdefault(int(round(s)), []).append((float(r), float(a), _sign(lab)))
    return out


def boxes_by_slice(shapes_sar: Iterable[np.ndarray]) -> dict[int, tuple[float, float, float, float]]:
    """Rectangles (each (4, 3) vertices in image data coordinates) -> ``{z: (x0, y0, x1, y1)}``.

    A rectangle must lie in one axial slice; the last one drawn on a slice wins.
    """
    out: dict[int, tuple[float, float, float, float]] = {}
    for verts in shapes_sar:
        v = np.asarray(verts, dtype=float).reshape(-1, 3)
        zs = np.round(v[:, 0])
        if zs.min() != zs.max():
            raise ValueError("a box must be drawn in one axial slice (its corners span several slices)")
        a0, a1 = v[:, 1].min(), v[:, 1].max()
        r0, r1 = v[:, 2].min(), v[:, 2].max()
        out[int(zs[0])] = (float(r0), float(a0), float(r1), float(a1))
    return out
