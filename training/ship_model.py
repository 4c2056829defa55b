"""Copy a trained run's ``best.pt`` into the package as a shipped model.

    python training/ship_model.py runs/erm_A_t1fs_venous --bench bench_erm/summary.csv \
        --data-command "pandg synth --out data/A --subjects 10 --centers A --seed 11"

It keeps the checkpoint self-describing: the training subjects (from the run's split.csv),
the command without machine-specific paths, how the data were made and the benchmark
summary go into the description; the weights are unchanged.

``--postprocess auto`` decides, as nnU-Net does, whether the model keeps only the largest
connected pancreas component: it segments the run's *validation* subjects (training domains
only, never the test subjects) with and without it and turns it on only when that raises the
mean validation Dice (a tie leaves it off: a pancreas predicted in two pieces loses one of
them). ``largest`` turns it on, ``none`` off; the choice and the validation Dice are recorded
in the checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd

from napari_pandg.models import SegModel, load_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "napari_pandg" / "models" / "weights"


def choose_postprocess(model: SegModel, run: Path) -> dict:
    """Validation Dice without / with the largest-component step on the run's val subjects."""
    import dataclasses

    import numpy as np

    from napari_pandg.io import load_volume
    from napari_pandg.metrics import dice
    from napari_pandg.models import segment_volume
    from napari_pandg.train.config import load_config
    from napari_pandg.train.data import read_manifest, read_split, select_rows

    cfg = load_config(run / "config.yaml")
    if cfg.data.source == "phantom":  # the run's validation subjects of its stream
        from napari_pandg.models.checkpoint import DEFAULT_NORMALIZATION
        from napari_pandg.train.stream import PhantomStream

        ps = PhantomStream(cfg.data, cfg.seed, DEFAULT_NORMALIZATION, renders=False)
        pairs = [ps.volumes(-(i + 1), renders=0) for i in range(int(ps.settings["val_subjects"]))]
        cases = [(img, np.asarray(lab.array), info["subject"]) for img, lab, _, info in pairs]
    else:
        rows = select_rows(read_manifest(cfg.data.manifest), read_split(run / "split.csv"), "val",
                           cfg.data.train_centers, cfg.data.train_sequences)  # fmt: skip
        cases = [(load_volume(r["image"]), np.asarray(load_volume(r["label"], is_label=True).array), str(r["subject"]))
                 for _, r in rows.iterrows()]  # fmt: skip
    if not cases:
        raise SystemExit(f"{run}: no validation volumes to choose the post-processing on")
    fg = sorted(k for k in model.description.label_map if k)
    ids = [model.description.label_map[k] for k in fg]
    scores: dict[str, list[float]] = {"without": [], "with": []}
    for img, lab, _sid in cases:
        for key, pp in (("without", {}), ("with", {"largest_component": fg})):
            m = SegModel(dataclasses.replace(model.description, postprocess=pp), model.network, model.path)
            pred = np.asarray(segment_volume(m, img).array)
            scores[key].append(float(np.mean([dice(pred == i, lab == i) for i in ids])))
    res = {k: round(float(np.mean(v)), 4) for k, v in scores.items()}
    res["n"] = len(cases)
    res["subjects"] = sorted({sid for _, _, sid in cases})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="run folder with best.pt (and split.csv for manifest runs), or a "
                    "checkpoint file (e.g. a shipped model) to refit its shift reference with --shift-manifest")
    ap.add_argument("--bench", type=Path, help="summary.csv written by pandg benchmark for this model")
    ap.add_argument("--bench-model", help="the row of --bench to record (default: the model's name, else the first)")
    ap.add_argument("--data-command", default="", help="the command that generated the training data")
    ap.add_argument("--postprocess", choices=("keep", "none", "largest", "auto"), default="keep",
                    help="largest-component step: keep the checkpoint's choice, none, largest, or auto "
                         "(on the run's validation subjects)")  # fmt: skip
    ap.add_argument("--shift-reference", type=int, default=30, metavar="N",
                    help="fit the shift-score reference on N training-domain volumes of the run and "
                         "calibrate it on its validation subjects (0: keep the checkpoint's)")  # fmt: skip
    ap.add_argument("--shift-manifest", type=Path, default=None,
                    help="fit the shift reference on these training-domain volumes instead (last 8 calibrate)")
    ap.add_argument("--out", type=Path, help="write here instead of the package's weights folder")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()

    if args.run.is_file() and (args.postprocess == "auto" or args.shift_manifest is None and args.shift_reference > 0):
        raise SystemExit(f"{args.run}: a checkpoint file has no run folder: use --postprocess keep/none/largest and "
                         "--shift-manifest (or --shift-reference 0)")  # fmt: skip
    model = load_checkpoint(args.run if args.run.is_file() else args.run / "best.pt")
    desc = model.description
    if (args.run / "split.csv").exists():  # manifest runs (streamed runs trained on no dataset subject)
        split = pd.read_csv(args.run / "split.csv", dtype=str)
        for part in ("train", "val", "test"):
            desc.extra.setdefault(f"{part}_subjects", sorted(split.loc[split["split"] == part, "subject"]))
    argv = shlex.split(desc.command)
    if argv and argv[0].endswith("/pandg"):
        argv[0] = "pandg"
    desc.command = shlex.join(argv)
    fg = sorted(k for k in desc.label_map if k)
    if args.postprocess == "none":
        desc.postprocess = {}
    elif args.postprocess == "largest":
        desc.postprocess = {"largest_component": fg}
    elif args.postprocess == "auto":
        val = choose_postprocess(model, args.run)
        desc.postprocess = {"largest_component": fg} if val["with"] > val["without"] else {}
        desc.extra["postprocess_validation"] = val
        print(f"validation Dice without / with largest component: {val['without']:.4f} / {val['with']:.4f} "
              f"(n = {val['n']}) -> postprocess {desc.postprocess or 'none'}")  # fmt: skip
    if args.shift_manifest is not None:
        from napari_pandg.train.shift_reference import reference_from_manifest

        desc.shift = reference_from_manifest(model, args.shift_manifest,
                                             progress=lambda d, t, w: print(f"[shift {d}/{t}] {w}", flush=True))  # fmt: skip
        desc.extra["shift_command"] = shlex.join(["python", "training/ship_model.py", *sys.argv[1:]])
        print(f"shift reference: {desc.shift['source']}; feature threshold {desc.shift['feature_threshold']:.2f}")
    elif args.shift_reference > 0:
        from napari_pandg.train.shift_reference import build_shift_reference

        desc.shift = build_shift_reference(model, args.run, n_fit=args.shift_reference,
                                           progress=lambda d, t, w: print(f"[shift {d}/{t}] {w}", flush=True))  # fmt: skip
        print(f"shift reference: {desc.shift['source']}; feature threshold {desc.shift['feature_threshold']:.2f}")
    if args.data_command:
        desc.extra["data_command"] = args.data_command
    if args.bench is not None:
        bench = pd.read_csv(args.bench)
        pick = bench[bench["model"] == (args.bench_model or desc.name)]
        if args.bench_model and pick.empty:
            raise SystemExit(f"{args.bench}: no row for model {args.bench_model!r} (rows: {list(bench['model'])})")
        row = (pick if len(pick) else bench).iloc[0]
        desc.extra["benchmark"] = {k: (None if pd.isna(v) else v) for k, v in row.items() if k.startswith(("dice", "n_"))}
        desc.notes = (
            f"phantom test subjects: in-domain Dice {row['dice_in_domain']:.3f}, cross-center "
            f"{row['dice_cross_center']:.3f}, cross-sequence {row['dice_cross_sequence']:.3f}, "
            f"cross-both {row['dice_cross_both']:.3f}"
        )
    out = args.out or WEIGHTS / f"{desc.name}.pt"
    save_checkpoint(out, desc, model.network, overwrite=args.overwrite)
    print(f"shipped {out} ({out.stat().st_size / 1e6:.1f} MB): {desc.summary()}")


if __name__ == "__main__":
    main()
