"""Real napari screenshots of a subject (demo, docs) and the interactive demo viewer."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_pandg.labels import PANCREAS
from napari_pandg.layerdata import apply_radiological_view, iter_subject_layerdata, style_labels_layer


@contextlib.contextmanager
def ensure_display(size: tuple[int, int] = (1280, 1024)) -> Iterator[str]:
    """Use the current display, or start a virtual Xvfb display for the duration.

    napari needs an OpenGL context; pure ``QT_QPA_PLATFORM=offscreen`` crashes vispy, so a
    headless machine needs Xvfb (Debian package ``xvfb``, Mesa for llvmpipe rendering).
    """
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        raise RuntimeError(
            "no display and no Xvfb: install the Debian package 'xvfb' (and Mesa: libgl1-mesa-dri) "
            "or run under a desktop session to take napari screenshots"
        )
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=size, color_depth=24)
    display.start()
    try:
        yield os.environ["DISPLAY"]
    finally:
        display.stop()


def add_layers(viewer: Any, rows: pd.DataFrame, labels: str = "first") -> list[Any]:
    """Synchronously add a subject's layers (scripts and the demo; widgets use workers)."""
    layers = []
    for _, _, (data, kwargs, kind) in iter_subject_layerdata(rows, labels=labels):
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        layers.append(style_labels_layer(layer) if kind == "labels" else layer)
    viewer.dims.axis_labels = ("S", "A", "R")
    apply_radiological_view(viewer)
    viewer.reset_view()
    return layers


def focus_on_label(viewer: Any, labels_layer: Any, label: int = PANCREAS) -> None:
    """Move the axial slider to the slice through the centroid of ``label``."""
    idx = np.argwhere(np.asarray(labels_layer.data) == label)
    if idx.size == 0:
        return
    world = labels_layer.data_to_world(idx.mean(axis=0))
    viewer.dims.set_point(0, float(world[0]))


def subject_screenshots(rows: pd.DataFrame, out_dir: str | Path, window: tuple[int, int] = (1000, 760)) -> list[Path]:
    """One axial screenshot per sequence at the pancreas with organ outlines, plus a grid PNG.

    The labels are drawn as 2-pixel outlines (``contour=2``) so the image stays visible:
    the yellow outline is the pancreas.
    """
    import napari
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with ensure_display():
        viewer = napari.Viewer(show=True)
        try:
            viewer.window.resize(*window)
            layers = add_layers(viewer, rows, labels="first")
            images = [ly for ly in layers if isinstance(ly, napari.layers.Image)]
            labels = [ly for ly in layers if isinstance(ly, napari.layers.Labels)]
            if labels:
                labels[0].contour = 2
                labels[0].opacity = 0.9
                focus_on_label(viewer, labels[0])
            viewer.reset_view()
            tiles = []
            for img in images:
                for other in images:
                    other.visible = other is img
                shot = viewer.screenshot(canvas_only=True, flash=False)
                path = out_dir / f"{img.name}.png"
                Image.fromarray(shot).save(path)
                paths.append(path)
                tiles.append(shot[..., :3])
            if tiles:
                grid = np.concatenate(tiles, axis=1)
                path = out_dir / "subject_all_sequences.png"
                Image.fromarray(grid).save(path)
                paths.append(path)
        finally:
            viewer.close()
    return paths


def open_viewer_with(index: pd.DataFrame, index_path: Path) -> None:  # pragma: no cover - interactive
    """Open napari with the first subject and the Dataset widget on the demo index."""
    import napari

    from napari_pandg._qt.dataset_widget import DatasetWidget

    viewer = napari.Viewer(title="napari-pandg demo")
    widget = DatasetWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Dataset", area="right")
    widget.set_index(index)
    widget.path_edit.setText(str(index_path))
    first = str(index["subject"].iloc[0])
    layers = add_layers(viewer, index[index["subject"] == first])
    labels = [ly for ly in layers if isinstance(ly, napari.layers.Labels)]
    if labels:
        focus_on_label(viewer, labels[0])
    napari.run()
