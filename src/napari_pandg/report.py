"""Dataset-level figures and tables (matplotlib Agg, no Qt): montages and contrast tables.

They work from a dataset index (files on disk), so they serve the phantom, real datasets and,
later, model outputs alike.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from napari_pandg.io import load_volume
from napari_pandg.io.napari_layers import to_napari
from napari_pandg.labels import IDS, PANCREAS
from napari_pandg.volume import Volume

#: organs whose median intensity the contrast table reports
CONTRAST_ORGANS = ("pancreas", "liver", "spleen", "visceral_fat", "muscle", "aorta", "gallbladder")


def _atomic_savefig(fig, path: Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, facecolor="black")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def pancreas_slice(label_sar: np.ndarray) -> int:
    """Axial index (napari S axis) with the largest pancreas area; middle slice if none."""
    area = (label_sar == PANCREAS).sum(axis=(1, 2))
    return int(np.argmax(area)) if area.any() else label_sar.shape[0] // 2


def _display_slice(vol: Volume, lab: Volume | None) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """Radiological axial slice (anterior up, patient right on the left) and its pixel aspect."""
    img, kw = to_napari(vol)
    lab_arr = to_napari(lab)[0] if lab is not None else None
    z = pancreas_slice(lab_arr) if lab_arr is not None else img.shape[0] // 2
    # napari axes (S, A, R): rows = A (flip so anterior is up), cols = R (flip: patient right left)
    sl = img[z][::-1, ::-1]
    ls = lab_arr[z][::-1, ::-1] if lab_arr is not None else None
    scale = kw["scale"]
    return sl, ls, (abs(scale[1]), abs(scale[2]))


def center_sequence_montage(index: pd.DataFrame, path: str | Path, *, subject_per_center: int = 0) -> Path:
    """One axial slice at the pancreas per (center, sequence): rows centers, columns sequences.

    The pancreas label is drawn as a yellow contour over the image.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    centers = sorted(index["center"].astype(str).unique())
    sequences = list(dict.fromkeys(index["sequence"].astype(str)))
    fig, axes = plt.subplots(
        len(centers), len(sequences), figsize=(2.6 * len(sequences), 2.3 * len(centers)), squeeze=False
    )
    fig.patch.set_facecolor("black")
    for r, center in enumerate(centers):
        rows_c = index[index["center"].astype(str) == center]
        subjects = sorted(rows_c["subject"].astype(str).unique())
        subject = subjects[min(subject_per_center, len(subjects) - 1)]
        for c, seq in enumerate(sequences):
            ax = axes[r, c]
            ax.set_axis_off()
            row = rows_c[(rows_c["subject"].astype(str) == subject) & (rows_c["sequence"].astype(str) == seq)]
            if row.empty:
                continue
            row = row.iloc[0]
            vol = load_volume(row["image"])
            lab = load_volume(row["label"], is_label=True) if isinstance(row.get("label"), str) else None
            sl, ls, (sy, sx) = _display_slice(vol, lab)
            lo, hi = np.percentile(sl[sl > 0], [0.5, 99.5]) if (sl > 0).any() else (0, 1)
            ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, aspect=sy / sx, interpolation="nearest")
            if ls is not None and (ls == PANCREAS).any():
                ax.contour(ls == PANCREAS, levels=[0.5], colors=["yellow"], linewidths=0.7)
            ax.set_title(f"{center} · {seq}", color="white", fontsize=8)
    fig.tight_layout(pad=0.3)
    out = _atomic_savefig(fig, Path(path))
    plt.close(fig)
    return out


def contrast_table(index: pd.DataFrame, organs: tuple[str, ...] = CONTRAST_ORGANS) -> pd.DataFrame:
    """Median intensity per organ for every image, and the pancreas-to-organ ratios.

    This is the quantitative face of the sequence shift: the pancreas is brighter than fat on
    fat-suppressed T1 and darker than fat on in-phase and T2 images.
    """
    from scipy import ndimage

    records = []
    for _, row in index.iterrows():
        if not isinstance(row.get("label"), str):
            continue
        img = load_volume(row["image"]).array
        lab = load_volume(row["label"], is_label=True).array
        rec: dict[str, object] = {k: row[k] for k in ("subject", "center", "sequence")}
        for organ in organs:
            mask = lab == IDS[organ]
            core = ndimage.binary_erosion(mask, iterations=1)
            vals = img[core if core.sum() >= 20 else mask]
            rec[organ] = float(np.median(vals)) if vals.size else np.nan
        ref = rec["pancreas"]
        for organ in organs[1:]:
            denom = rec[organ]
            rec[f"pancreas/{organ}"] = float(ref / denom) if denom and not np.isnan(denom) else np.nan
        records.append(rec)
    return pd.DataFrame.from_records(records)
