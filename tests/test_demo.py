"""``pandg demo`` without a viewer: data, index, montage, contrast table, report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from napari_pandg.demo import run_demo


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, n_subjects=1, seed=1, open_viewer=False, screenshots=False, models=False, fine_spacing=2.5)
    return out


def test_demo_writes_every_output(demo_out: Path) -> None:
    for name in ("report.md", "index.csv", "contrast.csv", "montage_centers_sequences.png", "data/manifest.csv"):
        assert (demo_out / name).is_file(), name
    index = pd.read_csv(demo_out / "index.csv")
    assert index["center"].nunique() >= 4 and index["sequence"].nunique() == 5
    img = np.asarray(Image.open(demo_out / "montage_centers_sequences.png"))
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img[..., :3].std() > 20  # not a blank canvas


def test_demo_contrast_shows_the_sequence_shift(demo_out: Path) -> None:
    c = pd.read_csv(demo_out / "contrast.csv")
    med = c.groupby("sequence")["pancreas/visceral_fat"].median()
    # fat-suppressed T1: pancreas brighter than (suppressed) fat; in-phase and T2: darker than fat
    assert med["t1fs"] > 1.5
    assert med["t1fs_venous"] > 1.5
    assert med["ip"] < 1.0
    assert med["t2"] < 1.0
    ratio_liver = c.groupby("sequence")["pancreas/liver"].median()
    assert ratio_liver["t1fs"] >= 0.98  # pancreas at least as bright as liver on T1 fat-sat


def test_demo_refuses_nonempty_out_without_overwrite(demo_out: Path) -> None:
    report = (demo_out / "report.md").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_demo(demo_out, open_viewer=False, screenshots=False, models=False)
    assert (demo_out / "report.md").read_text() == report
