"""napari reader contribution (npe2): NIfTI files and dataset folders.

``napari_get_reader`` never raises: it returns ``None`` for anything it does not handle.
The reader it returns produces LayerData tuples ``(data, kwargs, "image" | "labels")``
in napari's (S, A, R) convention (see :mod:`napari_pandg.io.napari_layers`); errors while
reading are :class:`~napari_pandg.io.errors.PandgIOError` with the file named, which napari
shows to the user. napari itself is only imported (lazily) to build the label colormap and
to reach the current viewer: opening a volume switches it to the radiological view (anterior up,
patient right on screen left) and outlines the label layers
(:func:`napari_pandg.layerdata.prepare_current_viewer`), the same display as every other path.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from napari_pandg.io.nifti import is_nifti_path, load_volume, nifti_stem

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]


def napari_get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """Return a reader for ``.nii``/``.nii.gz`` paths or a dataset folder, else ``None``."""
    try:
        if isinstance(path, list | tuple):
            paths = [os.fspath(p) for p in path]
            if paths and all(is_nifti_path(p) for p in paths):
                return read_nifti
            if len(paths) == 1 and os.path.isdir(paths[0]):
                return napari_get_reader(paths[0])
            return None
        p = os.fspath(path)
        if is_nifti_path(p):
            return read_nifti
        if p.lower().endswith(".csv") and os.path.isfile(p):
            return read_dataset_folder if _csv_is_index(p) else None
        if os.path.isdir(p):
            from napari_pandg.io.layouts import detect_layout

            detect_layout(p)
            return read_dataset_folder
    except Exception:  # never raise from napari_get_reader
        return None
    return None


def _csv_is_index(path: str) -> bool:
    """A phantom manifest or a ``pandg index`` CSV (subject and image columns)?"""
    import csv

    with open(path, newline="") as fh:
        header = next(csv.reader(fh), [])
    return {"subject", "image"} <= {h.strip() for h in header}


def read_nifti(path: str | Sequence[str]) -> list[LayerData]:
    """Read one or several NIfTI files; labels are recognised by path or values."""
    from napari_pandg.layerdata import prepare_current_viewer, volume_layerdata

    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    out = [volume_layerdata(load_volume(p, is_label="auto", subject=nifti_stem(p))) for p in paths]
    out = sorted(out, key=lambda ld: ld[2] == "labels")  # images below labels
    prepare_current_viewer(out)
    return out


def read_dataset_folder(path: str | Sequence[str]) -> list[LayerData]:
    """Open the first subject of a dataset folder, manifest or index CSV: all its
    sequences, aligned in world mm, and one label layer."""
    from napari_pandg.io.index import build_index, read_index
    from napari_pandg.layerdata import iter_subject_layerdata, prepare_current_viewer

    root = os.fspath(path if isinstance(path, str | os.PathLike) else path[0])
    if root.lower().endswith(".csv"):
        df = read_index(root)
        if "layout" not in df:  # a phantom manifest: relative paths, pandg builder
            df = build_index(root, layout="pandg")
    else:
        df = build_index(root)
    subjects = list(dict.fromkeys(df["subject"]))
    first = subjects[0]
    if len(subjects) > 1:
        warnings.warn(
            f"{root}: {len(df)} images of {len(subjects)} subjects indexed; opened subject {first!r} "
            "only. Use the napari-pandg Dataset widget (or `pandg index`) to browse the others.",
            UserWarning,
            stacklevel=2,
        )
    rows = df[df["subject"] == first]
    out = [ld for _, _, ld in iter_subject_layerdata(rows, labels="first")]
    prepare_current_viewer(out)
    return out
