"""Feature embeddings: patch descriptors trace back to voxels, invariance is measured, UMAP, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_pandg import embed  # noqa: E402
from napari_pandg.io import load_case  # noqa: E402


@pytest.fixture(scope="module")
def tables(phantom_index, tmp_path_factory) -> dict[str, pd.DataFrame]:
    cache = tmp_path_factory.mktemp("embcache")
    return {k: embed.embed_index(phantom_index, kind=k, cache_dir=cache / k) for k in ("anatomy", "intensity")}


def test_patches_trace_back_to_voxels(phantom_index):
    row = phantom_index[phantom_index["sequence"] == "t2"].iloc[0]
    image, label = load_case(row)
    df = embed.volume_patches(image, label, kind="intensity")
    assert len(df) > 20 and set(embed.INTENSITY_COLUMNS) <= set(df.columns)
    assert (df["subject"] == image.subject).all() and (df["sequence"] == "t2").all()
    ijk = np.rint(df[["i", "j", "k"]].to_numpy()).astype(int)
    assert (ijk >= 0).all() and (ijk < np.array(image.shape)).all()
    # the recorded millimetres are the image affine applied to the recorded voxel
    ras = df[["i", "j", "k"]].to_numpy() @ image.affine[:3, :3].T + image.affine[:3, 3]
    np.testing.assert_allclose(ras, df[["x_mm", "y_mm", "z_mm"]].to_numpy(), atol=1e-6)
    # a block's dominant structure is what the label map holds around its centre voxel
    hits = 0
    for (i, j, k), oid in zip(ijk, df["organ_id"], strict=True):
        nb = label.array[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3, max(k - 1, 0) : k + 2]
        hits += int(oid in np.unique(nb))
    assert hits / len(df) > 0.8
    assert df["pancreas_fraction"].between(0, 1).all() and (df["pancreas_fraction"] > 0).any()
    with pytest.raises(embed.EmbedError, match="unknown feature kind"):
        embed.volume_patches(image, label, kind="sift")
    with pytest.raises(embed.EmbedError, match="patch"):
        embed.volume_patches(image, label, kind="intensity", patch=(16, 0, 8))


def test_anatomy_features_are_contrast_invariant_intensity_are_not(tables):
    sep = {k: embed.domain_separation(t).set_index("measure") for k, t in tables.items()}
    a = sep["anatomy"].loc["same_block_across_sequences"]
    i = sep["intensity"].loc["same_block_across_sequences"]
    assert a["accuracy"] > 10 * a["chance"]  # the same place is found again in another sequence
    assert a["accuracy"] > i["accuracy"] + 0.15
    assert {"knn:sequence", "knn:organ"} <= set(sep["anatomy"].index)
    assert embed.feature_columns(tables["anatomy"])[0] == "f0"
    assert embed.feature_columns(tables["intensity"]) == list(embed.INTENSITY_COLUMNS)


def test_cache_progress_and_cancel(phantom_index, tmp_path: Path, monkeypatch):
    sub = phantom_index.iloc[:2]
    seen: list[tuple[int, int]] = []
    first = embed.embed_index(sub, kind="intensity", cache_dir=tmp_path, progress=lambda d, t, w: seen.append((d, t)))
    assert seen == [(1, 2), (2, 2)] and len(list(tmp_path.glob("*.csv"))) == 2

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(embed, "volume_patches", boom)
    again = embed.embed_index(sub, kind="intensity", cache_dir=tmp_path)
    pd.testing.assert_frame_equal(first, again, check_dtype=False)
    with pytest.raises(embed.Cancelled):
        embed.embed_index(sub, kind="intensity", cache_dir=tmp_path, cancel=lambda: True)
    with pytest.raises(embed.EmbedError, match="empty"):
        embed.embed_index(sub.iloc[:0])


def test_umap_is_seeded(tables):
    t = tables["intensity"].iloc[::3]
    a = embed.run_umap(t, n_neighbors=10, seed=1)
    b = embed.run_umap(t, n_neighbors=10, seed=1)
    assert a.shape == (len(t), 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)
    with pytest.raises(embed.EmbedError, match="at least 4"):
        embed.run_umap(t.iloc[:3])
    bad = t.copy()
    bad.iloc[0, bad.columns.get_loc("int_mean")] = np.nan
    with pytest.raises(embed.EmbedError, match="NaN"):
        embed.run_umap(bad)


def test_embed_cli(phantom_dir: Path, tmp_path: Path, capsys):
    from napari_pandg.cli import main

    out = tmp_path / "umap"
    rc = main(["embed", str(phantom_dir), "--out-dir", str(out), "--features", "intensity",
               "--sequences", "t1fs_venous,t2", "--n-neighbors", "8"])  # fmt: skip
    assert rc == 0
    t = pd.read_csv(out / "patches_intensity.csv")
    assert set(t["sequence"]) == {"t1fs_venous", "t2"} and {"UMAP0", "UMAP1"} <= set(t.columns)
    assert set(pd.read_csv(out / "separation_intensity.csv")["measure"]) >= {"same_block_across_sequences"}
    for by in ("sequence", "center", "organ"):
        png = out / f"umap_intensity_by_{by}.png"
        assert png.stat().st_size > 5000
    assert "same_block_across_sequences" in capsys.readouterr().out
    # never overwrite without the flag; bad filters name what exists
    assert main(["embed", str(phantom_dir), "--out-dir", str(out), "--features", "intensity"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["embed", str(phantom_dir), "--out-dir", str(tmp_path / "x"), "--centers", "Z"]) == 2
    assert "no center ['Z']" in capsys.readouterr().err
