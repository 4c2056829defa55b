"""Montages of evaluation subjects: one axial slice through the pancreas per sequence
(radiological display: patient right on the image left, anterior up), with label contours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_pandg.evalsim.anatomy import PANC
from napari_pandg.volume import Volume


def canonical(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Array reoriented to the closest RAS axes and its spacing (oblique grids stay tilted)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(vol.affine)
    arr = nib.orientations.apply_orientation(vol.array, ornt)
    sp = np.zeros(3)
    for src, (dst, _flip) in enumerate(ornt):
        sp[int(dst)] = vol.spacing[src]
    return arr, sp


def _axial(a2: np.ndarray) -> np.ndarray:
    return a2.T[::-1, ::-1]


def _slice_index(lab: np.ndarray) -> int:
    idx = np.argwhere(lab == PANC)
    if len(idx) == 0:
        return lab.shape[2] // 2
    ks, counts = np.unique(idx[:, 2], return_counts=True)
    return int(ks[np.argmax(counts)])


def _panel(ax, img: Volume, lab: Volume, contour: bool, title: str, organs: bool = True) -> None:
    a, sp = canonical(img)
    lab_a, _ = canonical(lab)
    k = _slice_index(lab_a)
    im2 = _axial(a[:, :, k])
    l2 = _axial(lab_a[:, :, k])
    body = l2 > 0
    v = im2[body] if body.any() else im2
    lo, hi = np.percentile(v, [0.5, 99.5])
    extent = (0, im2.shape[1] * sp[0], 0, im2.shape[0] * sp[1])
    ax.imshow(im2, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), extent=extent, interpolation="nearest")
    if contour:
        if organs:
            others = np.isin(l2, (1, 2, 3, 4, 6, 7, 8, 9, 13, 16, 23))
            ax.contour(np.flipud(others.astype(float)), levels=[0.5], colors=["#3fa7ff"], linewidths=0.4,
                       extent=extent)  # fmt: skip
        ax.contour(np.flipud((l2 == PANC).astype(float)), levels=[0.5], colors=["yellow"], linewidths=0.9,
                   extent=extent)  # fmt: skip
    ax.set_title(title, color="white", fontsize=8)
    ax.set_axis_off()


def montage(subject, path, sequences: Sequence[str] | None = None, organs: bool = True) -> Path:
    """Two rows: each sequence's axial slice through the pancreas, plain and with contours
    (pancreas yellow, other organs blue)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    seqs = list(sequences or subject.images)
    fig, axs = plt.subplots(2, len(seqs), figsize=(3.1 * len(seqs), 6.4), squeeze=False, facecolor="black")
    for c, s in enumerate(seqs):
        img, lab = subject.images[s], subject.labels[s]
        md = img.metadata
        t = f"{subject.subject} {s}\n{md.get('sequence_name', '')[:28]}\n{md.get('field_strength', '')} T {md.get('storage', '')}"
        _panel(axs[0, c], img, lab, False, t)
        _panel(axs[1, c], img, lab, True, "labels", organs)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, facecolor="black")
    plt.close(fig)
    return path


def montage_centers(subjects: Sequence, path, sequences: Sequence[str] | None = None, dpi: int = 80) -> Path:
    """One row per subject (e.g. one per center), one column per sequence, pancreas contour."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    seqs = list(sequences or subjects[0].images)
    fig, axs = plt.subplots(len(subjects), len(seqs), figsize=(2.5 * len(seqs), 2.4 * len(subjects)),
                            squeeze=False, facecolor="black")  # fmt: skip
    for r, subj in enumerate(subjects):
        for c, s in enumerate(seqs):
            md = subj.images[s].metadata
            _panel(axs[r, c], subj.images[s], subj.labels[s], True,
                   f"{subj.subject} {s} ({md.get('field_strength', '')} T)", organs=False)  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi, facecolor="black")
    plt.close(fig)
    return path
