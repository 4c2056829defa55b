"""The ``pandg`` command line: one subcommand per capability.

Each subcommand parses its arguments, calls the library and reports. No computation lives
here, so every feature is equally reachable from Python.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EPILOG = """\
examples:
  pandg demo --out pandg_demo_out           # phantom dataset, montages, napari screenshots
  pandg synth --out data --subjects 4 --centers A,B,C,D --seed 0
  pandg index /data/AMOS22 --out amos_mri.csv
  pandg sam --checkpoint MedSAM2_latest.pt --input t1.nii.gz --box 40,100,90,160,150 --output mask.nii.gz
  pandg train training/configs/erm.yaml data.manifest=data/manifest.csv
  pandg segment --model synth_A_t1fs_venous --input t2.nii.gz --output t2_pancreas.nii.gz
  pandg models
  pandg benchmark data/manifest.csv --models erm_A_t1fs_venous,gin_A_t1fs_venous --out-dir bench
  pandg embed data/manifest.csv --out-dir umap --centers A,B
"""


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got an empty value")
    return items


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose ``description`` may be a callable, filled in only when help is
    shown (so building the parser imports nothing heavy, e.g. the phantom for its centers)."""

    def format_help(self) -> str:
        if callable(self.description):
            self.description = self.description()
        return super().format_help()


def _print_progress(done: int, total: int, what: str) -> None:
    print(f"[{done}/{total}] {what}", flush=True)


# --------------------------------------------------------------------------- synth
def _synth_description() -> str:
    from napari_pandg.phantom import CENTERS, SEQUENCES

    return (
        "Generate phantom subjects (NIfTI images + AMOS-id label maps) for every center and "
        "sequence, and DIR/manifest.csv indexing them. Subjects are generated per center: "
        "--subjects 4 --centers A,B gives 8 subjects. Deterministic for a given --seed. "
        f"Centers: {', '.join(CENTERS)}. Sequences: {', '.join(SEQUENCES)}."
    )


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate the physics-based multi-sequence, multi-center phantom dataset",
        description=_synth_description,
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (must be empty)")
    p.add_argument("--subjects", type=int, default=2, help="subjects per center (default 2)")
    p.add_argument("--centers", type=_csv_list, default=None,
                   help="comma list of phantom centers, e.g. A,B (default: all; listed above)")
    p.add_argument("--sequences", type=_csv_list, default=None,
                   help="comma list of sequences, e.g. t1fs_venous,t2 (default: all; listed above)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same data (default 0)")
    p.add_argument(
        "--first-index", type=int, default=1,
        help="index of the first subject per center (ids <center><index:03d>); give a test set "
        "e.g. --first-index 101 so that its ids never collide with training ids",
    )
    p.add_argument(
        "--variation", type=float, default=0.0,
        help="anatomy randomisation strength, 0 (default phantom) to 1 (published adult ranges of "
        "organ size, position, shape, habitus; absent organs, atrophy, fatty pancreas)",
    )
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    p.set_defaults(func=_run_synth)


def _check_choices(values: Sequence[str], allowed: Sequence[str], what: str) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise SystemExit(f"pandg: unknown {what} {bad}; choose from {', '.join(allowed)}")


def _run_synth(args: argparse.Namespace) -> int:
    from napari_pandg.phantom import CENTERS, SEQUENCES, write_dataset

    args.centers = list(args.centers or CENTERS)
    args.sequences = list(args.sequences or SEQUENCES)
    _check_choices(args.centers, list(CENTERS), "center(s)")
    _check_choices(args.sequences, list(SEQUENCES), "sequence(s)")
    if args.subjects < 1:
        raise SystemExit("pandg synth: --subjects must be >= 1")
    t0 = time.perf_counter()
    df = write_dataset(
        args.out,
        n_subjects=args.subjects,
        centers=tuple(args.centers),
        sequences=tuple(args.sequences),
        seed=args.seed,
        overwrite=args.overwrite,
        progress=_print_progress,
        first_index=args.first_index,
        variation=args.variation,
    )
    dt = time.perf_counter() - t0
    print(
        f"wrote {df['subject'].nunique()} subjects, {len(df)} volumes to {args.out} "
        f"({dt:.1f} s); manifest: {Path(args.out) / 'manifest.csv'}"
    )
    return 0


# --------------------------------------------------------------------------- synth-eval
def _synth_eval_description() -> str:
    from napari_pandg.evalsim import CENTERS as EVAL_CENTERS
    from napari_pandg.evalsim import SEQUENCES as EVAL_SEQUENCES

    return (
        "Generate an evaluation set the training phantom cannot produce (napari_pandg.evalsim, "
        "see docs/evalsim.md): metaball / convex-hull / sweep anatomy, its own signal model, "
        "centers with RAS, LPS, LAS, slice-first and oblique storage. Writes DIR/imagesTr, "
        "DIR/labelsTr and DIR/manifest.csv in the layout `pandg benchmark` reads; subject ids "
        f"<center>_<index:03d>. Centers: {', '.join(EVAL_CENTERS)}. "
        f"Sequences: {', '.join(EVAL_SEQUENCES)}."
    )


def _add_synth_eval(sub: argparse._SubParsersAction) -> None:
    # evalsim is imported only for help (description) and when run: building the parser for
    # any other command must stay cheap (`pandg models` < 2 s)
    p = sub.add_parser(
        "synth-eval",
        help="generate the independent evaluation set (evalsim: other anatomy, signal code and centers)",
        description=_synth_eval_description,
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--subjects", type=int, default=4, help="subjects per center (default 4)")
    p.add_argument("--centers", type=_csv_list, default=None,
                   help="comma list of centers (default: all, listed above)")  # fmt: skip
    p.add_argument("--sequences", type=_csv_list, default=None,
                   help="comma list of sequences (default: all, listed above)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="dataset seed; per-subject seeds derive from it (default 0)")
    p.add_argument("--first-index", type=int, default=1, help="index of the first subject per center (default 1)")
    p.add_argument("--fine-spacing", type=float, default=1.25,
                   help="anatomy grid spacing in mm (default 1.25; coarser is faster and blurrier)")  # fmt: skip
    p.add_argument("--zoom", type=float, default=1.0,
                   help="coarsen every acquisition grid by this factor, keeping its field of view "
                        "(1-4; default 1 = the centers' real matrices; >1 only for quick tests)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    p.set_defaults(func=_run_synth_eval)


def _run_synth_eval(args: argparse.Namespace) -> int:
    from napari_pandg.evalsim import CENTERS as EVAL_CENTERS
    from napari_pandg.evalsim import SEQUENCES as EVAL_SEQUENCES
    from napari_pandg.evalsim import write_eval_dataset

    args.centers = list(args.centers or EVAL_CENTERS)
    args.sequences = list(args.sequences or EVAL_SEQUENCES)
    _check_choices(args.centers, list(EVAL_CENTERS), "center(s)")
    _check_choices(args.sequences, list(EVAL_SEQUENCES), "sequence(s)")
    if args.subjects < 1:
        raise SystemExit("pandg synth-eval: --subjects must be >= 1")
    t0 = time.perf_counter()
    df = write_eval_dataset(
        args.out, n_subjects=args.subjects, centers=tuple(args.centers), sequences=tuple(args.sequences),
        seed=args.seed, overwrite=args.overwrite, progress=_print_progress, fine_spacing=args.fine_spacing,
        first_index=args.first_index, zoom=args.zoom,
    )  # fmt: skip
    dt = time.perf_counter() - t0
    print(
        f"wrote {df['subject'].nunique()} subjects, {len(df)} volumes to {args.out} ({dt:.1f} s); "
        f"manifest: {Path(args.out) / 'manifest.csv'}"
    )
    return 0


# --------------------------------------------------------------------------- index
def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="index a dataset folder (phantom manifest, nnU-Net, AMOS22, PanSegData/PancreasDG, TotalSegmentator-MRI)",
        description=(
            "Scan ROOT, detect its layout (or use --layout) and write a CSV with one row per "
            "image: subject, center, sequence, image, label and metadata."
        ),
    )
    p.add_argument("root", type=Path, help="dataset root folder")
    p.add_argument("--out", required=True, type=Path, help="CSV file to write")
    p.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "pandg", "nnunet", "amos", "totalseg_mri"],
        help="dataset layout (default: detect)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_run_index)


def _run_index(args: argparse.Namespace) -> int:
    from napari_pandg.io import build_index, write_index
    from napari_pandg.io.safety import check_output_file

    # before scanning: --out must not be the dataset's own manifest (pandg layout) or CSV,
    # and its folder must be writable (write_index checks the indexed files too)
    root = Path(args.root).expanduser()
    check_output_file(args.out, overwrite=args.overwrite, inputs=[root, root / "manifest.csv"], what="index CSV")
    df = build_index(args.root, layout=args.layout)
    write_index(df, args.out, overwrite=args.overwrite)
    layout = df["layout"].iloc[0] if len(df) else args.layout
    n_lab = int(df["label"].notna().sum()) if "label" in df else 0
    print(
        f"{layout}: {len(df)} images ({n_lab} with labels), "
        f"{df['subject'].nunique()} subjects, centers {sorted(map(str, df['center'].unique()))}, "
        f"sequences {sorted(map(str, df['sequence'].unique()))} -> {args.out}"
    )
    return 0


# --------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the main job on the embedded phantom: data, montages, napari screenshots",
        description=(
            "Generate a small phantom dataset (every center and sequence), index it, write "
            "montages, contrast tables and napari screenshots to --out, then open napari with "
            "one subject when a display exists (use --no-viewer to skip)."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("pandg_demo_out"),
                   help="output folder for the data, montages and screenshots (default pandg_demo_out)")
    p.add_argument("--subjects", type=int, default=1, help="subjects per center (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the phantom (default 0)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out folder")
    p.add_argument("--no-viewer", action="store_true", help="do not open an interactive viewer")
    p.add_argument("--no-models", action="store_true", help="skip segmenting with the shipped models")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from napari_pandg.demo import run_demo

    report = run_demo(
        args.out,
        n_subjects=args.subjects,
        seed=args.seed,
        overwrite=args.overwrite,
        open_viewer=not args.no_viewer,
        models=not args.no_models,
        progress=_print_progress,
    )
    print(f"demo finished: see {report}")
    return 0


# --------------------------------------------------------------------------- sam
def _add_sam(sub: argparse._SubParsersAction) -> None:
    from napari_pandg.sam.cli import add_sam_arguments

    p = sub.add_parser(
        "sam",
        help="MedSAM2 / SAM2 zero-shot 3D segmentation from a box (and points) on one slice",
        description=(
            "Prompt SAM2/MedSAM2 on one slice and propagate through the volume. Coordinates are "
            "voxel indices of the NIfTI array as stored: X along its first axis, Y along its "
            "second, Z the slice index along its third. The output has the input's affine and "
            "shape. Weights are never downloaded: --checkpoint is a local file "
            "(MedSAM2_latest.pt = sam2.1_hiera_t at --image-size 512)."
        ),
    )
    add_sam_arguments(p)
    p.set_defaults(func=_run_sam)


def _run_sam(args: argparse.Namespace) -> int:
    from napari_pandg.sam.cli import run_from_args

    print(f"wrote {run_from_args(args)}")
    return 0


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a segmentation model (ERM and DG methods) from a YAML config",
        description=(
            "Run the backend trainer: MONAI 3D UNet, patch-based DiceCE, AdamW + cosine, "
            "sliding-window validation, best-checkpoint selection. Writes runs/<name>/ with the "
            "config, metrics.jsonl, last.pt and best.pt; re-running resumes from last.pt. "
            "Configs: training/configs/{erm,bigaug,gin,maskgen,meanteacher,finetune}.yaml. "
            "Under torchrun --nproc_per_node=2 the same command trains with DDP."
        ),
    )
    p.add_argument("config", type=Path, help="YAML config")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.epochs=5 data.manifest=d/manifest.csv")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from napari_pandg.train import run_train_cli

    print(f"best checkpoint: {run_train_cli(args.config, list(args.overrides))}")
    return 0


# --------------------------------------------------------------------------- train-features
def _add_train_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-features",
        help="pre-train the MaskGen anatomy feature extractor (contrastive, on label maps)",
        description=(
            "Train the anatomix-style, contrast-invariant 3D feature extractor that MaskGen "
            "concatenates to the image: two random-contrast renderings of the same label-map "
            "patch, voxel-wise InfoNCE. Only label maps are read. Restrict it to the training "
            "subjects (--subjects or --split-from RUN/split.csv) so test anatomy is never seen. "
            "Point method.params.features of training/configs/maskgen.yaml at the output."
        ),
    )
    p.add_argument("manifest", type=Path, help="dataset index (manifest.csv)")
    p.add_argument("--out", required=True, type=Path, help="features checkpoint to write (.pt)")
    p.add_argument("--patch-size", type=_csv_list, default=["64", "64", "32"],
                   help="X,Y,Z voxels at 2 x 2 x 4 mm, divisible by 8 (default 64,64,32)")
    p.add_argument("--centers", type=_csv_list, default=None, help="comma list (default: all)")
    p.add_argument("--subjects", type=_csv_list, default=None, help="comma list of subject ids")
    p.add_argument(
        "--split-from", type=Path, default=None,
        help="a run's split.csv: use only its 'train' subjects",
    )
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_run_train_features)


def _run_train_features(args: argparse.Namespace) -> int:
    from napari_pandg.train.data import read_split
    from napari_pandg.train.features import run_train_features_cli

    subjects = list(args.subjects) if args.subjects else None
    if args.split_from is not None:
        train = {subj for subj, part in read_split(args.split_from).items() if part == "train"}
        subjects = sorted(train & set(subjects)) if subjects else sorted(train)
        if not subjects:
            raise ValueError(f"--split-from {args.split_from}: no 'train' subjects left")
    try:
        patch = tuple(int(v) for v in args.patch_size)
    except ValueError:
        raise ValueError(f"--patch-size {','.join(args.patch_size)}: give three integers X,Y,Z") from None
    if len(patch) != 3:
        raise ValueError(f"--patch-size {','.join(args.patch_size)}: give three integers X,Y,Z")
    run_train_features_cli(
        args.manifest, args.out, steps=args.steps, centers=args.centers, subjects=subjects,
        seed=args.seed, overwrite=args.overwrite, patch_size=patch,
    )
    return 0


# --------------------------------------------------------------------------- segment
def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment an image (or a whole manifest) with a trained model",
        description=(
            "Reorient and resample to the model's spacing, normalise as trained, sliding-window "
            "inference, map back to the input grid: the output has the input's affine and shape "
            "and AMOS label ids (pancreas = 10). MODEL is a shipped or user model name "
            "(see `pandg models`), a checkpoint file or a run folder."
        ),
    )
    p.add_argument("--model", required=True, help="model name, checkpoint or run folder")
    p.add_argument("--input", type=Path, help="image .nii/.nii.gz")
    p.add_argument("--output", type=Path, help="mask to write (with --input)")
    p.add_argument("--manifest", type=Path, help="dataset index / manifest CSV (instead of --input)")
    p.add_argument("--out-dir", type=Path, help="output folder (with --manifest)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run the network (default auto: cuda when available)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output masks (never the input image)")
    p.set_defaults(func=_run_segment)


def _run_segment(args: argparse.Namespace) -> int:
    from napari_pandg.models import run_segment_cli

    if (args.input is None) == (args.manifest is None):
        raise ValueError("give either --input/--output or --manifest/--out-dir")
    if args.input is not None and args.output is None:
        raise ValueError(f"--input {args.input} needs --output (the mask file to write)")
    if args.manifest is not None and args.out_dir is None:
        raise ValueError(f"--manifest {args.manifest} needs --out-dir (the folder for the masks)")
    run_segment_cli(
        args.model,
        input=args.input,
        output=args.output,
        manifest=args.manifest,
        out_dir=args.out_dir,
        overwrite=args.overwrite,
        device=args.device,
    )
    return 0


# --------------------------------------------------------------------------- models
def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list shipped and user segmentation models with their training facts",
        description="Shipped models live in the package; user models in $PANDG_MODELS (default ~/.pandg/models).",
    )
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    import pandas as pd

    from napari_pandg.models import list_models

    df = list_models()
    if df.empty:
        print("no models found (shipped: none; user folder: $PANDG_MODELS or ~/.pandg/models)")
        return 0
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        print(df.drop(columns=[c for c in ("path",) if c in df]).to_string(index=False))
    return 0


# --------------------------------------------------------------------------- benchmark
def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="center x sequence Dice/HD95/NSD of one or more models on a labelled dataset",
        description=(
            "Segment every labelled image of MANIFEST with each model and write per_case.csv, a "
            "center x sequence Dice matrix per model (CSV + heatmap PNG), summary.csv (in-domain, "
            "cross-center, cross-sequence) and a self-contained report.html. Subjects a model was "
            "trained or validated on are excluded (see docs/benchmark.md)."
        ),
    )
    p.add_argument("manifest", type=Path, help="dataset index / manifest CSV or dataset folder")
    p.add_argument("--models", required=True, help="comma list of model names, checkpoints or run folders")
    p.add_argument("--out-dir", required=True, type=Path,
                   help="folder for per_case.csv, the Dice matrices, summary.csv and report.html")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run the networks (default auto: cuda when available)")
    p.add_argument("--max-cases-per-cell", type=int, default=None, help="deterministic subsample per cell")
    p.add_argument("--include-training-subjects", action="store_true", help="also score training/validation subjects")
    p.add_argument("--save-predictions", action="store_true", help="write every predicted mask")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out-dir")
    p.set_defaults(func=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    from napari_pandg.benchmark import run_benchmark_cli

    report = run_benchmark_cli(
        args.manifest,
        args.models,
        args.out_dir,
        overwrite=args.overwrite,
        device=args.device,
        max_cases_per_cell=args.max_cases_per_cell,
        exclude_training_subjects=not args.include_training_subjects,
        save_predictions=args.save_predictions,
    )
    print(f"report: {report}")
    return 0


# --------------------------------------------------------------------------- shift-auroc
def _add_shift_auroc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shift-auroc",
        help="pool benchmarks' per-case tables: how well the shift score warns of Dice < 0.5 (AUROC, ROC plot)",
        description=(
            "Read the per_case.csv of one or more `pandg benchmark` runs (e.g. the in-generator and "
            "the independent evalsim set), pool them and write OUT_DIR/shift_auroc.csv (AUROC of "
            "the shift score for predicting a failed segmentation, sensitivity and specificity of "
            "the flag score > 1; per model, per benchmark, all) and OUT_DIR/shift_roc.png."
        ),
    )
    p.add_argument("tables", nargs="+", help="benchmark folders or their per_case.csv files")
    p.add_argument("--out-dir", required=True, type=Path, help="folder for shift_auroc.csv and shift_roc.png")
    p.add_argument("--fail-below", type=float, default=0.5, help="a case fails when its Dice is below this (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace shift_auroc.csv / shift_roc.png of an earlier run")
    p.set_defaults(func=_run_shift_auroc)


def _run_shift_auroc(args: argparse.Namespace) -> int:
    from napari_pandg.shift_eval import run_shift_auroc_cli

    if not 0.0 < args.fail_below <= 1.0:
        raise SystemExit("pandg shift-auroc: --fail-below must be in (0, 1]")
    run_shift_auroc_cli(args.tables, args.out_dir, args.fail_below, overwrite=args.overwrite)
    return 0


# --------------------------------------------------------------------------- embed
def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="feature UMAP across centers and sequences, and how much each feature space encodes them",
        description=(
            "Cut every volume of MANIFEST into body patches on a millimetre grid, describe each by "
            "anatomy features (the shipped contrast-invariant extractor, or --feature-source) and/or "
            "intensity statistics, and write patches_<kind>.csv (with UMAP0/1 and each patch's "
            "voxel position), separation_<kind>.csv (k-NN accuracy of sequence/center/organ, and "
            "same-place matching across sequences) and UMAP scatter PNGs. Open the CSV in the "
            "napari Embedding widget to go from points back to voxels."
        ),
    )
    p.add_argument("manifest", type=Path, help="dataset index / manifest CSV or dataset folder")
    p.add_argument("--out-dir", required=True, type=Path,
                   help="folder for the patch tables, separation scores and UMAP plots")
    p.add_argument("--features", type=_csv_list, default=["anatomy", "intensity"],
                   help="comma list of anatomy,intensity (default both)")  # fmt: skip
    p.add_argument("--feature-source", default=None, help="features checkpoint or anatomix.pth (default: shipped)")
    p.add_argument("--centers", type=_csv_list, default=None, help="comma list of centers (default: all)")
    p.add_argument("--sequences", type=_csv_list, default=None, help="comma list of sequences (default: all)")
    p.add_argument("--subjects", type=_csv_list, default=None, help="comma list of subject ids (default: all)")
    p.add_argument("--patch", type=_csv_list, default=["16", "16", "8"], help="block size in voxels (default 16,16,8)")
    p.add_argument("--n-neighbors", type=int, default=15, help="UMAP n_neighbors (default 15)")
    p.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed of patch sampling and UMAP (default 0)")
    p.add_argument("--cache-dir", type=Path, default=None, help="per-volume patch tables (default OUT_DIR/.cache)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out-dir")
    p.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from napari_pandg.embed import run_embed_cli

    try:
        patch = [int(v) for v in args.patch]
    except ValueError:
        raise ValueError(f"--patch must be three integers, got {','.join(args.patch)}") from None
    out = run_embed_cli(
        args.manifest, args.out_dir, kinds=args.features, feature_source=args.feature_source,
        centers=args.centers, sequences=args.sequences, subjects=args.subjects, patch=patch,
        n_neighbors=args.n_neighbors, min_dist=args.min_dist, seed=args.seed, cache_dir=args.cache_dir,
        overwrite=args.overwrite,
    )  # fmt: skip
    print(f"embedding written to {out}")
    return 0


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pandg",
        description=(
            "napari-pandg: pancreas segmentation across MRI sequences and centers. "
            "Everything runs offline; weights are local files."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from napari_pandg import __version__

    parser.add_argument("--version", action="version", version=f"napari-pandg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_synth(sub)
    _add_synth_eval(sub)
    _add_index(sub)
    _add_demo(sub)
    _add_sam(sub)
    _add_train(sub)
    _add_train_features(sub)
    _add_segment(sub)
    _add_models(sub)
    _add_benchmark(sub)
    _add_shift_auroc(sub)
    _add_embed(sub)
    return parser


def cli_wording(message: str, has_overwrite: bool = True) -> str:
    """Library messages name the Python keyword (``overwrite=True``); on the command line the
    flag is ``--overwrite``."""
    # one line on stderr, whatever the library (or nibabel/pandas inside it) put in the text
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if not has_overwrite:
        return message
    message = message.replace("overwrite=True (CLI: --overwrite)", "--overwrite")
    message = message.replace("--overwrite (overwrite=True in Python)", "--overwrite")
    return re.sub(r"\boverwrite=True\b", "--overwrite", message)


def _os_error_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {exc.strerror or exc}" if where else str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from napari_pandg.sam.errors import SamError

    has_overwrite = hasattr(args, "overwrite")
    try:
        return int(args.func(args) or 0)
    except (FileExistsError, FileNotFoundError, ValueError, SamError) as exc:
        # Library errors carry the file and the fix; show them without a traceback.
        print(f"pandg {args.command}: error: {cli_wording(str(exc), has_overwrite)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: an internal error
            raise
        # a permission, read-only file system or full disk on a file the user chose
        print(f"pandg {args.command}: error: {cli_wording(_os_error_message(exc), has_overwrite)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
