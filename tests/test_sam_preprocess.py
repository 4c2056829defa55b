"""MedSAM2 preprocessing (pure numpy / PIL): known numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_pandg.sam.preprocess import (
    CT_WINDOWS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ct_window,
    normalize_ct,
    normalize_mri,
    normalize_volume,
    slice_to_model_input,
    stack_to_model_input,
)


def test_import_is_cheap():
    code = (
        "import sys, napari_pandg.sam as s; "
        "assert 'torch' not in sys.modules and 'sam2' not in sys.modules, 'heavy import'; "
        "assert 'scipy' not in sys.modules; print(s.VolumeSegmenter.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "VolumeSegmenter" in out.stdout


def test_normalize_mri_known_numbers():
    # zeros (background) + the values 1..200
    a = np.zeros((10, 10, 4), dtype=np.float32)
    a.flat[:200] = np.arange(1, 201)
    out = normalize_mri(a)
    assert out.dtype == np.uint8 and out.shape == a.shape
    lo, hi = 1.995, 199.005  # 0.5 / 99.5 percentiles of 1..200 (linear interpolation)
    assert np.allclose(np.percentile(np.arange(1, 201), [0.5, 99.5]), [lo, hi])
    flat = out.ravel()
    assert flat[0] == 0  # value 1 -> clipped to lo -> 0
    assert flat[199] == 255  # value 200 -> clipped to hi -> 255
    # value 100: (100 - 1.995) / (199.005 - 1.995) * 255 = 126.85 -> truncated to 126 (np.uint8)
    assert flat[99] == 126
    assert flat[49] == int((50 - lo) / (hi - lo) * 255)  # 62
    assert (flat[200:] == 0).all()  # zero voxels stay zero


def test_normalize_mri_edge_cases():
    assert normalize_mri(np.zeros((4, 4, 2))).max() == 0
    assert normalize_mri(np.full((4, 4, 2), 7.0)).max() == 0  # constant volume
    neg = np.linspace(-5, -1, 32).reshape(4, 4, 2)  # no voxel > 0: all finite voxels are used
    out = normalize_mri(neg)
    assert out.min() == 0 and out.max() == 255
    nan = np.arange(32, dtype=float).reshape(4, 4, 2)
    nan[0, 0, 0] = np.nan
    assert normalize_mri(nan).dtype == np.uint8


def test_normalize_ct_window():
    a = np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0]).reshape(5, 1, 1)
    out = normalize_ct(a, "abdomen").ravel()  # W400 / L40 -> [-160, 240]
    assert out.tolist() == [0, 0, 127, 255, 255]
    assert ct_window("abdomen") == (-160.0, 240.0)
    assert ct_window((400, 40)) == (-160.0, 240.0)
    assert ct_window("lung") == (-1350.0, 150.0)
    assert CT_WINDOWS["soft_tissue"] == CT_WINDOWS["abdomen"]
    with pytest.raises(ValueError, match="unknown CT window"):
        ct_window("liverish")
    with pytest.raises(ValueError):
        ct_window((0, 40))
    assert (normalize_volume(a, "ct") == out.reshape(a.shape)).all()
    with pytest.raises(ValueError, match="modality"):
        normalize_volume(a, "pet")


def test_slice_to_model_input_matches_medsam2_pil_rgb():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    out = slice_to_model_input(s, 64)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    # MedSAM2: PIL RGB -> resize((S, S)) (bicubic default) -> /255 -> ImageNet mean/std
    ref = np.asarray(Image.fromarray(s).convert("RGB").resize((64, 64)), dtype=np.float64)
    ref = (ref.transpose(2, 0, 1) / 255.0 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    assert np.allclose(out, ref, atol=1e-5)
    # known numbers: a black slice is -mean/std per channel
    black = slice_to_model_input(np.zeros((64, 64), np.uint8), 64)
    assert np.allclose(black[:, 0, 0], [-2.117904, -2.035714, -1.804444], atol=1e-5)
    white = slice_to_model_input(np.full((8, 8), 255, np.uint8), 16)
    assert np.allclose(white[:, 3, 3], (1 - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-5)
    stack = stack_to_model_input(np.stack([s, s]), 32)
    assert stack.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="uint8"):
        slice_to_model_input(s.astype(np.float32), 64)
