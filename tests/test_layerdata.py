"""Volumes -> napari LayerData: world geometry, label colours and organ names."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_pandg.labels import LABELS, PANCREAS, colour_dict
from napari_pandg.layerdata import count_layers, iter_subject_layerdata, label_features


def test_label_features_name_organs() -> None:
    f = label_features([10, 6, 0])
    assert list(f["index"]) == [0, 6, 10]
    assert list(f["organ"]) == ["background", "liver", "pancreas"]


def test_colour_dict_has_every_label_and_clear_background() -> None:
    cd = colour_dict()
    assert cd[0][3] == 0.0
    assert set(LABELS) <= set(cd)
    assert cd[PANCREAS][:3] == (1.0, 220 / 255, 0.0)


def test_subject_layerdata_share_world_frame(phantom_index: pd.DataFrame) -> None:
    subject = phantom_index["subject"].iloc[0]
    rows = phantom_index[phantom_index["subject"] == subject]
    items = list(iter_subject_layerdata(rows, labels="all"))
    assert len(items) == count_layers(rows, "all") == 2 * len(rows)
    assert [d for d, _, _ in items] == list(range(1, len(items) + 1))
    kinds = [ld[2] for _, _, ld in items]
    assert kinds.count("labels") == len(rows)
    centroids = []
    for _, _, (data, kw, kind) in items:
        assert kw["axis_labels"] == ("S", "A", "R")
        if kind == "labels":
            assert set(np.unique(data)) <= set(LABELS) | {0}
            idx = np.argwhere(data == PANCREAS).mean(axis=0)
            centroids.append(np.asarray(kw["translate"]) + idx * np.asarray(kw["scale"]))
    centroids = np.array(centroids)
    # the pancreas sits at the same world position (mm) in every sequence's own grid
    assert np.abs(centroids - centroids.mean(axis=0)).max() < 5.0


def test_cancel_stops_loading(phantom_index: pd.DataFrame) -> None:
    rows = phantom_index[phantom_index["subject"] == phantom_index["subject"].iloc[0]]
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    assert len(list(iter_subject_layerdata(rows, labels="none", cancelled=cancelled))) == 2
