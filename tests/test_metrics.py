"""Dice / HD95 / NSD against hand-computed values and an independent brute-force NSD."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("monai")

from scipy import ndimage as ndi  # noqa: E402

from napari_pandg.metrics import (  # noqa: E402
    dice,
    evaluate_volumes,
    hd95,
    max_distance,
    nsd,
    segmentation_metrics,
    summarize,
)
from napari_pandg.volume import Volume  # noqa: E402


def _cube(shape=(30, 30, 30), lo=(5, 5, 5), size=10):
    m = np.zeros(shape, bool)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return m


def test_dice_hand_computed():
    a = _cube()
    b = np.roll(a, 1, axis=2)  # 10x10x9 overlap
    assert dice(a, b) == pytest.approx(2 * 900 / 2000, abs=1e-6)
    assert dice(a, a) == pytest.approx(1.0)
    assert dice(a, np.roll(a, 15, axis=0)) == 0.0


def test_hd95_single_voxels_anisotropic():
    a = np.zeros((20, 20, 20), bool)
    b = a.copy()
    a[5, 5, 5] = True
    b[8, 5, 7] = True  # 3 voxels along x (1 mm), 2 along z (2.5 mm)
    assert hd95(a, b, (1.0, 1.0, 2.5)) == pytest.approx(math.sqrt(9 + 25), rel=1e-5)
    # isotropic spacing gives the voxel distance
    assert hd95(a, b) == pytest.approx(math.sqrt(9 + 4), rel=1e-5)


def test_hd95_shifted_cube_is_shift():
    a = _cube()
    b = np.roll(a, 1, axis=2)
    # the far faces are one slice (3 mm) apart; the 95th percentile reaches them
    assert hd95(a, b, (1.0, 1.0, 3.0)) == pytest.approx(3.0, abs=1e-4)


def test_nsd_single_voxels_tolerance():
    a = np.zeros((20, 20, 20), bool)
    b = a.copy()
    a[5, 5, 5] = True
    b[8, 5, 7] = True  # 5.83 mm apart
    assert nsd(a, b, (1.0, 1.0, 2.5), tolerance_mm=6.0) == 1.0
    assert nsd(a, b, (1.0, 1.0, 2.5), tolerance_mm=5.0) == 0.0


def _brute_nsd(a, b, spacing, tol):
    """Independent NSD: boundary voxels = mask minus its 6-connected erosion; pairwise distances."""

    def border(m):
        return np.argwhere(m & ~ndi.binary_erosion(m))

    pa = border(a) * np.asarray(spacing)
    pb = border(b) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    ok_a = (d.min(1) <= tol).sum()
    ok_b = (d.min(0) <= tol).sum()
    return (ok_a + ok_b) / (len(pa) + len(pb))


@pytest.mark.parametrize(
    "shift,spacing,tol",
    [((0, 0, 1), (1.0, 1.0, 3.0), 2.0), ((2, 1, 0), (0.8, 0.8, 2.0), 1.0), ((3, 0, 0), (1.0, 1.0, 1.0), 2.0)],
)
def test_nsd_matches_brute_force(shift, spacing, tol):
    a = _cube((24, 24, 24), (5, 5, 5), 8)
    b = np.roll(a, shift, axis=(0, 1, 2))
    assert nsd(a, b, spacing, tol) == pytest.approx(_brute_nsd(a, b, spacing, tol), abs=1e-6)


def test_empty_conventions():
    z = np.zeros((10, 12, 14), bool)
    m = z.copy()
    m[3:5, 3:5, 3:5] = True
    sp = (1.0, 2.0, 3.0)
    both = segmentation_metrics(z.astype(np.uint8), z.astype(np.uint8), sp, label=10)
    assert (both["dice"], both["hd95"], both["nsd"]) == (1.0, 0.0, 1.0)
    assert both["empty_gt"] and both["empty_pred"]
    diag = max_distance(z.shape, sp)
    assert diag == pytest.approx(math.sqrt(10**2 + 24**2 + 42**2))
    missed = segmentation_metrics(z.astype(np.uint8), m.astype(np.uint8) * 10, sp, label=10)
    assert (missed["dice"], missed["hd95"], missed["nsd"]) == (0.0, pytest.approx(diag), 0.0)
    assert missed["empty_pred"] and not missed["empty_gt"]
    halluc = segmentation_metrics(m.astype(np.uint8) * 10, z.astype(np.uint8), sp, label=10)
    assert halluc["dice"] == 0.0 and halluc["hd95"] == pytest.approx(diag) and halluc["empty_gt"]
    assert missed["volume_gt_ml"] == pytest.approx(8 * 6 / 1000)


def test_label_selection_and_volumes():
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[2:6, 2:6, 2:6] = 10
    gt[10:14, 10:14, 10:14] = 6  # liver elsewhere, must be ignored for label 10
    pred = gt.copy()
    pred[pred == 6] = 0
    m = segmentation_metrics(pred, gt, (1, 1, 1), label=10)
    assert m["dice"] == pytest.approx(1.0) and m["hd95"] == 0.0 and m["nsd"] == 1.0
    any_fg = segmentation_metrics(pred, gt, (1, 1, 1), label=None)
    assert any_fg["dice"] == pytest.approx(2 / 3)


def test_evaluate_volumes_grid_checks_and_summary():
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    gt = np.zeros((16, 16, 8), np.uint8)
    gt[4:10, 4:10, 2:5] = 10
    g = Volume(gt, aff, subject="s1", center="A", sequence="t2", is_label=True)
    p = Volume(gt.copy(), aff, is_label=True)
    rows = evaluate_volumes(p, g)
    assert rows[0]["dice"] == pytest.approx(1.0) and rows[0]["center"] == "A"
    with pytest.raises(ValueError, match="different affines"):
        evaluate_volumes(Volume(gt.copy(), np.diag([1.0, 1.5, 3.0, 1.0]), is_label=True), g)
    with pytest.raises(ValueError, match="same grid"):
        evaluate_volumes(Volume(gt[:8].copy(), aff, is_label=True), g)
    import pandas as pd

    df = pd.DataFrame(rows + [{**rows[0], "dice": 0.5}])
    s = summarize(df)
    assert s.loc[0, "dice_mean"] == pytest.approx(0.75) and s.loc[0, "dice_count"] == 2
