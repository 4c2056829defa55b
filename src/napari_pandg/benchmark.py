"""Center x sequence benchmark of trained models (no Qt).

:func:`run_benchmark` segments every labelled image of a dataset index with each model and
measures pancreas (AMOS id 10) Dice, HD95 and NSD with :mod:`napari_pandg.metrics`. Results
are split by the model's training domain: a case is *in domain* when both its center and its
sequence are among the centers and sequences the model was trained on; otherwise it is a
*cross-center* (same sequence), *cross-sequence* (same center) or *cross-both* case.

Subjects the model was trained or validated on are never scored by default
(``exclude_training_subjects``). A subject id alone does not say that: the demo, for one,
generates other phantom people with the training set's ids (A001, ...). Which ids were in the
run's train / validation / test split is read from the run's ``split.csv`` next to the
checkpoint, else from the checkpoint description (:func:`model_subject_splits`); whether the
benchmark subject with that id *is* that person is decided by :func:`subject_identity`
(recorded fingerprints, the training manifest, or the recorded ``pandg synth`` commands:
``yes``, ``no``, or ``unknown`` when nothing recorded can tell). ``per_case.csv``'s
``seen_in_training`` column, the report's header and its text all state that same decision.

Written to ``out_dir`` (each file atomically):

* ``per_case.csv`` -- one row per model x case;
* ``matrix_<model>_dice.csv`` / ``matrix_<model>_n.csv`` -- mean Dice / number of cases,
  rows centers, columns sequences; ``matrix_<model>_dice.png`` -- the annotated heatmap
  with the training-domain cells outlined;
* ``cells.csv`` -- mean/median/std/count of Dice, HD95, NSD per model x center x sequence;
* ``summary.csv`` -- per model: mean Dice in domain, cross-center, cross-sequence,
  cross-both (and n);
* ``report.html`` -- a self-contained page (inline CSS, base64 PNGs) with all of the above.

>>> res = run_benchmark("data/manifest.csv", ["erm_A_t1fs_venous", "runs/gin/best.pt"], "bench")
>>> res.matrices["erm_A_t1fs_venous"]          # centers x sequences mean Dice
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_pandg.labels import PANCREAS
from napari_pandg.metrics import DEFAULT_TOLERANCE_MM, evaluate_volumes, summarize
from napari_pandg.models import (
    ModelError,
    SegmentationCancelled,
    SegModel,
    load_checkpoint,
    resolve_model,
    segment_volume,
)
from napari_pandg.shift_eval import FAIL_BELOW, plot_roc, shift_auroc, shift_auroc_table

Progress = Callable[[int, int, str], Any]

#: the domain-shift categories, in report order
SHIFTS = ("in_domain", "cross_center", "cross_sequence", "cross_both")

PER_CASE_COLUMNS = (
    "model", "method", "subject", "center", "sequence", "in_domain", "domain_shift",
    "seen_in_training", "model_split", "seen_evidence", "dice", "hd95", "nsd", "empty_gt",
    "empty_pred", "volume_gt_ml", "volume_pred_ml", "shift_score", "shift_flagged", "shift_feature",
    "shift_confidence", "shift_volume", "shift_image", "shift_reasons", "seconds", "image", "label", "prediction", "error",
)  # fmt: skip

#: values of ``per_case.csv``'s ``seen_in_training``
SEEN = ("yes", "no", "unknown")

EXPLANATION = """\
Each heatmap is one model: rows are centers (scanners / sites), columns are MRI sequences,
cells the mean pancreas Dice over the cases of that center and sequence (n below it). The
outlined cell(s) are the model's training domain. Domain shift shows as a drop away from
the outlined cell: along its <b>column</b> (same sequence, other centers: field strength,
vendor, coil and protocol shift, usually mild) and along its <b>row</b> (same center, other
sequences: the pancreas changes contrast relative to fat, liver and bowel between
fat-suppressed T1, T2 and Dixon in-/opposed-phase images, usually the larger drop). A plain
(ERM) model typically gives a bright outlined cell and column and dark other columns; a
domain-generalisation method helps when it raises the off-domain cells (a flatter matrix)
without losing in-domain Dice. The summary table condenses this into in-domain,
cross-center, cross-sequence and cross-both means. Cells with small n are noisy."""


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` computed and wrote."""

    #: one row per model x case (columns :data:`PER_CASE_COLUMNS`)
    per_case: pd.DataFrame
    #: model -> mean pancreas Dice, rows centers, columns sequences (NaN: no case)
    matrices: dict[str, pd.DataFrame]
    #: model -> number of scored cases per cell
    counts: dict[str, pd.DataFrame]
    #: one row per model: mean Dice in domain / cross-center / cross-sequence / cross-both
    summary: pd.DataFrame
    report: Path
    out_dir: Path
    #: True when ``cancel`` stopped the run early (outputs cover the cases done so far)
    cancelled: bool = False
    #: model -> training/validation subjects excluded, and where that was read from
    excluded: dict[str, list[str]] = field(default_factory=dict)
    split_sources: dict[str, str] = field(default_factory=dict)
    #: the sentence on training subjects in the report (header and text)
    scoring: str = ""


@dataclass
class _Entry:
    key: str
    safe: str
    spec: str
    model: SegModel
    splits: dict[str, str]
    split_source: str
    seen: set[str]
    #: subject -> (seen_in_training, model_split, seen_evidence)
    status: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    identity_source: str = ""


# --------------------------------------------------------------------------- small helpers
def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() == "")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    from napari_pandg.io.safety import atomic_write_with

    return atomic_write_with(path, write)


def _write_csv(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    return _atomic_write(path, lambda t: df.to_csv(t, index=index))


def _write_text(text: str, path: Path) -> Path:
    return _atomic_write(path, lambda t: t.write_text(text, encoding="utf-8"))


def read_dataset(manifest: str | os.PathLike | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """``(index, name)`` from an index CSV, a dataset folder or a DataFrame, with the columns
    normalised (tags as strings, ``label`` None where missing, ``label_map`` "" where missing)."""
    from napari_pandg.io import build_index, read_index

    if isinstance(manifest, pd.DataFrame):
        df, name = manifest.copy(), "DataFrame"
    else:
        p = Path(manifest).expanduser()
        df = build_index(p) if p.is_dir() else read_index(p)
        name = str(p)
    missing = [c for c in ("subject", "center", "sequence", "image") if c not in df]
    if missing:
        raise ValueError(f"manifest {name}: missing columns {missing} (a dataset index is expected)")
    df = df.reset_index(drop=True)
    for c in ("subject", "center", "sequence"):
        df[c] = df[c].map(lambda v: "" if _is_missing(v) else str(v)).astype(object)
    if "label" not in df:
        df["label"] = None
    df["label"] = pd.Series([None if _is_missing(v) else str(v) for v in df["label"]], index=df.index, dtype=object)
    if "label_map" not in df:
        df["label_map"] = ""
    df["label_map"] = df["label_map"].map(lambda v: "" if _is_missing(v) else str(v)).astype(object)
    return df, name


# --------------------------------------------------------------------------- training subjects
def _config_data(desc_extra: Mapping[str, Any]) -> Mapping[str, Any]:
    cfg = desc_extra.get("config") or {}
    data = cfg.get("data") if isinstance(cfg, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def model_subject_splits(model: SegModel, manifest: pd.DataFrame | None = None) -> tuple[dict[str, str], str]:
    """``subject -> "train" | "val" | "test"`` as the model's training run assigned them.

    Read, in this order, from: ``split.csv`` next to the checkpoint (written by
    ``pandg train``); ``extra["train_subjects"]`` (+ ``val_subjects``/``test_subjects``) in the
    checkpoint; the training manifest named in ``extra["config"]["data"]["manifest"]`` when it
    still exists (its subjects minus the recorded test and validation subjects are the
    training subjects); else only the recorded ``val_subjects``/``test_subjects`` -- and, when
    ``manifest`` shares subjects with them (the same dataset), its other subjects count as
    training subjects. Returns the mapping and a sentence saying where it came from
    (an empty mapping when the checkpoint records nothing, e.g. MaskGen files).
    """
    extra = model.description.extra or {}
    if model.path is not None:
        split_csv = Path(model.path).parent / "split.csv"
        if split_csv.is_file():
            from napari_pandg.train.data import read_split

            try:
                return read_split(split_csv), f"run split file {split_csv}"
            except (OSError, ValueError, pd.errors.ParserError):
                pass  # unreadable: fall back to the checkpoint description
    val = [str(s) for s in extra.get("val_subjects") or []]
    test = [str(s) for s in extra.get("test_subjects") or []]
    out = {s: "test" for s in test}
    out.update({s: "val" for s in val})
    if extra.get("train_subjects"):
        out.update({str(s): "train" for s in extra["train_subjects"]})
        return out, "subjects recorded in the checkpoint"
    train_manifest = _config_data(extra).get("manifest")
    if train_manifest and Path(str(train_manifest)).expanduser().is_file():
        try:
            from napari_pandg.io import read_index

            subjects = {str(s) for s in read_index(str(train_manifest), check_files=False)["subject"]}
            for s in subjects - set(out):
                out[s] = "train"
            return out, f"training manifest {train_manifest} minus the recorded test/validation subjects"
        except (OSError, ValueError):
            pass
    if not val and not test:
        return {}, "none recorded in the checkpoint: no subject could be excluded"
    if manifest is not None and set(manifest["subject"].astype(str)) & set(out):
        for s in set(manifest["subject"].astype(str)) - set(out):
            out[s] = "train"
        return out, ("recorded test/validation subjects; the benchmark manifest shares subjects "
                     "with them, so its other subjects are taken as training subjects")  # fmt: skip
    return out, "recorded test/validation subjects (the manifest shares none of them)"


def _seen_subjects(model: SegModel, splits: Mapping[str, str], manifest: pd.DataFrame) -> set[str]:
    """Subjects in the train/val split that have an image in the training/validation domain
    (a subject of another center was never loaded by a model trained on one center)."""
    desc = model.description
    data = _config_data(desc.extra or {})
    tc = list(desc.domains.get("centers") or [])
    ts = list(desc.domains.get("sequences") or [])
    domain = {
        "train": (tc, ts),
        "val": (list(data.get("val_centers") or tc), list(data.get("val_sequences") or ts)),
    }
    rows: dict[str, list[tuple[str, str]]] = {}
    for s, c, q in zip(manifest["subject"], manifest["center"], manifest["sequence"], strict=True):
        rows.setdefault(str(s), []).append((str(c), str(q)))
    seen = set()
    for subject, split in splits.items():
        if split not in domain:
            continue
        centers, sequences = domain[split]
        images = rows.get(subject)
        if images is None or any(
            (not centers or c in centers) and (not sequences or q in sequences) for c, q in images
        ):
            seen.add(subject)
    return seen


# --------------------------------------------------------------------------- subject identity
def _phantom_seed(v: Any) -> str | None:
    if _is_missing(v):
        return None
    try:
        return f"phantom-seed:{int(float(str(v)))}"
    except ValueError:
        return None


def manifest_fingerprints(manifest: pd.DataFrame, base: Path | None = None) -> dict[str, set[str]]:
    """``subject -> fingerprints`` of a dataset index: ``phantom-seed:<n>`` from a phantom
    manifest's ``seed`` column (a phantom person is its seed: the anatomy depends on nothing
    else) and ``file:<absolute image path>`` for every image."""
    out: dict[str, set[str]] = {}
    seeds = manifest["seed"] if "seed" in manifest else pd.Series([None] * len(manifest), index=manifest.index)
    for s, img, seed in zip(manifest["subject"], manifest["image"], seeds, strict=True):
        fps = out.setdefault(str(s), set())
        if (fp := _phantom_seed(seed)) is not None:
            fps.add(fp)
        if not _is_missing(img):
            path = Path(str(img)).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            fps.add(f"file:{path.resolve()}")
    return out


def synth_command_fingerprints(command: str) -> dict[str, set[str]]:
    """``subject -> {phantom-seed:<n>}`` for the subjects the ``pandg synth`` commands in
    ``command`` (a checkpoint's recorded ``data_command``, ``;``/``&&``-separated) generated;
    other commands are ignored, an unparsable one gives nothing."""
    import argparse
    import shlex

    from napari_pandg.phantom import CENTERS, subject_seed

    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--out")
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--centers", default=",".join(CENTERS))
    parser.add_argument("--sequences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-index", type=int, default=1)
    out: dict[str, set[str]] = {}
    for part in re.split(r";|&&", str(command or "")):
        try:
            words = shlex.split(part)
        except ValueError:
            continue
        if "synth" not in words[:4] or not any(w == "pandg" or w.endswith("napari_pandg.cli") for w in words[:3]):
            continue
        try:
            args, _ = parser.parse_known_args(words[words.index("synth") + 1 :])
        except (argparse.ArgumentError, ValueError):
            continue
        for c in (c.strip() for c in str(args.centers).split(",") if c.strip()):
            if c not in CENTERS:
                continue
            for i in range(args.first_index, args.first_index + args.subjects):
                out.setdefault(f"{c}{i:03d}", set()).add(f"phantom-seed:{subject_seed(args.seed, c, i)}")
    return out


def training_fingerprints(model: SegModel) -> tuple[dict[str, set[str]], str]:
    """``subject -> fingerprints`` of the people in the model's training run, and where they
    came from: ``extra["subject_fingerprints"]`` (a mapping subject -> list of fingerprints);
    the training manifest named in the recorded config, when it still exists; the ``pandg
    synth`` commands recorded in ``extra["data_command"]``; else nothing (ids only). A model
    trained on a phantom stream (``extra["train_data"]["source"]``) saw no file subject."""
    extra = model.description.extra or {}
    if (extra.get("train_data") or {}).get("source") == "phantom_stream":
        return {}, "trained only on subjects generated during training (phantom stream): no file subject was seen"
    recorded = extra.get("subject_fingerprints")
    if isinstance(recorded, Mapping) and recorded:
        return {str(k): {str(v) for v in (vs if isinstance(vs, list | tuple | set) else [vs])}
                for k, vs in recorded.items()}, "subject fingerprints recorded in the checkpoint"  # fmt: skip
    train_manifest = _config_data(extra).get("manifest")
    if train_manifest:
        candidates = [Path(str(train_manifest)).expanduser()]
        if model.path is not None and not candidates[0].is_absolute():
            candidates.append(Path(model.path).parent / candidates[0])
        for cand in candidates:
            if cand.is_file():
                try:
                    from napari_pandg.io import read_index

                    return manifest_fingerprints(read_index(cand)), f"training manifest {cand}"
                except (OSError, ValueError):
                    break
    found = synth_command_fingerprints(str(extra.get("data_command") or ""))
    if found:
        return found, "phantom seeds of the recorded data command (pandg synth)"
    return {}, "no subject identity recorded (subject ids only)"


def subject_identity(recorded: Mapping[str, set[str]], subject: str, bench: set[str]) -> tuple[str, str]:
    """Is benchmark ``subject`` (fingerprints ``bench``) the training-run person with the same
    id? ``("yes" | "no" | "unknown", why)``. Fingerprints decide "no" only between phantom seeds
    (another file path may hold a copy of the same person)."""
    mine = recorded.get(subject)
    if mine is None:
        return "unknown", f"id {subject} is in the model's split; the checkpoint records no identity for it"
    common = mine & bench
    if common:
        fp = sorted(common)[0].replace("phantom-seed:", "phantom seed ").replace("file:", "image ")
        return "yes", f"same subject as the training run's {subject} ({fp})"
    seeds_mine = {f for f in mine if f.startswith("phantom-seed:")}
    seeds_bench = {f for f in bench if f.startswith("phantom-seed:")}
    if seeds_mine and seeds_bench:
        return "no", (f"another person with the training run's id {subject} (phantom seed "
                      f"{sorted(seeds_bench)[0].split(':', 1)[1]}, not {sorted(seeds_mine)[0].split(':', 1)[1]})")  # fmt: skip
    return "unknown", f"id {subject} is in the model's split; no recorded fingerprint can tell if it is the same subject"


def subject_status(
    model: SegModel, splits: Mapping[str, str], manifest: pd.DataFrame, base: Path | None = None
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """Per benchmark subject: ``(seen_in_training, model_split, seen_evidence)`` and the source of
    the identities. ``seen_in_training`` is ``yes`` (the same person, in the train/validation
    split, with an image in that split's domain), ``no`` (not in the split, another person with
    the id, a test subject, or never loaded: outside the domain), or ``unknown`` (the id is in
    the train/validation split within the domain and nothing recorded says whether it is the
    same person). ``model_split`` is the run's split only for a confirmed same subject."""
    in_domain = _seen_subjects(model, splits, manifest)  # by id: train/val split, in its domain
    recorded, source = training_fingerprints(model)
    bench = manifest_fingerprints(manifest, base)
    out: dict[str, tuple[str, str, str]] = {}
    for subject in dict.fromkeys(str(s) for s in manifest["subject"]):
        split = splits.get(subject)
        if split is None:
            out[subject] = ("no", "", "")
            continue
        ident, why = subject_identity(recorded, subject, bench.get(subject, set()))
        loaded = subject in in_domain
        if ident == "no":
            out[subject] = ("no", "", why)
        elif ident == "yes":
            if split in ("train", "val") and not loaded:
                why += f"; in the {split} split but outside its domain (never loaded)"
            out[subject] = ("yes" if loaded else "no", split, why)
        elif split in ("train", "val") and loaded:
            out[subject] = ("unknown", "", f"{why} ({split} split)")
        else:
            out[subject] = ("no", "", f"{why} ({split} split{'' if split == 'test' else ', outside its domain'})")
    return out, source


def domain_shift(center: str, sequence: str, domains: Mapping[str, Sequence[str]]) -> str:
    """``in_domain``, ``cross_center``, ``cross_sequence``, ``cross_both`` or ``unknown``
    (the model records no training centers or sequences)."""
    centers, sequences = list(domains.get("centers") or []), list(domains.get("sequences") or [])
    if not centers or not sequences:
        return "unknown"
    c_in, s_in = center in centers, sequence in sequences
    return {(True, True): "in_domain", (False, True): "cross_center",
            (True, False): "cross_sequence", (False, False): "cross_both"}[(c_in, s_in)]  # fmt: skip


# --------------------------------------------------------------------------- models
def _load_models(specs: Sequence[str], device: str) -> tuple[list[_Entry], str]:
    from napari_pandg.models.inference import pick_device

    if isinstance(specs, str):
        specs = [specs]
    specs = [str(s).strip() for s in specs if str(s).strip()]
    if not specs:
        raise ModelError("no model given: pass one or more model names or checkpoint files")
    dev = pick_device(device)
    entries: list[_Entry] = []
    paths: dict[Path, str] = {}
    taken: set[str] = set()
    for spec in specs:
        path = resolve_model(spec).resolve()
        if path in paths:
            warnings.warn(f"model {spec!r} is the same checkpoint as {paths[path]!r}; benchmarked once", stacklevel=3)
            continue
        paths[path] = spec
        model = load_checkpoint(path, device=dev)
        if PANCREAS not in model.description.label_map.values():
            raise ModelError(
                f"{path}: model {model.name!r} has no pancreas output (label map "
                f"{model.description.label_map}, pancreas is AMOS id {PANCREAS})"
            )
        if Path(spec).expanduser().exists():
            name = model.name if model.name and model.name != "model" else ""
            key = name or (path.parent.name if path.stem in ("best", "last") else path.stem)
        else:
            key = spec  # a registered model name
        base, i = key, 2
        while key in taken or _safe_name(key) in {_safe_name(t) for t in taken}:
            key, i = f"{base}_{i}", i + 1
        taken.add(key)
        entries.append(_Entry(key, _safe_name(key), spec, model, {}, "", set()))
    return entries, str(dev)


# --------------------------------------------------------------------------- selection
def _subsample(rows: pd.DataFrame, max_per_cell: int | None) -> pd.DataFrame:
    """Up to ``max_per_cell`` rows per center x sequence, chosen by a hash of the subject (so
    the same subjects are preferred in every cell and by every model; deterministic)."""
    if not max_per_cell:
        return rows
    if max_per_cell < 1:
        raise ValueError(f"max_cases_per_cell must be >= 1 or None, got {max_per_cell}")
    key = rows["subject"].map(lambda s: hashlib.sha1(str(s).encode()).hexdigest())
    order = rows.assign(_k=key).sort_values(["_k", "subject", "image"], kind="stable")
    return order.groupby(["center", "sequence"], sort=False).head(max_per_cell).drop(columns="_k")


def _prediction_path(pred_dir: Path, row: Mapping[str, Any], used: set[Path]) -> Path:
    from napari_pandg.io.nifti import nifti_stem

    base = f"{row['subject']}_{row['sequence']}" if row["subject"] and row["sequence"] else nifti_stem(Path(row["image"]))
    base = _safe_name(base)
    p, i = pred_dir / f"{base}_seg.nii.gz", 2
    while p in used:
        p, i = pred_dir / f"{base}_{i}_seg.nii.gz", i + 1
    used.add(p)
    return p


# --------------------------------------------------------------------------- tables
def dice_matrix(
    per_case: pd.DataFrame,
    centers: Sequence[str] | None = None,
    sequences: Sequence[str] | None = None,
    value: str = "dice",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean ``value`` and case count per center (rows) x sequence (columns) for one model's
    per-case rows (cases with a NaN value, i.e. errors, are not counted)."""
    centers = list(centers) if centers is not None else sorted(per_case["center"].unique())
    sequences = list(sequences) if sequences is not None else list(dict.fromkeys(per_case["sequence"]))
    mean = pd.DataFrame(np.nan, index=pd.Index(centers, name="center"), columns=pd.Index(sequences, name="sequence"))
    n = pd.DataFrame(0, index=mean.index, columns=mean.columns, dtype=int)
    ok = per_case[per_case[value].notna()] if len(per_case) else per_case
    if len(ok):
        agg = summarize(ok.assign(dice=ok[value]) if value != "dice" else ok)
        for r in agg.itertuples(index=False):
            if r.center in mean.index and r.sequence in mean.columns:
                mean.loc[r.center, r.sequence] = r.dice_mean
                n.loc[r.center, r.sequence] = int(r.dice_count)
    return mean, n


def _summary_row(entry: _Entry, rows: pd.DataFrame, n_excluded: int) -> dict[str, Any]:
    d = entry.model.description
    ok = rows[rows["dice"].notna()] if len(rows) else rows
    out: dict[str, Any] = {
        "model": entry.key,
        "method": d.method,
        "train_centers": ",".join(d.domains.get("centers") or []),
        "train_sequences": ",".join(d.domains.get("sequences") or []),
        "n_cases": int(len(ok)),
        "n_excluded_subjects": int(n_excluded),
        "n_cases_seen_in_training": int((ok["seen_in_training"] == "yes").sum()) if len(ok) else 0,
        "n_cases_seen_unknown": int((ok["seen_in_training"] == "unknown").sum()) if len(ok) else 0,
        "dice_all": float(ok["dice"].mean()) if len(ok) else np.nan,
    }
    for s in SHIFTS:
        sub = ok[ok["domain_shift"] == s] if len(ok) else ok
        out[f"dice_{s}"] = float(sub["dice"].mean()) if len(sub) else np.nan
        out[f"n_{s}"] = int(len(sub))
    for m in ("hd95", "nsd"):
        out[f"{m}_all"] = float(ok[m].mean()) if len(ok) else np.nan
    sh = shift_auroc(ok) if len(ok) else {}
    out["n_shift_flagged"] = int(sh.get("n_flagged", 0))
    out["shift_auroc"] = sh.get("auroc", np.nan)  # shift score predicting Dice < 0.5 (nan: one class only)
    return out


def scoring_statement(
    entries: Sequence[_Entry], per_case: pd.DataFrame, excluded: Mapping[str, list[str]], exclude: bool
) -> str:
    """The one sentence on training subjects that the report's header and text both carry,
    computed from what was actually scored (and consistent with ``per_case.csv``)."""
    n_confirmed = n_unknown = 0
    for e in entries:
        for subj in excluded.get(e.key, []):
            seen = e.status.get(subj, ("",))[0]
            n_confirmed += seen == "yes"
            n_unknown += seen == "unknown"
    if exclude:
        if n_confirmed + n_unknown:
            parts = []
            if n_confirmed:
                parts.append(f"{n_confirmed} seen in training or validation")
            if n_unknown:
                parts.append(f"{n_unknown} whose id is in the training/validation split but whose "
                             "identity the checkpoint does not record (left out to be safe)")  # fmt: skip
            text = "Training and validation subjects are not scored: excluded (model, subject) pairs: " + "; ".join(parts) + "."
        else:
            text = "Training and validation subjects are not scored; none of this manifest's subjects is one of them."
    else:
        seen = per_case["seen_in_training"] if len(per_case) else pd.Series([], dtype=object)
        n_yes, n_unk = int((seen == "yes").sum()), int((seen == "unknown").sum())
        if n_yes or n_unk:
            text = (f"Every case is scored, training subjects included: {n_yes} scored case(s) are of "
                    f"subjects seen in training or validation and {n_unk} of unknown identity "
                    "(column seen_in_training of per_case.csv).")  # fmt: skip
        else:
            text = "Every case is scored; none of them is of a subject seen in training or validation."
    others = sorted({r.subject for r in per_case.itertuples() if str(r.seen_evidence).startswith("another person")}) \
        if len(per_case) else []  # fmt: skip
    if others:
        text += (f" {', '.join(others)} share subject ids with the models' training runs but are other "
                 "people (different phantom seeds): not training subjects.")  # fmt: skip
    return text


# --------------------------------------------------------------------------- figures
def plot_matrix(
    mean: pd.DataFrame,
    n: pd.DataFrame,
    path: str | os.PathLike,
    title: str = "",
    train_centers: Sequence[str] = (),
    train_sequences: Sequence[str] = (),
) -> Path:
    """Heatmap PNG of a center x sequence Dice matrix (annotated, 0..1, training cells outlined)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    nr, nc = mean.shape
    fig, ax = plt.subplots(figsize=(1.5 + 1.25 * max(nc, 1), 1.3 + 0.85 * max(nr, 1)))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#d9d9d9")
    data = np.ma.masked_invalid(mean.to_numpy(dtype=float)) if mean.size else np.zeros((1, 1))
    im = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i, c in enumerate(mean.index):
        for j, s in enumerate(mean.columns):
            v = mean.iloc[i, j]
            txt = "–" if pd.isna(v) else f"{v:.3f}\nn={int(n.iloc[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="black")
            if c in train_centers and s in train_sequences:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=3))
                ax.add_patch(Rectangle((j - 0.44, i - 0.44), 0.88, 0.88, fill=False, edgecolor="white", lw=1))
    ax.set_xticks(range(nc), [str(s) for s in mean.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(nr), [str(c) for c in mean.index], fontsize=8)
    ax.set_xlabel("sequence")
    ax.set_ylabel("center")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="pancreas Dice")
    fig.tight_layout()
    path = Path(path)
    try:
        _atomic_write(path, lambda t: fig.savefig(t, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- report
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
.note{background:#f7f7f2;border-left:4px solid #b5a642;padding:8px 12px;font-size:0.92em;line-height:1.45}
.warn{background:#fdf0ef;border-left:4px solid #c0392b;padding:8px 12px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:0.9em}
dt{font-weight:600}dd{margin:0;word-break:break-all}
img{max-width:100%;border:1px solid #ddd}.meta{color:#555;font-size:0.9em}
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, (float, np.floating)):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, index: bool = False) -> str:
    return df.to_html(index=index, na_rep="–", float_format=lambda v: f"{v:.3f}", border=0, escape=True)


def _matrix_table(mean: pd.DataFrame, n: pd.DataFrame) -> str:
    cells = mean.copy().astype(object)
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            v = mean.iloc[i, j]
            cells.iloc[i, j] = "–" if pd.isna(v) else f"{v:.3f} (n={int(n.iloc[i, j])})"
    return _table(cells, index=True)


def _write_report(
    out_dir: Path,
    entries: Sequence[_Entry],
    per_case: pd.DataFrame,
    matrices: Mapping[str, pd.DataFrame],
    counts: Mapping[str, pd.DataFrame],
    summary: pd.DataFrame,
    pngs: Mapping[str, Path],
    meta: Mapping[str, Any],
    excluded: Mapping[str, list[str]],
) -> Path:
    from napari_pandg import __version__

    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>napari-pandg benchmark</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Pancreas segmentation benchmark: center × sequence</h1>",
        f"<p class='meta'>{html.escape(date)} · napari-pandg {html.escape(__version__)} · manifest "
        f"{html.escape(str(meta['manifest']))} · {meta['n_cases']} labelled images · "
        f"{len(entries)} model(s) · device {html.escape(str(meta['device']))}"
        + (f" · at most {meta['max_cases_per_cell']} cases per cell" if meta.get("max_cases_per_cell") else "")
        + "</p>",
        f"<p class='meta'><b>Training subjects.</b> {html.escape(meta['scoring'])}</p>",
    ]
    if meta.get("cancelled"):
        parts.append("<p class='warn'>The run was cancelled: the tables cover only the cases done before.</p>")
    n_err = int(per_case["error"].astype(bool).sum()) if len(per_case) else 0
    if n_err:
        parts.append(f"<p class='warn'>{n_err} case(s) failed and are not counted; see the error column of per_case.csv.</p>")
    parts += [
        "<h2>How to read this</h2>",
        f"<p class='note'>{EXPLANATION} {html.escape(meta['scoring'])}</p>",
        "<p class='meta'>Metrics (napari_pandg.metrics, pancreas = AMOS id 10 in prediction and "
        "ground truth): Dice (0-1), HD95 in mm (symmetric 95th-percentile Hausdorff distance on "
        f"the label grid), NSD at {DEFAULT_TOLERANCE_MM:g} mm. A missed or hallucinated pancreas "
        "gives Dice 0, NSD 0 and HD95 = the volume diagonal. Means are over cases.</p>",
        "<h2>Summary</h2>",
        _table(summary),
    ]
    for e in entries:
        d = e.model.description
        parts.append(f"<h2>{html.escape(e.key)}</h2>")
        facts = {
            "method": d.method,
            "architecture": f"{d.architecture} {d.arch_kwargs}" + (" + frozen features" if d.feature_extractor else ""),
            "training centers": ", ".join(d.domains.get("centers") or []) or "not recorded",
            "training sequences": ", ".join(d.domains.get("sequences") or []) or "not recorded",
            "validation Dice": _fmt(d.val_metrics.get("dice")) if d.val_metrics.get("dice") is not None else "–",
            "command": d.command or "not recorded",
            "checkpoint": str(e.model.path or e.spec),
            "created": d.created or "–",
            "train/val subjects from": e.split_source,
            "subject identity from": e.identity_source or "–",
            "excluded subjects": f"{len(excluded.get(e.key, []))}" + (
                f" ({', '.join(excluded[e.key][:20])}{' …' if len(excluded[e.key]) > 20 else ''})"
                if excluded.get(e.key) else ""),
        }  # fmt: skip
        parts.append("<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items()) + "</dl>")
        png = pngs.get(e.key)
        if png is not None and png.is_file():
            b64 = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f"<p><img alt='Dice heatmap {html.escape(e.key)}' src='data:image/png;base64,{b64}'></p>")
        parts.append("<p>Mean pancreas Dice (rows centers, columns sequences):</p>")
        parts.append(_matrix_table(matrices[e.key], counts[e.key]))
    parts += _shift_section(out_dir, pngs)
    if len(per_case) <= 400:
        cols = ["model", "subject", "center", "sequence", "domain_shift", "seen_in_training", "dice", "hd95", "nsd",
                "shift_score", "shift_flagged", "error"]  # fmt: skip
        parts += ["<h2>Per case</h2>", _table(per_case[[c for c in cols if c in per_case]])]
    else:
        parts.append(f"<h2>Per case</h2><p>{len(per_case)} rows: see per_case.csv.</p>")
    parts.append("</body></html>\n")
    return _write_text("\n".join(parts), out_dir / "report.html")


def _shift_section(out_dir: Path, pngs: Mapping[str, Path]) -> list[str]:
    """Report section: does the shift score warn of the failures (Dice < 0.5)?"""
    parts = ["<h2>Shift score: does it warn of the failures?</h2>",
             "<p class='note'>Every segmentation carries a shift score (napari_pandg.models.shift): how far the "
             "volume lies from the model's training domain (pooled bottleneck features against the reference "
             "stored in the checkpoint, the model's confidence, the predicted volume, image sanity); above 1 it "
             f"is flagged. AUROC: how well the score ranks the failed cases (Dice &lt; {FAIL_BELOW:g}) above the "
             "others (1 = perfect, 0.5 = no better than chance); sensitivity = failures flagged, "
             "specificity = good results not flagged.</p>"]  # fmt: skip
    table = out_dir / "shift_auroc.csv"
    if table.is_file() and table.stat().st_size > 2:
        parts.append(_table(pd.read_csv(table).round(3)))
    png = pngs.get("shift_roc")
    if png is not None and png.is_file():
        b64 = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<p><img alt='shift score ROC' src='data:image/png;base64,{b64}'></p>")
    return parts


# --------------------------------------------------------------------------- main entry
def run_benchmark(
    manifest: str | os.PathLike | pd.DataFrame,
    models: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    exclude_training_subjects: bool = True,
    save_predictions: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
    cancel: Any = None,
    max_cases_per_cell: int | None = None,
) -> BenchmarkResult:
    """Segment every labelled image of ``manifest`` with every model and tabulate pancreas
    Dice / HD95 / NSD per center x sequence; write the tables, heatmaps and ``report.html``
    to ``out_dir`` (see the module docstring).

    ``manifest``: an index CSV / phantom ``manifest.csv``, a dataset folder (indexed with
    :func:`~napari_pandg.io.build_index`) or a DataFrame with ``subject, center, sequence,
    image, label`` (and optionally ``label_map``). ``models``: registered names, checkpoint
    files or run folders. A non-empty ``out_dir`` is refused unless ``overwrite``.
    ``progress(done, total, text)`` is called after each model x case; ``cancel`` (a
    ``threading.Event`` or a callable returning True) stops early: the outputs then cover the
    cases done and ``result.cancelled`` is True. ``max_cases_per_cell`` scores at most that
    many cases per center x sequence and model (chosen deterministically by subject).
    Each image is loaded once and segmented once per model.
    """
    from napari_pandg.io import load_case, save_volume

    is_cancelled: Callable[[], bool] = (
        (lambda: False) if cancel is None else (cancel.is_set if hasattr(cancel, "is_set") else cancel)
    )
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {out_dir} is not empty; choose an empty folder or pass overwrite=True "
            "(CLI: --overwrite)"
        )
    if max_cases_per_cell is not None and int(max_cases_per_cell) < 1:
        raise ValueError(f"max_cases_per_cell must be >= 1 or None, got {max_cases_per_cell}")
    df, manifest_name = read_dataset(manifest)
    labelled = df[df["label"].notna()]
    if labelled.empty:
        raise ValueError(f"manifest {manifest_name}: no image has a label; nothing to benchmark")
    entries, device_used = _load_models(models, device)

    # ----- which cases each model scores
    plan: dict[int, list[int]] = {}
    excluded: dict[str, list[str]] = {}
    for mi, e in enumerate(entries):
        e.splits, e.split_source = model_subject_splits(e.model, df)
        e.status, e.identity_source = subject_status(e.model, e.splits, df)
        e.seen = {s for s, (seen, _, _) in e.status.items() if seen == "yes"}
        rows = labelled
        if exclude_training_subjects:  # the same person, or maybe (unknown): not scored
            maybe = {s for s, (seen, _, _) in e.status.items() if seen in ("yes", "unknown")}
            excluded[e.key] = sorted(s for s in maybe if s in set(labelled["subject"]))
            rows = rows[~rows["subject"].isin(maybe)]
        else:
            excluded[e.key] = []
        rows = _subsample(rows, max_cases_per_cell)
        for ri in rows.index:
            plan.setdefault(int(ri), []).append(mi)
    total = sum(len(v) for v in plan.values())

    out_dir.mkdir(parents=True, exist_ok=True)
    pred_dirs: dict[str, Path] = {}
    if save_predictions:
        for e in entries:
            pred_dirs[e.key] = out_dir / "predictions" / e.safe
            pred_dirs[e.key].mkdir(parents=True, exist_ok=True)
    used_names: set[Path] = set()

    # ----- the per-case loop: image-major, so an image is read once; rows sorted by image so
    # repeated images are adjacent and their predictions are reused (the cache holds one image)
    order = sorted(plan, key=lambda i: (str(df.at[i, "image"]), i))
    records: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    cache_image: str | None = None
    cache: dict[int, tuple[Any, float, str]] = {}
    done, cancelled = 0, False
    for ri in order:
        if is_cancelled():
            cancelled = True
            break
        row = df.loc[ri].to_dict()
        if str(row["image"]) != cache_image:
            cache_image, cache = str(row["image"]), {}
        try:
            image, label = load_case(row)
            load_error = ""
        except (ValueError, OSError) as exc:
            image = label = None
            load_error = f"{type(exc).__name__}: {exc}"
        for mi in plan[ri]:
            e = entries[mi]
            d = e.model.description
            shift = domain_shift(row["center"], row["sequence"], d.domains)
            rec: dict[str, Any] = {
                "model": e.key, "method": d.method, "subject": row["subject"], "center": row["center"],
                "sequence": row["sequence"], "in_domain": shift == "in_domain", "domain_shift": shift,
                "seen_in_training": e.status[row["subject"]][0], "model_split": e.status[row["subject"]][1],
                "seen_evidence": e.status[row["subject"]][2],
                "image": row["image"], "label": row["label"], "prediction": "", "error": load_error,
            }  # fmt: skip
            if not load_error:
                try:
                    if mi not in cache:
                        t0 = time.perf_counter()
                        seg = segment_volume(e.model, image, cancel=is_cancelled)
                        dt = time.perf_counter() - t0
                        ppath = ""
                        if save_predictions:
                            target = _prediction_path(pred_dirs[e.key], row, used_names)
                            ppath = str(save_volume(seg, target, overwrite=True, like=image))
                        cache[mi] = (seg, dt, ppath)
                    seg, dt, ppath = cache[mi]
                    m = evaluate_volumes(seg, label, labels=(PANCREAS,))[0]
                    rec.update({k: m[k] for k in ("dice", "hd95", "nsd", "empty_gt", "empty_pred",
                                                  "volume_gt_ml", "volume_pred_ml")})  # fmt: skip
                    rep = seg.metadata.get("shift") or {}
                    rec.update({"seconds": round(dt, 3), "prediction": ppath,
                                "shift_score": rep.get("score"), "shift_flagged": rep.get("flagged"),
                                "shift_reasons": "; ".join(rep.get("reasons") or [])})  # fmt: skip
                    for comp in ("feature", "confidence", "volume", "image"):
                        rec[f"shift_{comp}"] = (rep.get("components") or {}).get(comp)
                    if "shift_signals" in seg.metadata:  # raw signals: refit or study the score offline
                        signals.append({"model": e.key, "image": row["image"], "dice": rec["dice"],
                                        **seg.metadata["shift_signals"]})  # fmt: skip
                except SegmentationCancelled:
                    cancelled = True
                    break
                except (ValueError, OSError, RuntimeError) as exc:
                    rec["error"] = f"{type(exc).__name__}: {exc}"
            records.append(rec)
            done += 1
            if progress is not None:
                progress(done, total, f"{e.key}: {row['subject']} {row['center']}/{row['sequence']}")
        if cancelled:
            break

    # ----- tables
    per_case = pd.DataFrame.from_records(records).reindex(columns=list(PER_CASE_COLUMNS))
    if len(per_case):
        per_case["error"] = per_case["error"].fillna("").astype(str)
        per_case = per_case.sort_values(["model", "center", "sequence", "subject"], kind="stable")
        per_case = per_case.reset_index(drop=True)
    else:
        per_case["error"] = per_case["error"].astype(str)
    centers = sorted(str(c) for c in labelled["center"].unique())
    sequences = list(dict.fromkeys(str(s) for s in labelled["sequence"]))
    matrices: dict[str, pd.DataFrame] = {}
    counts: dict[str, pd.DataFrame] = {}
    pngs: dict[str, Path] = {}
    summary_rows = []
    for e in entries:
        rows = per_case[per_case["model"] == e.key]
        mean, n = dice_matrix(rows, centers, sequences)
        matrices[e.key], counts[e.key] = mean, n
        _write_csv(mean, out_dir / f"matrix_{e.safe}_dice.csv", index=True)
        _write_csv(n, out_dir / f"matrix_{e.safe}_n.csv", index=True)
        d = e.model.description
        pngs[e.key] = plot_matrix(
            mean, n, out_dir / f"matrix_{e.safe}_dice.png", title=f"{e.key} ({d.method}): pancreas Dice\noutlined: training domain",
            train_centers=d.domains.get("centers") or [], train_sequences=d.domains.get("sequences") or [],
        )  # fmt: skip
        summary_rows.append(_summary_row(e, rows, len(excluded.get(e.key, []))))
    summary = pd.DataFrame(summary_rows)
    ok = per_case[per_case["dice"].notna()] if len(per_case) else per_case
    cells = summarize(ok, by=("model", "center", "sequence")) if len(ok) else pd.DataFrame()
    _write_csv(per_case, out_dir / "per_case.csv")
    _write_csv(summary, out_dir / "summary.csv")
    _write_csv(cells, out_dir / "cells.csv")
    if signals:
        import json

        def finite(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        text = "".join(json.dumps({k: finite(v) for k, v in r.items()}, default=str) + "\n" for r in signals)
        _write_text(text, out_dir / "shift_signals.jsonl")
    shift_table = shift_auroc_table(ok) if len(ok) else pd.DataFrame()
    _write_csv(shift_table, out_dir / "shift_auroc.csv")
    if len(ok) and ok["shift_score"].notna().any():
        pngs["shift_roc"] = plot_roc(ok, out_dir / "shift_roc.png")
    meta = {"manifest": manifest_name, "n_cases": int(len(labelled)), "device": device_used,
            "max_cases_per_cell": max_cases_per_cell, "exclude": exclude_training_subjects,
            "cancelled": cancelled,
            "scoring": scoring_statement(entries, per_case, excluded, exclude_training_subjects)}  # fmt: skip
    report = _write_report(out_dir, entries, per_case, matrices, counts, summary, pngs, meta, excluded)
    return BenchmarkResult(
        per_case=per_case, matrices=matrices, counts=counts, summary=summary, report=report,
        out_dir=out_dir, cancelled=cancelled, excluded=excluded,
        split_sources={e.key: e.split_source for e in entries}, scoring=meta["scoring"],
    )  # fmt: skip


def format_matrix(mean: pd.DataFrame, n: pd.DataFrame) -> str:
    """A matrix as text: ``0.812 (3)`` per cell, ``-`` for empty cells."""
    cells = mean.copy().astype(object)
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            v = mean.iloc[i, j]
            cells.iloc[i, j] = "-" if pd.isna(v) else f"{v:.3f} ({int(n.iloc[i, j])})"
    return cells.to_string()


def run_benchmark_cli(
    manifest: str | os.PathLike,
    models: str,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    device: str = "auto",
    max_cases_per_cell: int | None = None,
    exclude_training_subjects: bool = True,
    save_predictions: bool = False,
) -> Path:
    """``pandg benchmark``: ``models`` is a comma-separated list; prints progress, the
    matrices (mean Dice (n)) and the summary; returns the ``report.html`` path."""
    names = [m.strip() for m in str(models).split(",") if m.strip()]
    t0 = time.perf_counter()

    def prog(done: int, total: int, text: str) -> None:
        print(f"[{done}/{total}] {text}", flush=True)

    res = run_benchmark(
        manifest, names, out_dir, overwrite=overwrite, device=device, progress=prog,
        max_cases_per_cell=max_cases_per_cell, exclude_training_subjects=exclude_training_subjects,
        save_predictions=save_predictions,
    )  # fmt: skip
    for key, mean in res.matrices.items():
        row = res.summary[res.summary["model"] == key].iloc[0]
        print(f"\n{key} ({row['method']}; trained on centers {row['train_centers'] or '?'}, "
              f"sequences {row['train_sequences'] or '?'}): mean pancreas Dice (n)")  # fmt: skip
        print(format_matrix(mean, res.counts[key]))
        print("  " + ", ".join(
            f"{s.replace('_', '-')} {_fmt(row[f'dice_{s}'])} (n={row[f'n_{s}']})" for s in SHIFTS))  # fmt: skip
        if res.excluded.get(key):
            print(f"  excluded {len(res.excluded[key])} training/validation subject(s) ({res.split_sources[key]})")
    sh_path = res.out_dir / "shift_auroc.csv"
    sh = pd.read_csv(sh_path) if sh_path.is_file() and sh_path.stat().st_size > 2 else None
    if sh is not None and len(sh):
        print(f"\nshift score as a warning of Dice < {FAIL_BELOW:g} (flag: score > 1):")
        for r in sh.itertuples():
            print(f"  {r.model}: AUROC {_fmt(r.auroc)}, {r.n_flagged} of {r.n} flagged; "
                  f"{r.n_fail} failures, sensitivity {_fmt(r.sensitivity)}, specificity {_fmt(r.specificity)}")  # fmt: skip
    print(f"\n{res.scoring}")
    n_err = int(res.per_case["error"].astype(bool).sum()) if len(res.per_case) else 0
    if n_err:
        print(f"\nwarning: {n_err} case(s) failed; see the error column of {res.out_dir / 'per_case.csv'}")
    print(f"\nbenchmark finished in {time.perf_counter() - t0:.1f} s: {res.report}", flush=True)
    return res.report


__all__ = [
    "EXPLANATION",
    "PER_CASE_COLUMNS",
    "SEEN",
    "SHIFTS",
    "BenchmarkResult",
    "dice_matrix",
    "domain_shift",
    "format_matrix",
    "manifest_fingerprints",
    "model_subject_splits",
    "plot_matrix",
    "run_benchmark",
    "run_benchmark_cli",
    "scoring_statement",
    "subject_identity",
    "subject_status",
    "synth_command_fingerprints",
    "training_fingerprints",
]
