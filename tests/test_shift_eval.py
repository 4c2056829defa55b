"""AUROC / ROC of the shift score as a failure warning (napari_pandg.shift_eval, pandg shift-auroc)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from napari_pandg.cli import main  # noqa: E402
from napari_pandg.shift_eval import pool_per_case, shift_auroc, shift_auroc_table  # noqa: E402


def _cases(model: str, dice: list[float], score: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "dice": dice, "shift_score": score, "empty_gt": False})


def test_auroc_sensitivity_specificity_known_values() -> None:
    # perfect ranking: every failure scores above every good case
    perfect = _cases("m", [0.9, 0.8, 0.2, 0.0], [0.3, 0.9, 1.5, 40.0])
    r = shift_auroc(perfect)
    assert r["auroc"] == 1.0 and r["n_fail"] == 2 and r["n_ok"] == 2
    assert r["sensitivity"] == 1.0 and r["specificity"] == 1.0 and r["n_flagged"] == 2
    # inverted ranking is 0, one tie out of four pairs is 0.5 credit
    assert shift_auroc(_cases("m", [0.9, 0.8, 0.2, 0.0], [5, 4, 0.1, 0.2]))["auroc"] == 0.0
    assert shift_auroc(_cases("m", [0.9, 0.8, 0.2, 0.0], [0.5, 2.0, 2.0, 3.0]))["auroc"] == pytest.approx(0.875)
    # the threshold is Dice < 0.5: 0.5 itself is a success; an empty reference is not scored
    edge = _cases("m", [0.5, 0.49, 0.7], [0.1, 2.0, 0.2])
    edge.loc[2, "empty_gt"] = True
    r = shift_auroc(edge)
    assert r["n"] == 2 and r["n_fail"] == 1 and r["auroc"] == 1.0
    # one class only: no AUROC
    assert np.isnan(shift_auroc(_cases("m", [0.9, 0.8], [0.1, 0.2]))["auroc"])
    with pytest.raises(ValueError, match="shift_score"):
        shift_auroc(pd.DataFrame({"dice": [0.1]}))


def test_table_pools_models_and_cli_writes_roc(tmp_path: Path, capsys) -> None:
    a = pd.concat([_cases("erm", [0.9, 0.1, 0.0], [0.5, 3.0, 8.0]), _cases("synth", [0.8, 0.7, 0.3], [0.4, 0.6, 1.2])])
    b = _cases("synth", [0.85, 0.2], [0.9, 0.95])
    t = shift_auroc_table(a).set_index("model")
    assert list(t.index) == ["erm", "synth", "all"] and t.loc["all", "n"] == 6 and t.loc["erm", "auroc"] == 1.0
    for name, df in (("ingen", a), ("evalsim", b)):
        (tmp_path / name).mkdir()
        df.to_csv(tmp_path / name / "per_case.csv", index=False)
    pooled = pool_per_case([tmp_path / "ingen", tmp_path / "evalsim" / "per_case.csv"])
    assert len(pooled) == 8 and set(pooled["benchmark"]) == {"ingen", "evalsim"}
    out = tmp_path / "roc"
    assert main(["shift-auroc", str(tmp_path / "ingen"), str(tmp_path / "evalsim"), "--out-dir", str(out)]) == 0
    table = pd.read_csv(out / "shift_auroc.csv")
    assert {"erm", "synth", "all"} <= set(table["model"].dropna()) and {"ingen", "evalsim"} <= set(table["benchmark"].dropna())
    assert (out / "shift_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AUROC" not in capsys.readouterr().err
    # outputs are not replaced without --overwrite; a missing table is a clear error
    before = (out / "shift_auroc.csv").read_bytes()
    assert main(["shift-auroc", str(tmp_path / "ingen"), "--out-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "shift_auroc.csv").read_bytes() == before
    assert main(["shift-auroc", str(tmp_path / "nope"), "--out-dir", str(tmp_path / "o2"), "--overwrite"]) == 2
    assert "no such per-case table" in capsys.readouterr().err
