"""Real napari screenshots of a subject (demo, docs) and the interactive demo viewer."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_pandg.labels import LABELS, NAMES, PANCREAS
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


def organs_on_screen(viewer: Any, labels_layer: Any) -> list[int]:
    """Label ids (> 0) in the slice of ``labels_layer`` the viewer shows now."""
    data = np.asarray(labels_layer.data)
    z = int(round(float(labels_layer.world_to_data(viewer.dims.point)[0])))
    if not 0 <= z < data.shape[0]:
        return []
    return [int(v) for v in np.unique(data[z]) if v > 0]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def annotate_tile(shot: np.ndarray, title: str, *, orientation: bool = True, band: int = 30) -> np.ndarray:
    """A screenshot with ``title`` in a band above it and the radiological orientation letters
    (A top, P bottom, R left, L right) at its edges. Returns RGB uint8."""
    from PIL import Image, ImageDraw

    rgb = np.asarray(shot)[..., :3].astype(np.uint8)
    h, w = rgb.shape[:2]
    img = Image.new("RGB", (w, h + band), (0, 0, 0))
    img.paste(Image.fromarray(rgb), (0, band))
    draw = ImageDraw.Draw(img)
    draw.text((8, band // 2), title, fill=(255, 255, 255), font=_font(18), anchor="lm")
    if orientation:
        f, c = _font(16), (255, 210, 80)
        draw.text((w // 2, band + 6), "A", fill=c, font=f, anchor="mt")
        draw.text((w // 2, band + h - 6), "P", fill=c, font=f, anchor="mb")
        draw.text((6, band + h // 2), "R", fill=c, font=f, anchor="lm")
        draw.text((w - 6, band + h // 2), "L", fill=c, font=f, anchor="rm")
    return np.asarray(img)


def legend_band(width: int, label_ids: Sequence[int], *, title: str = "labels (outlines):") -> np.ndarray:
    """An RGB band ``width`` pixels wide: a colour swatch and the organ name of every label id
    (pancreas first), wrapped onto as many rows as needed."""
    from PIL import Image, ImageDraw

    ids = sorted({int(i) for i in label_ids if int(i) in LABELS}, key=lambda i: (i != PANCREAS, i))
    font, row_h, pad = _font(15), 24, 8
    items = [(title, None)] + [(NAMES[i], LABELS[i][1]) for i in ids]
    rows: list[list[tuple[str, Any, int]]] = [[]]
    x = pad
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for text, colour in items:
        item_w = int(probe.textlength(text, font=font)) + (22 if colour is not None else 0) + 16
        if x + item_w > width - pad and rows[-1]:
            rows.append([])
            x = pad
        rows[-1].append((text, colour, x))
        x += item_w
    img = Image.new("RGB", (width, len(rows) * row_h + pad), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for r, row in enumerate(rows):
        y = pad // 2 + r * row_h + row_h // 2
        for text, colour, x0 in row:
            if colour is None:
                draw.text((x0, y), text, fill=(200, 200, 200), font=font, anchor="lm")
                continue
            draw.rectangle([x0, y - 7, x0 + 14, y + 7], fill=tuple(colour), outline=(255, 255, 255))
            draw.text((x0 + 20, y), text, fill=(255, 255, 255), font=font, anchor="lm")
    return np.asarray(img)


def _tile_title(layer: Any) -> str:
    md = layer.metadata or {}
    seq = str(md.get("sequence") or layer.name)
    parts = [str(md.get("subject") or ""), f"center {md['center']}" if md.get("center") else "", seq]
    return " · ".join(p for p in parts if p)


def subject_screenshots(rows: pd.DataFrame, out_dir: str | Path, window: tuple[int, int] = (1000, 760)) -> list[Path]:
    """One axial screenshot per sequence at the pancreas with organ outlines, plus a grid PNG.

    The labels are drawn as 2-pixel outlines (``contour=2``) so the image stays visible: the
    yellow outline is the pancreas. Every PNG carries the sequence (subject, center) above the
    image, the radiological orientation letters (A/P, R/L) and a legend of the organ colours
    of that slice; ``subject_all_sequences.png`` puts the titled tiles side by side over one
    shared legend.
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
            organs = organs_on_screen(viewer, labels[0]) if labels else []
            tiles = []
            for img in images:
                for other in images:
                    other.visible = other is img
                tile = annotate_tile(viewer.screenshot(canvas_only=True, flash=False), _tile_title(img))
                one = np.concatenate([tile, legend_band(tile.shape[1], organs)], axis=0) if organs else tile
                path = out_dir / f"{img.name}.png"
                Image.fromarray(one).save(path)
                paths.append(path)
                tiles.append(tile)
            if tiles:
                height = min(t.shape[0] for t in tiles)
                grid = np.concatenate([t[:height] for t in tiles], axis=1)
                if organs:
                    grid = np.concatenate([grid, legend_band(grid.shape[1], organs)], axis=0)
                path = out_dir / "subject_all_sequences.png"
                Image.fromarray(grid).save(path)
                paths.append(path)
        finally:
            viewer.close()
    return paths


#: the plugin's dock widgets, by their napari.yaml display names
WIDGET_NAMES = ("Dataset", "Segment (DG models)", "MedSAM2 prompting", "Feature UMAP", "Fine-tune")


def dock_plugin_widgets(viewer: Any, names: Sequence[str] = WIDGET_NAMES, tabify: bool = True) -> dict[str, Any]:
    """Dock the plugin's widgets on the right, as tabs of one dock area (``tabify``), with
    the first one in front; returns ``name -> widget``. Stacked (``tabify=False``) they fit
    too (each scrolls), but a tab each leaves every widget the full height."""
    widgets: dict[str, Any] = {}
    docks = []
    for name in names:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-pandg", name, tabify=tabify)
        widgets[name] = widget
        docks.append(dock)
    if docks:
        docks[0].show()
        docks[0].raise_()
    return widgets


def open_viewer_with(index: pd.DataFrame, index_path: Path) -> None:  # pragma: no cover - interactive
    """Open napari with the first subject and the plugin's widgets (tabs, Dataset in front)
    on the demo index."""
    import napari

    viewer = napari.Viewer(title="napari-pandg demo")
    widget = dock_plugin_widgets(viewer)["Dataset"]
    widget.set_index(index)
    widget.path_edit.setText(str(index_path))
    first = str(index["subject"].iloc[0])
    layers = add_layers(viewer, index[index["subject"] == first])
    labels = [ly for ly in layers if isinstance(ly, napari.layers.Labels)]
    if labels:
        focus_on_label(viewer, labels[0])
    napari.run()
