"""``pandg demo`` without a viewer: data, index, montage, contrast table, report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from napari_pandg.demo import run_demo


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo without screenshots; with torch, the shipped models' benchmark runs with
    inference and metrics replaced by constants (fast): what report.md and the benchmark's
    outputs say is under test here, not the models."""
    out = tmp_path_factory.mktemp("demo")
    kw = dict(n_subjects=1, seed=1, open_viewer=False, screenshots=False, fine_spacing=2.5)
    try:
        from napari_pandg import benchmark as bm
    except ImportError:  # no torch / monai: no models
        run_demo(out, models=False, **kw)
        return out

    def segment(model, vol, progress=None, cancel=None, device=None):
        return vol.with_array(np.zeros(vol.shape, np.uint8), is_label=True, source_path=None)

    def evaluate(pred, gt, labels=()):
        return [{"dice": 1.0, "hd95": 0.0, "nsd": 1.0, "empty_gt": False, "empty_pred": False,
                 "volume_gt_ml": 1.0, "volume_pred_ml": 1.0}]  # fmt: skip

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bm, "segment_volume", segment)
        mp.setattr(bm, "evaluate_volumes", evaluate)
        run_demo(out, models=True, **kw)
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


def test_report_carries_the_dice_summary(demo_out: Path) -> None:
    from napari_pandg.models import list_models

    shipped = list_models(describe=False)
    names = list(shipped[shipped["source"] == "shipped"]["name"]) if "source" in shipped else []
    if not names or not (demo_out / "benchmark").is_dir():
        pytest.skip("no shipped model, or no torch")
    report = (demo_out / "report.md").read_text()
    assert "## Shipped models on this data: mean pancreas Dice" in report
    table = [ln for ln in report.splitlines() if ln.startswith("| ")]
    assert table[0].startswith("| model | method | trained on | in domain | cross-center | cross-sequence | cross-both")
    for name in names:
        row = next(ln for ln in table if ln.startswith(f"| {name} |"))
        assert "1.000 (n=1)" in row and "1.000 (n=20)" in row  # in domain: 1 case; all: 20 images
        assert f"### {name}: mean pancreas Dice, centers x sequences" in report
    # the demo's subjects share ids with the training subjects but are other people: none is
    # excluded or called a training subject, and report.md, report.html and per_case.csv agree
    sentence = "Training and validation subjects are not scored; none of this manifest's subjects is one of them."
    assert sentence in report
    assert "share subject ids with the models' training runs but are other people" in report
    html = (demo_out / "benchmark" / "report.html").read_text()
    assert html_escape(sentence) in html and "<b>included</b>" not in html
    pc = pd.read_csv(demo_out / "benchmark" / "per_case.csv", keep_default_na=False)
    assert set(pc["seen_in_training"]) == {"no"} and set(pc["model_split"]) == {""}
    assert len(pc) == 20 * len(names)
    assert "## Time per step" in report and "| benchmark (shipped models) |" in report
