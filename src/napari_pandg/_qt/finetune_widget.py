"""Fine-tune dock widget: few-shot fine-tuning on labels corrected in the viewer, watched live.

Thin: :func:`napari_pandg.train.finetune.prepare_finetune` writes the pairs and the config, the
trainer runs as a **separate process** (:class:`napari_pandg.train.process.TrainerProcess`:
``python -m napari_pandg.train ... --json-progress``) so that nothing that happens to training
(a crash, a native-library segfault, the OOM killer, SIGKILL) can take napari down; a thread
worker only reads its JSON lines. Each epoch's loss and validation Dice arrive through a
signal and are plotted; Cancel stops the trainer after its current step (``last.pt`` keeps the
last finished epoch); pressing Fine-tune again on the same run folder resumes it; and
:func:`~napari_pandg.train.finetune.install_model` makes the result a user model that the
Segment widget and ``pandg segment`` list.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_pandg._qt._common import (
    WorkerControls,
    report_error,
    scrolling_layout,
    set_combo_items,
    set_layer_combo,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

AS_IS = 0  # label value spin box: 0 = keep the layer's ids
#: shown in the plot before the first epoch
EMPTY_PLOT_HINT = "The learning curve (loss, validation Dice)\nappears when fine-tuning starts"


class _Signals(QObject):
    epoch = Signal(dict)
    log = Signal(str)


class FinetuneWidget(WorkerControls, QWidget):
    """Pairs of (image, corrected labels) layers -> fine-tuned model, with a live learning curve."""

    fill_progress_when_idle = False  # the bar counts epochs: a cancelled run shows where it stopped

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.pairs: list[tuple[str, str]] = []
        self.history: list[dict[str, Any]] = []
        self.result: Any = None
        self._proc: Any = None  # the running TrainerProcess
        self._signals = _Signals()
        self._signals.epoch.connect(self._on_epoch)
        self._signals.log.connect(lambda s: self.status.setText(s))

        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.image_combo = QComboBox()
        self.label_combo = QComboBox()
        self.add_btn = QPushButton("Add pair")
        self.add_btn.clicked.connect(lambda: self.add_pair())
        self.remove_btn = QPushButton("Remove")
        self.remove_btn.clicked.connect(self._remove_selected)
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(90)
        self.label_value = QSpinBox()
        self.label_value.setRange(0, 255)
        self.label_value.setValue(1)
        self.label_value.setSpecialValueText("as is (AMOS ids)")
        self.label_value.setToolTip("value of the corrected structure in the label layers (SAM objects: 1)")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(10)
        self.steps = QSpinBox()
        self.steps.setRange(1, 10000)
        self.steps.setValue(20)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1e-1)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(2e-4)
        self.run_dir = QLineEdit(str(Path.home() / ".pandg" / "runs" / time.strftime("finetune_%Y%m%d_%H%M%S")))
        self.name = QLineEdit("")
        self.name.setPlaceholderText("name for the fine-tuned model (default: <base>_ft)")

        pair_row = QHBoxLayout()
        pair_row.addWidget(self.add_btn)
        pair_row.addWidget(self.remove_btn)
        form = QFormLayout()
        form.addRow("Base model", self.model_combo)
        form.addRow("Image", self.image_combo)
        form.addRow("Corrected labels", self.label_combo)
        form.addRow("", pair_row)
        form.addRow("Pairs", self.pair_list)
        form.addRow("Label value", self.label_value)
        form.addRow("Epochs", self.epochs)
        form.addRow("Steps / epoch", self.steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("Run folder", self.run_dir)
        form.addRow("Model name", self.name)

        buttons = self._init_worker_controls("Fine-tune")
        self.install_btn = QPushButton("Add to my models")
        self.install_btn.setEnabled(False)
        self.install_btn.clicked.connect(lambda: self.install())
        buttons.addWidget(self.install_btn)
        self.figure = Figure(figsize=(4, 2.6), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        self.ax = self.figure.add_subplot(111)
        self.status = QLabel("Pair each image with its corrected labels, then fine-tune.")
        self.status.setWordWrap(True)

        lay = scrolling_layout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.canvas)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.refresh_models()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._refresh_layers)
        self._refresh_layers()
        self._plot()

    # ------------------------------------------------------------------ inputs
    def refresh_models(self) -> None:
        from napari_pandg.models import list_models

        try:
            df = list_models(describe=False)
            names = [str(n) for n in df["name"]]
        except Exception:  # noqa: BLE001 - a broken user folder must not break the widget
            names = []
        set_combo_items(self.model_combo, names)

    def _refresh_layers(self, *_: Any) -> None:
        set_layer_combo(self.image_combo, self.viewer, "Image", follow_selection=True)
        set_layer_combo(self.label_combo, self.viewer, "Labels", follow_selection=True)

    def add_pair(self, image: str | None = None, labels: str | None = None) -> None:
        image = image or self.image_combo.currentText()
        labels = labels or self.label_combo.currentText()
        if not image or not labels or image not in self.viewer.layers or labels not in self.viewer.layers:
            self.status.setText("Choose an image layer and its corrected labels layer.")
            return
        if self.viewer.layers[image].data.shape != self.viewer.layers[labels].data.shape:
            self.status.setText(f"{labels!r} is not on the grid of {image!r}: choose the labels drawn on it.")
            return
        if (image, labels) not in self.pairs:
            self.pairs.append((image, labels))
            self.pair_list.addItem(f"{image}  ←  {labels}")
        self.status.setText(f"{len(self.pairs)} pair(s); with 2 or more, one validates.")

    def _remove_selected(self) -> None:
        row = self.pair_list.currentRow()
        if 0 <= row < len(self.pairs):
            self.pairs.pop(row)
            self.pair_list.takeItem(row)

    def _volumes(self) -> list[tuple[Any, Any]]:
        from napari_pandg.io import from_napari

        out = []
        for image, labels in self.pairs:
            im, lb = self.viewer.layers[image], self.viewer.layers[labels]
            vi = from_napari(np.asarray(im.data), dict(im.metadata), is_label=False, scale=im.scale, translate=im.translate)
            # the labels are on the image grid (checked when paired): read them with the image's geometry
            vl = from_napari(np.asarray(lb.data), dict(im.metadata), is_label=True, scale=im.scale,
                             translate=im.translate)  # fmt: skip
            out.append((vi, vl))
        return out

    # ------------------------------------------------------------------ training
    def run(self) -> Any:
        """Fine-tune in a worker; returns the worker."""
        from napari.qt.threading import create_worker

        model = self.model_combo.currentText().strip()
        if not model or not self.pairs:
            self.status.setText("Choose a base model and add at least one (image, corrected labels) pair.")
            return None
        try:
            vols = self._volumes()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            report_error(self.status, exc)
            return None
        value = None if self.label_value.value() == AS_IS else int(self.label_value.value())
        self.history = []
        self.result = None
        self._plot()
        self.install_btn.setEnabled(False)
        self.status.setText(f"Fine-tuning {Path(model).name} on {len(vols)} pair(s) …")
        worker = create_worker(
            self._work, vols, model, self.run_dir.text().strip(), value, int(self.epochs.value()),
            int(self.steps.value()), float(self.lr.value()), self.name.text().strip() or None, _ignore_errors=True,
        )  # fmt: skip
        return self._start_worker(worker, self._done, total=int(self.epochs.value()))

    def _work(self, vols, model, run_dir, value, epochs, steps, lr, name) -> Any:
        """Worker thread: prepares the run, then follows the trainer process (signals only)."""
        from napari_pandg.train.config import dump_config
        from napari_pandg.train.finetune import prepare_finetune
        from napari_pandg.train.process import TrainerProcess, resumable

        run = Path(run_dir).expanduser()
        overrides: list[str] = []
        if resumable(run):  # a stopped or killed run: continue it (the trainer checks it is the same run)
            config = run / "config.yaml"
            overrides = [f"optim.epochs={epochs}"]
            self._signals.log.emit(f"Resuming the run in {run} …")
        else:
            cfg = prepare_finetune(vols, model, run, label_value=value, epochs=epochs, steps_per_epoch=steps,
                                   lr=lr, name=name)  # fmt: skip
            config = run / "finetune.yaml"
            dump_config(cfg, config)
        command = f"napari-pandg Fine-tune widget (base {model})"  # recorded in the checkpoints
        proc = TrainerProcess(config, run, overrides, env={"PANDG_TRAIN_COMMAND": command})
        self._proc = proc.start()
        if self._cancel.is_set():
            proc.stop()
        for ev in proc.events():
            if ev["event"] == "epoch":
                self._signals.epoch.emit(ev)
            elif ev["event"] == "log":
                self._signals.log.emit(str(ev.get("text", "")))
        return proc.result()  # TrainerProcessError (shown in the status line) if it died

    def cancel(self) -> None:
        """Stop the trainer after its current step; the last finished epoch is kept."""
        super().cancel()
        proc = getattr(self, "_proc", None)
        if proc is not None:
            proc.stop()

    def _on_epoch(self, rec: dict) -> None:
        self.history.append(rec)
        self.progress.setValue(int(rec["epoch"]))
        self._plot()

    def _plot(self) -> None:
        self.ax.clear()
        if not self.history:  # a hint, not an empty 0-1 axis
            self.ax.set_axis_off()
            self.ax.text(0.5, 0.5, EMPTY_PLOT_HINT, ha="center", va="center", fontsize=9, color="0.35",
                         transform=self.ax.transAxes)  # fmt: skip
            self.canvas.draw_idle()
            return
        self.ax.set_axis_on()
        if self.history:
            ep = [r["epoch"] for r in self.history]
            self.ax.plot(ep, [r["loss"] for r in self.history], "o-", color="tab:orange", label="loss", ms=3)
            val = [(r["epoch"], r["val_dice"]) for r in self.history if "val_dice" in r]
            if val:
                self.ax.plot(*zip(*val, strict=True), "o-", color="tab:blue", label="val Dice", ms=3)
            self.ax.legend(fontsize=7, frameon=False)
        from matplotlib.ticker import MaxNLocator

        self.ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.ax.set_xlabel("epoch", fontsize=8)
        self.ax.tick_params(labelsize=7)
        self.figure.tight_layout()
        self.canvas.draw_idle()

    def _done(self, res: Any) -> None:
        self.result = res
        ck = res.best_path or (res.last_path if res.last_path.exists() else None)
        self.install_btn.setEnabled(ck is not None)
        if res.cancelled:
            self.status.setText(f"Cancelled after {res.epochs_done} epoch(s); resume by running again in {res.run_dir}.")
        else:
            best = f", best val Dice {res.best_dice:.3f} (epoch {res.best_epoch})" if res.best_path else ""
            self.status.setText(f"Done: {res.epochs_done} epochs{best}; checkpoint {ck}.")

    def install(self, name: str | None = None) -> Path | None:
        from napari_pandg.train.finetune import install_model

        if self.result is None:
            return None
        ck = self.result.best_path or self.result.last_path
        name = name or self.name.text().strip() or f"{Path(self.model_combo.currentText()).stem}_ft"
        try:
            dst = install_model(ck, name)
        except (OSError, ValueError) as exc:
            report_error(self.status, exc)
            return None
        self.refresh_models()
        self.status.setText(f"Installed as {dst.stem} ({dst}); the Segment widget lists it.")
        return dst
