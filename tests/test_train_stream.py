"""Training on streamed phantom subjects (data.source: phantom) and the appearance randomisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}
STREAM = {"fine_spacing": 3.5, "patches_per_subject": 4, "pool": 2, "renders_per_subject": 1, "val_subjects": 1}


def _cfg(tmp_path: Path, **over):
    from napari_pandg.train.config import config_from_dict

    d = {"name": "tiny_stream", "out_dir": str(tmp_path / "run"), "device": "cpu", "log_every": 0,
         "data": {"source": "phantom", "spacing": [4.0, 4.0, 6.0], "patch_size": [32, 32, 16], "stream": dict(STREAM)},
         "model": {"architecture": "UNet", "kwargs": TINY},
         "optim": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2},
         "method": {"name": "synth", "augment": "none"}}  # fmt: skip
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return config_from_dict(d)


def test_stream_settings_are_validated(tmp_path: Path) -> None:
    from napari_pandg.train.config import ConfigError

    with pytest.raises(ConfigError, match="unknown data.stream key"):
        _cfg(tmp_path, data={"source": "phantom", "stream": {"pool_size": 3}})
    with pytest.raises(ConfigError, match="patches_per_subject"):
        _cfg(tmp_path, data={"source": "phantom", "stream": {"patches_per_subject": 0}})
    with pytest.raises(ConfigError, match="appearance"):
        _cfg(tmp_path, data={"source": "phantom", "stream": {"appearance": {"colour": 1}}})
    with pytest.raises(ConfigError, match="data.source"):
        _cfg(tmp_path, data={"source": "internet"})


def test_pool_schedule_mixes_subjects_and_uses_each_m_times() -> None:
    from napari_pandg.train.stream import StreamPatchDataset

    ds = StreamPatchDataset.__new__(StreamPatchDataset)
    ds.M, ds.P = 24, 8
    locs = [ds.locate(g) for g in range(24 * 8 * 6)]
    ks = [k for k, _ in locs]
    counts = np.bincount(ks)
    assert set(counts[8:-8]) == {24}  # every subject (away from the ends) gives exactly M patches
    for g in range(0, 400, 2):  # a batch of 2 holds two different people
        assert ks[g] != ks[g + 1]
    first_use = {}
    for g, k in enumerate(ks):
        first_use.setdefault(k, g)
    gaps = np.diff(sorted(first_use.values())[8:40])
    # staggered: on average a new subject every M items, never a burst of P new ones at once
    assert abs(gaps.mean() - 24) < 1.5 and gaps.min() >= 16 and gaps.max() <= 36, gaps
    for k in range(8, 30):  # patch numbers 0..M-1 per subject
        assert sorted(j for kk, j in locs if kk == k) == list(range(24))


def test_stream_items_are_pure_functions_of_the_index(tmp_path: Path) -> None:
    from napari_pandg.models.checkpoint import DEFAULT_NORMALIZATION
    from napari_pandg.train.stream import PhantomStream, StreamPatchDataset

    cfg = _cfg(tmp_path)
    a = StreamPatchDataset(PhantomStream(cfg.data, 0, DEFAULT_NORMALIZATION, renders=True), 20, 0, [], 0.5)
    b = StreamPatchDataset(PhantomStream(cfg.data, 0, DEFAULT_NORMALIZATION, renders=True), 20, 0, [], 0.5)
    x3, y3 = a[3], b[3]
    assert torch.equal(x3["image"], y3["image"]) and torch.equal(x3["label"], y3["label"])
    assert tuple(x3["image"].shape) == (1, 32, 32, 16)
    assert not torch.equal(a[2]["image"], x3["image"])
    subj = a.subject(a.locate(3)[0])
    assert len(subj.renders) == 1 and subj.source.label.max() == 1  # pancreas present on the source image
    assert a.built == 2  # items 2 and 3 come from the two pool slots


def test_train_on_the_stream_records_provenance_and_resumes(tmp_path: Path) -> None:
    from napari_pandg.models import load_checkpoint
    from napari_pandg.train import train

    full = train(_cfg(tmp_path, out_dir=str(tmp_path / "full")), command="pytest")
    part = train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), stop_after_epochs=1), command="pytest")
    assert part.epochs_done == 1
    resumed = train(_cfg(tmp_path, out_dir=str(tmp_path / "part")), command="pytest")
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history])
    m = load_checkpoint(full.last_path)
    info = m.description.extra["train_data"]
    assert info["source"] == "phantom_stream" and info["render_prob"] == 0.8
    assert m.description.extra["train_subjects"] == []  # no dataset subject was trained on


def test_random_appearance_varies_and_keeps_labels_on_the_grid() -> None:
    from napari_pandg.phantom.anatomy import build_anatomy
    from napari_pandg.phantom.appearance import random_acquisition, random_contrast

    anat = build_anatomy(np.random.default_rng(0), 3.5)
    outs = []
    for s in range(3):
        rng = np.random.default_rng(s)
        img, lab, aff = random_acquisition(anat, random_contrast(anat, rng), rng)
        assert img.shape == lab.shape and img.dtype == np.float32 and np.isfinite(img).all()
        assert aff.shape == (4, 4) and abs(aff[2, 2]) >= 1.5
        outs.append((img, lab))
    # the pancreas-to-liver contrast differs between renderings (sign flips are possible)
    ratios = [float(np.median(i[lb == 10]) / np.median(i[lb == 6])) for i, lb in outs if (lb == 10).any() and (lb == 6).any()]
    assert len(ratios) >= 2 and max(ratios) / min(ratios) > 1.1, ratios
