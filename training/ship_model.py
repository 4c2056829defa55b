"""Copy a trained run's ``best.pt`` into the package as a shipped model.

    python training/ship_model.py runs/erm_A_t1fs_venous --bench bench_erm/summary.csv \
        --data-command "pandg synth --out data/A --subjects 10 --centers A --seed 11"

It keeps the checkpoint self-describing: the training subjects (from the run's split.csv),
the command without machine-specific paths, how the data were made and the benchmark
summary go into the description; the weights are unchanged.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pandas as pd

from napari_pandg.models import load_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "napari_pandg" / "models" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="run folder with best.pt and split.csv")
    ap.add_argument("--bench", type=Path, help="summary.csv written by pandg benchmark for this model")
    ap.add_argument("--data-command", default="", help="the command that generated the training data")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()

    model = load_checkpoint(args.run / "best.pt")
    desc = model.description
    split = pd.read_csv(args.run / "split.csv", dtype=str)
    for part in ("train", "val", "test"):
        desc.extra.setdefault(f"{part}_subjects", sorted(split.loc[split["split"] == part, "subject"]))
    argv = shlex.split(desc.command)
    if argv and argv[0].endswith("/pandg"):
        argv[0] = "pandg"
    desc.command = shlex.join(argv)
    if args.data_command:
        desc.extra["data_command"] = args.data_command
    if args.bench is not None:
        row = pd.read_csv(args.bench).iloc[0]
        desc.extra["benchmark"] = {k: (None if pd.isna(v) else v) for k, v in row.items() if k.startswith(("dice", "n_"))}
        desc.notes = (
            f"phantom test subjects: in-domain Dice {row['dice_in_domain']:.3f}, cross-center "
            f"{row['dice_cross_center']:.3f}, cross-sequence {row['dice_cross_sequence']:.3f}, "
            f"cross-both {row['dice_cross_both']:.3f}"
        )
    out = WEIGHTS / f"{desc.name}.pt"
    save_checkpoint(out, desc, model.network, overwrite=args.overwrite)
    print(f"shipped {out} ({out.stat().st_size / 1e6:.1f} MB): {desc.summary()}")


if __name__ == "__main__":
    main()
