"""Preprocessing shared by training and inference (one implementation, so they agree).

* :func:`normalize_intensity`: ``percentile_zscore`` (default; clip to the 0.5-99.5th
  percentiles of the foreground, then z-score with the foreground mean/std),
  ``minmax`` (MaskGen: [0, 1] over the whole volume) or ``none``. Foreground = voxels above
  ``p2 + threshold * (p98 - p2)`` (a robust 10 % threshold that drops air/background
  noise); if that leaves < 1 % of the volume, all voxels are used.
* :func:`to_model_grid`: reorient (MONAI ``Orientation``) and resample (MONAI ``Spacing``)
  an array given with its voxel->RAS affine; returns the new array and affine.
* :func:`resample_nearest`: labels from one grid to another (nearest neighbour), exact
  and fast when the grids are axis-aligned with each other (the usual case: the model grid
  comes from the input grid by flips, permutations and scaling), MONAI
  ``SpatialResample`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from napari_pandg.models.errors import ModelError

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def check_finite(array: np.ndarray, what: str = "image") -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        n = int(bad.sum())
        raise ModelError(
            f"{what} contains {n} NaN/inf voxel(s) ({100 * n / array.size:.2g} % of the volume); "
            "fix or mask the image before segmenting"
        )


def foreground_mask(array: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    p2, p98 = np.percentile(array, [2.0, 98.0])
    fg = array > p2 + threshold * (p98 - p2)
    if fg.sum() < max(10, 0.01 * array.size):
        return np.ones(array.shape, dtype=bool)
    return fg


def normalize_intensity(array: np.ndarray, spec: Mapping[str, Any] | None, what: str = "image") -> np.ndarray:
    """Normalise an image as the model was trained (see module doc); returns float32."""
    arr = np.asarray(array, dtype=np.float32)
    check_finite(arr, what)
    spec = dict(spec or {"method": "percentile_zscore"})
    method = spec.get("method", "percentile_zscore")
    if method == "none":
        return arr.copy()
    if method == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr - lo) / (hi - lo + 1e-6)).astype(np.float32)
    if method == "percentile_zscore":
        fg = foreground_mask(arr, float(spec.get("threshold", 0.1)))
        vals = arr[fg]
        lo, hi = np.percentile(vals, [float(spec.get("lower", 0.5)), float(spec.get("upper", 99.5))])
        clipped = np.clip(arr, lo, hi)
        v = clipped[fg].astype(np.float64)
        mean, std = float(v.mean()), float(v.std())
        return ((clipped - mean) / max(std, 1e-8)).astype(np.float32)
    raise ModelError(f"unknown intensity normalisation {method!r} (percentile_zscore, minmax, none)")


def to_model_grid(
    array: np.ndarray,
    affine: np.ndarray,
    spacing: tuple[float, float, float],
    orientation: str = "RAS",
    mode: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to ``orientation`` and resample to ``spacing`` (mm).

    ``array`` is (X, Y, Z) or (C, X, Y, Z); the output keeps that layout. ``mode`` is
    ``"bilinear"`` for images, ``"nearest"`` for label maps.
    """
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    squeeze = array.ndim == 3
    a = array[None] if squeeze else array
    dtype = a.dtype
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    mt = MetaTensor(t, affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)))
    mt = Orientation(axcodes=orientation, labels=RAS_LABELS)(mt)
    mt = Spacing(
        pixdim=tuple(float(s) for s in spacing),
        mode=mode,
        padding_mode="border" if mode != "nearest" else "zeros",
        align_corners=True,
    )(mt)
    out_aff = np.asarray(mt.affine, dtype=np.float64)
    out = mt.as_tensor().numpy()
    if mode == "nearest":
        out = np.rint(out).astype(dtype if np.issubdtype(dtype, np.integer) else np.float32)
    else:
        out = out.astype(np.float32)
    return (out[0] if squeeze else out), out_aff


def _axis_aligned_indices(
    src_affine: np.ndarray, dst_affine: np.ndarray, src_shape: tuple[int, ...], dst_shape: tuple[int, ...]
) -> tuple[list[int], list[np.ndarray], list[np.ndarray]] | None:
    """For each dst axis: the src axis it runs along and the nearest src index per dst index."""
    m = np.linalg.inv(src_affine) @ dst_affine  # dst voxel -> src voxel
    r = m[:3, :3]
    perm: list[int] = []
    idx: list[np.ndarray] = []
    valid: list[np.ndarray] = []
    for d in range(3):
        col = r[:, d]
        s = int(np.argmax(np.abs(col)))
        others = np.delete(col, s)
        if np.abs(others).max(initial=0.0) > 1e-6 * max(abs(col[s]), 1e-12):
            return None
        if s in perm:
            return None
        perm.append(s)
        pos = col[s] * np.arange(dst_shape[d]) + m[s, 3]
        near = np.floor(pos + 0.5).astype(np.int64)
        ok = (near >= 0) & (near < src_shape[s])
        idx.append(np.clip(near, 0, src_shape[s] - 1))
        valid.append(ok)
    return perm, idx, valid


def resample_nearest(
    labels: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    fill: int = 0,
) -> np.ndarray:
    """Nearest-neighbour resampling of a 3D label array onto another grid (``fill`` outside)."""
    src_affine = np.asarray(src_affine, dtype=np.float64)
    dst_affine = np.asarray(dst_affine, dtype=np.float64)
    dst_shape = tuple(int(s) for s in dst_shape)
    fast = _axis_aligned_indices(src_affine, dst_affine, labels.shape, dst_shape)
    if fast is not None:
        perm, idx, valid = fast
        src = np.transpose(labels, perm)  # src axes in dst order
        out = src[np.ix_(idx[0], idx[1], idx[2])]
        inside = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
        if not inside.all():
            out = np.where(inside, out, np.asarray(fill, dtype=out.dtype))
        return np.ascontiguousarray(out)
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    mt = MetaTensor(torch.from_numpy(labels.astype(np.float32))[None], affine=torch.as_tensor(src_affine))
    res = SpatialResample(mode="nearest", padding_mode="zeros", align_corners=True)(
        mt, dst_affine=torch.as_tensor(dst_affine), spatial_size=dst_shape
    )
    out = np.rint(res.as_tensor().numpy()[0]).astype(labels.dtype)
    if fill:
        ones = MetaTensor(torch.ones((1, *labels.shape)), affine=torch.as_tensor(src_affine))
        cover = SpatialResample(mode="nearest", padding_mode="zeros", align_corners=True)(
            ones, dst_affine=torch.as_tensor(dst_affine), spatial_size=dst_shape
        )
        out[cover.as_tensor().numpy()[0] < 0.5] = fill
    return out
