"""The shift score (napari_pandg.models.shift): reference fit, report, checkpoint round trip, CLI sidecar."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from napari_pandg.models.shift import ShiftSignals, fit_reference, shift_report

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("sklearn")

TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}


def _sig(rng: np.random.Generator, shift: float = 0.0, conf: float = 0.9, ml: float = 70.0) -> ShiftSignals:
    return ShiftSignals(list(rng.normal(shift, 1.0, 8)), conf, ml, 0.4, False)


def test_report_components_and_reasons() -> None:
    rng = np.random.default_rng(0)
    ref = fit_reference([_sig(rng) for _ in range(40)], [_sig(rng) for _ in range(10)], "layer", "synthetic")
    assert len(ref["mean"]) == 8 and ref["feature_threshold"] > 0 and ref["calibration"]["n_cal"] == 10
    ok = shift_report(ref, _sig(np.random.default_rng(99)))
    far = shift_report(ref, _sig(np.random.default_rng(98), shift=6.0))
    assert far.components["feature"] > 3 * ok.components["feature"] and far.flagged
    assert any("farther from the training domain" in r for r in far.reasons)
    empty = shift_report(ref, ShiftSignals(list(ref["mean"]), float("nan"), 0.0, 0.4, False))
    assert empty.flagged and any("no pancreas" in r for r in empty.reasons)
    huge = shift_report(ref, _sig(np.random.default_rng(1), ml=900.0))
    assert huge.flagged and "900 mL" in " ".join(huge.reasons)
    blank = shift_report(ref, ShiftSignals(list(ref["mean"]), 0.9, 70.0, 0.0, True))
    assert blank.flagged and blank.score >= 100 and "blank or constant" in blank.reasons[0]
    # without a reference only the sanity checks run, and say so
    bare = shift_report(None, _sig(rng))
    assert not bare.flagged and not bare.calibrated and "no training-domain reference" in bare.summary()
    assert math.isfinite(ok.score) and json.dumps(ok.to_dict())


def test_fit_reference_needs_enough_volumes() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=">= 5 fitting"):
        fit_reference([_sig(rng) for _ in range(3)], [_sig(rng) for _ in range(3)], "l", "s")


def _tiny_model(tmp_path: Path):
    from napari_pandg.models import ModelDescription, build_model, save_checkpoint

    torch.manual_seed(0)
    desc = ModelDescription(name="tiny", arch_kwargs=dict(TINY), spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16),
                            command="pytest")  # fmt: skip
    return save_checkpoint(tmp_path / "tiny.pt", desc, build_model(desc).eval())


def _phantom(seed: int, seq: str = "t1fs_venous"):
    from napari_pandg.phantom import generate_subject

    # a coarse, small acquisition keeps the 13 segmentations of this module fast
    return generate_subject("s", "A", (seq,), seed=seed, fine_spacing=4.0, target_shape=(128, 104, 32)).images[seq]


def test_real_model_reference_round_trip_blank_flagged_in_domain_not(tmp_path: Path) -> None:
    """A real (random-weight) MONAI UNet through segment_volume: the reference stored in the
    checkpoint flags a blank image and leaves an in-domain volume of the same family alone."""
    from napari_pandg.models import load_checkpoint, save_checkpoint, segment_volume
    from napari_pandg.models.inference import shift_layer

    model = load_checkpoint(_tiny_model(tmp_path))
    layer = shift_layer(model)
    assert dict(model.network.named_modules())[layer] is not None

    def signals(vol):
        return ShiftSignals(**segment_volume(model, vol).metadata["shift_signals"])

    fit = [signals(_phantom(s)) for s in range(6)]
    cal = [signals(_phantom(s)) for s in range(10, 13)]
    desc = model.description
    desc.shift = fit_reference(fit, cal, layer, "pytest phantom A t1fs_venous")
    path = save_checkpoint(tmp_path / "tiny_ref.pt", desc, model.network)
    m2 = load_checkpoint(path)
    assert m2.description.shift["layer"] == layer
    vol = _phantom(20)
    rep = segment_volume(m2, vol).metadata["shift"]
    assert rep["calibrated"] and rep["components"]["feature"] < 2.0
    blank = segment_volume(m2, vol.with_array(np.zeros_like(vol.array))).metadata["shift"]
    assert blank["flagged"] and blank["score"] >= 100
    noise = vol.with_array(np.random.default_rng(0).normal(0, 1, vol.shape).astype(np.float32))
    far = segment_volume(m2, noise).metadata["shift"]
    assert far["components"]["feature"] > rep["components"]["feature"]


def test_malformed_reference_is_refused() -> None:
    from napari_pandg.models import ModelDescription, ModelError

    with pytest.raises(ModelError, match="shift-score reference is malformed"):
        ModelDescription(shift={"mean": [0.0, 1.0], "precision": [[1.0]], "feature_threshold": 1.0,
                                "confidence_threshold": 0.1, "layer": "x"})  # fmt: skip


def test_cli_writes_and_prints_the_shift_score(tmp_path: Path, capsys) -> None:
    from napari_pandg.cli import main
    from napari_pandg.io import save_volume

    ckpt = _tiny_model(tmp_path)
    vol = _phantom(1)
    save_volume(vol.with_array(np.full(vol.shape, 5.0, np.float32)), tmp_path / "blank.nii.gz")
    assert main(["segment", "--model", str(ckpt), "--input", str(tmp_path / "blank.nii.gz"),
                 "--output", str(tmp_path / "blank_seg.nii.gz")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "shift score 100.00" in out and "blank or constant" in out
    side = json.loads((tmp_path / "blank_seg.shift.json").read_text())
    assert side["flagged"] and side["model"] == "tiny" and side["image"].endswith("blank.nii.gz")
    # the sidecar is an output like the mask: not replaced without --overwrite
    before = (tmp_path / "blank_seg.shift.json").read_bytes()
    (tmp_path / "blank_seg.nii.gz").unlink()
    assert main(["segment", "--model", str(ckpt), "--input", str(tmp_path / "blank.nii.gz"),
                 "--output", str(tmp_path / "blank_seg.nii.gz")]) == 2  # fmt: skip
    assert "blank_seg.shift.json" in capsys.readouterr().err
    assert (tmp_path / "blank_seg.shift.json").read_bytes() == before


def test_reference_of_another_network_is_refused(tmp_path: Path) -> None:
    from napari_pandg.models import ModelError, load_checkpoint, segment_volume
    from napari_pandg.models.inference import shift_layer

    model = load_checkpoint(_tiny_model(tmp_path))
    vol = _phantom(2)
    good = shift_layer(model)
    ref = {"mean": [0.0] * 3, "precision": [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], "feature_threshold": 1.0,
           "confidence_threshold": 0.1}  # fmt: skip
    model.description.shift = {**ref, "layer": "no.such.layer"}
    with pytest.raises(ModelError, match="does not have"):
        segment_volume(model, vol)
    model.description.shift = {**ref, "layer": good}  # right layer, wrong feature count
    with pytest.raises(ValueError, match="3 features"):
        segment_volume(model, vol)


def test_sidecar_when_nothing_is_found(tmp_path: Path, capsys) -> None:
    """A model that finds no pancreas (no confidence to average: NaN) still writes valid JSON
    and exits 0; the report says no pancreas was found."""
    from napari_pandg.cli import main
    from napari_pandg.io import save_volume
    from napari_pandg.models import ModelDescription, build_model, save_checkpoint

    desc = ModelDescription(name="bg", arch_kwargs=dict(TINY), spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16),
                            command="pytest")  # fmt: skip
    net = build_model(desc)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.get_parameter([k for k, _ in net.named_parameters()][-1]).copy_(torch.tensor([5.0, -5.0]))
    ckpt = save_checkpoint(tmp_path / "bg.pt", desc, net.eval())
    save_volume(_phantom(3), tmp_path / "img.nii.gz")
    assert main(["segment", "--model", str(ckpt), "--input", str(tmp_path / "img.nii.gz"),
                 "--output", str(tmp_path / "img_seg.nii.gz")]) == 0  # fmt: skip
    side = json.loads((tmp_path / "img_seg.shift.json").read_text())
    assert side["flagged"] and side["signals"]["confidence"] is None and "no pancreas" in " ".join(side["reasons"])
    assert "no pancreas was found" in capsys.readouterr().out
