"""Dataset browser dock widget: open a manifest or folder, filter, load a subject.

Thin by design: indexing and loading are library calls (``napari_pandg.io`` and
``napari_pandg.layerdata``) run in napari thread workers; this class only moves their
results into layers and keeps the controls in sync.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from napari_pandg._qt._common import report_error, scrolling_layout
from napari_pandg.layerdata import apply_radiological_view, style_labels_layer

if TYPE_CHECKING:  # pragma: no cover
    import napari

ALL = "(all)"
SHOWN_COLUMNS = ("subject", "center", "sequence", "field_strength", "label")


class DatasetWidget(QWidget):
    """Browse a dataset index by center / sequence / subject and load subjects as layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.index: pd.DataFrame = pd.DataFrame(columns=["subject", "center", "sequence", "image", "label"])
        self._worker: Any = None

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("manifest.csv or dataset folder")
        self.layout_combo = QComboBox()
        self.layout_combo.addItems(["auto", "pandg", "nnunet", "amos", "totalseg_mri"])
        self.open_file_btn = QPushButton("Manifest…")
        self.open_dir_btn = QPushButton("Folder…")
        self.index_btn = QPushButton("Open")
        self.center_combo = QComboBox()
        self.sequence_combo = QComboBox()
        self.subject_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.labels_combo.addItems(["first", "all", "none"])
        self.labels_combo.setToolTip(
            "first: one label layer per subject (all sequences share world coordinates); "
            "all: the label of every sequence; none: images only"
        )
        self.table = QTableWidget(0, len(SHOWN_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(SHOWN_COLUMNS))
        header = self.table.horizontalHeader()
        # columns as wide as their header and values (Stretch squeezed "sequence" and
        # "field_strength" to "equence" / "d_streng"); the table scrolls sideways when narrow
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setTextElideMode(Qt.TextElideMode.ElideNone)
        for c, col in enumerate(SHOWN_COLUMNS):
            self.table.horizontalHeaderItem(c).setToolTip(col)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().setVisible(False)
        self.table.resizeColumnsToContents()
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.load_btn = QPushButton("Load subject")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("No dataset open.")
        self.status.setWordWrap(True)

        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(self.open_file_btn)
        row.addWidget(self.open_dir_btn)
        form = QFormLayout()
        form.addRow("Layout", self.layout_combo)
        form.addRow("Center", self.center_combo)
        form.addRow("Sequence", self.sequence_combo)
        form.addRow("Subject", self.subject_combo)
        form.addRow("Labels", self.labels_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_btn)
        buttons.addWidget(self.cancel_btn)
        lay = scrolling_layout(self)
        lay.addLayout(row)
        lay.addWidget(self.index_btn)
        lay.addLayout(form)
        lay.addWidget(self.table)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)

        self.open_file_btn.clicked.connect(self._choose_file)
        self.open_dir_btn.clicked.connect(self._choose_dir)
        self.index_btn.clicked.connect(lambda: self.open_index(self.path_edit.text()))
        for combo in (self.center_combo, self.sequence_combo):
            combo.currentTextChanged.connect(self._refresh_subjects)
        self.subject_combo.currentTextChanged.connect(self._refresh_table)
        self.load_btn.clicked.connect(lambda: self.load_subject())
        self.cancel_btn.clicked.connect(self.cancel)
        self._set_choices(self.index)

    # ------------------------------------------------------------------ opening
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open manifest", "", "CSV (*.csv)")
        if path:
            self.path_edit.setText(path)
            self.open_index(path)

    def _choose_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open dataset folder")
        if path:
            self.path_edit.setText(path)
            self.open_index(path)

    def open_index(self, path: str | Path) -> Any:
        """Read a manifest CSV or index a folder in a worker; returns the worker."""
        from napari.qt.threading import create_worker

        from napari_pandg.io import build_index, read_index

        path = Path(str(path)).expanduser()
        layout = self.layout_combo.currentText()
        self.path_edit.setText(str(path))

        def _work() -> pd.DataFrame:
            if path.is_file():
                return read_index(path)
            return build_index(path, layout=layout)

        self.status.setText(f"Indexing {path} …")
        self.progress.setRange(0, 0)  # busy indicator
        worker = create_worker(_work, _ignore_errors=True)
        worker.returned.connect(self.set_index)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._idle)
        self._start(worker)
        return worker

    def set_index(self, df: pd.DataFrame) -> None:
        self.index = df.reset_index(drop=True)
        self._set_choices(self.index)
        n_lab = int(self.index["label"].notna().sum()) if "label" in self.index else 0
        self.status.setText(
            f"{len(self.index)} images ({n_lab} labelled), {self.index['subject'].nunique()} subjects, "
            f"{self.index['center'].nunique()} centers, {self.index['sequence'].nunique()} sequences."
        )

    # ------------------------------------------------------------------ filters
    def _set_choices(self, df: pd.DataFrame) -> None:
        for combo, col in ((self.center_combo, "center"), (self.sequence_combo, "sequence")):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ALL, *sorted(map(str, df[col].dropna().unique()))])
            combo.blockSignals(False)
        self._refresh_subjects()

    def filtered(self) -> pd.DataFrame:
        """Index rows matching the center / sequence / subject filters."""
        df = self.index
        for combo, col in (
            (self.center_combo, "center"),
            (self.sequence_combo, "sequence"),
            (self.subject_combo, "subject"),
        ):
            value = combo.currentText()
            if value and value != ALL:
                df = df[df[col].astype(str) == value]
        return df

    def _refresh_subjects(self) -> None:
        current = self.subject_combo.currentText()
        df = self.index
        for combo, col in ((self.center_combo, "center"), (self.sequence_combo, "sequence")):
            value = combo.currentText()
            if value and value != ALL:
                df = df[df[col].astype(str) == value]
        subjects = sorted(map(str, df["subject"].dropna().unique()))
        self.subject_combo.blockSignals(True)
        self.subject_combo.clear()
        self.subject_combo.addItems([ALL, *subjects])
        if current in subjects:
            self.subject_combo.setCurrentText(current)
        self.subject_combo.blockSignals(False)
        self._refresh_table()

    def _refresh_table(self) -> None:
        df = self.filtered()
        self.table.setRowCount(len(df))
        for r, (_, row) in enumerate(df.iterrows()):
            for c, col in enumerate(SHOWN_COLUMNS):
                value = row.get(col, "")
                full = "" if pd.isna(value) else str(value)
                if col == "label":
                    value = Path(str(value)).name if isinstance(value, str) and value else "—"
                item = QTableWidgetItem("" if pd.isna(value) else str(value))
                item.setToolTip(full)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()

    # ------------------------------------------------------------------ loading
    def load_subject(self, subject: str | None = None) -> Any:
        """Load the filtered rows of one subject as aligned layers in a worker."""
        from napari.qt.threading import create_worker

        from napari_pandg.layerdata import count_layers, iter_subject_layerdata

        if subject is not None:
            self.subject_combo.setCurrentText(subject)
        rows = self.filtered()
        if rows.empty:
            self.status.setText("Nothing to load: no rows match the filters.")
            return None
        subject = self.subject_combo.currentText()
        if subject == ALL:
            subject = str(rows["subject"].iloc[0])
            rows = rows[rows["subject"].astype(str) == subject]
        labels = self.labels_combo.currentText()
        total = count_layers(rows, labels)
        worker = create_worker(
            iter_subject_layerdata,
            rows,
            labels=labels,
            _progress={"total": total, "desc": f"Loading {subject}"},
            _ignore_errors=True,  # errors go to _on_error (status line + notification)
        )
        worker.yielded.connect(self._add_layer)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._idle)
        worker.returned.connect(lambda _=None: self._loaded(subject))
        self.status.setText(f"Loading {subject} ({len(rows)} volumes) …")
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self._start(worker)
        return worker

    def _add_layer(self, item: tuple[int, int, tuple]) -> None:
        done, total, (data, kwargs, kind) = item
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        name = kwargs.get("name")
        if name in self.viewer.layers:  # reloading replaces instead of duplicating
            self.viewer.layers.remove(name)
        layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        if kind == "labels":
            style_labels_layer(layer)

    def _loaded(self, subject: str) -> None:
        self.viewer.dims.axis_labels = ("S", "A", "R")
        apply_radiological_view(self.viewer)
        self.viewer.reset_view()
        self.status.setText(f"Loaded {subject}.")

    # ------------------------------------------------------------------ worker plumbing
    def _start(self, worker: Any) -> None:
        self._worker = worker
        self.cancel_btn.setEnabled(True)
        self.load_btn.setEnabled(False)
        self.index_btn.setEnabled(False)
        worker.start()

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()
            self.status.setText("Cancelled.")

    def _idle(self) -> None:
        self._worker = None
        self.cancel_btn.setEnabled(False)
        self.load_btn.setEnabled(True)
        self.index_btn.setEnabled(True)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)

    def _on_error(self, exc: BaseException) -> None:
        report_error(self.status, exc)
