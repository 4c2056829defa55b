"""What a user sees: the radiological view and outlined labels on every path (screenshots).

napari's default 2D display puts world axis 1 (A) increasing downward and axis 2 (R) increasing
rightward: spine at the top, patient right on screen right. Every napari-pandg path (reader,
sample data, Dataset widget, demo screenshots) must instead show anterior up and the patient's
right on screen *left*, with world coordinates still true RAS mm.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from napari_pandg.labels import IDS
from napari_pandg.layerdata import LABEL_CONTOUR, RADIOLOGICAL_2D, apply_radiological_view

SHOTS = Path("/tmp/pandg_test_shots")


def _save(shot: np.ndarray, name: str) -> None:
    """Keep the screenshot for a human to look at (best effort)."""
    try:
        from PIL import Image

        SHOTS.mkdir(parents=True, exist_ok=True)
        Image.fromarray(shot).save(SHOTS / f"{name}.png")
    except OSError:
        pass


def _camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    """(row, col) of a screenshot mask, as fractions of the canvas height / width."""
    rr, cc = np.nonzero(mask)
    assert rr.size > 20, "nothing drawn where expected"
    return rr.mean() / mask.shape[0], cc.mean() / mask.shape[1]


def _write_lps_with_marker(path: Path) -> tuple[Path, tuple[slice, slice]]:
    """An LPS-stored image (i -> patient left, j -> posterior, k -> superior) with a bright
    block at small i, j: the patient's anterior-right region."""
    shape = (40, 48, 12)
    rng = np.random.default_rng(0)
    arr = (100 + 10 * rng.standard_normal(shape)).astype(np.float32)
    block = (slice(3, 11), slice(3, 11))
    arr[block[0], block[1], :] = 1000.0
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])
    aff[:3, 3] = [2.0 * (shape[0] - 1) / 2, 2.0 * (shape[1] - 1) / 2, -3.0 * (shape[2] - 1) / 2]
    nib.save(nib.Nifti1Image(arr, aff), path)
    return path, block


def test_reader_shows_radiological_view(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(900, 700)
    path, block = _write_lps_with_marker(tmp_path / "lps_marker.nii.gz")
    (layer,) = viewer.open(str(path), plugin="napari-pandg")
    assert layer.__class__.__name__ == "Image"
    # world coordinates stay true RAS mm (S, A, R): the marker is anterior (A > 0) and on the
    # patient's right (R > 0); no negative scales
    assert (np.asarray(layer.scale) > 0).all()
    marker = np.argwhere(np.asarray(layer.data) > 500).mean(axis=0)  # (S, A, R) data index
    world = np.asarray(layer.data_to_world(marker))
    assert world[1] > 20 and world[2] > 20, world
    assert tuple(_camera(viewer).orientation2d) == RADIOLOGICAL_2D
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    _save(shot, "reader_lps_marker")
    row, col = _centroid(shot[..., :3].max(axis=-1) > 160)
    assert row < 0.5 and col < 0.5, f"marker at ({row:.2f}, {col:.2f}): expected the top-left quadrant"


def test_reader_outlines_labels(make_napari_viewer, phantom_index) -> None:
    viewer = make_napari_viewer()
    row = phantom_index.iloc[0]
    viewer.open(row["image"], plugin="napari-pandg")
    (lab,) = viewer.open(row["label"], plugin="napari-pandg")
    assert lab.__class__.__name__ == "Labels"
    assert lab.contour == LABEL_CONTOUR and lab.opacity > 0.5  # outlines, not a filled overlay


def _organ_shot(viewer, labels, organ: str, name: str) -> np.ndarray:
    labels.contour = 0
    labels.opacity = 1.0
    labels.show_selected_label = True
    labels.selected_label = IDS[organ]
    shot = viewer.screenshot(canvas_only=True, flash=False)
    _save(shot, name)
    return shot[..., :3].max(axis=-1) > 60


def test_sample_data_shows_radiological_view(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(900, 700)
    viewer.open_sample("napari-pandg", "phantom_subject")
    assert tuple(_camera(viewer).orientation2d) == RADIOLOGICAL_2D
    labels = next(ly for ly in viewer.layers if ly.__class__.__name__ == "Labels")
    assert labels.contour == LABEL_CONTOUR
    visible = [ly.name for ly in viewer.layers if ly.visible]
    assert visible == ["A000_t1fs_venous", "A000_t1fs_venous_labels"], visible
    viewer.reset_view()
    _save(viewer.screenshot(canvas_only=True, flash=False), "sample_phantom")
    for ly in viewer.layers:
        if ly is not labels:
            ly.visible = False
    _, liver_col = _centroid(_organ_shot(viewer, labels, "liver", "sample_liver"))
    bone_row, _ = _centroid(_organ_shot(viewer, labels, "bone", "sample_bone"))
    assert liver_col < 0.5, f"liver (patient right) at column {liver_col:.2f}: expected screen left"
    assert bone_row > 0.5, f"vertebra at row {bone_row:.2f}: expected the lower half (posterior down)"


def test_apply_radiological_view_without_viewer_does_nothing(monkeypatch) -> None:
    import napari

    monkeypatch.setattr(napari, "current_viewer", lambda: None)
    assert apply_radiological_view() is False
