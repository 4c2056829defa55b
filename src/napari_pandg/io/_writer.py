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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from napari_pandg.io.napari_layers import from_napari
from napari_pandg.io.nifti import is_nifti_path, save_volume


def _target(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if is_nifti_path(p) else p.with_name(p.name + ".nii.gz")


def _write(path: str | os.PathLike, data: Any, meta: dict[str, Any], is_label: bool) -> list[str]:
    meta = dict(meta or {})
    metadata = meta.get("metadata") or {}
    if "pandg_volume" not in metadata:
        metadata = meta  # from_napari falls back to scale/translate in the attributes
    vol = from_napari(data, metadata, is_label=is_label)
    out = save_volume(vol, _target(path), overwrite=True)
    return [str(out)]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for Labels layers -> ``.nii.gz``/``.nii`` (uint8/uint16)."""
    return _write(path, data, meta, is_label=True)


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for Image layers -> ``.nii.gz``/``.nii`` (array dtype)."""
    return _write(path, data, meta, is_label=False)
