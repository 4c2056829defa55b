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

SHIPPED = ("erm_A_t1fs_venous", "gin_A_t1fs_venous")


def test_shipped_models_are_self_describing() -> None:
    df = list_models()
    shipped = df[df["source"] == "shipped"].set_index("name")
    assert set(SHIPPED) <= set(shipped.index)
    for name in SHIPPED:
        d = read_description(resolve_model(name))
        assert d.domains == {"centers": ["A"], "sequences": ["t1fs_venous"]}
        assert d.label_map == {0: 0, 1: PANCREAS}
        assert d.command.startswith("pandg train training/configs/")
        assert d.extra["train_subjects"] and d.extra["test_subjects"]
        assert "in-domain Dice" in d.notes
        assert d.val_metrics["dice"] > 0.8


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
