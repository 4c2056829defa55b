"""Merge several phantom datasets (``pandg synth`` folders) into one manifest.

    python training/merge_manifests.py data/A data/BCD --out data/manifest.csv

Image and label paths are rewritten relative to the folder of ``--out``, so the merged
manifest is read by ``pandg train``/``pandg benchmark`` like a single dataset.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd


def merge(folders: list[Path], out: Path) -> pd.DataFrame:
    frames = []
    for folder in folders:
        df = pd.read_csv(folder / "manifest.csv")
        for col in ("image", "label"):
            df[col] = [os.path.relpath(folder / p, out.parent) for p in df[col]]
        frames.append(df)
    merged = pd.concat(frames, ignore_index=True)
    dup = merged["subject"].duplicated() & merged.duplicated(["subject", "sequence"])
    if dup.any():
        raise SystemExit(f"subjects appear in several folders: {sorted(set(merged.loc[dup, 'subject']))}")
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"{args.out} exists; pass --overwrite to replace it")
    merged = merge(args.folders, args.out)
    tmp = args.out.with_suffix(".csv.tmp")
    merged.to_csv(tmp, index=False)
    os.replace(tmp, args.out)
    print(f"{len(merged)} rows, {merged['subject'].nunique()} subjects -> {args.out}")


if __name__ == "__main__":
    main()
