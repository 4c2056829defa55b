"""``pandg demo``: the main job on the embedded phantom, end to end.

1. generate a phantom dataset (every center and sequence) and its manifest;
2. index it back through the dataset loader (the same path real datasets take);
3. write a center x sequence montage and a contrast table (the physics of the sequence shift);
4. take real napari screenshots (on the display, or on a virtual Xvfb display when there is
   none) and, with a real display, open napari with one subject and the Dataset widget.

Later features (segmentation models, MedSAM2, benchmark) extend this job.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

Progress = Callable[[int, int, str], None]


def _noop(done: int, total: int, what: str) -> None:  # pragma: no cover - trivial
    pass


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(
    out: str | Path,
    *,
    n_subjects: int = 1,
    seed: int = 0,
    overwrite: bool = False,
    open_viewer: bool = True,
    screenshots: bool = True,
    models: bool = True,
    fine_spacing: float = 1.5,
    progress: Progress | None = None,
) -> Path:
    """Run the demo into ``out`` and return the path of its report (``out/report.md``).

    ``fine_spacing`` is the phantom's anatomy grid (mm); coarser is faster (tests use 2.5).
    """
    from napari_pandg.io import build_index, write_index
    from napari_pandg.phantom import CENTERS, SEQUENCES, write_dataset
    from napari_pandg.report import center_sequence_montage, contrast_table

    progress = progress or _noop
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty; choose another --out or pass --overwrite to replace the demo outputs in it"
            )
        for name in ("data", "screenshots", "benchmark"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    steps = 6
    progress(1, steps, f"generating phantom: {n_subjects} subject(s) x {len(CENTERS)} centers x {len(SEQUENCES)} sequences")
    write_dataset(
        out / "data",
        n_subjects=n_subjects,
        centers=tuple(CENTERS),
        sequences=SEQUENCES,
        seed=seed,
        overwrite=True,
        fine_spacing=fine_spacing,
    )
    t_synth = time.perf_counter() - t0
    timings["phantom dataset"] = t_synth

    progress(2, steps, "indexing the dataset")
    t = time.perf_counter()
    index = build_index(out / "data")
    order = {s: i for i, s in enumerate(SEQUENCES)}
    index = (
        index.assign(_order=index["sequence"].map(order))
        .sort_values(["center", "subject", "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    write_index(index, out / "index.csv", overwrite=True)

    timings["index"] = time.perf_counter() - t

    progress(3, steps, "montage and contrast table")
    t = time.perf_counter()
    montage = center_sequence_montage(index, out / "montage_centers_sequences.png")
    contrast = contrast_table(index)
    contrast.round(4).to_csv(out / "contrast.csv", index=False)
    summary = (
        contrast.groupby("sequence")[["pancreas/liver", "pancreas/visceral_fat", "pancreas/spleen"]]
        .median()
        .reindex(list(SEQUENCES))
        .round(2)
    )

    timings["montage and contrast table"] = time.perf_counter() - t

    bench_note, bench = "skipped", None
    if models:
        progress(4, steps, "segmenting with the shipped models: center x sequence benchmark")
        t = time.perf_counter()
        bench_note, bench = _shipped_model_benchmark(index, out / "benchmark")
        timings["benchmark (shipped models)"] = time.perf_counter() - t

    shots: list[Path] = []
    shot_note = "skipped"
    if screenshots:
        progress(5, steps, "napari screenshots")
        t = time.perf_counter()
        try:
            from napari_pandg._qt.screenshots import subject_screenshots

            first = str(index["subject"].iloc[0])
            shots = subject_screenshots(index[index["subject"] == first], out / "screenshots")
            shot_note = f"{len(shots)} napari screenshot(s) of subject {first}"
        except Exception as exc:  # a missing display must not lose the rest of the demo
            shot_note = f"not taken: {type(exc).__name__}: {exc}"
        timings["napari screenshots"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    report = _write_report(out, index, montage, summary, shots, shot_note, t_synth, bench_note, bench, timings)
    progress(6, steps, f"report: {report}")

    if open_viewer and display_available():
        from napari_pandg._qt.screenshots import open_viewer_with

        open_viewer_with(index, out / "index.csv")
    return report


def _write_report(
    out: Path,
    index: pd.DataFrame,
    montage: Path,
    summary: pd.DataFrame,
    shots: list[Path],
    shot_note: str,
    t_synth: float,
    bench_note: str = "skipped",
    bench: Any = None,
    timings: dict[str, float] | None = None,
) -> Path:
    lines = [
        "# napari-pandg demo",
        "",
        f"- phantom dataset: `{out / 'data'}` ({index['subject'].nunique()} subjects, {len(index)} volumes, "
        f"centers {', '.join(sorted(index['center'].astype(str).unique()))}), generated in {t_synth:.1f} s",
        f"- dataset index (read back through the loader): `{out / 'index.csv'}`",
        f"- center x sequence montage (pancreas contour in yellow): `{montage}`",
        f"- contrast table: `{out / 'contrast.csv'}`",
        f"- shipped models on this data (center x sequence Dice): {bench_note}",
        f"- napari screenshots: {shot_note}",
        *[f"  - `{p}`" for p in shots],
        "",
        "## Pancreas contrast by sequence (median over centers)",
        "",
        "Ratios of median intensities. Above 1: the pancreas is brighter. The sign flips between",
        "sequences are the reason a model trained on one sequence fails on another.",
        "",
        summary.to_markdown() if _has_tabulate() else "```\n" + summary.to_string() + "\n```",
        "",
    ]
    if bench is not None:
        lines += benchmark_section(bench)
    if timings:
        lines += [
            "## Time per step",
            "",
            "| step | seconds |",
            "|---|---:|",
            *[f"| {k} | {v:.1f} |" for k, v in timings.items()],
            "",
        ]
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def _md_table(df: pd.DataFrame, index_name: str = "") -> list[str]:
    """A pandas frame as Markdown table lines (no tabulate needed)."""
    cols = [str(c) for c in df.columns]
    out = [f"| {index_name} | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for idx, row in df.iterrows():
        out.append(f"| {idx} | " + " | ".join(str(v) for v in row.tolist()) + " |")
    return out


def _dice_n(v: Any, n: Any) -> str:
    return "–" if pd.isna(v) else f"{float(v):.3f} (n={int(n)})"


def benchmark_section(bench: Any) -> list[str]:
    """Markdown: the Dice summary of a :class:`~napari_pandg.benchmark.BenchmarkResult` (per
    model: mean pancreas Dice in domain / cross-center / cross-sequence / cross-both) and each
    model's center x sequence matrix, with the same sentence on training subjects as the HTML."""
    from napari_pandg.benchmark import SHIFTS

    names = {"in_domain": "in domain", "cross_center": "cross-center", "cross_sequence": "cross-sequence",
             "cross_both": "cross-both"}  # fmt: skip
    table = pd.DataFrame(
        {
            "method": bench.summary["method"].to_numpy(),
            "trained on": [f"{c} / {q}" for c, q in zip(bench.summary["train_centers"], bench.summary["train_sequences"], strict=True)],
            **{names[s]: [_dice_n(v, n) for v, n in zip(bench.summary[f"dice_{s}"], bench.summary[f"n_{s}"], strict=True)]
               for s in SHIFTS},
            "all": [_dice_n(v, n) for v, n in zip(bench.summary["dice_all"], bench.summary["n_cases"], strict=True)],
        },
        index=bench.summary["model"].to_numpy(),
    )  # fmt: skip
    lines = [
        "## Shipped models on this data: mean pancreas Dice",
        "",
        "Mean over the cases of each domain-shift category (n cases). In domain: the model's",
        "training center and sequence; cross-center: same sequence, other centers; cross-sequence:",
        "same center, other sequences; cross-both: neither.",
        "",
        *_md_table(table, "model"),
        "",
        bench.scoring,
        "",
        f"Full report (heatmaps, HD95, NSD, per case): `{bench.report}`",
        "",
    ]
    for name, mean in bench.matrices.items():
        n = bench.counts[name]
        cells = pd.DataFrame({c: [_dice_n(mean.at[r, c], n.at[r, c]) for r in mean.index] for c in mean.columns},
                             index=mean.index)  # fmt: skip
        lines += [f"### {name}: mean pancreas Dice, centers x sequences", "", *_md_table(cells, "center"), ""]
    return lines


def _shipped_model_benchmark(index: pd.DataFrame, out: Path) -> tuple[str, Any]:
    """Run every shipped model over the demo data; returns a one-line note for the report and
    the :class:`~napari_pandg.benchmark.BenchmarkResult` (None when there is no model)."""
    from napari_pandg.benchmark import format_matrix, run_benchmark
    from napari_pandg.models import list_models

    shipped = list_models(describe=False)
    shipped = shipped[shipped["source"] == "shipped"] if "source" in shipped else shipped.iloc[0:0]
    if shipped.empty:
        return "no shipped model in this installation", None
    names = list(shipped["name"])
    # The demo generates fresh subjects (its own seed) whose ids (A001, ...) coincide with the
    # shipped models' training subjects: the benchmark tells them apart by their phantom seeds
    # (the checkpoints record the pandg synth commands of their training data), not by id.
    result = run_benchmark(index, names, out, overwrite=True)
    for name, matrix in result.matrices.items():
        print(f"{name}: mean pancreas Dice, centers x sequences\n{format_matrix(matrix, result.counts[name])}")
    return f"{', '.join(names)} -> `{result.report}` (summary below)", result


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None
