"""The shipped models: listed with their facts, and they segment the phantom as documented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_pandg.io import load_volume  # noqa: E402
from napari_pandg.labels import PANCREAS  # noqa: E402
from napari_pandg.metrics import dice  # noqa: E402
from napari_pandg.models import list_models, read_description, resolve_model, segment_volume  # noqa: E402

SHIPPED = ("erm_A_t1fs_venous", "gin_A_t1fs_venous", "synth_A_t1fs_venous")


def test_shipped_models_are_self_describing() -> None:
    df = list_models()
    shipped = df[df["source"] == "shipped"].set_index("name")
    assert set(SHIPPED) <= set(shipped.index)
    assert not shipped.index.str.contains("features").any()  # feature extractors are not listed
    assert (shipped["error"].fillna("") == "").all()
    for name in SHIPPED:
        d = read_description(resolve_model(name))
        assert d.domains == {"centers": ["A"], "sequences": ["t1fs_venous"]}
        assert d.label_map == {0: 0, 1: PANCREAS}
        assert d.command.startswith("pandg train training/configs/")
        streamed = d.extra.get("train_data", {}).get("source") == "phantom_stream"
        # a streamed model trained on generated subjects only: no dataset subject to list
        assert streamed or (d.extra["train_subjects"] and d.extra["test_subjects"])
        assert "in-domain Dice" in d.notes
        # the largest-component step was chosen on validation subjects, never on test subjects
        val = d.extra["postprocess_validation"]
        assert not set(val["subjects"]) & set(d.extra.get("test_subjects") or [])
        if streamed:  # validated on the run's own stream subjects (randomised anatomy: a harder set)
            assert d.val_metrics["dice"] > 0.7 and all(str(v).startswith("stream") for v in val["subjects"])
        else:
            assert d.val_metrics["dice"] > 0.8
            assert set(val["subjects"]) <= set(d.extra["val_subjects"])
        assert (d.postprocess == {"largest_component": [1]}) == (val["with"] > val["without"])
        # every shipped model carries a calibrated shift-score reference on its bottleneck
        assert d.shift["layer"] and len(d.shift["mean"]) == 128 and d.shift["feature_threshold"] > 0
        assert d.shift["calibration"]["n_fit"] >= 16 and d.shift["calibration"]["n_cal"] >= 8


@pytest.mark.slow
def test_erm_segments_the_source_sequence_and_fails_on_t2(phantom_index: pd.DataFrame) -> None:
    """The domain-shift finding on fresh phantom subjects: good on t1fs_venous, near 0 on T2."""
    scores = {}
    for seq in ("t1fs_venous", "t2"):
        row = phantom_index[(phantom_index["center"] == "B") & (phantom_index["sequence"] == seq)].iloc[0]
        img = load_volume(row["image"])
        gt = load_volume(row["label"], is_label=True)
        pred = segment_volume("erm_A_t1fs_venous", img)
        assert pred.shape == img.shape and np.allclose(pred.affine, img.affine)
        scores[seq] = dice(pred.array == PANCREAS, gt.array == PANCREAS)
    assert scores["t1fs_venous"] > 0.6, scores
    assert scores["t2"] < 0.3, scores


@pytest.mark.slow
def test_synth_recovers_the_sequences_erm_loses(phantom_index: pd.DataFrame) -> None:
    """Label-map randomisation: the DG model keeps a usable pancreas on T2 and opposed phase,
    where ERM (same source data) collapses."""
    scores: dict[tuple[str, str], float] = {}
    for seq in ("t2", "op"):
        row = phantom_index[(phantom_index["center"] == "B") & (phantom_index["sequence"] == seq)].iloc[0]
        img = load_volume(row["image"])
        gt = load_volume(row["label"], is_label=True).array == PANCREAS
        for name in ("erm_A_t1fs_venous", "synth_A_t1fs_venous"):
            scores[(name, seq)] = dice(segment_volume(name, img).array == PANCREAS, gt)
    for seq in ("t2", "op"):
        assert scores[("synth_A_t1fs_venous", seq)] > 0.4, scores
        assert scores[("synth_A_t1fs_venous", seq)] > scores[("erm_A_t1fs_venous", seq)] + 0.2, scores


def test_shipped_feature_extractor_is_contrast_invariant(phantom_index) -> None:
    """The MaskGen anatomy features: one voxel under two random contrasts stays close in
    feature space (cosine), voxels of different organs do not."""
    import torch

    from napari_pandg.models.preprocess import to_model_grid
    from napari_pandg.train.features import render
    from napari_pandg.train.methods import load_feature_module

    fx, spec = load_feature_module("anatomy_features_A.pt")
    assert spec["out_channels"] == 16 and spec["trained"]["centers"] == ["A"]
    assert "weights/features" in spec["source"].replace("\\", "/")
    lab = load_volume(phantom_index.iloc[0]["label"], is_label=True)
    grid, _ = to_model_grid(np.asarray(lab.array, np.uint8), lab.affine, (2.0, 2.0, 4.0), "RAS", "nearest")
    grid = np.pad(grid, [(0, max(0, 64 - grid.shape[0])), (0, max(0, 64 - grid.shape[1])), (0, max(0, 32 - grid.shape[2]))])
    c = [max(h, s // 2) for s, h in zip(grid.shape, (32, 32, 16), strict=True)]
    patch = grid[c[0] - 32 : c[0] + 32, c[1] - 32 : c[1] + 32, c[2] - 16 : c[2] + 16].astype(np.int64)
    labels = torch.from_numpy(patch)[None, None]
    gen = torch.Generator().manual_seed(0)
    v1, v2 = render(labels, gen), render(labels, gen)
    with torch.no_grad():
        f1, f2 = fx(v1)[0].reshape(16, -1), fx(v2)[0].reshape(16, -1)
    a, b = torch.nn.functional.normalize(f1, dim=0), torch.nn.functional.normalize(f2, dim=0)
    same_voxel = float((a * b).sum(0).mean())
    perm = torch.randperm(a.shape[1], generator=gen)
    other = labels.reshape(-1) != labels.reshape(-1)[perm]
    other_organ = float((a * b[:, perm]).sum(0)[other].mean())
    assert same_voxel > 0.6 and other_organ < 0.3, (same_voxel, other_organ)
