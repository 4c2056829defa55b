"""Use one napari-pandg widget the way a person does, in a fresh process (not a test module).

``python tests/qt/user_session.py WIDGET DATA_DIR WORK_DIR`` starts napari exactly as a user
session does: nothing imported before napari (in particular not torch, torchvision or triton,
which ``tests/conftest.py`` pre-imports for the in-process GUI tests), a shown viewer with
an OpenGL canvas, data opened through the plugin's sample data or reader, the widget docked
from the plugin's manifest, its buttons clicked, and the Qt event loop running while the
widget's worker imports torch and computes. It prints one JSON line (what it saw) and exits 0
when the widget produced its result; a crash shows as a signal exit code (-11 for SIGSEGV).

WIDGET: ``segment`` (sample data + the shipped DG model), ``sam`` (a NIfTI from DATA_DIR, a
random-weight MedSAM2-shaped checkpoint WORK_DIR/sam.pt, one box prompt), ``finetune`` (image
+ label from DATA_DIR, tiny base model WORK_DIR/base.pt, one epoch), ``umap`` (intensity
features of DATA_DIR).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEAVY = ("torch", "torchvision", "triton", "monai", "sam2")


def pump(until: Callable[[], bool], timeout: float) -> bool:
    """Run the Qt event loop until ``until()`` holds (True) or ``timeout`` seconds pass."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QApplication.processEvents()
        if until():
            return True
        time.sleep(0.02)
    return False


def _first_rows(data: Path, sequence: str) -> Any:
    import pandas as pd

    df = pd.read_csv(data / "manifest.csv")
    row = df[(df["center"] == "A") & (df["sequence"] == sequence)].iloc[0]
    return data / row["image"], data / row["label"]


def segment(viewer: Any, data: Path, work: Path) -> dict[str, Any]:
    viewer.open_sample("napari-pandg", "phantom_subject")
    _, w = viewer.window.add_plugin_dock_widget("napari-pandg", "Segment (DG models)")
    image = next(ly for ly in viewer.layers if ly.visible and ly.__class__.__name__ == "Image")
    w.model_combo.setCurrentText("synth_A_t1fs_venous")
    w.image_combo.setCurrentText(image.name)
    w.run_btn.click()
    name = f"{image.name}_pred"
    ok = pump(lambda: name in viewer.layers, 300)
    pred = viewer.layers[name].data if ok else None
    return {"ok": ok, "status": w.status.text(), "pancreas_voxels": int((pred == 10).sum()) if ok else 0}


def sam(viewer: Any, data: Path, work: Path) -> dict[str, Any]:
    import numpy as np

    img, _ = _first_rows(data, "t1fs_venous")
    (layer,) = viewer.open(str(img), plugin="napari-pandg")
    _, w = viewer.window.add_plugin_dock_widget("napari-pandg", "MedSAM2 prompting")
    w.ckpt_edit.setText(str(work / "sam.pt"))
    w.size_spin.setValue(64)
    w.image_combo.setCurrentText(layer.name)
    w.load_btn.click()
    if not pump(lambda: w.engine is not None and not w._busy(), 300):
        return {"ok": False, "status": w.status.text(), "stage": "load"}
    w.init_btn.click()  # "Use this image"
    # a plugin widget sees the viewer through napari's PublicOnlyProxy: compare layers by name
    if not pump(lambda: w._prepared is not None and w._prepared.name == layer.name and not w._busy(), 300):
        return {"ok": False, "status": w.status.text(), "stage": "image"}
    z = layer.data.shape[0] // 2
    world = layer.data_to_world((z, 0, 0))
    viewer.dims.set_point(0, float(world[0]))
    _, a, r = layer.data.shape
    rect = np.array([[z, a * 0.3, r * 0.3], [z, a * 0.3, r * 0.7], [z, a * 0.7, r * 0.7], [z, a * 0.7, r * 0.3]])
    viewer.layers["prompts"].add_rectangles(rect)
    w.slice_btn.click()
    done = pump(lambda: not w._busy(), 300)
    return {"ok": done and "Error" not in w.status.text(), "status": w.status.text(), "stage": "slice"}


def finetune(viewer: Any, data: Path, work: Path) -> dict[str, Any]:
    img, lab = _first_rows(data, "t2")
    (im_layer,) = viewer.open(str(img), plugin="napari-pandg")
    (lab_layer,) = viewer.open(str(lab), plugin="napari-pandg")
    _, w = viewer.window.add_plugin_dock_widget("napari-pandg", "Fine-tune")
    w.add_pair(im_layer.name, lab_layer.name)
    w.model_combo.setCurrentText(str(work / "base.pt"))
    w.label_value.setValue(10)
    w.epochs.setValue(1)
    w.steps.setValue(1)
    w.run_dir.setText(str(work / "ft_run"))
    w.name.setText("ft_user_session")
    w.run_btn.click()
    done = pump(lambda: w.result is not None, 300)
    return {"ok": done and not w.result.cancelled, "status": w.status.text(), "epochs": len(w.history)}


def umap(viewer: Any, data: Path, work: Path) -> dict[str, Any]:
    _, w = viewer.window.add_plugin_dock_widget("napari-pandg", "Feature UMAP")
    w.source.setText(str(data))
    w.kind_combo.setCurrentText("intensity")
    w.sequences.setText("t1fs_venous,t2")
    w.run_btn.click()
    done = pump(lambda: w.table is not None, 300)
    return {"ok": done, "status": w.status.text(), "points": 0 if w.table is None else len(w.table)}


def main(argv: list[str]) -> int:
    which, data, work = argv[0], Path(argv[1]), Path(argv[2])
    preloaded = [m for m in HEAVY if m in sys.modules]
    import napari

    viewer = napari.Viewer(show=True)
    pump(lambda: False, 0.5)  # let the canvas create its OpenGL context (Mesa loads libLLVM)
    result = {"widget": which, "preloaded": preloaded}
    result.update({"segment": segment, "sam": sam, "finetune": finetune, "umap": umap}[which](viewer, data, work))
    result["heavy_loaded"] = [m for m in HEAVY if m in sys.modules]
    print(json.dumps(result), flush=True)
    viewer.close()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
