"""The Fine-tune widget: corrected labels in the viewer -> fine-tuned model, live curve, install."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import wait_worker

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}


@pytest.fixture
def setup(make_napari_viewer, phantom_index: pd.DataFrame, tmp_path: Path, monkeypatch):
    from napari_pandg._qt.finetune_widget import FinetuneWidget
    from napari_pandg.layerdata import iter_subject_layerdata
    from napari_pandg.models import ModelDescription, build_model, save_checkpoint

    monkeypatch.setenv("PANDG_MODELS", str(tmp_path / "models"))
    torch.manual_seed(0)
    desc = ModelDescription(name="tiny_base", architecture="UNet", arch_kwargs=dict(TINY), spacing=(4.0, 4.0, 6.0),
                            patch_size=(32, 32, 16), domains={"centers": ["A"], "sequences": ["t1fs_venous"]},
                            command="pytest")  # fmt: skip
    base = save_checkpoint(tmp_path / "tiny_base.pt", desc, build_model(desc).eval())
    viewer = make_napari_viewer()
    rows = phantom_index[phantom_index["sequence"].isin(["t2", "op"]) & (phantom_index["center"] == "A")]
    for _, _, (data, kwargs, kind) in iter_subject_layerdata(rows, labels="all"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    return viewer, widget, base, tmp_path


def test_finetune_watch_and_install(setup, qtbot) -> None:
    viewer, widget, base, tmp_path = setup
    images = [ly.name for ly in viewer.layers if ly.__class__.__name__ == "Image"]
    labels = [ly.name for ly in viewer.layers if ly.__class__.__name__ == "Labels"]
    assert len(images) == 2 and len(labels) == 2
    for im in images:  # each sequence with its own label layer (the phantom's grids differ per sequence)
        widget.add_pair(im, f"{im}_labels")
    assert len(widget.pairs) == 2 and widget.pair_list.count() == 2
    widget.model_combo.setCurrentText(str(base))
    widget.label_value.setValue(10)  # the pancreas of the AMOS label layer
    widget.epochs.setValue(2)
    widget.steps.setValue(2)
    widget.run_dir.setText(str(tmp_path / "run"))
    widget.name.setText("tiny_ft")
    wait_worker(qtbot, widget.run(), timeout=300_000)
    assert widget.result is not None and not widget.result.cancelled, widget.status.text()
    assert [r["epoch"] for r in widget.history] == [1, 2] and widget.progress.value() == 2
    assert "val_dice" in widget.history[-1]  # one of the two pairs validates
    assert len(widget.ax.lines) == 2  # loss and val Dice curves
    if os.environ.get("PANDG_SCREENSHOTS"):
        import imageio.v3 as iio

        out = Path(os.environ["PANDG_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out / "finetune_widget.png", viewer.screenshot(canvas_only=False, flash=False))
    assert (tmp_path / "run" / "data" / "manifest.csv").exists() and (tmp_path / "run" / "metrics.jsonl").exists()
    assert widget.install_btn.isEnabled()
    dst = widget.install()
    assert dst is not None and dst.name == "tiny_ft.pt" and dst.parent == tmp_path / "models"
    assert "tiny_ft" in [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
    assert widget.install() is None and "exists" in widget.status.text()  # never overwritten


def test_finetune_cancel_and_bad_pairs(setup, qtbot) -> None:
    viewer, widget, base, tmp_path = setup
    img = next(ly.name for ly in viewer.layers if ly.__class__.__name__ == "Image")
    lab = f"{img}_labels"
    assert widget.run() is None and "add at least one" in widget.status.text()
    viewer.add_labels(np.zeros((3, 4, 5), np.uint8), name="wrong grid")
    widget.add_pair(img, "wrong grid")
    assert not widget.pairs and "not on the grid" in widget.status.text()
    widget.add_pair(img, lab)
    widget.model_combo.setCurrentText(str(base))
    widget.label_value.setValue(10)
    widget.epochs.setValue(50)
    widget.steps.setValue(50)
    widget.run_dir.setText(str(tmp_path / "run2"))
    worker = widget.run()
    qtbot.waitUntil(lambda: (tmp_path / "run2" / "split.csv").exists(), timeout=120_000)
    widget.cancel()
    wait_worker(qtbot, worker, timeout=120_000)
    assert widget.result is not None and widget.result.cancelled and "Cancelled" in widget.status.text()
    assert widget.result.epochs_done < 50


def test_finetune_runs_in_its_own_process_and_survives_sigkill(setup, qtbot) -> None:
    """The trainer is another process: SIGKILL ends it, not napari; the widget says so; Fine-tune resumes."""
    viewer, widget, base, tmp_path = setup
    img = next(ly.name for ly in viewer.layers if ly.__class__.__name__ == "Image")
    widget.add_pair(img, f"{img}_labels")
    widget.model_combo.setCurrentText(str(base))
    widget.label_value.setValue(10)
    widget.epochs.setValue(200)
    widget.steps.setValue(20)
    run = tmp_path / "run_kill"
    widget.run_dir.setText(str(run))
    worker = widget.run()
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=180_000)
    proc = widget._proc
    assert proc is not None and proc.pid != os.getpid() and proc.running
    proc.kill()
    wait_worker(qtbot, worker, timeout=60_000)
    text = widget.status.text()
    assert "killed by signal SIGKILL" in text and "resume" in text, text
    assert widget.result is None and widget.run_btn.isEnabled()
    assert (run / "last.pt").exists() and len(viewer.layers) >= 2  # napari lives on, the run is resumable
    done = max(r["epoch"] for r in widget.history)
    # Fine-tune again on the same folder: resumes; Cancel stops after the current step
    widget.epochs.setValue(200)
    worker = widget.run()
    qtbot.waitUntil(lambda: "Resuming" in widget.status.text() or len(widget.history) >= 1, timeout=60_000)
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=180_000)
    assert widget.history[0]["epoch"] >= done  # continued, not restarted
    widget.cancel()
    wait_worker(qtbot, worker, timeout=120_000)
    assert widget.result is not None and widget.result.cancelled and "Cancelled" in widget.status.text()
    assert widget.install_btn.isEnabled()
