"""How well the shift score predicts failure: AUROC and ROC curve over benchmark cases.

A case *fails* when its pancreas Dice is below ``fail_below`` (0.5 by default: the mask is
wrong more than it is right). The shift score (``napari_pandg.models.shift``, column
``shift_score`` of a benchmark's ``per_case.csv``) is a good warning when high scores go
with failures: the area under the ROC curve of "score predicts Dice < 0.5" is 1.0 for a
perfect warning and 0.5 for none. The operating point ``score > 1`` is the one the user sees
(``flagged``); its sensitivity (failures flagged) and specificity (good results left alone)
are reported next to the AUROC.

scikit-learn computes the ROC (``roc_auc_score`` / ``roc_curve``); this module only selects,
pools and plots. ``pandg shift-auroc`` pools several benchmarks' ``per_case.csv`` (the
in-generator and the independent set) into one AUROC.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FAIL_BELOW = 0.5


def _usable(per_case: pd.DataFrame) -> pd.DataFrame:
    need = {"dice", "shift_score"}
    missing = need - set(per_case.columns)
    if missing:
        raise ValueError(f"per-case table lacks column(s) {sorted(missing)} (a benchmark of napari-pandg >= 0.3 "
                         "writes them; rerun pandg benchmark)")  # fmt: skip
    ok = per_case[per_case["dice"].notna() & per_case["shift_score"].notna()]
    if "empty_gt" in ok:  # no pancreas in the reference: Dice says nothing about the mask
        ok = ok[~ok["empty_gt"].astype(str).str.lower().isin(("true", "1"))]
    return ok


def shift_auroc(per_case: pd.DataFrame, fail_below: float = FAIL_BELOW) -> dict[str, Any]:
    """AUROC of ``shift_score`` for predicting ``dice < fail_below``, and the flag's rates."""
    from sklearn.metrics import roc_auc_score

    ok = _usable(per_case)
    fail = (ok["dice"].to_numpy(float) < fail_below)
    score = ok["shift_score"].to_numpy(float)
    flagged = score > 1.0
    n_fail, n_ok = int(fail.sum()), int((~fail).sum())
    out: dict[str, Any] = {"n": int(len(ok)), "n_fail": n_fail, "n_ok": n_ok, "fail_below": fail_below}
    out["auroc"] = float(roc_auc_score(fail, score)) if n_fail and n_ok else float("nan")
    out["sensitivity"] = float(flagged[fail].mean()) if n_fail else float("nan")
    out["specificity"] = float((~flagged[~fail]).mean()) if n_ok else float("nan")
    out["n_flagged"] = int(flagged.sum())
    return out


def shift_auroc_table(per_case: pd.DataFrame, fail_below: float = FAIL_BELOW, by: str = "model") -> pd.DataFrame:
    """One row per ``by`` value plus a pooled ``all`` row."""
    rows = []
    groups = [(str(k), g) for k, g in per_case.groupby(by, sort=True)] if by in per_case else []
    for key, g in [*groups, ("all", per_case)]:
        try:
            r = shift_auroc(g, fail_below)
        except ValueError:
            continue
        rows.append({by: key, **r})
    return pd.DataFrame(rows)


def plot_roc(per_case: pd.DataFrame, path: str | os.PathLike, fail_below: float = FAIL_BELOW,
             by: str = "model", title: str = "") -> Path:  # fmt: skip
    """ROC curves (one per ``by`` value and pooled), the ``score > 1`` point marked on each."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from napari_pandg.io.safety import atomic_write_with

    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    groups = [(str(k), g) for k, g in per_case.groupby(by, sort=True)] if by in per_case else []
    if len(groups) != 1:
        groups.append(("all cases", per_case))
    for key, g in groups:
        ok = _usable(g)
        fail = ok["dice"].to_numpy(float) < fail_below
        if fail.all() or not fail.any():
            continue
        score = ok["shift_score"].to_numpy(float)
        fpr, tpr, _ = roc_curve(fail, score)
        r = shift_auroc(g, fail_below)
        lw = 2.5 if key == "all cases" else 1.4
        (line,) = ax.plot(fpr, tpr, lw=lw, label=f"{key}: AUROC {r['auroc']:.3f} (n={r['n']}, {r['n_fail']} fail)")
        ax.plot(1 - r["specificity"], r["sensitivity"], "o", color=line.get_color(), ms=6)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set_xlabel("false-positive rate (good results flagged)")
    ax.set_ylabel(f"true-positive rate (failures, Dice < {fail_below:g}, flagged)")
    ax.set_title(title or "shift score as a failure warning (dots: flag = score > 1)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    fig.tight_layout()
    try:
        return atomic_write_with(Path(path), lambda t: fig.savefig(t, dpi=110, format="png"))
    finally:
        plt.close(fig)


def pool_per_case(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate benchmarks' ``per_case.csv`` files, with a ``benchmark`` column (the folder)."""
    frames = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            p = p / "per_case.csv"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such per-case table (give a benchmark folder or its per_case.csv)")
        df = pd.read_csv(p)
        df.insert(0, "benchmark", p.parent.name)
        frames.append(df)
    if not frames:
        raise ValueError("no per-case tables given")
    return pd.concat(frames, ignore_index=True)


def run_shift_auroc_cli(tables: Sequence[str], out_dir: str | os.PathLike, fail_below: float = FAIL_BELOW,
                        overwrite: bool = False) -> pd.DataFrame:  # fmt: skip
    """``pandg shift-auroc``: pooled AUROC table (per model, per benchmark, all) + ROC plot."""
    from napari_pandg.io.safety import atomic_write_text

    out = Path(out_dir)
    targets = [out / "shift_auroc.csv", out / "shift_roc.png"]
    if not overwrite and any(t.exists() for t in targets):
        raise FileExistsError(f"{out}: shift_auroc.csv / shift_roc.png exist; pass --overwrite to replace them")
    pooled = pool_per_case(tables)  # read (and fail) before anything is created
    out.mkdir(parents=True, exist_ok=True)
    parts = [shift_auroc_table(pooled, fail_below, "model"), shift_auroc_table(pooled, fail_below, "benchmark")]
    table = pd.concat([parts[0], parts[1][parts[1]["benchmark"] != "all"]], ignore_index=True)
    atomic_write_text(targets[0], table.to_csv(index=False))
    plot_roc(pooled, targets[1], fail_below, title=f"shift score vs Dice < {fail_below:g}, "
             f"{pooled['benchmark'].nunique()} benchmark(s) pooled")  # fmt: skip
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    print(f"wrote {targets[0]} and {targets[1]}")
    return table


__all__ = ["FAIL_BELOW", "plot_roc", "pool_per_case", "run_shift_auroc_cli", "shift_auroc", "shift_auroc_table"]
