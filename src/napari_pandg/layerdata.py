"""Volumes -> napari LayerData tuples, and the display conventions we use.

No Qt and no viewer here: these functions return ``(data, kwargs, layer_type)`` tuples that
the reader, the sample-data command, the Dataset widget and the demo all share. napari is
imported lazily (only for the label colormap class).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_pandg.io import load_volume, to_napari
from napari_pandg.labels import NAMES, colour_dict
from napari_pandg.volume import Volume

LayerData = tuple[np.ndarray, dict[str, Any], str]

#: Radiological axial display in napari axes (S, A, R): anterior up, patient right on the left.
RADIOLOGICAL_2D = ("up", "left")

#: How label layers are drawn over an image: organ outlines (``contour`` pixels wide), so that
#: the image under them stays readable. LayerData carry only the opacity (``contour`` is not a
#: ``Labels`` constructor argument); :func:`style_labels_layer` sets both on a layer.
LABEL_CONTOUR = 1
LABEL_OPACITY = 0.9
#: Opacity of label LayerData before :func:`style_labels_layer` runs (filled, translucent).
LABEL_FILL_OPACITY = 0.35


def apply_radiological_view(viewer: Any = None) -> bool:
    """Show the viewer's 2D slices in the radiological convention; return whether it did.

    napari draws world axis 1 (A) increasing downward and axis 2 (R) increasing rightward,
    i.e. spine at the top and the patient's right on screen right. The camera's
    ``orientation2d = ("up", "left")`` flips the *display* only (world coordinates stay true
    RAS mm): anterior up and patient right on screen left in axial slices, superior up in
    coronal and sagittal ones. Every path that shows volumes calls this: the reader and the
    sample-data command (with ``viewer=None``: :func:`napari.current_viewer`, nothing when
    there is none), the Dataset widget, the demo and the screenshots. Only the GUI (main)
    thread touches the viewer; from another thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if viewer is None:
        try:
            import napari
        except ImportError:  # pragma: no cover - napari is a dependency
            return False
        viewer = napari.current_viewer()
        if viewer is None:
            return False
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9: scene
    camera.orientation2d = RADIOLOGICAL_2D
    if viewer.dims.ndim == 3 and tuple(viewer.dims.axis_labels) == ("0", "1", "2"):
        viewer.dims.axis_labels = ("S", "A", "R")
    return True


def style_labels_layer(layer: Any) -> Any:
    """Draw a labels layer as organ outlines (:data:`LABEL_CONTOUR`, :data:`LABEL_OPACITY`)."""
    layer.contour = LABEL_CONTOUR
    layer.opacity = LABEL_OPACITY
    return layer


def prepare_current_viewer(layers: Sequence[LayerData]) -> Sequence[LayerData]:
    """Before napari adds ``layers`` (a reader's or sample command's result) to the current
    viewer: apply the radiological view, and outline their label layers once they are added.

    Returns ``layers`` unchanged. Without a current viewer (a script calling the reader
    directly, or a worker thread) nothing happens.
    """
    if not apply_radiological_view(None):
        return layers
    import napari

    viewer = napari.current_viewer()
    pending = [(data, kw.get("name")) for data, kw, kind in layers if kind == "labels"]
    if not pending:
        return layers

    def _on_inserted(event: Any) -> None:
        layer = event.value
        for item in list(pending):
            data, name = item
            if isinstance(layer, napari.layers.Labels) and (layer.data is data or layer.name == name):
                style_labels_layer(layer)
                pending.remove(item)
                break
        if not pending:
            viewer.layers.events.inserted.disconnect(_on_inserted)

    viewer.layers.events.inserted.connect(_on_inserted)
    return layers


def label_features(values: Iterable[int]) -> pd.DataFrame:
    """A ``Labels.features`` table so the status bar names the organ under the cursor."""
    ids = sorted({0, *(int(v) for v in values)})
    return pd.DataFrame({"index": ids, "organ": [NAMES.get(i, "background" if i == 0 else f"label_{i}") for i in ids]})


def label_colormap() -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=colour_dict())


def volume_layerdata(vol: Volume, *, opacity: float = LABEL_FILL_OPACITY) -> LayerData:
    """One Volume as an image or labels LayerData in true world mm.

    Images keep :func:`napari_pandg.io.to_napari`'s grey colormap and robust contrast
    limits; labels get the fixed AMOS organ colours and an organ-name features table.
    """
    data, kwargs = to_napari(vol)
    if vol.is_label:
        kwargs.update(
            colormap=label_colormap(),
            opacity=opacity,
            features=label_features(np.unique(data)),
        )
        return data, kwargs, "labels"
    return data, kwargs, "image"


def iter_subject_layerdata(
    rows: pd.DataFrame,
    *,
    labels: str = "first",
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, int, LayerData]]:
    """Yield ``(done, total, layerdata)`` for the images (and labels) of index rows.

    ``labels``: ``"first"`` loads the label of the first row that has one (all sequences of
    a subject share world coordinates, so one label layer overlays all of them), ``"all"``
    loads every row's label, ``"none"`` loads none. Stops early when ``cancelled()`` is true.
    """
    rows = rows.reset_index(drop=True)
    total = count_layers(rows, labels)
    done = 0
    pending_labels: list[tuple[str, dict[str, str], str | None]] = []
    for _, row in rows.iterrows():
        if cancelled is not None and cancelled():
            return
        meta = dict(subject=str(row["subject"]), center=str(row["center"]), sequence=str(row["sequence"]))
        done += 1
        yield done, total, volume_layerdata(load_volume(row["image"], **meta))
        want = labels == "all" or (labels == "first" and not pending_labels)
        if want and isinstance(row.get("label"), str) and row["label"]:
            label_map = row.get("label_map")
            pending_labels.append((row["label"], meta, label_map if isinstance(label_map, str) and label_map else None))
    # labels last, so that they are drawn on top of every image
    for path, meta, label_map in pending_labels:
        if cancelled is not None and cancelled():
            return
        done += 1
        yield done, total, volume_layerdata(load_volume(path, is_label=True, label_map=label_map, **meta))


def _has_label(rows: pd.DataFrame) -> pd.Series:
    if "label" not in rows:
        return pd.Series(False, index=rows.index)
    return rows["label"].apply(lambda v: isinstance(v, str) and bool(v))


def count_layers(rows: pd.DataFrame, labels: str = "first") -> int:
    """How many layers :func:`iter_subject_layerdata` yields for these rows."""
    n_lab = int(_has_label(rows).sum())
    if labels == "all":
        return len(rows) + n_lab
    if labels == "first":
        return len(rows) + min(n_lab, 1)
    return len(rows)
