"""The dataset index: one row per image volume, as a pandas DataFrame.

Columns (always present, in this order): ``subject, center, sequence, image, label,
layout, split, label_map``, then layout-specific metadata (``field_strength``,
``vendor``, ``scanner``, ``site``, ``channel`` ...). ``image``/``label`` are absolute
paths (``label`` is missing, i.e. ``None``/NaN, for unlabelled cases). ``label_map`` is
``""`` when labels already use AMOS ids, else e.g. ``"1:10"`` (pass it to
:func:`~napari_pandg.io.nifti.load_volume`, or use :func:`load_case`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from napari_pandg.io.errors import PandgFileNotFoundError, PandgIOError
from napari_pandg.io.layouts import (
    BUILDERS,
    DETECTION_HELP,
    LAYOUTS,
    check_csv_files,
    csv_path,
    detect_layout,
    read_csv_checked,
)
from napari_pandg.io.nifti import load_volume, validate_pair
from napari_pandg.io.safety import check_output_file, check_outputs_not_inputs
from napari_pandg.volume import Volume

INDEX_COLUMNS = ("subject", "center", "sequence", "image", "label", "layout", "split", "label_map")


def build_index(root: str | os.PathLike, layout: str = "auto", **options: Any) -> pd.DataFrame:
    """Index the dataset at ``root`` (a folder, or a ``manifest.csv`` for ``pandg``).

    ``layout`` is ``"auto"`` (see :func:`~napari_pandg.io.layouts.detect_layout`) or one of
    ``pandg``, ``nnunet``, ``amos``, ``totalseg_mri``. ``options`` go to the builder
    (``include_ct`` for amos, ``require_pancreas`` for totalseg_mri). Rows are sorted by
    center, sequence, subject. Raises :class:`PandgIOError` when nothing is found.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise PandgFileNotFoundError(f"{root}: dataset folder does not exist")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in BUILDERS:
        raise PandgIOError(f"unknown layout {layout!r}; choose one of auto, {', '.join(LAYOUTS)}")
    rows = BUILDERS[layout](root, **options)
    if not rows:
        hint = {
            "amos": " (AMOS MRI are ids > 500; pass include_ct=True to index CT too)",
            "totalseg_mri": " (only cases with segmentations/pancreas.nii.gz are kept; "
            "pass require_pancreas=False to index all)",
        }.get(layout, "")
        raise PandgIOError(f"{root}: no images found for layout {layout!r}{hint}; {DETECTION_HELP}")
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in INDEX_COLUMNS]
    df = df[list(INDEX_COLUMNS) + extra]
    df = df.sort_values(["center", "sequence", "subject"], kind="stable").reset_index(drop=True)
    df["label"] = _none_for_missing(df["label"])
    return df


def _none_for_missing(col: pd.Series) -> pd.Series:
    """Object column with ``None`` (not NaN; pandas 3 infers string dtypes) for missing."""
    return pd.Series(
        [None if (v is None or (isinstance(v, float) and pd.isna(v)) or v == "") else str(v) for v in col],
        index=col.index,
        dtype=object,
    )


def write_index(df: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the index as CSV atomically; refuses an existing file unless ``overwrite``."""
    path = Path(path).expanduser()
    missing = [c for c in ("subject", "center", "sequence", "image", "label", "layout") if c not in df]
    if missing:
        raise PandgIOError(f"index for {path} lacks columns {missing}")
    # never replace an indexed image or label (nor the manifest: see run_index / pandg index)
    check_outputs_not_inputs([path], [v for c in ("image", "label") for v in df[c] if isinstance(v, str)], "index CSV")
    check_output_file(path, overwrite=overwrite, what="index CSV")
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_index(path: str | os.PathLike, check_files: bool = True) -> pd.DataFrame:
    """Read an index CSV (UTF-8; errors name the file, the line and the path).

    Relative ``image``/``label`` paths are resolved against the CSV's folder and must stay
    inside it (see :func:`~napari_pandg.io.layouts.csv_path`); absolute paths are kept.
    Refused: an empty file, a header without rows, missing ``subject, center, sequence,
    image`` columns, an empty image cell and, with ``check_files`` (default), listed image or
    label files that do not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PandgFileNotFoundError(f"{path}: index CSV not found (write one with `pandg index`)")
    df = read_csv_checked(path, dtype={"subject": str, "center": str, "sequence": str, "label_map": str})
    missing = [c for c in ("subject", "center", "sequence", "image") if c not in df]
    if missing:
        raise PandgIOError(
            f"{path}: not a dataset index, missing columns {missing} (it has {list(map(str, df.columns))}); "
            "an index needs subject, center, sequence, image[, label] (see `pandg index`)"
        )
    if df.empty:
        raise PandgIOError(f"{path}: the index has a header but no rows; index the dataset again")
    for c in ("subject", "center", "sequence", "label_map", "split", "layout"):
        if c in df:
            df[c] = df[c].astype(object).fillna("").astype(str)
    if "label" not in df:
        df["label"] = None
    base = Path(os.path.abspath(path.parent))
    checks: list[tuple[int, str, str | None]] = []
    for c in ("image", "label"):
        col = _none_for_missing(df[c])
        values = [csv_path(path, base, v, i + 2, c) for i, v in enumerate(col)]
        if c == "image":
            empty = [i + 2 for i, v in enumerate(values) if v is None]
            if empty:
                raise PandgIOError(f"{path}: line(s) {empty[:5]}: the image cell is empty")
        checks += [(i + 2, c, v) for i, v in enumerate(values)]
        df[c] = pd.Series(values, index=df.index, dtype=object)
    if check_files:
        check_csv_files(path, checks)
    return df


def load_case(
    row: Mapping[str, Any] | pd.Series, *, allowed: Any = None, validate: bool = True
) -> tuple[Volume, Volume | None]:
    """Load one index row: ``(image, label or None)`` with ``label_map`` applied and the
    pair checked by :func:`validate_pair` (label gets the image affine within tolerance)."""
    get = row.get
    tags = {k: str(get(k) or "") for k in ("subject", "center", "sequence")}
    image = load_volume(get("image"), **tags)
    lab_path = get("label")
    if lab_path is None or (isinstance(lab_path, float) and pd.isna(lab_path)) or lab_path == "":
        return image, None
    label = load_volume(lab_path, is_label=True, label_map=get("label_map") or None, allowed=allowed, **tags)
    if validate:
        label = validate_pair(image, label)
    return image, label
