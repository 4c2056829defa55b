"""The Embedding widget: compute a UMAP in a worker, lasso points, mark them on the volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from .conftest import wait_worker

pytest.importorskip("torch")
pytest.importorskip("umap")


@pytest.fixture
def widget(make_napari_viewer, monkeypatch, tmp_path: Path):
    from napari_pandg._qt.embedding_widget import EmbeddingWidget

    monkeypatch.setenv("PANDG_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer(show=True)
    w = EmbeddingWidget(viewer)
    viewer.window.add_dock_widget(w, area="right")
    return w


def test_embed_select_and_mark_on_volume(widget, phantom_dir: Path, qtbot, tmp_path: Path) -> None:
    from napari_pandg.io import world_to_voxel

    viewer = widget.viewer
    widget.kind_combo.setCurrentText("intensity")
    widget.sequences.setText("t1fs_venous,t2")
    worker = widget.run(str(phantom_dir))
    wait_worker(qtbot, worker, timeout=300_000)
    t = widget.table
    assert t is not None and set(t["sequence"]) == {"t1fs_venous", "t2"}
    assert len(widget._scatter.get_offsets()) == len(t)
    assert "same_block_across_sequences" in widget.measures.text()
    assert list((tmp_path / "cache" / "embed").glob("*.csv"))  # per-volume cache on disk

    # a lasso around the whole cloud selects every point; the plot recolours the selection
    xy = t[["UMAP0", "UMAP1"]].to_numpy()
    lo, hi = xy.min(0) - 1, xy.max(0) + 1
    widget._on_lasso([(lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1])])
    assert len(widget.selected) == len(t)
    # select the patches of one volume; red in the plot, others faded
    path = t["image"].iloc[0]
    rows = np.nonzero((t["image"] == path).to_numpy())[0][:15]
    widget.select(rows)
    rgba = widget._scatter.get_facecolors()
    assert np.allclose(rgba[rows[0]], (1.0, 0.1, 0.1, 1.0)) and widget.show_btn.isEnabled()
    assert "15 patches selected from 1 volumes" in widget.status.text()

    worker = widget.show_selection()
    wait_worker(qtbot, worker)
    images = [ly for ly in viewer.layers if ly.__class__.__name__ == "Image"]
    assert len(images) == 1 and images[0].metadata["source_path"] == path  # opened on demand
    pts = next(ly for ly in viewer.layers if ly.name.startswith("UMAP selection"))
    assert len(pts.data) == 15 and list(pts.features["block"]) == list(t["block"].iloc[rows])
    # each point sits on its patch centre voxel of that image
    ijk = world_to_voxel(pts.data, images[0].metadata)
    np.testing.assert_allclose(ijk, t[["i", "j", "k"]].iloc[rows].to_numpy(), atol=1e-4)
    # the viewer shows the slice of the first point, and the red marks are visible there
    assert viewer.dims.point[0] == pytest.approx(float(pts.data[0, 0]))
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    red = (shot[..., 0] > 200) & (shot[..., 1] < 90) & (shot[..., 2] < 90)
    assert red.sum() > 30
    if os.environ.get("PANDG_SCREENSHOTS"):
        import imageio.v3 as iio

        out = Path(os.environ["PANDG_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out / "embedding_viewer.png", viewer.screenshot(canvas_only=False, flash=False))

    # showing again replaces the points layer instead of adding another
    wait_worker(qtbot, widget.show_selection())
    assert sum(ly.name.startswith("UMAP selection") for ly in viewer.layers) == 1


def test_open_patch_table_and_errors(widget, phantom_dir: Path, qtbot, tmp_path: Path) -> None:
    from napari_pandg.embed import run_embed_cli

    out = run_embed_cli(phantom_dir, tmp_path / "emb", kinds=("intensity",), sequences=["t2"], n_neighbors=5,
                        log=lambda s: None)  # fmt: skip
    worker = widget.run(str(out / "patches_intensity.csv"))  # opens a `pandg embed` table: no recompute
    wait_worker(qtbot, worker)
    assert widget.table is not None and set(widget.table["sequence"]) == {"t2"}
    widget.colour_combo.setCurrentText("organ")
    assert len(widget._scatter.get_offsets()) == len(widget.table)
    # colour by the shift score of each volume under a model (a real random-weight UNet)
    import matplotlib
    import torch

    from napari_pandg.models import ModelDescription, build_model, save_checkpoint

    torch.manual_seed(0)
    desc = ModelDescription(name="tiny", arch_kwargs={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
                            spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16), command="pytest")  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "tiny.pt", desc, build_model(desc).eval())
    wait_worker(qtbot, widget.compute_shift(str(ckpt)), timeout=120_000)
    t = widget.table
    assert "shift_score" in t and t["shift_score"].notna().all()
    assert (t.groupby("image")["shift_score"].nunique() == 1).all()  # one score per volume
    assert widget.colour_combo.currentText() == "shift score" and "volumes above 1" in widget.status.text()
    expect = matplotlib.colormaps["RdYlGn_r"](np.clip(t["shift_score"].to_numpy(float), 0, 2.0) / 2.0)
    np.testing.assert_allclose(widget._scatter.get_facecolors(), expect, atol=1e-6)
    widget.centers.setText("Z")
    wait_worker(qtbot, widget.run(str(phantom_dir)))
    assert "no center ['Z']" in widget.status.text()
    assert widget.run("") is None and "Choose" in widget.status.text()
