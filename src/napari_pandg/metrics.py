"""Segmentation metrics: Dice, HD95 and NSD, spacing-aware, computed with MONAI.

Conventions (methods.md §6; PanSegNet reports Dice + HD95, the MedSAM family Dice + NSD):

* **Dice** as a 0-1 fraction (multiply by 100 for the MaskGen/PancreasDG "%" tables);
  computed with ``monai.metrics.compute_dice`` on one-hot masks, background excluded.
* **HD95** in mm on the label's own grid (the voxel spacing of the ground truth, i.e. the
  original spacing when predictions are written back onto the input grid):
  ``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=...)``, symmetric: the
  larger of the two directed 95th-percentile surface distances (MONAI's definition; medpy
  takes the 95th percentile of the pooled distances instead, which is <= this one).
* **NSD** (normalised surface Dice) at ``tolerance_mm`` (2 mm by default):
  ``monai.metrics.compute_surface_dice`` with the same spacing; the fraction of both
  surfaces lying within the tolerance of the other surface.
* **Empty masks** (MONAI returns NaN/inf there; we return finite, documented values and
  flag the case with ``empty_gt``/``empty_pred`` so a report can filter them):

  ============================  =====  ======================================  ===
  case                          Dice   HD95                                    NSD
  ============================  =====  ======================================  ===
  both empty                    1      0                                       1
  only one of them empty        0      diagonal of the volume extent in mm     0
  ============================  =====  ======================================  ===

  The diagonal is the largest distance possible inside the image, so a missed or
  hallucinated pancreas is the worst case rather than NaN (BraTS does the same with its
  373.13 mm diagonal). It keeps means finite; report medians or exclude flagged cases if
  this is not wanted.

:func:`segmentation_metrics` works on arrays; :func:`evaluate_volumes` on two
:class:`~napari_pandg.Volume` (same grid required); :func:`evaluate_manifest` on the
``predictions.csv`` written by :func:`napari_pandg.models.segment_files`, and
:func:`summarize` gives the center x sequence table.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from napari_pandg.labels import NAMES, PANCREAS
from napari_pandg.volume import Volume

DEFAULT_TOLERANCE_MM = 2.0


def _onehot(mask: np.ndarray):
    import torch

    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
    return torch.stack([~m, m]).unsqueeze(0).float()  # (1, 2, X, Y, Z)


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        return (float(spacing),) * ndim  # type: ignore[arg-type]
    sp = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    if len(sp) != ndim or min(sp) <= 0:
        raise ValueError(f"spacing must be {ndim} positive numbers (mm), got {spacing}")
    return sp


def max_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The diagonal of the volume extent in mm (the worst-case HD95)."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {pred.ndim}D")


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    _check_pair(pred, gt)
    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    from monai.metrics import compute_dice

    return float(compute_dice(_onehot(pred), _onehot(gt), include_background=False)[0, 0])


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (see module doc for empty masks)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    _check_pair(pred, gt)
    sp = _spacing(spacing, pred.ndim)
    if not pred.any() and not gt.any():
        return 0.0
    if not pred.any() or not gt.any():
        return max_distance(pred.shape, sp)
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        v = compute_hausdorff_distance(
            _onehot(pred), _onehot(gt), include_background=False, percentile=95, spacing=list(sp)
        )
    return float(v[0, 0])


def nsd(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: float | Sequence[float] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice at ``tolerance_mm`` (see module doc for empty masks)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    _check_pair(pred, gt)
    sp = _spacing(spacing, pred.ndim)
    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    from monai.metrics import compute_surface_dice

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        v = compute_surface_dice(
            _onehot(pred),
            _onehot(gt),
            class_thresholds=[float(tolerance_mm)],
            include_background=False,
            spacing=list(sp),
        )
    return float(v[0, 0])


def segmentation_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: float | Sequence[float] | None = None,
    label: int | None = PANCREAS,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict[str, Any]:
    """Dice, HD95 (mm), NSD and volumes for one label (``label=None``: any non-zero voxel)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_pair(pred, gt)
    sp = _spacing(spacing, pred.ndim)
    p = pred != 0 if label is None else pred == label
    g = gt != 0 if label is None else gt == label
    voxel_ml = float(np.prod(sp)) / 1000.0
    return {
        "label": label if label is not None else -1,
        "dice": dice(p, g),
        "hd95": hd95(p, g, sp),
        "nsd": nsd(p, g, sp, tolerance_mm),
        "tolerance_mm": float(tolerance_mm),
        "empty_gt": bool(not g.any()),
        "empty_pred": bool(not p.any()),
        "volume_gt_ml": float(g.sum()) * voxel_ml,
        "volume_pred_ml": float(p.sum()) * voxel_ml,
    }


def evaluate_volumes(
    pred: Volume,
    gt: Volume,
    labels: Iterable[int] = (PANCREAS,),
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    atol_mm: float = 1e-3,
) -> list[dict[str, Any]]:
    """Metrics per label for a prediction and a ground truth on the same grid."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction {pred.source_path or ''} has shape {pred.shape}, ground truth "
            f"{gt.source_path or ''} {gt.shape}: they must be on the same grid"
        )
    if not np.allclose(pred.affine, gt.affine, atol=atol_mm):
        raise ValueError(
            f"prediction {pred.source_path or ''} and ground truth {gt.source_path or ''} have "
            "different affines; resample the prediction onto the label grid first"
        )
    rows = []
    for lab in labels:
        m = segmentation_metrics(pred.array, gt.array, gt.spacing, lab, tolerance_mm)
        m["label_name"] = NAMES.get(int(lab), str(lab))
        m.update({"subject": gt.subject, "center": gt.center, "sequence": gt.sequence})
        rows.append(m)
    return rows


def evaluate_manifest(
    predictions: str | os.PathLike | Any,
    labels: Iterable[int] = (PANCREAS,),
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
):
    """Per-case metrics for a ``predictions.csv`` (or DataFrame) with ``prediction`` and
    ``label`` columns; rows without a label are skipped. Returns a DataFrame."""
    import pandas as pd

    from napari_pandg.io import load_volume

    if isinstance(predictions, (str, os.PathLike)):
        base = os.path.dirname(os.path.abspath(predictions))
        df = pd.read_csv(predictions, dtype={"subject": str, "center": str, "sequence": str})
    else:
        base, df = os.getcwd(), predictions
    rows = []
    for r in df.to_dict("records"):
        lab = r.get("label")
        if lab is None or (isinstance(lab, float) and math.isnan(lab)) or lab == "":
            continue

        def _abs(p: str) -> str:
            return p if os.path.isabs(p) else os.path.join(base, p)

        tags = {k: str(r.get(k, "") or "") for k in ("subject", "center", "sequence")}
        gt = load_volume(_abs(str(lab)), is_label=True, label_map=r.get("label_map") or None, **tags)
        pr = load_volume(_abs(str(r["prediction"])), is_label=True, **tags)
        for m in evaluate_volumes(pr, gt, labels, tolerance_mm):
            m["prediction"] = str(r["prediction"])
            rows.append(m)
    return pd.DataFrame(rows)


def summarize(per_case, by: Sequence[str] = ("center", "sequence")):
    """Mean / median / std of Dice, HD95 and NSD per group (e.g. center x sequence)."""
    agg = per_case.groupby(list(by))[["dice", "hd95", "nsd"]].agg(["mean", "median", "std", "count"])
    agg.columns = ["_".join(c) for c in agg.columns]
    return agg.reset_index()
