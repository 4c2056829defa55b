"""Mask post-processing shared by the DG models and the SAM engine.

:func:`largest_connected_component` is the anatomical prior "the pancreas is one organ":
MedSAM2's reference inference keeps the largest 3D component (``getLargestCC``), and nnU-Net
removes all but the largest component of a class when that does not lower validation Dice.
A trained model's checkpoint says which of its output classes get it
(``ModelDescription.postprocess = {"largest_component": [1]}``); :func:`apply_postprocess`
applies that on the model grid.

Written on ``scipy.ndimage.label`` rather than MONAI's ``KeepLargestConnectedComponent``
because MONAI's needs scikit-image or cuCIM, which the command-line install does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: post-processing steps a checkpoint may name
POSTPROCESS_STEPS = ("largest_component",)


def largest_connected_component(mask: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Largest 3D connected component (full connectivity, as MedSAM2 ``getLargestCC``).

    ``keep`` (bool, same shape): components touching it are kept as well (used for corrections).
    """
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m.copy()
    labels, n = ndimage.label(m, structure=np.ones((3,) * m.ndim, dtype=bool))
    if n <= 1:
        return m.copy()
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    keep_ids = {int(np.argmax(counts))}
    if keep is not None:
        keep_ids.update(int(i) for i in np.unique(labels[keep & m]) if i)
    return np.isin(labels, sorted(keep_ids))


def validate_postprocess(spec: Mapping[str, Any], out_channels: int, what: str = "model") -> dict[str, Any]:
    """A checked copy of a checkpoint's ``postprocess`` dict; ValueError names what is wrong."""
    out: dict[str, Any] = {}
    for key, val in dict(spec or {}).items():
        if key not in POSTPROCESS_STEPS:
            raise ValueError(f"{what}: unknown postprocess step {key!r}; known: {', '.join(POSTPROCESS_STEPS)}")
        classes = sorted({int(c) for c in (val or [])})
        bad = [c for c in classes if not 1 <= c < out_channels]
        if bad:
            raise ValueError(
                f"{what}: postprocess {key} names output index(es) {bad}; the model's foreground "
                f"outputs are 1..{out_channels - 1}"
            )
        out[key] = classes
    return out


def apply_postprocess(index_map: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Apply a checkpoint's post-processing to an output-index map (model grid); a new array."""
    out = np.array(index_map, copy=True)
    for c in spec.get("largest_component", []) or []:
        m = out == c
        if m.any():
            out[m & ~largest_connected_component(m)] = 0
    return out
