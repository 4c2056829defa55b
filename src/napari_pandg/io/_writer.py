"""napari writer contribution (npe2): labels (and images) to NIfTI.

``write_labels(path, data, meta)`` maps the (S, A, R) layer back to the source image's
storage order and writes it with that image's affine and header
(:func:`~napari_pandg.io.napari_layers.from_napari` + :func:`~napari_pandg.io.nifti.save_volume`),
so the result overlays the image in any NIfTI viewer. The geometry comes from the layer
metadata written by the napari-pandg reader (copy the image layer's metadata onto labels
you create). Without it an RAS-aligned affine is built from the layer's scale/translate,
with a :class:`~napari_pandg.io.errors.MissingGeometryWarning`.

Overwrite policy: napari's save dialog has already asked the user before replacing a
file, so the writer replaces ``path`` when it exists (atomically: the old file stays intact
if writing fails). Library and CLI code call :func:`save_volume` with ``overwrite=False``.
One exception: a labels layer is never written over the image file it was drawn on (the
layer metadata name it), whatever the dialog said. Bad layers (not 3D, complex, non-integer
or negative label ids, ids above 65535, a shape that is not the source image's grid) raise
:class:`~napari_pandg.io.errors.PandgIOError` naming the target before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_pandg.io.errors import PandgIOError
from napari_pandg.io.napari_layers import from_napari
from napari_pandg.io.nifti import is_nifti_path, save_volume
from napari_pandg.io.safety import check_not_input


def _target(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if is_nifti_path(p) else p.with_name(p.name + ".nii.gz")


def _check_data(target: Path, data: Any, is_label: bool) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise PandgIOError(
            f"{target}: cannot write a {arr.ndim}D layer of shape {arr.shape}; napari-pandg "
            "writes 3D volumes (S, A, R) only"
        )
    if arr.dtype.kind not in "biuf":
        raise PandgIOError(
            f"{target}: cannot write layer data of type {arr.dtype}; "
            + ("labels must be integer ids" if is_label else "images must be real numbers")
        )
    if not is_label and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise PandgIOError(f"{target}: the image layer holds NaN/Inf values; replace them before saving")
    return arr


def _write(path: str | os.PathLike, data: Any, meta: dict[str, Any], is_label: bool) -> list[str]:
    target = _target(path)
    meta = dict(meta or {})
    metadata = meta.get("metadata") or {}
    if "pandg_volume" not in metadata:
        metadata = meta  # from_napari falls back to scale/translate in the attributes
    arr = _check_data(target, data, is_label)
    pv = metadata.get("pandg_volume") if isinstance(metadata, dict) else None
    if isinstance(pv, dict) and pv.get("source_path") and bool(pv.get("is_label")) != is_label:
        # a mask written over the image it was drawn on would destroy the image
        check_not_input(target, [pv["source_path"]], "labels file" if is_label else "image file")
    try:
        vol = from_napari(arr, metadata, is_label=is_label)
    except PandgIOError as exc:
        raise PandgIOError(f"{target}: {exc}") from None
    out = save_volume(vol, target, overwrite=True)
    return [str(out)]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for Labels layers -> ``.nii.gz``/``.nii`` (uint8/uint16)."""
    return _write(path, data, meta, is_label=True)


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for Image layers -> ``.nii.gz``/``.nii`` (array dtype)."""
    return _write(path, data, meta, is_label=False)
