"""Quick-look montages of phantom subjects (matplotlib, Agg; radiological display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_pandg.labels import PANCREAS
from napari_pandg.volume import Volume


def _canonical(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Array reoriented to RAS+ (axis 0 increases toward patient right) and its spacing."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(vol.affine)
    arr = nib.orientations.apply_orientation(vol.array, ornt)
    sp = np.zeros(3)
    for src, (dst, _flip) in enumerate(ornt):
        sp[int(dst)] = vol.spacing[src]
    return arr, sp


def _axial(arr2d_xy: np.ndarray) -> np.ndarray:
    # rows: anterior at the top; columns: patient right on the image left (radiological)
    return arr2d_xy.T[::-1, ::-1]


def _window(img: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    v = img[mask] if mask is not None and mask.any() else img
    lo, hi = np.percentile(v, [0.5, 99.5])
    return float(lo), float(max(hi, lo + 1e-6))


def _panc_center(lab: np.ndarray) -> tuple[int, int, int]:
    idx = np.argwhere(lab == PANCREAS)
    if len(idx) == 0:
        return tuple(s // 2 for s in lab.shape)
    return tuple(int(round(v)) for v in np.median(idx, axis=0))


def montage(subject, path) -> Path:
    """One row per sequence: axial at the pancreas, coronal, axial with the pancreas contour."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    seqs = list(subject.images)
    fig, axs = plt.subplots(len(seqs), 3, figsize=(13.5, 3.9 * len(seqs)), squeeze=False,
                            facecolor="black")
    for r, seq in enumerate(seqs):
        img, sp = _canonical(subject.images[seq])
        lab, _ = _canonical(subject.labels[seq])
        ci, cj, ck = _panc_center(lab)
        body = lab > 0
        lo, hi = _window(img, body)
        ax_img = _axial(img[:, :, ck])
        asp_ax = sp[1] / sp[0]
        axs[r, 0].imshow(ax_img, cmap="gray", vmin=lo, vmax=hi, aspect=asp_ax, interpolation="nearest")
        cor = img[:, cj, :].T[::-1, ::-1]
        axs[r, 1].imshow(cor, cmap="gray", vmin=lo, vmax=hi, aspect=sp[2] / sp[0], interpolation="nearest")
        axs[r, 2].imshow(ax_img, cmap="gray", vmin=lo, vmax=hi, aspect=asp_ax, interpolation="nearest")
        axs[r, 2].contour(_axial((lab[:, :, ck] == PANCREAS).astype(float)), levels=[0.5],
                          colors="yellow", linewidths=0.8)
        meta = subject.images[seq].metadata
        axs[r, 0].set_title(f"{subject.subject} {subject.center} {seq} ({meta.get('sequence_name', '')},"
                            f" {meta.get('field_strength', '')} T) axial", color="w", fontsize=9)
        axs[r, 1].set_title("coronal", color="w", fontsize=9)
        axs[r, 2].set_title(f"pancreas label ({subject.pancreas_volume_ml:.0f} mL)", color="w", fontsize=9)
        for a in axs[r]:
            a.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, facecolor="black")
    plt.close(fig)
    return path


def montage_centers(subjects, path) -> Path:
    """Grid center x sequence: one axial slice through the pancreas each."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    subjects = list(subjects)
    seqs = []
    for s in subjects:
        for q in s.images:
            if q not in seqs:
                seqs.append(q)
    fig, axs = plt.subplots(len(subjects), len(seqs), figsize=(3.6 * len(seqs), 3.2 * len(subjects)),
                            squeeze=False, facecolor="black")
    for r, s in enumerate(subjects):
        for c, seq in enumerate(seqs):
            a = axs[r, c]
            a.set_axis_off()
            if seq not in s.images:
                continue
            img, sp = _canonical(s.images[seq])
            lab, _ = _canonical(s.labels[seq])
            ck = _panc_center(lab)[2]
            lo, hi = _window(img, lab > 0)
            a.imshow(_axial(img[:, :, ck]), cmap="gray", vmin=lo, vmax=hi, aspect=sp[1] / sp[0],
                     interpolation="nearest")
            m = s.images[seq].metadata
            a.set_title(f"{s.center}: {seq} ({m.get('field_strength', '')} T {m.get('vendor', '')})",
                        color="w", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, facecolor="black")
    plt.close(fig)
    return path
