"""First look at the widgets on a real viewer: docks fit a laptop screen, the visible layer is
chosen, nothing is clipped, empty plots say what will appear."""

from __future__ import annotations

from pathlib import Path

import pytest
from qtpy.QtWidgets import QApplication

WIDGETS = ("Dataset", "Segment (DG models)", "MedSAM2 prompting", "Feature UMAP", "Fine-tune")


def _dock_all(viewer, tabify: bool = False) -> dict[str, object]:
    out = {}
    for name in WIDGETS:
        _, widget = viewer.window.add_plugin_dock_widget("napari-pandg", name, tabify=tabify)
        out[name] = widget
        QApplication.processEvents()
    return out


def test_five_docks_fit_a_laptop_screen(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 760)
    widgets = _dock_all(viewer)
    QApplication.processEvents()
    # was 1089 x 2724: each dock's minimum height was its whole content
    assert window.height() <= 1000 and window.width() <= 1400, (window.width(), window.height())
    for name, w in widgets.items():
        hint = w.minimumSizeHint()
        assert hint.height() <= 150 and hint.width() <= 150, (name, hint)


def test_each_dock_fits_the_default_dock_width(make_napari_viewer) -> None:
    """Docked one at a time (tabified): no content wider than the dock (nothing cut at the
    right, no sideways scrolling)."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 760)
    widgets = _dock_all(viewer, tabify=True)
    for name, w in widgets.items():
        if w.parentWidget() is not None:
            w.parentWidget().raise_()
        w.scroll_area.ensurePolished()
        QApplication.processEvents()
        inner = w.scroll_area.widget()
        assert inner.minimumSizeHint().width() <= max(w.scroll_area.viewport().width(), 300), name


def test_segment_model_line_is_fully_readable(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 760)
    _, w = viewer.window.add_plugin_dock_widget("napari-pandg", "Segment (DG models)")
    w.model_combo.setCurrentText("erm_A_t1fs_venous")
    QApplication.processEvents()
    info = w.model_info
    assert "trained on centers" in info.text()
    assert info.wordWrap()
    assert info.geometry().right() <= w.scroll_area.viewport().width()  # not cut at the right
    assert info.height() >= info.heightForWidth(info.width())  # every wrapped line shown


def test_dataset_table_headers_are_readable(make_napari_viewer, qtbot, phantom_dir: Path) -> None:
    from .conftest import wait_worker

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 760)
    _, w = viewer.window.add_plugin_dock_widget("napari-pandg", "Dataset")
    wait_worker(qtbot, w.open_index(phantom_dir / "manifest.csv"))
    QApplication.processEvents()
    header = w.table.horizontalHeader()
    for c in range(w.table.columnCount()):
        text = w.table.horizontalHeaderItem(c).text()
        assert header.sectionSize(c) >= header.fontMetrics().horizontalAdvance(text), text
    # a value too long for the table keeps its full text as the tooltip
    assert w.table.item(0, 4).toolTip().endswith(".nii.gz")


@pytest.mark.parametrize("dock_first", [True, False])
def test_widgets_default_to_the_visible_image(make_napari_viewer, dock_first: bool) -> None:
    viewer = make_napari_viewer()
    names = ("Segment (DG models)", "MedSAM2 prompting", "Fine-tune")
    widgets = {}
    if dock_first:
        widgets = {n: viewer.window.add_plugin_dock_widget("napari-pandg", n)[1] for n in names}
    viewer.open_sample("napari-pandg", "phantom_subject")  # A000_t1fs first, but hidden
    if not dock_first:
        widgets = {n: viewer.window.add_plugin_dock_widget("napari-pandg", n)[1] for n in names}
    for name, w in widgets.items():
        assert w.image_combo.currentText() == "A000_t1fs_venous", name
    assert widgets["Fine-tune"].label_combo.currentText() == "A000_t1fs_venous_labels"
    # selecting another (visible) image layer in the layer list moves the choice to it
    t2 = viewer.layers["A000_t2"]
    t2.visible = True
    viewer.layers.selection.active = t2
    for name, w in widgets.items():
        assert w.image_combo.currentText() == "A000_t2", name


def test_empty_plots_show_a_hint(make_napari_viewer) -> None:
    from napari_pandg._qt.embedding_widget import EMPTY_PLOT_HINT as UMAP_HINT
    from napari_pandg._qt.finetune_widget import EMPTY_PLOT_HINT as CURVE_HINT

    viewer = make_napari_viewer()
    _, umap = viewer.window.add_plugin_dock_widget("napari-pandg", "Feature UMAP")
    _, ft = viewer.window.add_plugin_dock_widget("napari-pandg", "Fine-tune")
    for w, hint in ((umap, UMAP_HINT), (ft, CURVE_HINT)):
        assert not w.ax.axison, "an empty 0-1 axis is drawn"
        assert [t.get_text() for t in w.ax.texts] == [hint]
    ft.history = [{"epoch": 1, "loss": 0.5, "val_dice": 0.4}]
    ft._plot()
    assert ft.ax.axison and not ft.ax.texts


def test_demo_viewer_docks_every_widget_as_tabs(make_napari_viewer) -> None:
    from napari_pandg._qt.screenshots import WIDGET_NAMES, dock_plugin_widgets

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 760)
    widgets = dock_plugin_widgets(viewer)
    QApplication.processEvents()
    assert list(widgets) == list(WIDGET_NAMES)
    assert window.height() <= 800, window.height()
    docks = [w.parentWidget() for w in widgets.values()]
    while docks[0] is not None and not hasattr(docks[0], "isFloating"):  # up to the QDockWidget
        docks = [d.parentWidget() for d in docks]
    assert len(window.tabifiedDockWidgets(docks[0])) == len(WIDGET_NAMES) - 1


def test_subject_screenshots_name_sequences_and_show_a_legend(phantom_index, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from napari_pandg._qt.screenshots import subject_screenshots
    from napari_pandg.labels import LABELS, PANCREAS

    subject = phantom_index["subject"].iloc[0]
    rows = phantom_index[phantom_index["subject"] == subject]
    paths = subject_screenshots(rows, tmp_path, window=(700, 560))
    names = [p.name for p in paths]
    assert names[-1] == "subject_all_sequences.png" and len(paths) == len(rows) + 1
    grid = np.asarray(Image.open(paths[-1]).convert("RGB"))
    one = np.asarray(Image.open(paths[0]).convert("RGB"))
    assert grid.shape[1] == len(rows) * one.shape[1]
    Image.fromarray(grid).save(tmp_path / "look.png")
    # the title band above each tile has text (the sequence name) ...
    assert (grid[:30, : one.shape[1]] > 200).any()
    # ... and under the tiles the legend has the pancreas swatch in its colour
    legend = grid[-60:]
    assert (np.abs(legend.astype(int) - LABELS[PANCREAS][1]).sum(axis=-1) == 0).sum() > 50
