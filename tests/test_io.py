"""napari_pandg.io: NIfTI read/write, napari orientation math, reader/writer (no Qt)."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_pandg.io import (
    MissingGeometryWarning,
    ObliqueAffineWarning,
    PandgIOError,
    check_label_values,
    from_napari,
    is_oblique,
    load_volume,
    save_volume,
    to_napari,
    validate_pair,
    voxel_to_world,
    world_to_data,
    world_to_voxel,
)
from napari_pandg.io._reader import napari_get_reader
from napari_pandg.io._writer import write_labels
from napari_pandg.layerdata import LABEL_FILL_OPACITY
from napari_pandg.volume import Volume

SHAPE = (10, 12, 8)
MARKER = (5, 7, 3)


def _rot(axis: int, deg: float) -> np.ndarray:
    t = np.radians(deg)
    c, s = np.cos(t), np.sin(t)
    r = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def _affine(lin: np.ndarray, origin) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = origin
    return aff


GEOMETRIES = {
    "ras": _affine(np.diag([1.0, 1.0, 1.0]), [-4.0, -5.0, -3.0]),
    "lps": _affine(np.diag([-0.8, -0.9, 3.0]), [20.0, 30.0, -15.0]),
    # storage axes: i -> S (down), j -> R, k -> A (posterior)
    "permuted": _affine(np.array([[0, 0.7, 0], [0, 0, -1.1], [-2.5, 0, 0]]), [-3.0, 12.0, 40.0]),
    "anisotropic": _affine(np.diag([0.6, 0.6, 5.0]), [100.5, -20.25, 7.0]),
    "oblique": _affine(_rot(2, 12.0) @ _rot(0, 7.0) @ np.diag([0.8, 0.9, 3.0]), [5.0, -6.0, 7.0]),
}


def write_nifti(path: Path, arr: np.ndarray, affine: np.ndarray, *, codes=(1, 1), dtype=None) -> Path:
    img = nib.Nifti1Image(arr, affine)
    img.header.set_qform(affine, code=codes[0])
    img.header.set_sform(affine, code=codes[1])
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, str(path))
    return path


def label_array() -> np.ndarray:
    arr = np.zeros(SHAPE, np.uint8)
    arr[MARKER] = 10
    arr[0, 0, 0] = 6
    arr[9, 11, 7] = 1
    arr[2:4, 3:6, 1:3] = 13
    return arr


def image_array(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, SHAPE).astype(np.float32)


def expected_world_sar(affine: np.ndarray, ijk) -> np.ndarray:
    ras = affine @ np.array([*ijk, 1.0])
    return ras[:3][::-1]


def layer_world(kwargs: dict, index) -> np.ndarray:
    """World (S, A, R) of a napari data index, composing napari's transforms by hand."""
    p = np.asarray(kwargs["scale"]) * np.asarray(index, float) + np.asarray(kwargs["translate"])
    if "affine" in kwargs:
        a = np.asarray(kwargs["affine"])
        p = a[:3, :3] @ p + a[:3, 3]
    return p


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name]


# --------------------------------------------------------------------------- geometry
def test_lps_marker_world_by_hand(tmp_path):
    # voxel (5,7,3): R = 20 - 0.8*5 = 16, A = 30 - 0.9*7 = 23.7, S = -15 + 3*3 = -6
    p = write_nifti(tmp_path / "lps.nii.gz", label_array(), GEOMETRIES["lps"])
    vol = load_volume(p, is_label=True)
    data, kw = to_napari(vol)
    idx = np.argwhere(data == 10)
    assert idx.shape == (1, 3)
    np.testing.assert_allclose(layer_world(kw, idx[0]), [-6.0, 23.7, 16.0], atol=1e-4)
    assert kw["axis_labels"] == ("S", "A", "R")
    assert kw["units"] == ("mm", "mm", "mm")
    np.testing.assert_allclose(kw["scale"], [3.0, 0.9, 0.8], atol=1e-6)
    assert "affine" not in kw
    assert data.shape == (8, 12, 10)


@pytest.mark.parametrize("geom", list(GEOMETRIES))
def test_marker_world_matches_affine(tmp_path, geom):
    aff = GEOMETRIES[geom]
    p = write_nifti(tmp_path / f"{geom}.nii.gz", label_array(), aff)
    vol = load_volume(p, is_label=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, kw = to_napari(vol)
    oblique_warned = any(issubclass(w.category, ObliqueAffineWarning) for w in caught)
    assert oblique_warned == (geom == "oblique")
    assert ("affine" in kw) == (geom == "oblique")
    for value, ijk in ((10, MARKER), (6, (0, 0, 0)), (1, (9, 11, 7))):
        idx = np.argwhere(data == value)
        assert idx.shape == (1, 3)
        want = expected_world_sar(vol.affine, ijk)
        np.testing.assert_allclose(layer_world(kw, idx[0]), want, atol=1e-4)
        # helpers agree
        np.testing.assert_allclose(world_to_voxel(want, kw["metadata"]), [ijk], atol=1e-4)
        np.testing.assert_allclose(voxel_to_world(ijk, vol), [want], atol=1e-4)
        np.testing.assert_allclose(world_to_data(want, kw["metadata"]), [idx[0]], atol=1e-4)
    # canonical: positive scales, S/A/R increase along the napari axes
    if geom != "oblique":
        assert all(s > 0 for s in kw["scale"])
    assert is_oblique(aff) == (geom == "oblique")


def test_oblique_layer_keeps_rotation_and_spacing(tmp_path):
    p = write_nifti(tmp_path / "obl.nii.gz", label_array(), GEOMETRIES["oblique"])
    vol = load_volume(p, is_label=True)
    with pytest.warns(ObliqueAffineWarning, match="affine"):
        _, kw = to_napari(vol)
    np.testing.assert_allclose(sorted(kw["scale"]), [0.8, 0.9, 3.0], atol=1e-5)
    rot = np.asarray(kw["affine"])[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-5)
    assert not np.allclose(rot, np.eye(3), atol=1e-3)
    with pytest.raises(PandgIOError, match="oblique"):
        to_napari(vol, oblique="error")


def test_napari_layer_places_marker(tmp_path):
    layers = pytest.importorskip("napari.layers")
    for geom in ("lps", "permuted", "oblique"):
        p = write_nifti(tmp_path / f"{geom}.nii.gz", label_array(), GEOMETRIES[geom])
        vol = load_volume(p, is_label=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ObliqueAffineWarning)
            data, kw = to_napari(vol)
        layer = layers.Labels(data, **kw)
        idx = np.argwhere(data == 10)[0]
        np.testing.assert_allclose(
            layer.data_to_world(idx), expected_world_sar(vol.affine, MARKER), atol=1e-4
        )


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("geom", list(GEOMETRIES))
@pytest.mark.parametrize("codes", [(1, 1), (0, 2), (1, 0)])
def test_label_round_trip_exact(tmp_path, geom, codes):
    src = write_nifti(tmp_path / "lab.nii.gz", label_array(), GEOMETRIES[geom], codes=codes, dtype=np.uint8)
    vol = load_volume(src, is_label=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ObliqueAffineWarning)
        data, kw = to_napari(vol)
    back = from_napari(np.array(data), kw["metadata"])
    out = save_volume(back, tmp_path / "lab_rt.nii.gz")
    a, b = nib.load(str(src)), nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(b.dataobj), label_array())
    assert np.asarray(b.dataobj).dtype == np.uint8
    np.testing.assert_array_equal(b.affine, a.affine)
    assert int(b.header["qform_code"]) == codes[0]
    assert int(b.header["sform_code"]) == codes[1]
    np.testing.assert_array_equal(b.header.get_qform(), a.header.get_qform())
    np.testing.assert_array_equal(b.header.get_sform(), a.header.get_sform())
    assert b.header.get_slope_inter() == (None, None)
    assert b.header.binaryblock == a.header.binaryblock


def test_image_round_trip_and_scaling(tmp_path):
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    img = nib.Nifti1Image(raw, GEOMETRIES["lps"])
    img.header.set_slope_inter(2.0, 10.0)
    img.set_data_dtype(np.int16)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    vol = load_volume(tmp_path / "scaled.nii.gz")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, raw * 2.0 + 10.0)
    data, kw = to_napari(vol)
    assert kw["colormap"] == "gray"
    lo, hi = kw["contrast_limits"]
    assert lo < hi
    out = save_volume(from_napari(data, kw["metadata"]), tmp_path / "img_rt.nii.gz")
    back = load_volume(out)
    np.testing.assert_allclose(back.array, vol.array)
    np.testing.assert_array_equal(back.affine, vol.affine)


def test_user_labels_layer_on_image_written_on_image_grid(tmp_path):
    src = write_nifti(tmp_path / "t1.nii.gz", image_array(), GEOMETRIES["permuted"])
    image = load_volume(src, subject="s01", sequence="t1")
    data, kw = to_napari(image)
    assert kw["name"] == "s01_t1"
    painted = np.zeros(data.shape, dtype=np.int32)  # napari's default labels dtype
    # find where storage voxel MARKER lands in the napari array
    probe = np.zeros(SHAPE, np.uint8)
    probe[MARKER] = 1
    idx = np.argwhere(to_napari(image.with_array(probe))[0] == 1)[0]
    painted[tuple(idx)] = 10
    meta = {"metadata": kw["metadata"], "scale": kw["scale"], "translate": kw["translate"], "name": "x"}
    paths = write_labels(str(tmp_path / "seg.nii.gz"), painted, meta)
    out = nib.load(paths[0])
    arr = np.asarray(out.dataobj)
    assert arr.dtype == np.uint8
    assert [tuple(v) for v in np.argwhere(arr == 10)] == [MARKER]
    np.testing.assert_array_equal(out.affine, nib.load(str(src)).affine)
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 1)


def test_writer_without_geometry_warns_and_uses_scale(tmp_path):
    data = np.zeros((4, 5, 6), np.int32)
    data[1, 2, 3] = 10
    meta = {"metadata": {}, "scale": (3.0, 0.5, 0.25), "translate": (1.0, 2.0, 3.0), "name": "x"}
    with pytest.warns(MissingGeometryWarning):
        (p,) = write_labels(str(tmp_path / "free"), data, meta)
    assert p.endswith("free.nii.gz")
    img = nib.load(p)
    np.testing.assert_allclose(img.affine[:3, :3], np.diag([0.25, 0.5, 3.0]))
    np.testing.assert_allclose(img.affine[:3, 3], [3.0, 2.0, 1.0])
    assert [tuple(v) for v in np.argwhere(np.asarray(img.dataobj) == 10)] == [(3, 2, 1)]


def test_from_napari_shape_mismatch(tmp_path):
    vol = load_volume(write_nifti(tmp_path / "a.nii.gz", label_array(), GEOMETRIES["ras"]), is_label=True)
    _, kw = to_napari(vol)
    with pytest.raises(PandgIOError, match="shape"):
        from_napari(np.zeros((3, 3, 3), np.uint8), kw["metadata"])


# --------------------------------------------------------------------------- load errors
def _assert_names(exc: pytest.ExceptionInfo, path: Path) -> None:
    assert str(path) in str(exc.value), str(exc.value)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.nii.gz"
    with pytest.raises(PandgIOError) as exc:
        load_volume(p)
    _assert_names(exc, p)
    assert isinstance(exc.value, FileNotFoundError)


def test_truncated_gzip(tmp_path):
    p = write_nifti(tmp_path / "trunc.nii.gz", image_array(), GEOMETRIES["ras"])
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PandgIOError) as exc:
        load_volume(p)
    _assert_names(exc, p)
    assert "truncated" in str(exc.value) or "corrupt" in str(exc.value)


def test_garbage_file(tmp_path):
    p = tmp_path / "garbage.nii.gz"
    p.write_bytes(b"this is not a nifti file at all" * 20)
    with pytest.raises(PandgIOError) as exc:
        load_volume(p)
    _assert_names(exc, p)
    q = tmp_path / "garbage2.nii.gz"
    q.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(PandgIOError) as exc:
        load_volume(q)
    _assert_names(exc, q)


def test_truncated_uncompressed(tmp_path):
    p = write_nifti(tmp_path / "trunc.nii", image_array(), GEOMETRIES["ras"])
    blob = p.read_bytes()
    p.write_bytes(blob[: 352 + 100])
    with pytest.raises(PandgIOError) as exc:
        load_volume(p)
    _assert_names(exc, p)


def test_2d_rejected(tmp_path):
    p = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.float32), np.eye(4)), str(p))
    with pytest.raises(PandgIOError, match="2D") as exc:
        load_volume(p)
    _assert_names(exc, p)


def test_4d_singleton_squeezed(tmp_path):
    arr = label_array()[..., None]
    p = write_nifti(tmp_path / "four.nii.gz", arr, GEOMETRIES["lps"])
    vol = load_volume(p, is_label=True)
    assert vol.shape == SHAPE
    np.testing.assert_array_equal(vol.array, label_array())
    assert vol.metadata["original_shape"] == (*SHAPE, 1)
    out = save_volume(vol, tmp_path / "three.nii.gz")
    assert nib.load(str(out)).shape == SHAPE


def test_4d_channels_rejected_or_chosen(tmp_path):
    arr = np.stack([image_array(0), image_array(1), image_array(2)], axis=-1)
    p = write_nifti(tmp_path / "multi.nii.gz", arr, GEOMETRIES["ras"])
    with pytest.raises(PandgIOError, match="3 channels") as exc:
        load_volume(p)
    _assert_names(exc, p)
    assert "channel=" in str(exc.value)
    vol = load_volume(p, channel=1)
    np.testing.assert_allclose(vol.array, image_array(1))
    with pytest.raises(PandgIOError, match="out of range"):
        load_volume(p, channel=3)


def test_5d_rejected(tmp_path):
    arr = np.zeros((*SHAPE, 1, 2), np.float32)
    p = write_nifti(tmp_path / "five.nii.gz", arr, GEOMETRIES["ras"])
    with pytest.raises(PandgIOError, match="2 channels") as exc:
        load_volume(p)
    _assert_names(exc, p)


def test_nan_image_reported(tmp_path):
    arr = image_array()
    arr[0, 0, :3] = np.nan
    arr[1, 1, 1] = np.inf
    p = write_nifti(tmp_path / "nan.nii.gz", arr, GEOMETRIES["ras"])
    with pytest.raises(PandgIOError, match=r"4 voxels are not finite \(3 NaN, 1 Inf\)") as exc:
        load_volume(p)
    _assert_names(exc, p)
    vol = load_volume(p, allow_nonfinite=True)  # explicit opt-in, values untouched
    assert np.isnan(vol.array).sum() == 3


def test_float_label_half_rejected(tmp_path):
    arr = label_array().astype(np.float32)
    arr[1, 1, 1] = 0.5
    p = write_nifti(tmp_path / "half.nii.gz", arr, GEOMETRIES["ras"])
    with pytest.raises(PandgIOError, match="non-integer") as exc:
        load_volume(p, is_label=True)
    _assert_names(exc, p)


def test_integral_float_label_cast(tmp_path):
    p = write_nifti(tmp_path / "flt.nii.gz", label_array().astype(np.float32), GEOMETRIES["ras"])
    vol = load_volume(p, is_label=True)
    assert vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array, label_array())


def test_negative_label_rejected(tmp_path):
    arr = label_array().astype(np.int16)
    arr[0, 1, 0] = -1
    p = write_nifti(tmp_path / "neg.nii.gz", arr, GEOMETRIES["ras"])
    with pytest.raises(PandgIOError, match="negative") as exc:
        load_volume(p, is_label=True)
    _assert_names(exc, p)


def test_unknown_labels_and_label_map(tmp_path):
    arr = np.zeros(SHAPE, np.uint8)
    arr[MARKER] = 1
    arr[0, 0, 0] = 2
    p = write_nifti(tmp_path / "bin.nii.gz", arr, GEOMETRIES["ras"])
    with pytest.raises(PandgIOError, match=r"unexpected label values \[1, 2\]") as exc:
        load_volume(p, is_label=True, allowed={0, 10})
    _assert_names(exc, p)
    vol = load_volume(p, is_label=True, label_map={1: 10, 2: 10}, allowed={0, 10})
    assert vol.array[MARKER] == 10 and vol.array[0, 0, 0] == 10
    vol = load_volume(p, is_label=True, label_map="1:10")
    assert sorted(np.unique(vol.array)) == [0, 2, 10]
    assert check_label_values(vol, range(16)) == [0, 2, 10]
    with pytest.raises(PandgIOError, match=r"\[2\]"):
        check_label_values(vol, {0, 10})


def test_uint16_labels(tmp_path):
    arr = np.zeros(SHAPE, np.uint16)
    arr[MARKER] = 300
    vol = Volume(arr, GEOMETRIES["ras"], is_label=True)
    out = save_volume(vol, tmp_path / "big.nii.gz")
    assert nib.load(str(out)).get_data_dtype() == np.uint16
    assert load_volume(out, is_label=True).array[MARKER] == 300


# --------------------------------------------------------------------------- save
def test_overwrite_refused_and_atomic(tmp_path, monkeypatch):
    vol = Volume(label_array(), GEOMETRIES["lps"], is_label=True)
    out = save_volume(vol, tmp_path / "seg.nii.gz")
    before = out.read_bytes()
    with pytest.raises(FileExistsError) as exc:
        save_volume(vol, out)
    assert str(out) in str(exc.value) and "overwrite=True" in str(exc.value)
    assert out.read_bytes() == before
    assert no_temp_files(tmp_path)

    # a failing write leaves the old file untouched and no temp file behind
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_volume(vol.with_array(np.zeros(SHAPE, np.uint8)), out, overwrite=True)
    assert out.read_bytes() == before
    assert no_temp_files(tmp_path)
    monkeypatch.undo()

    save_volume(vol.with_array(np.zeros(SHAPE, np.uint8)), out, overwrite=True)
    assert not np.asarray(nib.load(str(out)).dataobj).any()
    assert no_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]


def test_save_bad_suffix_and_missing_folder(tmp_path):
    vol = Volume(label_array(), GEOMETRIES["ras"], is_label=True)
    with pytest.raises(PandgIOError, match=".nii"):
        save_volume(vol, tmp_path / "seg.mha")
    with pytest.raises(PandgIOError, match="does not exist"):
        save_volume(vol, tmp_path / "nofolder" / "seg.nii.gz")


def test_save_like_image_keeps_image_header(tmp_path):
    src = write_nifti(tmp_path / "img.nii.gz", image_array(), GEOMETRIES["oblique"], codes=(1, 1))
    image = load_volume(src)
    pred = Volume(label_array(), np.eye(4), is_label=True)
    out = save_volume(pred, tmp_path / "pred.nii", like=image)
    b = nib.load(str(out))
    np.testing.assert_array_equal(b.affine, image.affine)
    assert b.get_data_dtype() == np.uint8
    assert (int(b.header["qform_code"]), int(b.header["sform_code"])) == (1, 1)
    with pytest.raises(PandgIOError):
        save_volume(Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4), is_label=True), tmp_path / "x.nii", like=image)


def test_save_new_affine_keeps_codes(tmp_path):
    src = write_nifti(tmp_path / "lab.nii.gz", label_array(), GEOMETRIES["ras"], codes=(1, 1))
    vol = load_volume(src, is_label=True)
    moved = GEOMETRIES["anisotropic"]
    out = save_volume(Volume(vol.array, moved, is_label=True, header=vol.header), tmp_path / "moved.nii.gz")
    b = nib.load(str(out))
    np.testing.assert_allclose(b.affine, moved, atol=1e-5)
    assert (int(b.header["qform_code"]), int(b.header["sform_code"])) == (1, 1)


# --------------------------------------------------------------------------- pairs
def test_validate_pair(tmp_path):
    aff = GEOMETRIES["lps"]
    image = Volume(image_array(), aff, source_path=tmp_path / "img.nii.gz")
    tiny = aff.copy()
    tiny[:3, 3] += 2e-4
    label = Volume(label_array(), tiny, is_label=True, source_path=tmp_path / "lab.nii.gz")
    fixed = validate_pair(image, label)
    np.testing.assert_array_equal(fixed.affine, image.affine)
    assert "affine_copied_from_image" in fixed.metadata

    off = aff.copy()
    off[:3, 3] += 0.5
    with pytest.raises(PandgIOError, match=r"origin difference 0\.5 mm") as exc:
        validate_pair(image, Volume(label_array(), off, is_label=True, source_path=tmp_path / "lab.nii.gz"))
    assert "lab.nii.gz" in str(exc.value)

    rotated = GEOMETRIES["lps"].copy()
    rotated[:3, :3] = _rot(2, 1.0) @ rotated[:3, :3]
    with pytest.raises(PandgIOError, match="direction"):
        validate_pair(image, Volume(label_array(), rotated, is_label=True))

    with pytest.raises(PandgIOError, match="shape mismatch"):
        validate_pair(image, Volume(np.zeros((10, 12, 7), np.uint8), aff, is_label=True))


# --------------------------------------------------------------------------- napari reader
def test_get_reader_dispatch(tmp_path):
    p = write_nifti(tmp_path / "img.nii.gz", image_array(), GEOMETRIES["ras"])
    assert callable(napari_get_reader(str(p)))
    assert callable(napari_get_reader([str(p), str(p)]))
    assert napari_get_reader(str(tmp_path / "thing.tif")) is None
    assert napari_get_reader([str(p), str(tmp_path / "a.png")]) is None
    assert napari_get_reader(str(tmp_path)) is None  # folder without a dataset layout
    assert napari_get_reader(str(tmp_path / "missing_dir")) is None
    assert napari_get_reader(12345) is None  # type: ignore[arg-type]


def test_reader_layers(tmp_path):
    img = write_nifti(tmp_path / "case_0000.nii.gz", image_array(), GEOMETRIES["lps"])
    (tmp_path / "labelsTr").mkdir()
    lab = write_nifti(tmp_path / "labelsTr" / "case.nii.gz", label_array(), GEOMETRIES["lps"])
    auto = write_nifti(tmp_path / "auto.nii.gz", label_array().astype(np.int16), GEOMETRIES["lps"])
    reader = napari_get_reader([str(lab), str(img), str(auto)])
    layers = reader([str(lab), str(img), str(auto)])
    kinds = [t for _, _, t in layers]
    assert kinds == ["image", "labels", "labels"]
    (d_img, k_img, _), (d_lab, k_lab, _), _ = layers
    assert d_img.shape == d_lab.shape == (8, 12, 10)
    # filled labels open translucent (outlines are set once the layer exists: style_labels_layer)
    assert k_lab["opacity"] == LABEL_FILL_OPACITY < 0.5
    assert k_lab["name"].endswith("_labels")
    assert k_lab["scale"] == k_img["scale"] and k_lab["translate"] == k_img["translate"]
    assert k_img["metadata"]["source_path"] == str(img)
    # writing the labels layer back reproduces the file
    meta = {"metadata": k_lab["metadata"], "scale": k_lab["scale"], "translate": k_lab["translate"]}
    (out,) = write_labels(str(tmp_path / "rt.nii.gz"), np.array(d_lab), meta)
    a, b = nib.load(str(lab)), nib.load(out)
    np.testing.assert_array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))
    np.testing.assert_array_equal(b.affine, a.affine)
    # the napari writer replaces a file napari asked for (its dialog confirmed)
    write_labels(out, np.array(d_lab), meta)
    assert no_temp_files(tmp_path)


def test_reader_error_names_file(tmp_path):
    p = tmp_path / "broken.nii.gz"
    p.write_bytes(b"\x1f\x8b" + b"junk" * 10)
    reader = napari_get_reader(str(p))
    with pytest.raises(PandgIOError) as exc:
        reader(str(p))
    _assert_names(exc, p)


def test_reader_label_colormap(tmp_path):
    pytest.importorskip("napari.utils.colormaps")
    (tmp_path / "segmentations").mkdir()
    lab = write_nifti(tmp_path / "segmentations" / "x.nii.gz", label_array(), GEOMETRIES["ras"])
    ((_, kw, kind),) = napari_get_reader(str(lab))(str(lab))
    assert kind == "labels"
    cmap = kw["colormap"]
    np.testing.assert_allclose(cmap.color_dict[10][:3], np.array([255, 220, 0]) / 255, atol=1e-6)


def test_modules_do_not_import_napari():
    import subprocess
    import sys

    code = (
        "import sys, napari_pandg.io, napari_pandg.io._reader, napari_pandg.io._writer;"
        "bad = [m for m in ('napari', 'torch', 'qtpy', 'PyQt5', 'PyQt6') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0, r.stdout + r.stderr
