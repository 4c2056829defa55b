"""Segment dock widget: run a trained (DG) model on an image layer, compare with ground truth.

Thin: model loading, inference (``napari_pandg.models.segment_volume``) and metrics
(``napari_pandg.metrics``) are library calls in a worker; the widget moves layers to
Volumes and back (``napari_pandg.io.from_napari`` / ``layerdata.volume_layerdata``).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from napari_pandg._qt._common import (
    WorkerControls,
    layer_names,
    scrolling_layout,
    set_combo_items,
    set_layer_combo,
)
from napari_pandg.labels import PANCREAS

if TYPE_CHECKING:  # pragma: no cover
    import napari

NONE = "(none)"


class SegmentWidget(WorkerControls, QWidget):
    """Choose a shipped / user / file model, segment the selected image, show Dice and HD95."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result_layer: Any = None
        self.metrics: dict[str, Any] = {}

        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_btn = QPushButton("…")
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        self.image_combo = QComboBox()
        self.gt_combo = QComboBox()
        self.status = QLabel("Choose a model and an image.")
        self.status.setWordWrap(True)
        #: the shift score of the last result: how far the image is from the model's training domain
        self.shift_label = QLabel("")
        self.shift_label.setWordWrap(True)
        self.shift_label.setVisible(False)
        self.shift: dict[str, Any] = {}
        buttons = self._init_worker_controls("Segment")

        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.model_btn)
        form = QFormLayout()
        form.addRow("Model", row)
        form.addRow(self.model_info)
        form.addRow("Image", self.image_combo)
        form.addRow("Ground truth", self.gt_combo)
        lay = scrolling_layout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.shift_label)
        lay.addStretch(1)

        self.model_btn.clicked.connect(self._choose_model)
        self.model_combo.currentTextChanged.connect(self._describe_model)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._refresh_layers)
        self.refresh_models()
        self._refresh_layers()

    # ------------------------------------------------------------------ choices
    def refresh_models(self) -> None:
        from napari_pandg.models import list_models

        df = list_models(describe=False)
        names = list(df["name"]) if "name" in df else []
        current = self.model_combo.currentText()
        set_combo_items(self.model_combo, names)
        if current:  # editable: keep a typed checkpoint path too
            self.model_combo.setCurrentText(current)
        self._describe_model(self.model_combo.currentText())

    def _describe_model(self, name: str) -> None:
        from napari_pandg.models import ModelError, read_description, resolve_model

        if not name:
            self.model_info.setText("No model: train one (pandg train) or choose a checkpoint file.")
            return
        try:
            d = read_description(resolve_model(name))
            self.model_info.setText(d.summary())
        except (ModelError, FileNotFoundError) as exc:
            self.model_info.setText(str(exc))

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Segmentation checkpoint", "", "PyTorch (*.pt *.pth)")
        if path:
            self.model_combo.setCurrentText(path)

    def _refresh_layers(self, *_: Any) -> None:
        set_layer_combo(self.image_combo, self.viewer, "Image", follow_selection=True)  # the visible one
        set_combo_items(self.gt_combo, [NONE, *layer_names(self.viewer, "Labels")])

    # ------------------------------------------------------------------ running
    def run(self, model: str | None = None, image: Any = None, ground_truth: Any = None) -> Any:
        """Segment ``image`` (default: the chosen layer) in a worker; returns the worker."""
        from napari.qt.threading import create_worker

        from napari_pandg.io import from_napari

        model = model or self.model_combo.currentText().strip()
        image = image if image is not None else self._layer(self.image_combo.currentText())
        if ground_truth is None and self.gt_combo.currentText() not in ("", NONE):
            ground_truth = self._layer(self.gt_combo.currentText())
        if not model or image is None:
            self.status.setText("Choose a model and an image layer.")
            return None
        vol = from_napari(np.asarray(image.data), dict(image.metadata), is_label=False, scale=image.scale, translate=image.translate)
        gt = None
        if ground_truth is not None:
            if ground_truth.data.shape != image.data.shape:
                self.status.setText(
                    f"ground truth {ground_truth.name!r} {ground_truth.data.shape} is not on the image grid "
                    f"{image.data.shape}: choose the label layer of this image"
                )
                return None
            gt = np.asarray(ground_truth.data)
        self.status.setText(f"Segmenting {image.name} with {Path(model).name} …")
        worker = create_worker(self._work, model, vol, gt, _ignore_errors=True)
        return self._start_worker(worker, lambda res: self._show(res, image))

    def _work(self, model: str, vol: Any, gt: np.ndarray | None) -> dict[str, Any]:
        """Runs in the worker thread: inference + metrics (no Qt objects touched)."""
        from napari_pandg.io import to_napari
        from napari_pandg.metrics import segmentation_metrics
        from napari_pandg.models import SegmentationCancelled, segment_volume

        try:
            pred = segment_volume(model, vol, progress=self._report, cancel=self._cancel.is_set)
        except SegmentationCancelled:
            return {"cancelled": True}
        data, kwargs = to_napari(pred)
        out: dict[str, Any] = {"data": data, "kwargs": kwargs, "shift": pred.metadata.get("shift") or {}}
        if gt is not None:
            spacing = kwargs["metadata"]["spacing_sar"]
            out["metrics"] = segmentation_metrics(data, gt, spacing=spacing, label=PANCREAS)
        return out

    def _show(self, res: dict[str, Any], image: Any) -> None:
        if res.get("cancelled"):
            self.status.setText("Cancelled.")
            return
        from napari_pandg.layerdata import label_colormap, label_features, style_labels_layer

        name = f"{image.name}_pred"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        kwargs = dict(res["kwargs"])
        kwargs.update(
            name=name,
            colormap=label_colormap(),
            features=label_features(np.unique(res["data"])),
            # saving writes on the image's own grid and header; the shift report travels along
            metadata={**dict(image.metadata), "shift": res.get("shift") or {}},
        )
        for key in ("scale", "translate", "affine"):
            kwargs[key] = getattr(image, key) if key != "affine" else image.affine.affine_matrix
        self.result_layer = style_labels_layer(self.viewer.add_labels(res["data"], **kwargs))
        self.metrics = res.get("metrics", {})
        voxels = int(np.count_nonzero(res["data"] == PANCREAS))
        text = f"{name}: pancreas {voxels} voxels"
        if self.metrics:
            text += f" — Dice {self.metrics['dice']:.3f}, HD95 {self.metrics['hd95']:.1f} mm, NSD {self.metrics['nsd']:.3f}"
        self.status.setText(text)
        self._show_shift(res.get("shift") or {})

    def _show_shift(self, shift: dict[str, Any]) -> None:
        """The shift score under the result: a red warning above 1, a quiet line otherwise."""
        from napari_pandg.models.shift import ShiftReport

        self.shift = dict(shift)
        if not shift:
            self.shift_label.setVisible(False)
            return
        rep = ShiftReport.from_dict(shift)
        if rep.flagged:
            body = "<br>".join(f"• {html.escape(r)}" for r in rep.reasons)
            self.shift_label.setText(f"<b>⚠ Do not trust this result without checking it: shift score "
                                     f"{rep.score:.2f} (above 1 = outside the model's training domain)</b>"
                                     + (f"<br>{body}" if body else ""))  # fmt: skip
            self.shift_label.setStyleSheet("QLabel{background:#7a1f1f;color:white;border:2px solid #e74c3c;"
                                           "border-radius:4px;padding:6px}")  # fmt: skip
        else:
            note = "" if rep.calibrated else " — this model has no training-domain reference: only image and volume checks ran"
            self.shift_label.setText(f"shift score {rep.score:.2f}: within the model's training domain{note}")
            self.shift_label.setStyleSheet("QLabel{background:#1f4d2b;color:white;border-radius:4px;padding:4px}")
        self.shift_label.setToolTip("Shift score: max of feature distance to the training domain, model "
                                    "uncertainty, implausible pancreas volume and image sanity, each scaled so "
                                    "that 1 is the most unusual in-domain calibration volume.\n"
                                    + ", ".join(f"{k} {v:.2f}" for k, v in rep.components.items()))  # fmt: skip
        self.shift_label.setVisible(True)

    def _layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

