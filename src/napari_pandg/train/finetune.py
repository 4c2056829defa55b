"""Few-shot fine-tuning on labels corrected in the viewer (Qt-free; the napari widget calls this).

:func:`prepare_finetune` writes the (image, corrected label) pairs as NIfTI files plus a
manifest into a run folder and returns a ``finetune`` :class:`TrainConfig` built from the base
model's own description (architecture, spacing, patch size, label map), so that the usual
trainer (:func:`napari_pandg.train.train`: resume, metrics.jsonl, best/last checkpoints) does
the work. :func:`install_model` copies the result into the user model folder, where
``pandg models``, ``pandg segment`` and the Segment widget find it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_pandg.train.config import ConfigError, TrainConfig, load_config
from napari_pandg.volume import Volume


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def prepare_finetune(
    pairs: Sequence[tuple[Volume, Volume]],
    base_model: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    label_value: int | None = None,
    epochs: int = 10,
    steps_per_epoch: int = 20,
    lr: float = 2e-4,
    name: str | None = None,
    overwrite: bool = False,
) -> TrainConfig:
    """Write ``pairs`` into ``run_dir/data`` and return the fine-tuning config.

    ``label_value``: the value of the structure in the corrected label layers (e.g. 1 for a
    SAM ``current_object`` layer); it is written as the AMOS id the model predicts for class 1.
    ``None`` keeps the layers' ids as they are (they must be the model's AMOS ids). With two or
    more pairs one is held out for validation; with one, training runs without validation and
    the last checkpoint is the result.
    """
    from napari_pandg.io import save_volume
    from napari_pandg.models import read_description, resolve_model

    if not pairs:
        raise ConfigError("fine-tuning needs at least one (image, corrected label) pair")
    base = Path(resolve_model(base_model))
    desc = read_description(base)
    run = Path(run_dir).expanduser()
    if run.exists() and any(run.iterdir()) and not overwrite:
        raise FileExistsError(f"{run} is not empty; choose a new run folder or allow overwriting")
    data = run / "data"
    data.mkdir(parents=True, exist_ok=True)
    amos_ids = {int(a) for c, a in desc.label_map.items() if int(c) > 0}
    target = min(amos_ids) if amos_ids else 10
    rows = []
    for n, (image, label) in enumerate(pairs):
        if image.shape != label.shape:
            raise ConfigError(
                f"pair {n + 1}: label {label.shape} is not on the image grid {image.shape}; use the "
                "label layer drawn on this image"
            )
        if not np.allclose(image.affine, label.affine, atol=1e-3):
            raise ConfigError(f"pair {n + 1}: label and image affines differ; use the label drawn on this image")
        lab = np.asarray(label.array)
        if label_value is not None:
            mask = lab == int(label_value)
            if not mask.any():
                raise ConfigError(f"pair {n + 1}: the label layer holds no voxel of value {label_value}")
            lab = np.where(mask, target, 0).astype(np.uint8)
        else:
            present = {int(v) for v in np.unique(lab)} - {0}
            if not present & amos_ids:
                raise ConfigError(
                    f"pair {n + 1}: the label layer holds ids {sorted(present)[:10]} but the model predicts "
                    f"{sorted(amos_ids)}; set the label value of the corrected structure"
                )
        subject = f"ft{n + 1:02d}_{_safe(image.subject or 'case')}"
        img_p = data / f"{subject}_image.nii.gz"
        lab_p = data / f"{subject}_label.nii.gz"
        save_volume(image, img_p, overwrite=overwrite)
        save_volume(label.with_array(lab, is_label=True), lab_p, overwrite=overwrite, like=image)
        rows.append({"subject": subject, "center": image.center or "user", "sequence": image.sequence or "user",
                     "image": img_p.name, "label": lab_p.name})  # fmt: skip
    manifest = data / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    centers = sorted({r["center"] for r in rows})
    sequences = sorted({r["sequence"] for r in rows})
    label_map = {int(a): int(c) for c, a in desc.label_map.items() if int(c) > 0}
    cfg = load_config(None, [
        f"name={_safe(name or f'{desc.name}_ft')}", f"out_dir={run}", f"init_checkpoint={base}",
        "method.name=finetune", f"data.manifest={manifest}", f"data.train_centers={centers}",
        f"data.train_sequences={sequences}", "data.test_fraction=0", "data.val_fraction=0.2",
        f"data.spacing={list(desc.spacing)}", f"data.patch_size={list(desc.patch_size)}",
        f"optim.epochs={int(epochs)}", f"optim.steps_per_epoch={int(steps_per_epoch)}", f"optim.lr={float(lr)}",
        "optim.warmup_steps=0", f"model.architecture={desc.architecture}",
        *(["resume=false", "overwrite=true"] if overwrite else []),
    ])  # fmt: skip
    cfg.data.label_map = label_map
    cfg.model.kwargs = dict(desc.arch_kwargs)
    return cfg


def install_model(checkpoint: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """Copy a fine-tuned checkpoint into the user model folder as ``<name>.pt`` (atomically)."""
    from napari_pandg.models.registry import user_model_dir

    src = Path(checkpoint)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no checkpoint to install (did training finish an epoch?)")
    dst = user_model_dir() / f"{_safe(name)}.pt"
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; choose another name or allow overwriting")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst
