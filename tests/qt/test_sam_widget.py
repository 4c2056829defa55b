"""The MedSAM2 widget on a real viewer with a random-weight sam2.1 model built from its config.

Random weights make the masks arbitrary, so the tests assert what the widget must guarantee:
prompts land on the right voxels through the layer transforms, propagation streams every
slice into ``current_object``, corrections reuse cached features, commit/undo/clear work, and
the result saves with the source image's affine.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_pandg.labels import PANCREAS
from napari_pandg.volume import Volume

from .conftest import wait_worker

pytest.importorskip("sam2")

SIZE = 64


@pytest.fixture(scope="module")
def engine():
    from napari_pandg.sam import load_sam_model

    return load_sam_model(None, image_size=SIZE, device="cpu", random_init=True)


def _volume(tmp_path: Path) -> Volume:
    x, y, z = np.meshgrid(np.arange(48), np.arange(40), np.arange(10), indexing="ij")
    arr = 50 + 200 * (((x - 24) / 10) ** 2 + ((y - 20) / 7) ** 2 + ((z - 5) / 4) ** 2 < 1)
    arr = arr + np.random.default_rng(0).normal(0, 5, arr.shape)
    affine = np.diag([-1.5, -1.5, 4.0, 1.0])  # LPS-like storage, anisotropic
    affine[:3, 3] = (30.0, 25.0, -12.0)
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(arr.astype(np.float32), affine), path)
    from napari_pandg.io import load_volume

    return load_volume(path, subject="s1", sequence="t1fs")


@pytest.fixture
def widget(make_napari_viewer, engine, tmp_path: Path, qtbot):
    from napari_pandg._qt.sam_widget import SamWidget
    from napari_pandg.layerdata import volume_layerdata

    viewer = make_napari_viewer()
    data, kwargs, _ = volume_layerdata(_volume(tmp_path))
    image = viewer.add_image(data, **kwargs)
    w = SamWidget(viewer)
    viewer.window.add_dock_widget(w, area="right")
    assert w.set_engine(engine) is None  # no image yet
    wait_worker(qtbot, w.set_image_layer(image))  # normalisation runs in a worker
    assert w._prepared is image and w.segmenter.shape == (48, 40, 10)
    return w


def _goto(widget, z: int) -> None:
    world = widget.image_layer.data_to_world((z, 0, 0))
    widget.viewer.dims.set_point(0, float(world[0]))
    assert widget.current_slice() == z


def _box(widget, z: int, a0: float, r0: float, a1: float, r1: float) -> None:
    rect = np.array([[z, a0, r0], [z, a0, r1], [z, a1, r1], [z, a1, r0]], dtype=float)
    widget.viewer.layers["prompts"].add_rectangles(rect)


def test_layers_follow_the_image_transform(widget) -> None:
    layers = widget.viewer.layers
    for name in ("point_prompts", "prompts", "current_object", "committed_objects"):
        assert name in layers
        np.testing.assert_allclose(layers[name].scale, widget.image_layer.scale)
        np.testing.assert_allclose(layers[name].translate, widget.image_layer.translate)
    assert layers["current_object"].data.shape == widget.image_layer.data.shape


def test_prompt_coordinates_respect_scale_and_translate(widget) -> None:
    z = 5
    _goto(widget, z)
    _box(widget, z, 12, 14, 26, 34)
    pts = widget.viewer.layers["point_prompts"]
    pts.add(np.array([[z, 20.0, 24.0]]))
    widget.toggle_point_label()
    pts.add(np.array([[z, 15.0, 30.0]]))
    box, points = widget.prompts_on(z)
    assert box == (14.0, 12.0, 34.0, 26.0)  # (x0=r0, y0=a0, x1=r1, y1=a1)
    assert points == [(24.0, 20.0, 1), (30.0, 15.0, -1)]
    assert widget.prompts_on(z + 1) == (None, [])


def test_segment_slice_then_volume_streams_and_corrects(widget, qtbot) -> None:
    seg = widget.segmenter
    z = 5
    _goto(widget, z)
    _box(widget, z, 10, 12, 30, 36)
    wait_worker(qtbot, widget.segment_slice())
    preview = seg.preview(z, box=widget.prompts_on(z)[0])
    np.testing.assert_array_equal(widget.current_layer.data[z], preview.T)

    streamed: list[int] = []
    widget._signals.slice_done.connect(lambda zz, *_: streamed.append(zz))
    wait_worker(qtbot, widget.segment_volume())
    qtbot.waitUntil(lambda: len(streamed) >= 10, timeout=10_000)
    assert sorted(set(streamed)) == list(range(10))  # both directions, every slice
    assert seg.mask is not None
    np.testing.assert_array_equal(widget.current_layer.data, seg.mask.transpose(2, 1, 0))

    calls = seg.encoder_calls
    _goto(widget, 7)
    widget.viewer.layers["point_prompts"].add(np.array([[7, 20.0, 24.0]]))
    wait_worker(qtbot, widget.segment_volume())  # a correction: features are cached
    assert seg.encoder_calls == calls
    assert 7 in seg.anchors


def test_painted_slice_correction(widget, qtbot) -> None:
    seg = widget.segmenter
    _goto(widget, 5)
    _box(widget, 5, 10, 12, 30, 36)
    wait_worker(qtbot, widget.segment_volume())
    painted = np.zeros_like(widget.current_layer.data[3])
    painted[15:25, 18:30] = 1
    widget.current_layer.data[3] = painted
    _goto(widget, 3)
    wait_worker(qtbot, widget.segment_volume())
    np.testing.assert_array_equal(widget.current_layer.data[3] != 0, painted != 0)
    assert 3 in seg.anchors


def test_cancel_keeps_partial_result(widget, qtbot) -> None:
    _goto(widget, 5)
    _box(widget, 5, 10, 12, 30, 36)
    seen: list[int] = []

    def on_slice(zz, *_):
        seen.append(zz)
        if len(seen) == 2:
            widget.cancel()

    widget._signals.slice_done.connect(on_slice)
    worker = widget.segment_volume()
    widget.commit()  # refused while the engine is busy: one job at a time
    assert widget.status.text().startswith("Busy")
    wait_worker(qtbot, worker)
    assert widget.segmenter.last_cancelled
    assert len(seen) < 10


def test_commit_undo_clear_and_save(widget, qtbot, tmp_path: Path) -> None:
    seg = widget.segmenter
    _goto(widget, 5)
    _box(widget, 5, 10, 12, 30, 36)
    wait_worker(qtbot, widget.segment_volume())
    mask = widget.current_layer.data.copy()
    if not mask.any():  # random weights may give an empty object: paint one to commit
        widget.viewer.layers["prompts"].data = []  # no prompts on the slice: a painted correction
        widget.current_layer.data[5, 15:25, 18:30] = 1
        wait_worker(qtbot, widget.segment_volume())
        mask = widget.current_layer.data.copy()
    widget.commit()
    committed = widget.committed_layer.data
    assert set(np.unique(committed)) == {0, PANCREAS}
    np.testing.assert_array_equal(committed != 0, mask != 0)
    assert not widget.current_layer.data.any()
    assert len(widget.viewer.layers["prompts"].data) == 0

    out = tmp_path / "committed.nii.gz"
    widget.committed_layer.save(str(out), plugin="napari-pandg")
    img = nib.load(tmp_path / "img.nii.gz")
    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, img.affine)
    assert saved.shape == img.shape
    np.testing.assert_array_equal(np.asarray(saved.dataobj), committed.transpose(2, 1, 0)[::-1, ::-1, :])

    widget.undo()
    assert not widget.committed_layer.data.any()
    np.testing.assert_array_equal(widget.current_layer.data != 0, mask != 0)
    widget.clear()
    assert not widget.current_layer.data.any() and seg.mask is None


def test_keys_and_toggle(widget) -> None:
    from app_model.types import KeyBinding

    for key in ("s", "Shift-S", "c", "t", "Shift-C"):
        assert KeyBinding.from_str(key) in widget.viewer.keymap, key
    assert widget.toggle_point_label() == "negative"
    assert widget.viewer.layers["point_prompts"].feature_defaults["label"][0] == "negative"
    assert widget.toggle_point_label() == "positive"


def test_correct_an_existing_label_layer(widget, qtbot) -> None:
    lab = np.zeros(widget.image_layer.data.shape, dtype=np.uint8)
    lab[3:7, 12:28, 14:34] = PANCREAS
    layer = widget.viewer.add_labels(lab, name="dg_prediction", scale=widget.image_layer.scale)
    widget.start_from_labels(layer, PANCREAS)
    np.testing.assert_array_equal(widget.current_layer.data, lab == PANCREAS)
    _goto(widget, 4)
    widget.viewer.layers["point_prompts"].add(np.array([[4, 20.0, 24.0]]))
    wait_worker(qtbot, widget.segment_volume())
    assert 4 in widget.segmenter.anchors


def test_model_checkpoint_remembered(widget, qtbot, tmp_path: Path, engine) -> None:
    from napari_pandg.sam import save_checkpoint

    ckpt = tmp_path / "random_sam.pt"
    save_checkpoint(engine, ckpt)
    widget.ckpt_edit.setText(str(ckpt))
    widget.size_spin.setValue(SIZE)
    widget.device_combo.setCurrentText("cpu")
    from napari.settings import get_plugin_settings

    settings = get_plugin_settings("napari-pandg").sam
    saved = (settings.checkpoint, settings.image_size, settings.device, settings.cache_dir)
    try:
        wait_worker(qtbot, widget.load_model(), timeout=120_000)
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)  # then the image is prepared
        assert widget.engine is not engine and widget.engine.image_size == SIZE
        assert widget._prepared is widget.image_layer and widget.segmenter.engine is widget.engine
        assert "random_sam.pt" in widget.model_label.text()
        assert settings.checkpoint == str(ckpt)
        # a new widget (e.g. the next napari session) starts from the remembered checkpoint
        from napari_pandg._qt.sam_widget import SamWidget

        assert SamWidget(widget.viewer).ckpt_edit.text() == str(ckpt)
    finally:  # do not leave the test's file in the user's napari settings
        settings.checkpoint, settings.image_size, settings.device, settings.cache_dir = saved


def test_embeddings_on_disk_and_chained_preparation(widget, qtbot, tmp_path: Path, engine) -> None:
    """Compute embeddings into a folder; preparing the image again finds them; nothing re-encodes."""
    from napari.settings import get_plugin_settings

    settings = get_plugin_settings("napari-pandg").sam
    saved = settings.cache_dir
    try:
        cache = tmp_path / "embeddings"
        # one slice encoded in memory before a folder is set: setting it keeps the work and
        # writes that slice
        widget.segmenter.encode([3])
        mask_before = widget.segmenter.mask
        widget.cache_edit.setText(str(cache))
        widget.cache_edit.editingFinished.emit()
        assert settings.cache_dir == str(cache)
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
        assert widget.segmenter.cache_dir == cache and widget.segmenter.features_on_disk == [3]
        assert "1 slices written" in widget.status.text() and widget.segmenter.mask is mask_before
        seen = []
        widget._signals.encoded.connect(lambda d, t: seen.append((d, t)))
        calls = engine.encoder_calls
        wait_worker(qtbot, widget.compute_embeddings())
        assert engine.encoder_calls - calls == 9  # slice 3 was already encoded
        assert seen[-1] == (9, 9) and widget.progress.value() == widget.progress.maximum()
        assert "10 of 10 slices encoded (9 new, 10 on disk)" in widget.status.text()
        calls = engine.encoder_calls

        # a new session: the same image and model read every slice from disk
        widget.set_engine(engine)
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
        assert "Embeddings of 10 slices found on disk" in widget.status.text()
        # pressing Shift-S before the image is prepared prepares it, then propagates
        widget._prepared = None
        _goto(widget, 5)
        _box(widget, 5, 13, 14, 27, 34)
        assert widget.segment_volume() is None
        qtbot.waitUntil(lambda: widget.segmenter.mask is not None and widget._worker is None, timeout=60_000)
        assert engine.encoder_calls == calls  # propagation encoded nothing new
        assert sorted(widget.segmenter.last_visited) == list(range(10))  # the whole volume propagated
    finally:
        settings.cache_dir = saved


def test_early_stop_after_empty_slices(widget, qtbot) -> None:
    """'Stop after N empty slices' reaches the propagation: a real sam2 model with random weights
    (seed 5) that segments only the key slice of this volume stops 2 slices on each side."""
    import torch

    from napari_pandg.sam import load_sam_model

    torch.manual_seed(5)
    eng = load_sam_model(None, image_size=SIZE, device="cpu", random_init=True)
    wait_worker(qtbot, widget.set_engine(eng))
    seg = widget.segmenter
    assert widget.early_stop_spin.value() == 0 and widget.early_stop_spin.text() == "off"
    widget.early_stop_spin.setValue(2)
    _goto(widget, 5)
    _box(widget, 5, 10, 12, 30, 36)
    calls = seg.encoder_calls
    wait_worker(qtbot, widget.segment_volume())
    assert seg.last_stopped_empty == {"forward": 7, "backward": 3}, (seg.last_stopped_empty, seg.mask.sum((0, 1)))
    assert sorted(seg.last_visited) == [3, 4, 5, 6, 7] and seg.encoder_calls - calls == 5
    assert widget.current_layer.data[5].any() and not widget.current_layer.data[8:].any()
