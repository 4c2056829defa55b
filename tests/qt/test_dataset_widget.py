"""The Dataset widget on a real viewer: open, filter, load, cancel, and what a person sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pandg._qt.dataset_widget import ALL, DatasetWidget
from napari_pandg.labels import PANCREAS

from .conftest import wait_worker


@pytest.fixture
def widget(make_napari_viewer, qtbot, phantom_dir: Path):
    viewer = make_napari_viewer(show=True)
    w = DatasetWidget(viewer)
    viewer.window.add_dock_widget(w, area="right")
    wait_worker(qtbot, w.open_index(phantom_dir / "manifest.csv"))
    return w


def test_open_and_filter(widget: DatasetWidget) -> None:
    assert len(widget.index) == 10
    centers = [widget.center_combo.itemText(i) for i in range(widget.center_combo.count())]
    assert centers == [ALL, "A", "B"]
    widget.center_combo.setCurrentText("B")
    subjects = [widget.subject_combo.itemText(i) for i in range(widget.subject_combo.count())]
    assert len(subjects) == 2 and subjects[1].startswith("B")
    widget.sequence_combo.setCurrentText("t2")
    assert len(widget.filtered()) == 1 and widget.table.rowCount() == 1
    assert widget.filtered()["sequence"].iloc[0] == "t2"


def test_open_folder_detects_layout(make_napari_viewer, qtbot, phantom_dir: Path) -> None:
    w = DatasetWidget(make_napari_viewer())
    wait_worker(qtbot, w.open_index(phantom_dir))
    assert len(w.index) == 10 and "10 images" in w.status.text()


def test_bad_path_reports_error(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    w = DatasetWidget(make_napari_viewer())
    (tmp_path / "nothing").mkdir()
    wait_worker(qtbot, w.open_index(tmp_path / "nothing"))
    assert w.status.text().startswith("Error") and "nothing" in w.status.text()
    assert w.load_btn.isEnabled()


def test_load_subject_aligned_layers(widget: DatasetWidget, qtbot) -> None:
    viewer = widget.viewer
    widget.center_combo.setCurrentText("A")
    subject = widget.subject_combo.itemText(1)
    wait_worker(qtbot, widget.load_subject(subject))
    images = [ly for ly in viewer.layers if ly.__class__.__name__ == "Image"]
    labels = [ly for ly in viewer.layers if ly.__class__.__name__ == "Labels"]
    assert len(images) == 5 and len(labels) == 1
    assert widget.progress.value() == widget.progress.maximum() == 6
    assert tuple(viewer.dims.axis_labels) == ("S", "A", "R")
    assert tuple(viewer.camera.orientation2d) == ("up", "left")
    # the organ under a pancreas voxel is named in the features table
    feats = labels[0].features
    assert feats.loc[feats["index"] == PANCREAS, "organ"].item() == "pancreas"
    # loading again replaces rather than duplicates
    wait_worker(qtbot, widget.load_subject(subject))
    assert len(viewer.layers) == 6


def test_cancel_loading(widget: DatasetWidget, qtbot) -> None:
    worker = widget.load_subject()
    widget.cancel()
    wait_worker(qtbot, worker)
    assert len(widget.viewer.layers) < 6
    assert widget.load_btn.isEnabled() and not widget.cancel_btn.isEnabled()


@pytest.mark.gui
def test_screenshot_pancreas_label_over_pancreas(widget: DatasetWidget, qtbot) -> None:
    """What a person sees: the yellow pancreas label sits on the pancreas, radiological view."""
    from napari_pandg._qt.screenshots import focus_on_label

    viewer = widget.viewer
    widget.center_combo.setCurrentText("A")
    widget.sequence_combo.setCurrentText("t1fs_venous")
    wait_worker(qtbot, widget.load_subject(widget.subject_combo.itemText(1)))
    (image,) = [ly for ly in viewer.layers if ly.__class__.__name__ == "Image"]
    (labels,) = [ly for ly in viewer.layers if ly.__class__.__name__ == "Labels"]
    focus_on_label(viewer, labels)
    labels.opacity = 1.0
    labels.show_selected_label = True
    labels.selected_label = PANCREAS

    with_label = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    labels.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    labels.visible = True
    assert without.mean() > 10, "image not rendered"

    # yellow (255, 220, 0) pixels appear only where the label is drawn
    yellow = (with_label[..., 0] > 200) & (with_label[..., 1] > 170) & (with_label[..., 2] < 80)
    assert yellow.sum() > 50, "pancreas label not visible"
    assert (np.abs(with_label - without).sum(axis=2)[~yellow] > 30).mean() < 0.01

    # where on screen: project the label's world centroid on this slice through the 2D camera
    sl = np.asarray(labels.data)[int(round(labels.world_to_data(viewer.dims.point)[0]))]
    rows, cols = np.nonzero(sl == PANCREAS)
    world = np.array([labels.data_to_world((0, r, c))[1:] for r, c in zip(rows, cols, strict=True)]).mean(axis=0)
    h, w = with_label.shape[:2]
    cy, cx = viewer.camera.center[-2:]
    zoom = viewer.camera.zoom
    exp_row = h / 2 - (world[0] - cy) * zoom  # 'up': anterior (larger A) higher on screen
    exp_col = w / 2 - (world[1] - cx) * zoom  # 'left': patient right (larger R) on screen left
    got_row, got_col = np.argwhere(yellow).mean(axis=0)
    tol = max(6.0, 0.04 * max(h, w))
    assert abs(got_row - exp_row) < tol and abs(got_col - exp_col) < tol, (got_row, exp_row, got_col, exp_col)
    # the pancreas (tail toward the spleen) lies on the patient's left: screen right of the spine
    assert got_col > w * 0.4

    # under the yellow pixels the image shows the pancreas: brighter than the dark fat around it
    ring = np.zeros_like(yellow)
    r0, r1 = np.nonzero(yellow)[0].min(), np.nonzero(yellow)[0].max()
    c0, c1 = np.nonzero(yellow)[1].min(), np.nonzero(yellow)[1].max()
    ring[max(r0 - 8, 0) : r1 + 8, max(c0 - 8, 0) : c1 + 8] = True
    ring &= ~yellow
    assert without[yellow].mean() > 0.9 * without[ring].mean()
