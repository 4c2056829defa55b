"""MedSAM2 / SAM2 prompting dock widget (micro-sam layer and key conventions).

Layers: ``point_prompts`` (Points, positive green / negative red), ``prompts`` (Shapes,
rectangles = boxes), ``current_object`` and ``committed_objects`` (Labels), all created with
the image's transform so prompts land on the right voxels.

Keys: ``s`` segment slice (2D preview), ``Shift-S`` segment volume (propagate, or correct the
current object from this slice), ``c`` commit, ``t`` toggle positive/negative, ``Shift-C``
clear. Model work runs in thread workers; propagation streams slice by slice into
``current_object`` and can be cancelled. The engine is :class:`napari_pandg.sam.VolumeSegmenter`.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_pandg._qt._common import (
    layer_names,
    report_error,
    scrolling_layout,
    set_combo_items,
    set_layer_combo,
)
from napari_pandg.labels import PANCREAS
from napari_pandg.prompting import (
    NEGATIVE,
    POSITIVE,
    boxes_by_slice,
    from_sam,
    points_by_slice,
    slice_from_napari,
    slice_to_napari,
    to_sam,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

PLUGIN = "napari-pandg"
LAYER_NAMES = ("point_prompts", "prompts", "current_object", "committed_objects")


class _Signals(QObject):
    """Carries per-slice results from the worker thread to the GUI thread."""

    slice_done = Signal(int, object, int, int)  # z, mask (A, R), done, total
    encoded = Signal(int, int)  # done, total


def _plugin_settings() -> Any | None:
    try:
        from napari.settings import get_plugin_settings

        return get_plugin_settings(PLUGIN).sam
    except Exception:  # settings unavailable (plugin not registered): the widget still works
        return None


class SamWidget(QWidget):
    """Box/point prompting on a slice, 3D propagation, corrections, undo and commit."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.engine: Any = None
        self.segmenter: Any = None
        self.image_layer: Any = None
        self._worker: Any = None
        self._cancel = threading.Event()
        self._signals = _Signals()
        self._signals.slice_done.connect(self._on_slice)
        self._signals.encoded.connect(self._on_encoded)
        self._prepared: Any = None  # the image layer whose volume the segmenter holds
        self._build_ui()
        self._load_settings()
        self._refresh_layer_choices()
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.layers.selection.events.active.connect(self._refresh_layer_choices)
        self._bind_keys(self.viewer)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        from napari_pandg.sam import AUTO_CONFIG, CONFIGS

        self.ckpt_edit = QLineEdit()
        self.ckpt_edit.setPlaceholderText("MedSAM2_latest.pt (local file)")
        self.ckpt_btn = QPushButton("…")
        self.config_combo = QComboBox()
        self.config_combo.addItems([AUTO_CONFIG, *CONFIGS])
        self.config_combo.setToolTip("auto: read from the checkpoint's structure (MedSAM2 files are sam2.1_hiera_t)")
        self.size_spin = QSpinBox()
        self.size_spin.setRange(64, 2048)
        self.size_spin.setSingleStep(64)
        self.size_spin.setValue(512)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        self.load_btn = QPushButton("Load model")
        self.model_label = QLabel("No model loaded.")
        self.model_label.setWordWrap(True)
        model_box = QGroupBox("Model")
        mform = QFormLayout(model_box)
        row = QHBoxLayout()
        row.addWidget(self.ckpt_edit)
        row.addWidget(self.ckpt_btn)
        mform.addRow("Checkpoint", row)
        mform.addRow("Config", self.config_combo)
        mform.addRow("Image size", self.size_spin)
        mform.addRow("Device", self.device_combo)
        mform.addRow(self.load_btn)
        mform.addRow(self.model_label)

        self.image_combo = QComboBox()
        self.init_btn = QPushButton("Use this image")
        self.mask_combo = QComboBox()
        self.mask_id_spin = QSpinBox()
        self.mask_id_spin.setRange(1, 65535)
        self.mask_id_spin.setValue(PANCREAS)
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("optional: keep slice features on disk")
        self.cache_edit.setToolTip(
            "Folder for the image embeddings (slice features, ~4.2 MB per slice at 512 px). "
            "Reopening the same image with the same model later encodes nothing again."
        )
        self.cache_btn = QPushButton("…")
        self.embed_btn = QPushButton("Compute embeddings")
        self.embed_btn.setToolTip("Encode every slice now (in the background), so that propagation "
                                  "and corrections only run the light part of the model")
        self.from_mask_btn = QPushButton("Start from labels")
        self.from_mask_btn.setToolTip("Correct an existing mask (DG model output or label file)")
        data_box = QGroupBox("Image")
        dform = QFormLayout(data_box)
        dform.addRow("Image layer", self.image_combo)
        dform.addRow(self.init_btn)
        crow = QHBoxLayout()
        crow.addWidget(self.cache_edit)
        crow.addWidget(self.cache_btn)
        dform.addRow("Embeddings folder", crow)
        dform.addRow(self.embed_btn)
        mrow = QHBoxLayout()
        mrow.addWidget(self.mask_combo)
        mrow.addWidget(self.mask_id_spin)
        dform.addRow("Existing mask", mrow)
        dform.addRow(self.from_mask_btn)

        self.label_combo = QComboBox()
        self.label_combo.addItems([POSITIVE, NEGATIVE])
        self.zlo_spin, self.zhi_spin = QSpinBox(), QSpinBox()
        for sp in (self.zlo_spin, self.zhi_spin):
            sp.setRange(-1, 100000)
            sp.setValue(-1)
            sp.setSpecialValueText("all")
        self.direction_combo = QComboBox()
        self.direction_combo.addItems(["both", "forward", "backward"])
        self.early_stop_spin = QSpinBox()
        self.early_stop_spin.setRange(0, 1000)
        self.early_stop_spin.setValue(0)
        self.early_stop_spin.setSpecialValueText("off")
        self.early_stop_spin.setSuffix(" empty slices")
        self.early_stop_spin.setToolTip(
            "early stop: end propagation in a direction once the mask has been empty on this many "
            "slices in a row; the slices beyond are not encoded (faster on a CPU)"
        )
        self.commit_id_spin = QSpinBox()
        self.commit_id_spin.setRange(1, 255)
        self.commit_id_spin.setValue(PANCREAS)
        self.slice_btn = QPushButton("Segment slice [S]")
        self.volume_btn = QPushButton("Segment volume [Shift-S]")
        self.commit_btn = QPushButton("Commit [C]")
        self.clear_btn = QPushButton("Clear [Shift-C]")
        self.undo_btn = QPushButton("Undo")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        prompt_box = QGroupBox("Prompt")
        pform = QFormLayout(prompt_box)
        pform.addRow("New points [T]", self.label_combo)
        zrow = QHBoxLayout()
        zrow.addWidget(self.zlo_spin)
        zrow.addWidget(self.zhi_spin)
        pform.addRow("Slice range", zrow)
        pform.addRow("Direction", self.direction_combo)
        pform.addRow("Stop after", self.early_stop_spin)
        pform.addRow("Commit as label", self.commit_id_spin)
        grid = QGridLayout()  # the two long buttons on rows of their own: fits a narrow dock
        grid.addWidget(self.slice_btn, 0, 0, 1, 2)
        grid.addWidget(self.volume_btn, 1, 0, 1, 2)
        grid.addWidget(self.commit_btn, 2, 0)
        grid.addWidget(self.clear_btn, 2, 1)
        grid.addWidget(self.undo_btn, 3, 0)
        grid.addWidget(self.cancel_btn, 3, 1)
        pform.addRow(grid)

        self.progress = QProgressBar()
        self.status = QLabel("Load a model, choose an image, draw a box or click points.")
        self.status.setWordWrap(True)
        lay = scrolling_layout(self)
        for w in (model_box, data_box, prompt_box, self.progress, self.status):
            lay.addWidget(w)
        lay.addStretch(1)

        self.ckpt_btn.clicked.connect(self._choose_checkpoint)
        self.load_btn.clicked.connect(lambda: self.load_model())
        self.init_btn.clicked.connect(self._use_selected_image)
        self.cache_btn.clicked.connect(self._choose_cache_dir)
        self.cache_edit.editingFinished.connect(self._cache_dir_changed)
        self.embed_btn.clicked.connect(lambda: self.compute_embeddings())
        self.from_mask_btn.clicked.connect(lambda: self.start_from_labels())
        self.label_combo.currentTextChanged.connect(self._set_point_label)
        self.slice_btn.clicked.connect(lambda: self.segment_slice())
        self.volume_btn.clicked.connect(lambda: self.segment_volume())
        self.commit_btn.clicked.connect(lambda: self.commit())
        self.clear_btn.clicked.connect(lambda: self.clear())
        self.undo_btn.clicked.connect(lambda: self.undo())
        self.cancel_btn.clicked.connect(self.cancel)

    def _bind_keys(self, target: Any) -> None:
        bindings = {
            "s": lambda _=None: self.segment_slice(),
            "Shift-S": lambda _=None: self.segment_volume(),
            "c": lambda _=None: self.commit(),
            "t": lambda _=None: self.toggle_point_label(),
            "Shift-C": lambda _=None: self.clear(),
        }
        for key, fn in bindings.items():
            target.bind_key(key, fn, overwrite=True)

    # ------------------------------------------------------------------ settings
    def _load_settings(self) -> None:
        s = _plugin_settings()
        if s is None:
            return
        self.ckpt_edit.setText(str(getattr(s, "checkpoint", "") or ""))
        self.config_combo.setCurrentText(str(getattr(s, "config", "auto")))
        self.size_spin.setValue(int(getattr(s, "image_size", 512)))
        self.device_combo.setCurrentText(str(getattr(s, "device", "auto")))
        self.cache_edit.setText(str(getattr(s, "cache_dir", "") or ""))

    def _save_settings(self) -> None:
        s = _plugin_settings()
        if s is None:
            return
        try:
            s.checkpoint = self.ckpt_edit.text()
            s.config = self.config_combo.currentText()
            s.image_size = self.size_spin.value()
            s.device = self.device_combo.currentText()
            s.cache_dir = self.cache_edit.text().strip()
        except Exception:  # a read-only or invalid settings store must not break segmentation
            pass

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MedSAM2 / SAM2 checkpoint", "", "PyTorch (*.pt *.pth)")
        if path:
            self.ckpt_edit.setText(path)

    def _choose_cache_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for image embeddings")
        if path:
            self.cache_edit.setText(path)
            self._save_settings()

    def _cache_dir_changed(self) -> Any:
        """Remember the folder; for a prepared image, attach it now (without losing any work)."""
        from napari.qt.threading import create_worker

        self._save_settings()
        seg, new = self.segmenter, self._cache_dir()
        if seg is None or self._prepared is None or seg.cache_dir == new or self._worker is not None:
            return None  # used when an image is next prepared
        worker = create_worker(seg.set_cache_dir, new, _ignore_errors=True)

        def _done(n: int) -> None:
            where = f"Embeddings now kept in {new}" if new else "Embeddings kept in memory only"
            self.status.setText(f"{where} ({n} slices written, {len(seg.features_on_disk)} on disk).")

        worker.returned.connect(_done)
        self._start(worker, busy=True)
        return worker

    def _cache_dir(self) -> Path | None:
        text = self.cache_edit.text().strip()
        return Path(text).expanduser() if text else None

    # ------------------------------------------------------------------ model
    def load_model(self) -> Any:
        """Load the checkpoint in a worker; remembers the choice in the plugin settings."""
        from napari.qt.threading import create_worker

        from napari_pandg.sam import load_sam_model

        if self._busy():
            return None
        path = self.ckpt_edit.text().strip()
        if not path:
            self.status.setText("Choose a checkpoint file first (e.g. MedSAM2_latest.pt).")
            return None
        config, size, device = self.config_combo.currentText(), self.size_spin.value(), self.device_combo.currentText()
        worker = create_worker(
            load_sam_model, Path(path), config=config, image_size=size, device=device, _ignore_errors=True
        )
        loaded: dict[str, Any] = {}
        worker.returned.connect(lambda engine: loaded.update(engine=engine))
        worker.returned.connect(lambda _=None: self._save_settings())
        self.status.setText(f"Loading {Path(path).name} ({config} at {size}) …")
        self._start(worker, busy=True)
        # after _idle (connected first): the engine then prepares the image in its own worker
        worker.finished.connect(lambda: self.set_engine(loaded["engine"]) if "engine" in loaded else None)
        return worker

    def set_engine(self, engine: Any) -> Any:
        """Use an already built engine (also how tests inject a random-weight model).

        Returns the worker that prepares the current image for it, if there is one.
        """
        from napari_pandg.sam import VolumeSegmenter

        self.engine = engine
        self.segmenter = VolumeSegmenter(engine)
        self._prepared = None
        source = Path(engine.checkpoint).name if engine.checkpoint else "random weights"
        self.model_label.setText(f"{engine.config} at {engine.image_size} px on {engine.device} ({source})")
        if self.image_layer is not None:
            return self.set_image_layer(self.image_layer)
        return None

    # ------------------------------------------------------------------ layers
    def _refresh_layer_choices(self, *_: Any) -> None:
        set_layer_combo(self.image_combo, self.viewer, "Image", follow_selection=True)  # the visible one
        set_combo_items(self.mask_combo, layer_names(self.viewer, "Labels", exclude=LAYER_NAMES))

    def _selected_image(self) -> Any:
        name = self.image_combo.currentText()
        if not name:
            raise ValueError("no 3D image layer: open a volume first")
        return self.viewer.layers[name]

    def _use_selected_image(self) -> None:
        try:
            self.set_image_layer(self._selected_image())
        except ValueError as exc:
            self.status.setText(str(exc))

    def set_image_layer(self, layer: Any) -> Any:
        """Prompt on ``layer``: create the prompt layers and hand its array to the engine.

        The normalisation (percentiles of the whole volume, ~0.5 s for 256x256x64) and the
        look-up of embeddings on disk run in a worker; returns it (None without a model).
        """
        from napari.qt.threading import create_worker

        if layer.ndim != 3:
            raise ValueError(f"layer {layer.name!r} is {layer.ndim}D; SAM prompting needs a 3D image")
        if self._busy():
            return None
        self.image_layer = layer
        self._prepared = None
        self._ensure_layers()
        if self.segmenter is None:
            self.status.setText(f"{layer.name} chosen: load a model to prompt on it.")
            return None
        seg = self.segmenter
        seg.cache_dir = self._cache_dir()
        data = np.asarray(layer.data)

        def _prepare() -> int:
            seg.set_volume(to_sam(data))
            return len(seg.features_on_disk)

        def _ready(n_on_disk: int) -> None:
            self._prepared = layer
            cached = f" Embeddings of {n_on_disk} slices found on disk." if n_on_disk else ""
            self.status.setText(
                f"Prompting on {layer.name}: draw a box (prompts) or click points (point_prompts).{cached}"
            )

        worker = create_worker(_prepare, _ignore_errors=True)
        worker.returned.connect(_ready)
        self.status.setText(f"Preparing {layer.name} …")
        self._start(worker, busy=True)
        return worker

    def _transform(self) -> dict[str, Any]:
        ly = self.image_layer
        return {
            "scale": ly.scale,
            "translate": ly.translate,
            "rotate": ly.rotate,
            "shear": ly.shear,
            "affine": ly.affine.affine_matrix,
            "axis_labels": ly.axis_labels,
            "units": ly.units,
        }

    def _ensure_layers(self) -> None:
        from napari_pandg.layerdata import label_colormap

        tr = self._transform()
        shape = self.image_layer.data.shape
        layers = self.viewer.layers
        meta = dict(self.image_layer.metadata)
        for name in ("current_object", "committed_objects"):
            if name in layers and layers[name].data.shape != shape:
                layers.remove(name)
            if name not in layers:
                lay = self.viewer.add_labels(
                    np.zeros(shape, dtype=np.uint8),
                    name=name,
                    metadata=meta,
                    opacity=0.6,
                    **tr,
                )
                if name == "committed_objects":
                    lay.colormap = label_colormap()
        if "prompts" not in layers:
            self.viewer.add_shapes(
                name="prompts", ndim=3, edge_color="#00ffff", face_color="transparent", edge_width=1.5, **tr
            )
        if "point_prompts" not in layers:
            self.viewer.add_points(
                np.empty((0, 3)),
                name="point_prompts",
                ndim=3,
                features=pd.DataFrame({"label": pd.Categorical([], categories=[POSITIVE, NEGATIVE])}),
                feature_defaults={"label": self.label_combo.currentText()},
                border_color="label",
                border_color_cycle=["#00FF00", "#FF0000"],
                face_color="transparent",
                border_width=0.3,
                size=max(3.0 * float(np.max(np.abs(tr["scale"]))), 3.0),
                **tr,
            )
        for name in ("point_prompts", "prompts"):
            self._bind_keys(layers[name])

    @property
    def current_layer(self) -> Any:
        return self.viewer.layers["current_object"]

    @property
    def committed_layer(self) -> Any:
        return self.viewer.layers["committed_objects"]

    def toggle_point_label(self) -> str:
        new = NEGATIVE if self.label_combo.currentText() == POSITIVE else POSITIVE
        self.label_combo.setCurrentText(new)
        return new

    def _set_point_label(self, label: str) -> None:
        if "point_prompts" in self.viewer.layers:
            self.viewer.layers["point_prompts"].feature_defaults["label"] = label

    # ------------------------------------------------------------------ prompts
    def current_slice(self) -> int:
        """Index of the displayed axial slice in the image layer's data."""
        data_pt = self.image_layer.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(data_pt[0])), 0, self.image_layer.data.shape[0] - 1))

    def _to_image_data(self, layer: Any, coords: np.ndarray) -> np.ndarray:
        """Prompt-layer data coordinates -> image data coordinates (any transforms)."""
        coords = np.asarray(coords, dtype=float).reshape(-1, 3)
        return np.array([self.image_layer.world_to_data(layer.data_to_world(c)) for c in coords]).reshape(-1, 3)

    def prompts_on(self, z: int) -> tuple[tuple[float, float, float, float] | None, list[tuple[float, float, int]]]:
        """The box and points drawn on slice ``z`` (engine X/Y coordinates)."""
        layers = self.viewer.layers
        pts_layer, shp_layer = layers["point_prompts"], layers["prompts"]
        points: list[tuple[float, float, int]] = []
        if len(pts_layer.data):
            coords = self._to_image_data(pts_layer, pts_layer.data)
            labels = list(pts_layer.features["label"].astype(str))
            points = points_by_slice(coords, labels).get(z, [])
        boxes: dict[int, tuple[float, float, float, float]] = {}
        rects = [d for d, t in zip(shp_layer.data, shp_layer.shape_type, strict=True) if t == "rectangle"]
        if rects:
            boxes = boxes_by_slice([self._to_image_data(shp_layer, r) for r in rects])
        return boxes.get(z), points

    def _need_ready(self, then: Any = None) -> bool:
        """True when a model and a prepared image are there and no job runs.

        If the image still has to be prepared, that starts in a worker and ``then`` (the action
        the user asked for) runs once it is done.
        """
        if self.segmenter is None:
            self.status.setText("Load a model first.")
            return False
        if self._busy():
            return False
        if self.image_layer is None or self._prepared is not self.image_layer:
            try:
                layer = self.image_layer if self.image_layer is not None else self._selected_image()
                worker = self.set_image_layer(layer)
            except ValueError as exc:
                self.status.setText(str(exc))
                return False
            if worker is not None and then is not None:
                worker.finished.connect(lambda: then() if self._prepared is layer else None)
            return False
        return True

    def _busy(self) -> bool:
        """True (and says so) while a model job runs: the engine is used by one thread at a time."""
        if self._worker is not None:
            self.status.setText("Busy: wait for the running job or press Cancel.")
            return True
        return False

    # ------------------------------------------------------------------ actions
    def segment_slice(self) -> Any:
        """2D preview on the displayed slice from its prompts (does not change the object)."""
        from napari.qt.threading import create_worker

        if not self._need_ready(self.segment_slice):
            return None
        z = self.current_slice()
        box, points = self.prompts_on(z)
        worker = create_worker(self.segmenter.preview, z, box=box, points=points or None, _ignore_errors=True)

        def _show(mask_xy: np.ndarray) -> None:
            data = self.current_layer.data
            data[z] = slice_to_napari(mask_xy)
            self.current_layer.refresh()
            self.status.setText(f"Slice {z}: {int(mask_xy.sum())} voxels. Shift-S propagates through the volume.")

        worker.returned.connect(_show)
        self._start(worker, busy=True)
        return worker

    def _z_range(self) -> tuple[int, int] | None:
        lo, hi = self.zlo_spin.value(), self.zhi_spin.value()
        if lo < 0 and hi < 0:
            return None
        n = self.image_layer.data.shape[0]
        return (max(lo, 0), hi if hi >= 0 else n - 1)

    def segment_volume(self) -> Any:
        """Propagate from the displayed slice; with a current object, correct it from here.

        A correction uses the prompts drawn on this slice, or, when there are none, the slice
        as painted in ``current_object`` (a painted-slice correction).
        """
        from napari.qt.threading import create_worker

        if not self._need_ready(self.segment_volume):
            return None
        seg = self.segmenter
        z = self.current_slice()
        box, points = self.prompts_on(z)
        kwargs: dict[str, Any] = {"direction": self.direction_combo.currentText(), "cancel": self._cancel}
        kwargs["callback"] = self._stream
        if seg.mask is None:
            fn, args = seg.propagate, (z,)
            kwargs.update(box=box, points=points or None, z_range=self._z_range(),
                          stop_after_empty=self.early_stop_spin.value())  # fmt: skip
            what = "propagating"
        else:
            fn, args = seg.correct, (z,)
            if box is None and not points:
                painted = np.asarray(self.current_layer.data[z])
                kwargs["mask2d"] = slice_from_napari(painted != 0)
            else:
                kwargs.update(box=box, points=points or None)
            what = "correcting and re-propagating"
        self._cancel.clear()
        worker = create_worker(fn, *args, _ignore_errors=True, **kwargs)
        worker.returned.connect(self._show_volume)
        self.status.setText(f"Slice {z}: {what} …")
        self.progress.setRange(0, self.image_layer.data.shape[0])
        self.progress.setValue(0)
        self._start(worker)
        return worker

    def compute_embeddings(self) -> Any:
        """Encode every slice not yet encoded (or on disk), in a worker with progress and cancel."""
        from napari.qt.threading import create_worker

        if not self._need_ready(self.compute_embeddings):
            return None
        seg = self.segmenter

        def _progress(_z: int, done: int, total: int) -> bool:
            self._signals.encoded.emit(done, total)
            return not self._cancel.is_set()

        def _encode() -> int:
            in_memory = set(seg.encoded_slices)
            todo = [z for z in range(seg.num_slices) if z not in in_memory]
            calls = seg.encoder_calls
            self._signals.encoded.emit(0, len(todo))
            seg.encode(todo, callback=_progress, cancel=self._cancel)
            return seg.encoder_calls - calls  # slices read from disk are not counted

        def _done(n_new: int) -> None:
            n = len(seg.encoded_slices)
            where = f", {len(seg.features_on_disk)} on disk" if seg.cache_dir is not None else ""
            stop = "Cancelled: " if self._cancel.is_set() else ""
            self.status.setText(f"{stop}{n} of {seg.num_slices} slices encoded ({n_new} new{where}).")

        self._cancel.clear()
        worker = create_worker(_encode, _ignore_errors=True)
        worker.returned.connect(_done)
        self.status.setText("Computing embeddings …")
        self._start(worker)
        return worker

    def _on_encoded(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done if total else 1)

    def _stream(self, z: int, mask_xy: np.ndarray, done: int, total: int) -> bool:
        """Called in the worker thread after each slice: hand the slice to the GUI thread."""
        self._signals.slice_done.emit(int(z), slice_to_napari(mask_xy).copy(), int(done), int(total))
        return not self._cancel.is_set()

    def _on_slice(self, z: int, mask_ar: np.ndarray, done: int, total: int) -> None:
        layer = self.current_layer
        layer.data[z] = mask_ar.astype(layer.data.dtype)
        layer.refresh()
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _show_volume(self, mask_xyz: np.ndarray | None) -> None:
        if mask_xyz is None:
            return
        self.current_layer.data = np.ascontiguousarray(from_sam(mask_xyz)).astype(np.uint8)
        n = int(np.count_nonzero(mask_xyz))
        cancelled = getattr(self.segmenter, "last_cancelled", False)
        zs = np.nonzero(mask_xyz.any(axis=(0, 1)))[0]
        extent = f"slices {zs.min()}-{zs.max()}" if zs.size else "empty"
        note = "Cancelled; kept what was done. " if cancelled else ""
        visited = len(getattr(self.segmenter, "last_visited", []))
        conv = getattr(self.segmenter, "last_converged", {})
        if conv:
            where = ", ".join(f"{k} at slice {v}" for k, v in sorted(conv.items()))
            note += f"Re-propagated {visited} slices, stopped where the mask no longer changed ({where}). "
        if not cancelled:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
        self.status.setText(note + f"current_object: {n} voxels, {extent}.")

    def commit(self) -> None:
        """current_object -> committed_objects under the chosen label id; clears prompts."""
        if self._busy():
            return
        if self.segmenter is None or self.segmenter.mask is None:
            self.status.setText("Nothing to commit.")
            return
        committed = self.segmenter.commit(self.commit_id_spin.value())
        self.committed_layer.data = np.ascontiguousarray(from_sam(committed))
        self.current_layer.data = np.zeros_like(self.current_layer.data)
        self._clear_prompts()
        self.status.setText(f"Committed as label {self.commit_id_spin.value()}.")

    def clear(self) -> None:
        """Drop the current object and the prompts (undoable)."""
        if self._busy():
            return
        if self.segmenter is not None:
            from napari_pandg.sam import SamStateError

            with contextlib.suppress(SamStateError):  # no volume yet: nothing to clear in the engine
                self.segmenter.clear()
        if "current_object" in self.viewer.layers:
            self.current_layer.data = np.zeros_like(self.current_layer.data)
        self._clear_prompts()
        self.status.setText("Cleared.")

    def undo(self) -> None:
        if self._busy():
            return
        if self.segmenter is None or not self.segmenter.can_undo:
            self.status.setText("Nothing to undo.")
            return
        mask = self.segmenter.undo()
        self.current_layer.data = (
            np.zeros_like(self.current_layer.data) if mask is None else np.ascontiguousarray(from_sam(mask))
        )
        self.committed_layer.data = np.ascontiguousarray(from_sam(self.segmenter.committed))
        self.status.setText("Undone.")

    def start_from_labels(self, layer: Any | None = None, label_id: int | None = None) -> None:
        """Make an existing labels layer's ``label_id`` the current object, to correct it."""
        if not self._need_ready(lambda: self.start_from_labels(layer, label_id)):
            return
        layer = layer if layer is not None else self.viewer.layers[self.mask_combo.currentText()]
        label_id = int(label_id if label_id is not None else self.mask_id_spin.value())
        data = np.asarray(layer.data)
        if data.shape != self.image_layer.data.shape:
            raise ValueError(
                f"labels {layer.name!r} {data.shape} and image {self.image_layer.name!r} "
                f"{self.image_layer.data.shape} differ in shape"
            )
        mask = data == label_id
        if not mask.any():
            self.status.setText(f"{layer.name} has no voxel with label {label_id}.")
            return
        self.segmenter.set_mask(to_sam(mask))
        self.current_layer.data = mask.astype(np.uint8)
        self.status.setText(f"Correcting {layer.name} label {label_id}: add prompts on a slice, then Shift-S.")

    def _clear_prompts(self) -> None:
        layers = self.viewer.layers
        if "point_prompts" in layers:
            layers["point_prompts"].data = np.empty((0, 3))
        if "prompts" in layers:
            layers["prompts"].data = []

    # ------------------------------------------------------------------ workers
    def _start(self, worker: Any, busy: bool = False) -> None:
        self._worker = worker
        if busy:
            self.progress.setRange(0, 0)
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda w=worker: self._idle(w))
        self.cancel_btn.setEnabled(True)
        worker.start()

    def cancel(self) -> None:
        self._cancel.set()
        if self._worker is not None:
            self._worker.quit()

    def _idle(self, worker: Any = None) -> None:
        if worker is not None and worker is not self._worker:
            return  # an earlier job (e.g. model loading) that chained the current one
        self._worker = None
        self.cancel_btn.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)

    def _on_error(self, exc: BaseException) -> None:
        report_error(self.status, exc)
