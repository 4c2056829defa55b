"""Few-shot evidence: fine-tune the source-domain model on k labelled volumes of an unseen sequence.

For each k, the first k subjects of ``--train`` (one sequence, e.g. T2) are fine-tuned into the
base model exactly as the napari Fine-tune widget does (:func:`napari_pandg.train.finetune.
prepare_finetune` + the normal trainer), except that all k volumes train (no validation
hold-out; the last checkpoint is the result). Each model, the base model (k = 0) and the
zero-shot DG reference are scored on every ``--test`` manifest row of that sequence (other
subjects). Writes ``fewshot.csv`` (per model and case), ``fewshot_summary.csv`` and
``fewshot.png`` (Dice against k) into ``--out``.

    pandg synth --out data/fewshot_t2 --subjects 5 --centers A --sequences t2 --seed 41 --first-index 301
    python training/fewshot.py --train data/fewshot_t2/manifest.csv --test data/test_manifest.csv \
        data/evalsim/manifest.csv --sequence t2 --out docs/results/fewshot
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _rows(manifest: Path, sequence: str) -> pd.DataFrame:
    df = pd.read_csv(manifest)
    df = df[df["sequence"] == sequence].copy()
    root = manifest.parent
    for col in ("image", "label"):
        df[col] = [str(p if Path(p).is_absolute() else root / p) for p in df[col]]
    df["set"] = manifest.parent.name if manifest.name == "manifest.csv" else manifest.stem
    return df.reset_index(drop=True)


def _load(row: pd.Series):
    from napari_pandg.io import load_volume

    img = load_volume(row["image"])
    lab = load_volume(row["label"])
    img.subject, img.center, img.sequence = str(row["subject"]), str(row["center"]), str(row["sequence"])
    return img, lab


def _score(model, rows: pd.DataFrame, name: str, k: int) -> list[dict]:
    from napari_pandg.labels import PANCREAS
    from napari_pandg.metrics import dice
    from napari_pandg.models import segment_volume

    out = []
    for _, r in rows.iterrows():
        img, lab = _load(r)
        pred = segment_volume(model, img)
        d = dice(np.asarray(pred.array) == PANCREAS, np.asarray(lab.array) == PANCREAS)
        out.append({"model": name, "k": k, "set": r["set"], "subject": r["subject"], "center": r["center"],
                    "sequence": r["sequence"], "dice": float(d)})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, required=True, help="manifest of the labelled volumes to fine-tune on")
    ap.add_argument("--test", type=Path, nargs="+", required=True, help="manifests to score on (rows of --sequence)")
    ap.add_argument("--sequence", default="t2", help="the unseen sequence")
    ap.add_argument("--base", default="erm_A_t1fs_venous", help="source-domain model to fine-tune")
    ap.add_argument("--reference", default="synth_A_t1fs_venous", help="zero-shot DG model for comparison")
    ap.add_argument("--ks", default="1,3,5", help="numbers of labelled volumes")
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (the widget's default)")
    ap.add_argument("--steps", type=int, default=20, help="steps per epoch (the widget's default)")
    ap.add_argument("--lr", type=float, default=2e-4, help="learning rate (the widget's default)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (runs/ holds the fine-tuned models)")
    args = ap.parse_args(argv)

    from napari_pandg.train import train
    from napari_pandg.train.finetune import prepare_finetune

    ks = [int(k) for k in args.ks.split(",")]
    train_rows = _rows(args.train, args.sequence)
    if len(train_rows) < max(ks):
        print(f"fewshot: {args.train} has {len(train_rows)} {args.sequence} volumes, fewer than k = {max(ks)}",
              file=sys.stderr)  # fmt: skip
        return 2
    test_rows = pd.concat([_rows(m, args.sequence) for m in args.test], ignore_index=True)
    test_rows = test_rows[~test_rows["subject"].isin(set(train_rows["subject"]))]
    args.out.mkdir(parents=True, exist_ok=True)
    recs = _score(args.base, test_rows, args.base, 0) + _score(args.reference, test_rows, args.reference, 0)
    for k in ks:
        t0 = time.time()
        pairs = [_load(r) for _, r in train_rows.head(k).iterrows()]
        run = args.out / "runs" / f"k{k}"
        cfg = prepare_finetune(pairs, args.base, run, epochs=args.epochs, steps_per_epoch=args.steps, lr=args.lr,
                               name=f"{args.base}_ft_{args.sequence}_k{k}")  # fmt: skip
        cfg.data.val_fraction = 0.0  # every labelled volume trains; the result is the last epoch
        res = train(cfg, command=" ".join(["python", "training/fewshot.py", *sys.argv[1:]]), log=lambda s: None)
        recs += _score(res.last_path, test_rows, f"{args.base}+ft", k)
        print(f"k={k}: fine-tuned in {time.time() - t0:.0f} s -> {res.last_path}", flush=True)
    df = pd.DataFrame(recs)
    df.to_csv(args.out / "fewshot.csv", index=False)
    summ = df.groupby(["model", "k", "set"])["dice"].agg(["mean", "count"]).reset_index()
    summ.to_csv(args.out / "fewshot_summary.csv", index=False)
    print(summ.to_string(index=False))
    _plot(df, args, ks)
    return 0


def _plot(df: pd.DataFrame, args: argparse.Namespace, ks: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted(df["set"].unique())
    fig, axs = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.4), squeeze=False)
    for ax, st in zip(axs[0], sets, strict=True):
        d = df[df["set"] == st]
        ft = d[d["model"].isin([args.base, f"{args.base}+ft"])].groupby("k")["dice"].mean()
        ax.plot(ft.index, ft.values, "o-", color="tab:orange", label=f"{Path(args.base).stem} fine-tuned on k volumes")
        ref = d[d["model"] == args.reference]["dice"].mean()
        ax.axhline(ref, color="tab:blue", ls="--", label=f"{Path(args.reference).stem} (DG, zero-shot)")
        ax.set_xticks([0, *ks])
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"labelled {args.sequence} volumes (k)")
        ax.set_ylabel(f"{args.sequence} pancreas Dice")
        n = int(d[d["model"] == args.reference].shape[0])
        ax.set_title(f"{st} ({n} test volumes)", fontsize=9)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out / "fewshot.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
