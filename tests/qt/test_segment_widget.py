"""The Segment widget: a real MONAI checkpoint on a phantom image, aligned result, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_pandg.labels import PANCREAS

from .conftest import wait_worker

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pandg.models import ModelDescription, build_model, save_checkpoint

    torch.manual_seed(0)
    desc = ModelDescription(
        name="tiny_random",
        architecture="UNet",
        arch_kwargs=dict(TINY),
        spacing=(3.0, 3.0, 4.0),
        patch_size=(32, 32, 16),
        domains={"centers": ["A"], "sequences": ["t1fs_venous"]},
        command="pytest",
    )
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", desc, build_model(desc).eval())


@pytest.fixture
def loaded(make_napari_viewer, phantom_index: pd.DataFrame):
    from napari_pandg._qt.segment_widget import SegmentWidget
    from napari_pandg.layerdata import iter_subject_layerdata

    viewer = make_napari_viewer()
    rows = phantom_index[(phantom_index["center"] == "A") & (phantom_index["sequence"] == "t2")]
    for _, _, (data, kwargs, kind) in iter_subject_layerdata(rows, labels="first"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    return viewer, widget


def test_segment_layer_aligned_and_scored(loaded, checkpoint: Path, qtbot) -> None:
    from napari_pandg.metrics import segmentation_metrics

    viewer, widget = loaded
    image = next(ly for ly in viewer.layers if ly.__class__.__name__ == "Image")
    gt = next(ly for ly in viewer.layers if ly.__class__.__name__ == "Labels")
    widget.model_combo.setCurrentText(str(checkpoint))
    assert "UNet" in widget.model_info.text()
    widget.gt_combo.setCurrentText(gt.name)
    wait_worker(qtbot, widget.run(), timeout=120_000)
    pred = widget.result_layer
    assert pred is not None and pred.name == f"{image.name}_pred"
    assert pred.data.shape == image.data.shape
    np.testing.assert_allclose(pred.scale, image.scale)
    np.testing.assert_allclose(pred.translate, image.translate)
    assert set(np.unique(pred.data)) <= {0, PANCREAS}
    expected = segmentation_metrics(pred.data, gt.data, spacing=image.metadata["spacing_sar"], label=PANCREAS)
    assert widget.metrics["dice"] == pytest.approx(expected["dice"])
    assert "Dice" in widget.status.text() and "HD95" in widget.status.text()


def test_ground_truth_on_another_grid_is_refused(loaded, checkpoint: Path) -> None:
    viewer, widget = loaded
    image = next(ly for ly in viewer.layers if ly.__class__.__name__ == "Image")
    other = viewer.add_labels(np.zeros((3, 4, 5), dtype=np.uint8), name="small")
    assert widget.run(str(checkpoint), image, other) is None
    assert "not on the image grid" in widget.status.text()


def test_missing_model_reports_error(loaded, qtbot, tmp_path: Path) -> None:
    _, widget = loaded
    wait_worker(qtbot, widget.run(str(tmp_path / "nope.pt")))
    assert widget.status.text().startswith("Error") and "nope.pt" in widget.status.text()
    assert widget.run_btn.isEnabled()


def test_cancel(loaded, checkpoint: Path, qtbot) -> None:
    _, widget = loaded
    widget.model_combo.setCurrentText(str(checkpoint))
    worker = widget.run()
    widget.cancel()
    wait_worker(qtbot, worker)
    assert widget.result_layer is None
    assert widget.status.text() == "Cancelled."


def test_shift_warning_on_a_blank_image(loaded, checkpoint: Path, qtbot) -> None:
    """A blank image is segmented but the widget says, in red, not to trust the result."""
    viewer, widget = loaded
    image = next(ly for ly in viewer.layers if ly.__class__.__name__ == "Image")
    blank = viewer.add_image(np.zeros_like(image.data), name="blank", metadata=dict(image.metadata),
                             scale=image.scale, translate=image.translate)  # fmt: skip
    wait_worker(qtbot, widget.run(str(checkpoint), blank), timeout=120_000)
    assert widget.result_layer.name == "blank_pred"
    assert not widget.shift_label.isHidden() and widget.shift["flagged"] and widget.shift["score"] >= 100
    text = widget.shift_label.text()
    assert "Do not trust" in text and "blank or constant" in text and "#e74c3c" in widget.shift_label.styleSheet()
    assert widget.result_layer.metadata["shift"]["flagged"]
    # an in-domain report reads as such, without the warning
    widget._show_shift({"score": 0.4, "flagged": False, "components": {"feature": 0.4}, "reasons": [],
                        "feature_distance": 3.0, "calibrated": True})  # fmt: skip
    assert "within the model's training domain" in widget.shift_label.text()
    assert "Do not trust" not in widget.shift_label.text()
