"""NIfTI read/write with exact label round trips and clear errors.

* :func:`load_volume` reads a ``.nii``/``.nii.gz`` file into a :class:`~napari_pandg.Volume`
  in storage order (i, j, k) with the file's own affine and header. Images become
  ``float32`` with ``scl_slope``/``scl_inter`` applied; label maps become unsigned
  integers (optionally remapped, e.g. ``{1: 10}`` for datasets where pancreas = 1).
* :func:`save_volume` writes atomically (temporary file in the target folder, then
  ``os.replace``), never replaces a file unless ``overwrite=True``, and keeps the source
  header (qform/sform codes) so a label map written back is identical in geometry.
* :func:`validate_pair` / :func:`check_label_values` check an image/label pair.
* :func:`check_header` refuses, from the header alone (before any voxel is read), what
  cannot be an MRI volume: complex, RGB or other non-scalar voxel types, vector/RGB intents,
  and voxel sizes outside :data:`SPACING_RANGE_MM` (a wrong ``pixdim`` or units).

Every problem is a :class:`~napari_pandg.io.errors.PandgIOError` naming the file.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from napari_pandg.io.errors import PandgFileNotFoundError, PandgIOError
from napari_pandg.io.safety import check_writable_folder, exists_message
from napari_pandg.volume import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: a label map has at most this many distinct values when guessing image vs. labels
MAX_GUESS_LABELS = 64
#: plausible voxel size (mm) of an MRI (or CT) volume along each axis. Clinical and research
#: MRI spans ~0.1 mm (high-resolution small-FOV) to ~10-20 mm (thick-slice localisers);
#: outside 0.05..50 mm the header is wrong (pixdim in metres or microns, a missing affine),
#: and resampling to a 2 x 2 x 4 mm model grid would give an empty or gigantic volume.
SPACING_RANGE_MM = (0.05, 50.0)
#: NIfTI intent codes of vector-valued voxels (vector, RGB vector, RGBA vector)
_VECTOR_INTENTS = {1007: "vector", 2003: "RGB vector", 2004: "RGBA vector"}

LabelMap = Mapping[int, int]


# --------------------------------------------------------------------------- helpers
def is_nifti_path(path: str | os.PathLike) -> bool:
    name = os.fspath(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """``/a/b/case_0000.nii.gz`` -> ``case_0000``."""
    name = Path(path).name
    for suf in NIFTI_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def parse_label_map(label_map: str | LabelMap | None) -> dict[int, int]:
    """``"1:10,2:10"`` or ``{1: 10}`` or ``None``/``""``/NaN -> ``{int: int}``."""
    if label_map is None:
        return {}
    if isinstance(label_map, float) and np.isnan(label_map):  # empty CSV cell
        return {}
    if isinstance(label_map, Mapping):
        return {int(k): int(v) for k, v in label_map.items()}
    text = str(label_map).strip()
    if not text:
        return {}
    out: dict[int, int] = {}
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            src, dst = part.split(":")
            out[int(src)] = int(dst)
        except ValueError:
            raise PandgIOError(
                f"cannot parse label map {label_map!r}: expected 'SRC:DST' pairs separated by "
                "commas, e.g. '1:10' or '1:10,2:10'"
            ) from None
    return out


def format_label_map(label_map: LabelMap | None) -> str:
    """``{1: 10, 2: 10}`` -> ``"1:10,2:10"`` (identity entries dropped)."""
    if not label_map:
        return ""
    return ",".join(f"{k}:{v}" for k, v in sorted(label_map.items()) if int(k) != int(v))


def apply_label_map(array: np.ndarray, label_map: str | LabelMap | None) -> np.ndarray:
    """Remap label ids; ids not in the map are kept unchanged."""
    mapping = parse_label_map(label_map)
    if not mapping:
        return array
    present = np.unique(array)
    top = int(max(int(present.max(initial=0)), max(mapping.values()), max(mapping.keys())))
    lut = np.arange(top + 1, dtype=np.int64)
    for k, v in mapping.items():
        if k < 0 or v < 0:
            raise PandgIOError(f"label map {mapping} has negative ids; label ids must be >= 0")
        lut[k] = v
    out = lut[array.astype(np.int64, copy=False)]
    return out.astype(_label_dtype(int(out.max(initial=0))), copy=False)


def _label_dtype(max_value: int) -> type[np.unsignedinteger]:
    if max_value <= np.iinfo(np.uint8).max:
        return np.uint8
    if max_value <= np.iinfo(np.uint16).max:
        return np.uint16
    return np.uint32


def _read_errors() -> tuple[type[BaseException], ...]:
    return (EOFError, zlib.error, OSError, ImageFileError, ValueError, TypeError, MemoryError)


# --------------------------------------------------------------------------- reading
def _open(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise PandgFileNotFoundError(f"{path}: no such file; check the path (and the index CSV)")
    if path.is_dir():
        raise PandgIOError(f"{path}: is a folder, expected a .nii or .nii.gz file")
    if not is_nifti_path(path):
        raise PandgIOError(
            f"{path}: not a NIfTI file name (expected .nii or .nii.gz); convert it first, "
            "e.g. with SimpleITK or dcm2niix"
        )
    try:
        img = nib.load(str(path))
    except _read_errors() as exc:
        raise PandgIOError(
            f"{path}: cannot read the NIfTI header ({type(exc).__name__}: {exc}); the file is "
            "corrupt, truncated or not NIfTI: download/export it again"
        ) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        # nibabel may hand back e.g. an Analyze pair; convert to NIfTI-1 semantics.
        try:
            img = nib.Nifti1Image.from_image(img)
        except Exception as exc:  # pragma: no cover - exotic formats
            raise PandgIOError(f"{path}: unsupported image type {type(img).__name__}") from exc
    return img


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype.fields:
        names = "".join(dtype.names or ())
        kind = {"RGB": "an RGB colour", "RGBA": "an RGBA colour"}.get(names, "a multi-valued")
        raise PandgIOError(
            f"{path}: is {kind} image (NIfTI voxel type {dtype}); napari-pandg needs one "
            "greyscale value per voxel: convert it to a single-channel 3D NIfTI first (e.g. "
            "the luminance, or the channel that holds the MRI signal)"
        )
    if dtype.kind == "c":
        raise PandgIOError(
            f"{path}: has complex voxels ({dtype}); napari-pandg does not drop the imaginary "
            "part silently: save the magnitude image instead (e.g. numpy.abs of the data, or "
            "the scanner's magnitude reconstruction)"
        )
    if dtype.kind not in "biuf":
        raise PandgIOError(
            f"{path}: unsupported NIfTI voxel type {dtype}; expected integer or floating-point voxels"
        )


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along the three storage axes: the column norms of the affine."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def _one_line(aff: np.ndarray) -> str:
    return "affine " + str(np.round(np.asarray(aff, dtype=np.float64), 4).tolist())


def check_spacing(path: str | os.PathLike, affine: np.ndarray, units: str | None = None) -> None:
    """Refuse a non-finite or degenerate affine, or voxel sizes outside :data:`SPACING_RANGE_MM`."""
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all():
        raise PandgIOError(
            f"{path}: the affine (voxel -> world) holds NaN/Inf values ({_one_line(aff)}); the "
            "header (sform/qform/pixdim) is corrupt: fix it, e.g. with nibabel or SimpleITK"
        )
    sp = voxel_spacing(aff)
    lo, hi = SPACING_RANGE_MM
    if sp.min() < lo or sp.max() > hi:
        unit_hint = ""
        if units and units not in ("mm", "unknown"):
            unit_hint = f" (the header declares spatial units '{units}'; napari-pandg reads mm)"
        raise PandgIOError(
            f"{path}: implausible voxel spacing {' x '.join(f'{v:.6g}' for v in sp)} mm{unit_hint}; "
            f"napari-pandg accepts {lo:g} to {hi:g} mm per axis for MRI volumes. The header "
            "(pixdim / sform / qform) is probably wrong: set the real voxel size, e.g. with "
            "nibabel (img.header.set_zooms) or SimpleITK (SetSpacing), and save the file again"
        )
    if abs(float(np.linalg.det(aff[:3, :3]))) < 1e-12 * float(np.prod(sp)):
        raise PandgIOError(
            f"{path}: the affine maps two voxel axes onto the same direction (degenerate "
            f"direction cosines, {_one_line(aff)}); fix the sform/qform of the file"
        )


def check_header(path: str | os.PathLike, img: Any) -> None:
    """Refuse, from the header only, files that cannot be an MRI volume (see module doc)."""
    path = Path(path)
    hdr = img.header
    _check_dtype(path, img.get_data_dtype())
    try:
        intent = int(hdr["intent_code"])
    except (KeyError, TypeError, ValueError):
        intent = 0
    if intent in _VECTOR_INTENTS:
        raise PandgIOError(
            f"{path}: is a {_VECTOR_INTENTS[intent]} image (NIfTI intent {intent}, shape "
            f"{tuple(int(s) for s in img.shape)}); napari-pandg needs one greyscale value per "
            "voxel: export the MRI signal as a single-channel 3D NIfTI"
        )
    try:
        units = hdr.get_xyzt_units()[0]
    except Exception:  # noqa: BLE001 - exotic headers: no unit hint
        units = None
    check_spacing(path, img.affine, units)


def check_image_file(path: str | os.PathLike) -> None:
    """Open ``path`` (header only) and :func:`check_header` it: cheap, before any work."""
    path = Path(path).expanduser()
    check_header(path, _open(path))


def _spatial_shape(path: Path, shape: tuple[int, ...], channel: int | None) -> tuple[tuple, int | None]:
    """Validate the header shape; return (index into the data, chosen channel)."""
    if len(shape) < 3:
        raise PandgIOError(
            f"{path}: is a {len(shape)}D image of shape {shape}; napari-pandg needs 3D volumes "
            "(stack the slices into one 3D NIfTI first)"
        )
    extra = shape[3:]
    if all(s == 1 for s in extra):
        return (slice(None),) * 3 + (0,) * len(extra), None
    nontrivial = [s for s in extra if s != 1]
    if len(nontrivial) > 1:
        raise PandgIOError(
            f"{path}: {len(shape)}D image of shape {shape} has several non-singleton extra "
            "dimensions; export one 3D volume per channel/time point"
        )
    n = nontrivial[0]
    if channel is None:
        raise PandgIOError(
            f"{path}: {len(shape)}D image of shape {shape} has {n} channels/time points; choose "
            f"one with load_volume(..., channel=0..{n - 1}) or split it into 3D files "
            "(e.g. fslsplit / nnU-Net _0000, _0001 channel files)"
        )
    if not 0 <= channel < n:
        raise PandgIOError(f"{path}: channel {channel} out of range: the image has {n} channels")
    index = tuple(channel if s != 1 else 0 for s in extra)
    return (slice(None),) * 3 + index, channel


def _read_array(path: Path, img: nib.Nifti1Image, channel: int | None) -> tuple[np.ndarray, dict]:
    """Read the (scaled) data as a 3D array plus notes for ``Volume.metadata``."""
    shape = tuple(int(s) for s in img.shape)
    index, chosen = _spatial_shape(path, shape, channel)
    try:
        data = img.dataobj[index] if len(shape) > 3 else np.asanyarray(img.dataobj)
        data = np.asarray(data)
    except _read_errors() as exc:
        raise PandgIOError(
            f"{path}: cannot read the voxel data ({type(exc).__name__}: {exc}); the file is "
            "truncated or the gzip stream is corrupt: download/export it again"
        ) from exc
    notes: dict[str, Any] = {"dtype_on_disk": str(img.get_data_dtype())}
    if len(shape) > 3:
        notes["original_shape"] = shape
        if chosen is not None:
            notes["channel"] = chosen
    return data, notes


def _as_image_array(path: Path, data: np.ndarray, allow_nonfinite: bool) -> np.ndarray:
    arr = np.asarray(data, dtype=np.float32)
    if not allow_nonfinite:
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            n_nan = int(np.count_nonzero(np.isnan(arr)))
            raise PandgIOError(
                f"{path}: {bad} voxels are not finite ({n_nan} NaN, {bad - n_nan} Inf); "
                "napari-pandg does not fill them silently: fix the file (e.g. replace them with "
                "0 via nibabel) or load with allow_nonfinite=True"
            )
    return arr


def _as_label_array(path: Path, data: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            raise PandgIOError(
                f"{path}: label map has {int(arr.size - finite.sum())} NaN/Inf voxels; "
                "label maps must hold integer ids"
            )
        rounded = np.rint(arr)
        off = np.abs(arr - rounded) > 1e-3
        if off.any():
            examples = np.unique(arr[off])[:5]
            raise PandgIOError(
                f"{path}: label map holds {int(off.sum())} non-integer values (e.g. "
                f"{', '.join(f'{v:g}' for v in examples)}); it was probably resampled with linear "
                "interpolation: re-export it with nearest-neighbour interpolation"
            )
        arr = rounded
    elif not np.issubdtype(arr.dtype, np.integer):
        raise PandgIOError(f"{path}: label map has unsupported dtype {arr.dtype}")
    lo = int(arr.min(initial=0))
    hi = int(arr.max(initial=0))
    if lo < 0:
        raise PandgIOError(
            f"{path}: label map has negative values (min {lo}); label ids must be >= 0"
        )
    return arr.astype(_label_dtype(hi), copy=False)


def guess_is_label(path: str | os.PathLike, data: np.ndarray | None = None) -> bool:
    """Label map or image? Path hints first, then integral data with few distinct values."""
    p = Path(path)
    parts = {s.lower() for s in p.parts[:-1]}
    stem = nifti_stem(p).lower()
    if parts & {"labelstr", "labelsts", "labelsva", "labels", "segmentations", "masks"}:
        return True
    if stem.endswith(("_seg", "_label", "_labels", "_mask", "-seg", "-label", "-labels")):
        return True
    if data is None:
        return False
    arr = np.asarray(data)
    if arr.dtype == bool:
        return True
    integral = np.issubdtype(arr.dtype, np.integer)
    if not integral:
        if not np.issubdtype(arr.dtype, np.floating):
            return False
        sample = arr.ravel()[:: max(1, arr.size // 200_000)]
        if not (np.isfinite(sample).all() and np.all(sample == np.rint(sample))):
            return False
    # cheap rejection on a subsample before a full np.unique
    sample = arr.ravel()[:: max(1, arr.size // 200_000)]
    if np.unique(sample).size > MAX_GUESS_LABELS:
        return False
    values = np.unique(arr)
    if values.size > MAX_GUESS_LABELS or values.min(initial=0) < 0:
        return False
    return bool(integral or np.all(values == np.rint(values)))


def load_volume(
    path: str | os.PathLike,
    *,
    is_label: bool | Literal["auto"] = False,
    subject: str = "",
    center: str = "",
    sequence: str = "",
    label_map: str | LabelMap | None = None,
    allowed: Iterable[int] | None = None,
    channel: int | None = None,
    allow_nonfinite: bool = False,
) -> Volume:
    """Read a NIfTI file into a :class:`Volume` (storage order, file affine and header).

    Parameters
    ----------
    is_label
        ``True`` for label maps (integer ids, unsigned dtype), ``False`` for images
        (``float32``, NIfTI scaling applied) or ``"auto"`` to guess from the path and values
        (see :func:`guess_is_label`).
    label_map
        Remap label ids after reading, e.g. ``{1: 10}`` or ``"1:10"`` for datasets where
        pancreas = 1; ids not in the map are kept.
    allowed
        If given, label values (after ``label_map``) outside this set raise an error.
    channel
        For 4D/5D files with several channels/time points: which one to take.
    allow_nonfinite
        Images with NaN/Inf raise unless this is ``True`` (they are never silently fixed).
    """
    path = Path(path).expanduser()
    img = _open(path)
    check_header(path, img)
    data, notes = _read_array(path, img, channel)
    if is_label == "auto":
        is_label = guess_is_label(path, data)
    if is_label:
        arr = _as_label_array(path, data)
        mapping = parse_label_map(label_map)
        if mapping:
            arr = apply_label_map(arr, mapping)
            notes["label_map"] = format_label_map(mapping)
    else:
        if label_map:
            raise PandgIOError(f"{path}: label_map given for an image (is_label=False)")
        arr = _as_image_array(path, data, allow_nonfinite)
    header = img.header.copy()
    vol = Volume(
        array=arr,
        affine=np.array(img.affine, dtype=np.float64),
        subject=subject,
        center=center,
        sequence=sequence,
        is_label=bool(is_label),
        source_path=path,
        header=header,
        metadata=notes,
    )
    if is_label and allowed is not None:
        check_label_values(vol, allowed)
    return vol


# --------------------------------------------------------------------------- checks
def check_label_values(label: Volume, allowed: Iterable[int]) -> list[int]:
    """Raise if ``label`` holds ids outside ``allowed``; return the ids present (sorted)."""
    allowed_set = {int(a) for a in allowed}
    present = [int(v) for v in np.unique(label.array)]
    unknown = [v for v in present if v not in allowed_set]
    if unknown:
        where = label.source_path or label.subject or "label map"
        hint = ""
        lm = label.metadata.get("label_map") if label.metadata else None
        if not lm and set(present) <= {0, 1}:
            hint = " (a binary mask: pass label_map={1: 10} if 1 means pancreas)"
        raise PandgIOError(
            f"{where}: unexpected label values {unknown} (allowed: {sorted(allowed_set)}); "
            f"values present: {present}{hint}"
        )
    return present


def _affine_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(max spacing diff mm, max direction-cosine diff, max origin diff mm)."""
    la, lb = a[:3, :3], b[:3, :3]
    sa, sb = np.linalg.norm(la, axis=0), np.linalg.norm(lb, axis=0)
    da, db = la / np.where(sa == 0, 1, sa), lb / np.where(sb == 0, 1, sb)
    return (
        float(np.abs(sa - sb).max()),
        float(np.abs(da - db).max()),
        float(np.abs(a[:3, 3] - b[:3, 3]).max()),
    )


def validate_pair(
    image: Volume, label: Volume, atol_mm: float = 1e-3, atol_dir: float = 1e-4
) -> Volume:
    """Check that ``label`` lies on ``image``'s voxel grid; return it with the image affine.

    Shapes must be equal. Spacing and origin may differ by ``atol_mm`` millimetres and the
    direction cosines by ``atol_dir``; within tolerance the image affine is copied onto the
    returned label (as nnU-Net does). Beyond it a :class:`PandgIOError` gives the largest
    difference: resample the label onto the image grid (nearest neighbour) first.
    """
    names = f"image {image.source_path or image.subject} / label {label.source_path or label.subject}"
    if image.shape != label.shape:
        raise PandgIOError(
            f"{names}: shape mismatch, image {image.shape} vs label {label.shape}; the label is "
            "on another voxel grid: resample it onto the image with nearest-neighbour "
            "interpolation (or pick the matching image)"
        )
    d_sp, d_dir, d_org = _affine_difference(image.affine, label.affine)
    if d_sp > atol_mm or d_org > atol_mm or d_dir > atol_dir:
        raise PandgIOError(
            f"{names}: affine mismatch: max spacing difference {d_sp:.3g} mm, max origin "
            f"difference {d_org:.3g} mm, max direction-cosine difference {d_dir:.3g} "
            f"(tolerances {atol_mm} mm / {atol_dir}); the label is not aligned with the image: "
            "resample it onto the image grid with nearest-neighbour interpolation"
        )
    if np.array_equal(image.affine, label.affine):
        return label
    notes = dict(label.metadata)
    notes["affine_copied_from_image"] = {"spacing_mm": d_sp, "origin_mm": d_org, "direction": d_dir}
    return replace(label, affine=image.affine.copy(), metadata=notes)


# --------------------------------------------------------------------------- writing
def _nifti_header(header: Any) -> nib.Nifti1Header | nib.Nifti2Header:
    if isinstance(header, nib.Nifti1Header | nib.Nifti2Header):
        return header.copy()
    if header is None:
        return nib.Nifti1Header()
    return nib.Nifti1Header.from_header(header)


def _set_geometry(hdr: nib.Nifti1Header, affine: np.ndarray) -> None:
    """Put ``affine`` into the header unless it already encodes it; keep the form codes."""
    if np.allclose(hdr.get_best_affine(), affine, rtol=0, atol=1e-6):
        return
    s_code = int(hdr["sform_code"]) or 2  # aligned
    q_code = int(hdr["qform_code"])
    hdr.set_sform(affine, code=s_code)
    if q_code:
        hdr.set_qform(affine, code=q_code)  # quaternion: only the rigid part survives


def save_volume(
    vol: Volume,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    like: Volume | None = None,
) -> Path:
    """Write ``vol`` to ``path`` (``.nii`` or ``.nii.gz``) atomically; return the path.

    * refuses an existing file unless ``overwrite=True`` (``FileExistsError``);
    * ``like``: write on that volume's grid, i.e. use its affine and header (qform/sform
      codes, description, units); shapes must match. Without it ``vol.header`` is used;
    * label maps (``vol.is_label``) are written as ``uint8`` (ids <= 255) or ``uint16`` with
      no intensity scaling, so ``load_volume(save_volume(label))`` is exact; images are
      written in their array dtype (``float32`` after :func:`load_volume`), unscaled.
    """
    path = Path(path).expanduser()
    if not is_nifti_path(path):
        raise PandgIOError(f"{path}: output must end with .nii.gz or .nii")
    if path.is_dir():
        raise PandgIOError(f"{path}: is a folder; give a file name ending with .nii.gz")
    if path.exists() and not overwrite:
        raise FileExistsError(exists_message(path))
    check_writable_folder(path.parent if str(path.parent) else Path("."))

    affine, header = vol.affine, vol.header
    if like is not None:
        if like.shape != vol.shape:
            raise PandgIOError(
                f"{path}: cannot write a {vol.shape} array like {like.source_path or 'the reference'}"
                f" of shape {like.shape}"
            )
        affine, header = like.affine, like.header if like.header is not None else vol.header
    hdr = _nifti_header(header)
    arr = np.asarray(vol.array)
    if vol.is_label:
        arr = _as_label_array(path, arr)
        dtype = np.uint8 if int(arr.max(initial=0)) <= 255 else np.uint16
        if int(arr.max(initial=0)) > np.iinfo(np.uint16).max:
            raise PandgIOError(f"{path}: label id {int(arr.max())} does not fit uint16")
        arr = arr.astype(dtype, copy=False)
        hdr["cal_min"], hdr["cal_max"] = 0, 0
        hdr["intent_code"] = 0
    else:
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        elif arr.dtype == bool:
            arr = arr.astype(np.uint8)
        dtype = arr.dtype
    hdr.set_data_shape(arr.shape)
    _set_geometry(hdr, affine)
    hdr.set_data_dtype(dtype)
    hdr.set_slope_inter(None, None)  # data are already scaled / integer ids: no scaling
    cls = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(arr, affine, header=hdr)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(None, None)

    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        nib.save(img, str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
