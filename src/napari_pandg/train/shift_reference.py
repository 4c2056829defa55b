"""Fit and calibrate a model's shift-score reference from its training run.

:func:`build_shift_reference` segments training-domain volumes with the model (through the
full inference path, exactly as a user's volume goes) and fits the reference of
:mod:`napari_pandg.models.shift` on them:

* streamed runs (``data.source: phantom``): ``n_fit`` fresh subjects of the run's own stream
  (indices far beyond any the training reached, so none was trained on), each as its
  source-domain image and, for methods that trained on random-contrast acquisitions, one
  rendering; calibration on the run's validation subjects plus ``n_cal_extra`` further
  subjects;
* manifest runs: the run's training subjects (training domain) to fit, its validation
  subjects to calibrate.

:func:`reference_from_manifest` does the same from any list of training-domain volumes (e.g.
new subjects of the generator, center and sequence a shipped model was trained on, when its
run folder is gone): the last ``n_cal`` rows calibrate, the others fit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_pandg.models.checkpoint import DEFAULT_NORMALIZATION, SegModel
from napari_pandg.models.shift import ShiftSignals, fit_reference

#: first stream index used for reference subjects (training runs stay far below it)
REFERENCE_BASE = 10_000_000


def _signals(model: SegModel, vol: Any) -> ShiftSignals:
    from napari_pandg.models.inference import segment_volume

    meta = segment_volume(model, vol).metadata["shift_signals"]
    return ShiftSignals(**meta)


def build_shift_reference(
    model: SegModel, run_dir: str | os.PathLike, n_fit: int = 30, n_cal_extra: int = 8,
    progress: Callable[[int, int, str], Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The ``ModelDescription.shift`` entry for ``model`` trained in ``run_dir``."""
    from napari_pandg.models.inference import shift_layer
    from napari_pandg.train.config import load_config
    from napari_pandg.train.methods import make_method

    run = Path(run_dir)
    cfg = load_config(run / "config.yaml")
    layer = shift_layer(model)
    if layer is None:
        raise ValueError(f"{model.name}: the network has no 3D feature maps to fit a shift reference on")
    fit: list[ShiftSignals] = []
    cal: list[ShiftSignals] = []
    if cfg.data.source == "phantom":
        from napari_pandg.train.stream import PhantomStream

        renders = 1 if make_method(cfg).render_prob() > 0 else 0
        ps = PhantomStream(cfg.data, cfg.seed, DEFAULT_NORMALIZATION, renders=bool(renders))
        n_val = int(ps.settings["val_subjects"])
        jobs = [("fit", REFERENCE_BASE + i) for i in range(n_fit)]
        jobs += [("cal", -(i + 1)) for i in range(n_val)]
        jobs += [("cal", REFERENCE_BASE + n_fit + i) for i in range(n_cal_extra)]
        aug: list[ShiftSignals] = []
        for done, (part, k) in enumerate(jobs, 1):
            img, _lab, rendered, info = ps.volumes(k, renders=renders)
            (fit if part == "fit" else cal).append(_signals(model, img))
            aug += [_signals(model, vol) for vol, _ in rendered]
            if progress is not None:
                progress(done, len(jobs), f"{part} {info['subject']}")
        source = (f"phantom stream of the run (seed {cfg.seed}): {n_fit} fresh subjects' source-domain images to fit"
                  f"{f', {len(aug)} random-contrast acquisitions (one per subject) widen the feature statistics' if aug else ''}; "
                  f"{n_val} validation + {n_cal_extra} further subjects' source-domain images calibrate")  # fmt: skip
        return fit_reference(fit, cal, layer, source, augmented=aug)
    else:
        from napari_pandg.io import load_volume
        from napari_pandg.train.data import read_manifest, read_split, select_rows

        df = read_manifest(cfg.data.manifest)
        split = read_split(run / "split.csv")
        parts = {
            "fit": select_rows(df, split, "train", cfg.data.train_centers, cfg.data.train_sequences, labeled=False),
            "cal": select_rows(df, split, "val", cfg.data.val_centers or cfg.data.train_centers,
                               cfg.data.val_sequences or cfg.data.train_sequences, labeled=False),
        }  # fmt: skip
        total = sum(len(v) for v in parts.values())
        done = 0
        for part, rows in parts.items():
            for _, r in rows.iterrows():
                (fit if part == "fit" else cal).append(_signals(model, load_volume(r["image"])))
                done += 1
                if progress is not None:
                    progress(done, total, f"{part} {r['subject']}")
        source = f"{cfg.data.manifest}: {len(parts['fit'])} training-split volumes to fit, {len(parts['cal'])} validation to calibrate"
    return fit_reference(fit, cal, layer, source)


def reference_from_manifest(
    model: SegModel, manifest: str | os.PathLike, n_cal: int = 8,
    progress: Callable[[int, int, str], Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The ``ModelDescription.shift`` entry fitted on the volumes of ``manifest`` (all of them
    must come from the model's training domain: same sequence, scanner family, anatomy)."""
    from napari_pandg.io import load_volume, read_index
    from napari_pandg.models.inference import shift_layer

    layer = shift_layer(model)
    if layer is None:
        raise ValueError(f"{model.name}: the network has no 3D feature maps to fit a shift reference on")
    df = read_index(manifest)
    if len(df) < n_cal + 5:
        raise ValueError(f"{manifest}: {len(df)} volumes; a shift reference needs >= {n_cal + 5} "
                         f"({n_cal} to calibrate, >= 5 to fit)")  # fmt: skip
    sig: list[ShiftSignals] = []
    for i, r in enumerate(df.to_dict("records")):
        sig.append(_signals(model, load_volume(r["image"])))
        if progress is not None:
            progress(i + 1, len(df), f"{'fit' if i < len(df) - n_cal else 'cal'} {r['subject']} {r['sequence']}")
    seqs = sorted(set(df["sequence"].astype(str)))
    centers = sorted(set(df["center"].astype(str)))
    source = (f"{Path(manifest).name}: {len(df) - n_cal} training-domain volumes to fit, {n_cal} to calibrate "
              f"(centers {','.join(centers)}, sequences {','.join(seqs)})")  # fmt: skip
    return fit_reference(sig[:-n_cal], sig[-n_cal:], layer, source)
