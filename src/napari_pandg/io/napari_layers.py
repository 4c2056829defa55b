"""Orientation math between NIfTI volumes and napari layers (pure numpy/nibabel).

napari convention used throughout the plugin:

* data axes are **(S, A, R)**: axis 0 runs inferior -> superior (the axial slider),
  axis 1 posterior -> anterior, axis 2 (patient) left -> right;
* world coordinates are RAS+ millimetres written in the same (S, A, R) order, i.e. world
  point ``(s, a, r)`` is the RAS point ``(r, a, s)``;
* the array is the file's array reoriented to the closest canonical (RAS+) orientation by
  flips and transposes only (``nib.as_closest_canonical`` semantics, **no resampling**),
  then transposed ``(2, 1, 0)``.

Axis-aligned volumes get ``scale``/``translate`` (positive spacings; ``translate`` is the
world position of voxel (0, 0, 0)'s centre). **Oblique** volumes (direction cosines that
are not a pure permutation/flip) keep the true geometry: ``scale`` = voxel spacing,
``translate`` = 0, and ``affine=`` holds the residual rotation plus the origin (so that
``layer.scale`` is still the real spacing). An :class:`ObliqueAffineWarning` says so;
pass ``oblique="drop"`` for a diagonal approximation or ``"error"`` to refuse.

:func:`from_napari` inverts :func:`to_napari` exactly: the array goes back to the file's
storage order and the Volume gets the original affine and header, so
``save_volume(from_napari(*to_napari(v)))`` reproduces a label file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from napari_pandg.io.errors import MissingGeometryWarning, ObliqueAffineWarning, PandgIOError
from napari_pandg.io.nifti import nifti_stem
from napari_pandg.volume import Volume

AXIS_LABELS = ("S", "A", "R")
UNITS = ("mm", "mm", "mm")
META_KEY = "pandg_volume"
_RAS_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


# --------------------------------------------------------------------------- geometry
def canonical_orientation(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation (3x2) taking storage axes to the closest RAS+ axes."""
    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    if np.isnan(ornt).any():
        raise PandgIOError(
            f"affine has a degenerate (zero) axis, cannot orient it:\n{np.asarray(affine)}"
        )
    return ornt


def canonical_affine(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Affine of the canonical (RAS+-ordered) array, as ``nib.as_closest_canonical`` gives."""
    ornt = canonical_orientation(affine)
    return np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, tuple(shape[:3]))


def napari_affine(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """4x4 map from napari data indices (S, A, R array) to napari world (S, A, R mm)."""
    can = canonical_affine(affine, shape)
    out = np.eye(4)
    out[:3, :3] = can[:3, :3][::-1, ::-1]
    out[:3, 3] = can[:3, 3][::-1]
    return out


def is_oblique(affine: np.ndarray, tol: float = 1e-6) -> bool:
    """True when the voxel axes are rotated against RAS (not just permuted/flipped)."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    cos = np.abs(lin / np.where(spacing == 0, 1, spacing))
    return bool(np.abs(cos - np.round(cos)).max() > tol)


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its closest RAS axis."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    cos = np.abs(lin / np.where(spacing == 0, 1, spacing)).max(axis=0)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).max())


def transform_kwargs(
    affine: np.ndarray,
    shape: tuple[int, ...],
    *,
    oblique: Literal["affine", "drop", "error"] = "affine",
    name: str = "",
) -> dict[str, Any]:
    """``scale``/``translate`` (and ``affine`` if oblique) for a layer of this volume."""
    m = napari_affine(affine, shape)
    lin, t = m[:3, :3], m[:3, 3]
    spacing = np.linalg.norm(lin, axis=0)
    if not is_oblique(affine):
        return {"scale": tuple(float(v) for v in np.diag(lin)), "translate": tuple(float(v) for v in t)}
    angle = obliquity_degrees(affine)
    what = f"{name}: " if name else ""
    if oblique == "error":
        raise PandgIOError(
            f"{what}oblique volume ({angle:.2f} deg from the closest RAS axes); resample it onto "
            "an axis-aligned grid first or allow oblique='affine'"
        )
    if oblique == "drop":
        warnings.warn(
            f"{what}oblique volume ({angle:.2f} deg): the rotation is dropped for display "
            "(diagonal scale/translate only); world coordinates are approximate",
            ObliqueAffineWarning,
            stacklevel=3,
        )
        return {"scale": tuple(float(v) for v in spacing), "translate": tuple(float(v) for v in t)}
    rot = np.eye(4)
    rot[:3, :3] = lin / spacing
    rot[:3, 3] = t
    warnings.warn(
        f"{what}oblique volume ({angle:.2f} deg from the closest RAS axes): the residual "
        "rotation goes into the layer's affine=, scale is the voxel spacing; 2D slices are "
        "then not orthogonal to the voxel grid (resample for exact 2D work)",
        ObliqueAffineWarning,
        stacklevel=3,
    )
    return {
        "scale": tuple(float(v) for v in spacing),
        "translate": (0.0, 0.0, 0.0),
        "affine": rot,
    }


def layer_name(vol: Volume) -> str:
    if vol.subject and vol.sequence:
        base = f"{vol.subject}_{vol.sequence}"
    elif vol.subject:
        base = vol.subject
    elif vol.source_path is not None:
        base = nifti_stem(vol.source_path)
    else:
        base = "volume"
    return f"{base}_labels" if vol.is_label and not base.endswith("_labels") else base


def _contrast_limits(arr: np.ndarray) -> tuple[float, float]:
    sample = np.asarray(arr).ravel()[:: max(1, arr.size // 500_000)]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
        if not hi > lo:
            hi = lo + 1.0
    return float(lo), float(hi)


# --------------------------------------------------------------------------- to / from napari
def to_napari(
    vol: Volume, *, oblique: Literal["affine", "drop", "error"] = "affine"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Volume -> ``(data, layer_kwargs)`` for ``viewer.add_image``/``add_labels``.

    ``data`` is a (S, A, R) view of ``vol.array`` (no copy, no resampling). The kwargs hold
    ``name``, ``scale``, ``translate`` (+ ``affine`` for oblique volumes), ``axis_labels``,
    ``units`` and ``metadata``; images also get ``colormap="gray"`` and robust
    ``contrast_limits``, labels ``opacity=0.5`` (their colormap is the caller's job).
    A labels layer drawn on top of an image must get the same scale/translate/affine
    (copy them, and the metadata, from the image layer).
    """
    ornt = canonical_orientation(vol.affine)
    can = apply_orientation(vol.array, ornt)
    data = can.transpose(2, 1, 0)
    name = layer_name(vol)
    kwargs: dict[str, Any] = {"name": name}
    kwargs.update(transform_kwargs(vol.affine, vol.shape, oblique=oblique, name=name))
    kwargs["axis_labels"] = AXIS_LABELS
    kwargs["units"] = UNITS
    can_aff = canonical_affine(vol.affine, vol.shape)
    src = str(vol.source_path) if vol.source_path is not None else ""
    kwargs["metadata"] = {
        "nifti_affine": vol.affine.copy(),
        "nifti_header": vol.header,
        "canonical_affine": can_aff,
        "napari_affine": napari_affine(vol.affine, vol.shape),
        "spacing_sar": tuple(float(v) for v in np.linalg.norm(can_aff[:3, :3], axis=0)[::-1]),
        "oblique": is_oblique(vol.affine),
        "source_path": src,
        "subject": vol.subject,
        "center": vol.center,
        "sequence": vol.sequence,
        META_KEY: {
            "affine": vol.affine.copy(),
            "header": vol.header,
            "shape": vol.shape,
            "ornt": ornt.copy(),
            "subject": vol.subject,
            "center": vol.center,
            "sequence": vol.sequence,
            "is_label": vol.is_label,
            "source_path": src,
            "metadata": dict(vol.metadata),
        },
    }
    if vol.is_label:
        kwargs["opacity"] = 0.5
    else:
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = _contrast_limits(data)
    return data, kwargs


def _pandg_meta(metadata: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Find the ``pandg_volume`` dict in layer metadata or a layer-attributes dict."""
    if not metadata:
        return None
    if META_KEY in metadata:
        return metadata[META_KEY]
    if {"affine", "shape", "ornt"} <= set(metadata):  # the pandg_volume dict itself
        return metadata
    inner = metadata.get("metadata")
    if isinstance(inner, Mapping) and META_KEY in inner:
        return inner[META_KEY]
    return None


def from_napari(
    data: np.ndarray,
    metadata: Mapping[str, Any] | None,
    *,
    is_label: bool | None = None,
    scale: tuple[float, ...] | None = None,
    translate: tuple[float, ...] | None = None,
) -> Volume:
    """Inverse of :func:`to_napari`: (S, A, R) layer data -> Volume in storage order.

    ``metadata`` is the layer's ``metadata`` (or napari's layer-attributes dict holding
    it). With :func:`to_napari` metadata the original affine, header, subject, center and
    sequence come back; this also works for a labels layer whose metadata were copied from
    its image layer (pass ``is_label=True``). Without it, an RAS-aligned geometry is built
    from ``scale``/``translate`` (S, A, R order) with a :class:`MissingGeometryWarning`.
    """
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise PandgIOError(f"layer data must be 3D (S, A, R), got shape {arr.shape}")
    pv = _pandg_meta(metadata)
    if pv is None:
        attrs = metadata or {}
        scale = scale if scale is not None else attrs.get("scale")
        translate = translate if translate is not None else attrs.get("translate")
        sc = np.ones(3) if scale is None else np.asarray(scale, dtype=float)[-3:]
        tr = np.zeros(3) if translate is None else np.asarray(translate, dtype=float)[-3:]
        warnings.warn(
            "layer has no napari-pandg geometry (it was not opened by napari-pandg and its "
            "metadata were not copied from such a layer): writing an RAS-aligned affine from "
            f"scale {tuple(sc)} / translate {tuple(tr)} (S, A, R); the header is new",
            MissingGeometryWarning,
            stacklevel=2,
        )
        affine = np.eye(4)
        affine[:3, :3] = np.diag(sc[::-1])
        affine[:3, 3] = tr[::-1]
        return Volume(
            array=arr.transpose(2, 1, 0),
            affine=affine,
            is_label=bool(is_label) if is_label is not None else False,
            metadata={"geometry": "from_layer_scale"},
        )
    shape = tuple(int(s) for s in pv["shape"])
    ornt = np.asarray(pv["ornt"], dtype=float)
    can = arr.transpose(2, 1, 0)
    back = apply_orientation(can, ornt_transform(_RAS_ORNT, ornt))
    if back.shape != shape:
        raise PandgIOError(
            f"layer data shape {arr.shape} does not match the source image "
            f"{pv.get('source_path') or ''} (storage shape {shape}, napari shape "
            f"{tuple(np.asarray(shape)[np.argsort(ornt[:, 0])][::-1])}); the layer was cropped "
            "or resampled: it cannot be written on the image grid"
        )
    label = bool(pv.get("is_label", False)) if is_label is None else bool(is_label)
    notes = dict(pv.get("metadata") or {})
    src = pv.get("source_path") or ""
    if label and not pv.get("is_label", False) and src:
        notes["derived_from"] = src
    return Volume(
        array=back,
        affine=np.array(pv["affine"], dtype=np.float64),
        subject=str(pv.get("subject", "")),
        center=str(pv.get("center", "")),
        sequence=str(pv.get("sequence", "")),
        is_label=label,
        source_path=Path(src) if src and label == bool(pv.get("is_label", False)) else None,
        header=pv.get("header"),
        metadata=notes,
    )


# --------------------------------------------------------------------------- coordinates
def _affine_of(ref: Volume | Mapping[str, Any] | np.ndarray) -> np.ndarray:
    if isinstance(ref, Volume):
        return ref.affine
    if isinstance(ref, Mapping):
        pv = _pandg_meta(ref)
        if pv is not None:
            return np.asarray(pv["affine"], dtype=float)
        if "nifti_affine" in ref:
            return np.asarray(ref["nifti_affine"], dtype=float)
        raise PandgIOError("metadata hold no napari-pandg geometry (no 'pandg_volume' entry)")
    aff = np.asarray(ref, dtype=float)
    if aff.shape != (4, 4):
        raise ValueError(f"expected a Volume, layer metadata or a 4x4 affine, got shape {aff.shape}")
    return aff


def world_to_voxel(
    world_sar: np.ndarray, ref: Volume | Mapping[str, Any] | np.ndarray, *, round: bool = False
) -> np.ndarray:
    """napari world points (S, A, R mm; shape (3,) or (N, 3)) -> storage voxel (i, j, k).

    ``ref`` is the Volume, the layer metadata from :func:`to_napari`, or the file affine.
    With ``round=True`` the nearest voxel indices are returned as integers.
    """
    pts = np.atleast_2d(np.asarray(world_sar, dtype=float))[:, -3:]
    ras = pts[:, ::-1]
    inv = np.linalg.inv(_affine_of(ref))
    ijk = ras @ inv[:3, :3].T + inv[:3, 3]
    return np.rint(ijk).astype(np.int64) if round else ijk


def voxel_to_world(ijk: np.ndarray, ref: Volume | Mapping[str, Any] | np.ndarray) -> np.ndarray:
    """Storage voxel indices (N, 3) -> napari world (S, A, R mm)."""
    vox = np.atleast_2d(np.asarray(ijk, dtype=float))
    aff = _affine_of(ref)
    ras = vox @ aff[:3, :3].T + aff[:3, 3]
    return ras[:, ::-1]


def world_to_data(world_sar: np.ndarray, metadata: Mapping[str, Any]) -> np.ndarray:
    """napari world (S, A, R mm) -> indices into the napari (S, A, R) array."""
    pv = _pandg_meta(metadata)
    if pv is None:
        raise PandgIOError("metadata hold no napari-pandg geometry (no 'pandg_volume' entry)")
    m = napari_affine(np.asarray(pv["affine"], dtype=float), tuple(pv["shape"]))
    pts = np.atleast_2d(np.asarray(world_sar, dtype=float))[:, -3:]
    inv = np.linalg.inv(m)
    return pts @ inv[:3, :3].T + inv[:3, 3]


def data_to_world(index_sar: np.ndarray, metadata: Mapping[str, Any]) -> np.ndarray:
    """Indices into the napari (S, A, R) array -> napari world (S, A, R mm)."""
    pv = _pandg_meta(metadata)
    if pv is None:
        raise PandgIOError("metadata hold no napari-pandg geometry (no 'pandg_volume' entry)")
    m = napari_affine(np.asarray(pv["affine"], dtype=float), tuple(pv["shape"]))
    pts = np.atleast_2d(np.asarray(index_sar, dtype=float))[:, -3:]
    return pts @ m[:3, :3].T + m[:3, 3]
