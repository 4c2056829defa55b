"""MedSAM2 preprocessing: intensity normalisation to uint8 and per-slice model input.

Pure numpy / PIL; no torch. Follows the MedSAM2 / MedSAM v1 pipeline (see ``docs/sam.md``):

* **MRI**: ``lo, hi`` = 0.5th / 99.5th percentile of the voxels > 0; clip the whole volume to
  ``[lo, hi]``; min-max scale the clipped volume to 0-255; voxels that were 0 stay 0; cast to
  ``uint8`` by truncation (``np.uint8(x)``, as MedSAM does).
* **CT**: clip to ``[WL - WW/2, WL + WW/2]``; min-max scale the clipped volume to 0-255; uint8.
* **Model input**: each uint8 slice -> PIL RGB -> square ``resize((S, S))`` with PIL's default
  (bicubic) filter -> ``/255`` -> ImageNet mean/std. The square resize distorts non-square slices
  exactly as MedSAM2 does.

Axis convention: the functions here work on whatever array they get; the segmenter passes slices
already in model orientation (rows = Y, columns = X).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

#: CT window presets as (window width WW, window level WL) in HU (MedSAMSlicer presets).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (400.0, 40.0),  # abdominal soft tissue, W400/L40
    "soft_tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "brain": (80.0, 40.0),
    "mediastinum": (350.0, 50.0),
    "bone": (1800.0, 400.0),
}


def _minmax_to_uint8(clipped: np.ndarray) -> np.ndarray:
    lo = float(clipped.min())
    hi = float(clipped.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(clipped.shape, dtype=np.uint8)
    scaled = (clipped - lo) / (hi - lo) * 255.0
    # MedSAM casts with np.uint8(...) i.e. truncation; clip guards float round-off above 255.
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8)


def normalize_mri(
    array: np.ndarray,
    lower_percentile: float = 0.5,
    upper_percentile: float = 99.5,
    keep_zero: bool = True,
) -> np.ndarray:
    """MedSAM MRI normalisation of a whole volume to uint8 0-255.

    Percentiles are taken over the voxels > 0 (all finite voxels if there are none).
    ``keep_zero`` sets voxels that were exactly 0 back to 0 (MedSAM v1 ``pre_CT_MR.py``).
    """
    a = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0)
    positive = a[a > 0]
    ref = positive if positive.size else a[finite] if finite.any() else a.ravel()
    if ref.size == 0:
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = np.percentile(ref, [lower_percentile, upper_percentile])
    out = _minmax_to_uint8(np.clip(a, lo, hi))
    if keep_zero:
        out[a == 0] = 0
    return out


def ct_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """Resolve a preset name or a ``(WW, WL)`` pair to ``(lo, hi)`` HU bounds."""
    if isinstance(window, str):
        key = window.lower().replace("-", "_").replace(" ", "_")
        if key not in CT_WINDOWS:
            raise ValueError(
                f"unknown CT window preset {window!r}; choose one of {sorted(CT_WINDOWS)} "
                "or pass (width, level)"
            )
        ww, wl = CT_WINDOWS[key]
    else:
        ww, wl = (float(v) for v in window)
    if ww <= 0:
        raise ValueError(f"CT window width must be > 0, got {ww}")
    return wl - ww / 2.0, wl + ww / 2.0


def normalize_ct(array: np.ndarray, window: str | tuple[float, float] = "abdomen") -> np.ndarray:
    """MedSAM2 CT normalisation: clip to the window, min-max scale the clipped volume, uint8."""
    lo, hi = ct_window(window)
    a = np.asarray(array, dtype=np.float64)
    a = np.where(np.isfinite(a), a, lo)
    return _minmax_to_uint8(np.clip(a, lo, hi))


def normalize_volume(
    array: np.ndarray,
    modality: str = "mri",
    window: str | tuple[float, float] | None = None,
) -> np.ndarray:
    """Normalise a volume to uint8 with the MedSAM2 recipe for ``modality`` ('mri' or 'ct').

    A uint8 input with ``modality='none'`` is passed through unchanged (already normalised).
    """
    m = modality.lower()
    if m in ("mri", "mr"):
        return normalize_mri(array)
    if m == "ct":
        return normalize_ct(array, window if window is not None else "abdomen")
    if m in ("none", "uint8"):
        a = np.asarray(array)
        if a.dtype != np.uint8:
            raise ValueError("modality='none' needs a uint8 volume that is already 0-255")
        return a
    raise ValueError(f"unknown modality {modality!r}; use 'mri', 'ct' or 'none'")


def slice_to_model_input(slice_u8: np.ndarray, image_size: int) -> np.ndarray:
    """One uint8 2D slice (H, W) -> float32 (3, S, S), ImageNet-normalised, as MedSAM2.

    MedSAM2 converts to PIL RGB and resizes with PIL's default filter (bicubic). The three
    channels are identical, so resizing the single band is byte-identical and 3x cheaper.
    """
    from PIL import Image

    s = np.asarray(slice_u8)
    if s.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {s.shape}")
    if s.dtype != np.uint8:
        raise ValueError(f"expected a uint8 slice (normalise first), got {s.dtype}")
    img = Image.fromarray(np.ascontiguousarray(s), mode=None)
    if s.shape != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
    g = np.asarray(img, dtype=np.float32) / 255.0
    rgb = np.repeat(g[None], 3, axis=0)
    rgb -= IMAGENET_MEAN[:, None, None]
    rgb /= IMAGENET_STD[:, None, None]
    return rgb


def stack_to_model_input(slices_u8: np.ndarray | Sequence[np.ndarray], image_size: int) -> np.ndarray:
    """(D, H, W) uint8 -> (D, 3, S, S) float32 model input (the MedSAM2 ``img_resized`` tensor)."""
    return np.stack([slice_to_model_input(s, image_size) for s in slices_u8], axis=0)
