"""Checkpoints, registry and sliding-window inference with real (tiny) MONAI networks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from torch import nn  # noqa: E402

from napari_pandg.labels import PANCREAS  # noqa: E402
from napari_pandg.models import (  # noqa: E402
    ArchitectureMismatchError,
    CheckpointFormatError,
    LabelMapError,
    ModelDescription,
    ModelError,
    ModelNotFoundError,
    SegmentationCancelled,
    SegModel,
    build_model,
    list_models,
    load_checkpoint,
    read_description,
    resolve_model,
    run_segment_cli,
    save_checkpoint,
    segment_files,
    segment_volume,
)
from napari_pandg.models.networks import PlainUnet  # noqa: E402
from napari_pandg.volume import Volume  # noqa: E402

TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}


def tiny_desc(**kw) -> ModelDescription:
    base = dict(
        name="tiny",
        architecture="UNet",
        arch_kwargs=dict(TINY),
        spacing=(2.0, 2.0, 3.0),
        patch_size=(32, 32, 16),
        domains={"centers": ["A"], "sequences": ["t1fs_venous"]},
        val_metrics={"dice": 0.5},
        command="pytest",
    )
    base.update(kw)
    return ModelDescription(**base)


def tiny_model(seed: int = 0, **kw) -> SegModel:
    torch.manual_seed(seed)
    desc = tiny_desc(**kw)
    return SegModel(desc, build_model(desc).eval())


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    m = tiny_model()
    return save_checkpoint(tmp_path / "tiny.pt", m.description, m.network)


# --------------------------------------------------------------------------- checkpoint
def test_checkpoint_round_trip(ckpt: Path):
    loaded = load_checkpoint(ckpt)
    ref = tiny_model()
    d = loaded.description
    assert d.architecture == "UNet" and d.arch_kwargs == TINY
    assert d.spacing == (2.0, 2.0, 3.0) and d.orientation == "RAS"
    assert d.label_map == {0: 0, 1: PANCREAS}
    assert d.normalization["method"] == "percentile_zscore"
    assert d.normalization["lower"] == 0.5 and d.normalization["upper"] == 99.5
    assert d.domains["centers"] == ["A"] and d.val_metrics == {"dice": 0.5}
    assert d.versions["torch"] == torch.__version__ and "monai" in d.versions
    assert d.created and d.command == "pytest"
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), ref.network(x))
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]
    # readable with weights_only (no pickled code)
    obj = torch.load(ckpt, weights_only=True)
    assert obj["format"] == "napari-pandg/model"
    assert read_description(ckpt).to_dict() == d.to_dict()


def test_save_refuses_existing_without_overwrite(ckpt: Path):
    m = tiny_model()
    with pytest.raises(FileExistsError):
        save_checkpoint(ckpt, m.description, m.network, overwrite=False)


def test_missing_and_corrupt_checkpoints(tmp_path: Path, ckpt: Path):
    with pytest.raises(ModelNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    assert issubclass(ModelNotFoundError, FileNotFoundError) and issubclass(ModelError, ValueError)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="empty"):
        load_checkpoint(empty)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="trunc.pt"):
        load_checkpoint(trunc)
    junk = tmp_path / "junk.pt"
    rng = np.random.default_rng(0)
    for _ in range(200):  # random bytes break the unpickler in many different ways
        junk.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointFormatError, match="junk.pt"):
            load_checkpoint(junk)
    bare = tmp_path / "bare.pt"
    torch.save(tiny_model().network.state_dict(), bare)
    with pytest.raises(CheckpointFormatError, match="bare state dict"):
        load_checkpoint(bare)


def test_architecture_mismatch_names_file_and_keys(tmp_path: Path, ckpt: Path):
    obj = torch.load(ckpt, weights_only=True)
    obj["description"]["arch_kwargs"]["channels"] = [8, 16, 32]
    bad = tmp_path / "bad_arch.pt"
    torch.save(obj, bad)
    with pytest.raises(ArchitectureMismatchError, match=r"bad_arch\.pt.*shape mismatch"):
        load_checkpoint(bad)
    obj = torch.load(ckpt, weights_only=True)
    obj["description"]["architecture"] = "DynUNet"
    obj["description"]["arch_kwargs"] = {}
    other = tmp_path / "other_arch.pt"
    torch.save(obj, other)
    with pytest.raises(ArchitectureMismatchError, match=r"other_arch\.pt.*DynUNet.*missing keys"):
        load_checkpoint(other)


def test_label_map_errors(tmp_path: Path, ckpt: Path):
    with pytest.raises(LabelMapError, match=r"\{0: 0, 1: 6\} was expected"):
        load_checkpoint(ckpt, expected_label_map={0: 0, 1: 6})
    load_checkpoint(ckpt, expected_label_map={0: 0, 1: PANCREAS})
    with pytest.raises(LabelMapError, match="every output index"):
        tiny_desc(label_map={0: 0, 1: 10, 2: 6})
    obj = torch.load(ckpt, weights_only=True)
    obj["description"]["label_map"] = {0: 0}
    bad = tmp_path / "bad_labels.pt"
    torch.save(obj, bad)
    with pytest.raises(LabelMapError):
        load_checkpoint(bad)


def test_newer_format_version_is_refused(tmp_path: Path, ckpt: Path):
    obj = torch.load(ckpt, weights_only=True)
    obj["format_version"] = 99
    p = tmp_path / "future.pt"
    torch.save(obj, p)
    with pytest.raises(CheckpointFormatError, match="newer"):
        load_checkpoint(p)


# --------------------------------------------------------------------------- MaskGen
def _maskgen_files(folder: Path, with_anatomix: bool = True) -> Path:
    torch.manual_seed(1)
    args = {
        "dimension": 3, "in_channels": 17, "out_channels": 2, "base_filters": 4, "num_levels": 2,
        "dataset": "pancreas", "spacing": [2.0, 2.0, 4.0], "crop_size": [32, 32, 32],
        "method": "dropgen", "dropout_prob": 0.75, "feature_dim": 4, "norm_type": "batch",
        "batch_size": 2, "run_name": "dropgen_pancreas_cd75_seed1",
        "class_mapping": {"background": 0, "pancreas": 1},
    }  # fmt: skip
    seg = PlainUnet(17, 2, num_downs=2, ngf=4)
    run = folder / "runs" / "dropgen_pancreas"
    run.mkdir(parents=True)
    torch.save({"model_state_dict": seg.state_dict(), "optimizer_state_dict": {}, "step": 10,
                "best_metric": 0.4, "args": args, "val_history": {}, "wandb_run_id": None},
               run / "best.pth")  # fmt: skip
    if with_anatomix:
        (folder / "pretrained").mkdir()
        torch.save(PlainUnet(1, 16, num_downs=4, ngf=4).state_dict(), folder / "pretrained" / "anatomix.pth")
    return run / "best.pth"


def test_maskgen_best_pth_loads_and_segments(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PANDG_MODELS", str(tmp_path / "nomodels"))
    best = _maskgen_files(tmp_path)
    m = load_checkpoint(best)
    d = m.description
    assert d.source_format == "maskgen" and d.method == "maskgen" and d.in_channels == 17
    assert d.label_map == {0: 0, 1: PANCREAS} and d.spacing == (2.0, 2.0, 4.0)
    assert d.normalization == {"method": "minmax"} and d.feature_extractor["out_channels"] == 16
    vol = Volume(np.random.default_rng(0).random((20, 24, 10)).astype(np.float32), np.diag([2, 2, 4, 1.0]))
    seg = segment_volume(m, vol)
    assert seg.shape == vol.shape and set(np.unique(seg.array)) <= {0, PANCREAS}


def test_maskgen_without_anatomix_is_a_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PANDG_MODELS", str(tmp_path / "nomodels"))
    best = _maskgen_files(tmp_path, with_anatomix=False)
    with pytest.raises(ModelNotFoundError, match="anatomix"):
        load_checkpoint(best)


# --------------------------------------------------------------------------- inference
class _Threshold(nn.Module):
    """Logits [0, x - 0.5]: foreground where the min-max normalised intensity > 0.5."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), x - 0.5], dim=1)


def _oblique_free_volume(shape=(40, 36, 14)):
    """Bright box in an LPS-like, permuted, anisotropic grid (not the model's RAS grid)."""
    img = np.random.default_rng(0).normal(100, 5, shape).astype(np.float32)
    box = np.zeros(shape, bool)
    box[12:28, 8:20, 4:10] = True
    img[box] = 300
    aff = np.array([[-1.3, 0, 0, 60.0], [0, 0, 2.5, -20.0], [0, -1.1, 0, 30.0], [0, 0, 0, 1]])
    return Volume(img, aff, subject="s1", center="A", sequence="t2"), box


def test_segment_maps_back_to_input_grid_with_amos_ids():
    vol, box = _oblique_free_volume()
    desc = tiny_desc(normalization={"method": "minmax"}, spacing=(2.0, 2.0, 2.0), patch_size=(16, 16, 16))
    m = SegModel(desc, _Threshold())
    seg = segment_volume(m, vol)
    assert seg.shape == vol.shape and np.array_equal(seg.affine, vol.affine)
    assert seg.is_label and seg.array.dtype == np.uint8
    assert set(np.unique(seg.array)) == {0, PANCREAS}
    got = seg.array == PANCREAS
    d = 2 * (got & box).sum() / (got.sum() + box.sum())
    assert d > 0.85, d  # resampled there and back: same place in the input grid
    assert seg.subject == "s1" and seg.metadata["model"] == "tiny"


def test_largest_component_postprocess_from_checkpoint(tmp_path: Path):
    """A checkpoint that asks for the largest component keeps the big blob, drops the far one."""
    vol, box = _oblique_free_volume()
    speck = np.zeros(vol.shape, bool)
    speck[2:6, 26:32, 10:13] = True  # a second, smaller bright blob far from the box
    vol.array[speck] = 300
    kw = dict(normalization={"method": "minmax"}, spacing=(2.0, 2.0, 2.0), patch_size=(16, 16, 16))
    plain = segment_volume(SegModel(tiny_desc(**kw), _Threshold()), vol).array == PANCREAS
    assert plain[speck].mean() > 0.5 and plain[box].mean() > 0.8  # both blobs found
    desc = tiny_desc(postprocess={"largest_component": [1]}, **kw)
    # the choice travels with the checkpoint (the _Threshold module has no weights to save)
    path = save_checkpoint(tmp_path / "pp.pt", desc, build_model(tiny_desc()))
    assert load_checkpoint(path).description.postprocess == {"largest_component": [1]}
    assert "largest_component [1]" in desc.summary()
    kept = segment_volume(SegModel(desc, _Threshold()), vol).array == PANCREAS
    assert not kept[speck].any() and np.array_equal(kept[box], plain[box])
    with pytest.raises(ModelError, match="foreground outputs are 1..1"):
        tiny_desc(postprocess={"largest_component": [2]})
    with pytest.raises(ModelError, match="unknown postprocess step 'fill_holes'"):
        tiny_desc(postprocess={"fill_holes": [1]})


def test_segment_small_volume_is_padded_with_real_unet(ckpt: Path):
    m = load_checkpoint(ckpt)
    vol = Volume(np.random.default_rng(1).random((9, 11, 5)).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    calls = []
    seg = segment_volume(m, vol, progress=lambda d, t, w: calls.append((d, t, w)))
    assert seg.shape == (9, 11, 5) and seg.array.dtype == np.uint8
    assert set(np.unique(seg.array)) <= {0, PANCREAS}
    assert calls and calls[-1][0] == calls[-1][1]


def test_segment_rejects_nan_and_labels_and_cancels(ckpt: Path):
    m = load_checkpoint(ckpt)
    arr = np.ones((16, 16, 8), np.float32)
    arr[3, 3, 3] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        segment_volume(m, Volume(arr, np.eye(4), subject="bad"))
    with pytest.raises(ModelError, match="label map"):
        segment_volume(m, Volume(np.zeros((8, 8, 8), np.uint8), np.eye(4), is_label=True))
    vol = Volume(np.random.default_rng(0).random((64, 64, 24)).astype(np.float32), np.diag([2, 2, 3, 1.0]))
    n = [0]

    def cancel():
        n[0] += 1
        return n[0] > 2

    with pytest.raises(SegmentationCancelled):
        segment_volume(m, vol, cancel=cancel)


def _write_nifti(path: Path, arr: np.ndarray, aff: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, aff), str(path))
    return path


def test_segment_files_single_and_manifest(tmp_path: Path, ckpt: Path, capsys):
    import nibabel as nib
    import pandas as pd

    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    rng = np.random.default_rng(0)
    rows = []
    for s in ("s1", "s2"):
        img = _write_nifti(tmp_path / "data" / s / "t2.nii.gz", rng.random((20, 18, 8)).astype(np.float32), aff)
        lab = np.zeros((20, 18, 8), np.uint8)
        lab[5:10, 5:10, 2:5] = PANCREAS
        labp = _write_nifti(tmp_path / "data" / s / "t2_label.nii.gz", lab, aff)
        rows.append({"subject": s, "center": "A", "sequence": "t2",
                     "image": str(img.relative_to(tmp_path / "data")), "label": str(labp.relative_to(tmp_path / "data"))})  # fmt: skip
    manifest = tmp_path / "data" / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)

    out = tmp_path / "single_seg.nii.gz"
    paths = run_segment_cli(str(ckpt), tmp_path / "data" / "s1" / "t2.nii.gz", out)
    assert paths == [out] and "wrote 1 segmentation" in capsys.readouterr().out
    img = nib.load(str(out))
    assert img.shape == (20, 18, 8) and np.allclose(img.affine, aff)
    with pytest.raises(FileExistsError, match="overwrite"):
        segment_files(str(ckpt), tmp_path / "data" / "s1" / "t2.nii.gz", out)
    segment_files(str(ckpt), tmp_path / "data" / "s1" / "t2.nii.gz", out, overwrite=True)

    od = tmp_path / "preds"
    written = segment_files(str(ckpt), manifest=manifest, out_dir=od)
    assert sorted(p.name for p in written) == ["s1_t2_seg.nii.gz", "s2_t2_seg.nii.gz"]
    pred_csv = pd.read_csv(od / "predictions.csv")
    assert list(pred_csv["prediction"]) == [str(p) for p in written]
    with pytest.raises(FileExistsError, match="2 output"):
        segment_files(str(ckpt), manifest=manifest, out_dir=od)

    from napari_pandg.metrics import evaluate_manifest

    res = evaluate_manifest(od / "predictions.csv")
    assert len(res) == 2 and res["dice"].between(0, 1).all() and (res["center"] == "A").all()


def test_registry_user_folder(tmp_path: Path, monkeypatch):
    user = tmp_path / "user_models"
    monkeypatch.setenv("PANDG_MODELS", str(user))
    m = tiny_model()
    save_checkpoint(user / "my_erm.pt", m.description, m.network)
    (user / "broken.pt").write_bytes(b"not a checkpoint")
    df = list_models()
    row = df[df["name"] == "my_erm"].iloc[0]
    assert row["source"] == "user" and row["method"] == "erm" and row["spacing"] == "2x2x3"
    assert row["labels"] == "10" and row["centers"] == "A"
    assert df[df["name"] == "broken"].iloc[0]["error"]
    assert resolve_model("my_erm") == user / "my_erm.pt"
    assert resolve_model(user / "my_erm.pt") == user / "my_erm.pt"
    with pytest.raises(ModelNotFoundError, match="known models:.*my_erm"):
        resolve_model("nonexistent_model")
    seg = segment_volume("my_erm", Volume(np.random.default_rng(0).random((12, 12, 6)).astype(np.float32), np.eye(4)))
    assert seg.shape == (12, 12, 6)
