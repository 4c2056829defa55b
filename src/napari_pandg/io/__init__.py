"""NIfTI I/O, napari layer conversion and dataset indexing (no Qt, no torch, no napari).

* :mod:`.nifti` -- :func:`load_volume`, :func:`save_volume`, :func:`validate_pair`,
  :func:`check_label_values`;
* :mod:`.napari_layers` -- :func:`to_napari` / :func:`from_napari` ((S, A, R) layers with
  world millimetres), :func:`world_to_voxel`, :func:`voxel_to_world`;
* :mod:`.layouts` / :mod:`.index` -- :func:`build_index` (pandg, nnunet, amos,
  totalseg_mri), :func:`detect_layout`, :func:`write_index`, :func:`read_index`,
  :func:`load_case`, :func:`load_totalseg_labels`;
* ``_reader`` / ``_writer`` -- the napari contributions.

All problems with files raise :class:`PandgIOError` (a ``ValueError``) naming the file.
"""

from napari_pandg.io.errors import (
    MissingGeometryWarning,
    ObliqueAffineWarning,
    PandgFileNotFoundError,
    PandgIOError,
)
from napari_pandg.io.index import INDEX_COLUMNS, build_index, load_case, read_index, write_index
from napari_pandg.io.layouts import LAYOUTS, TOTALSEG_TO_AMOS, detect_layout, load_totalseg_labels
from napari_pandg.io.napari_layers import (
    data_to_world,
    from_napari,
    is_oblique,
    napari_affine,
    to_napari,
    transform_kwargs,
    voxel_to_world,
    world_to_data,
    world_to_voxel,
)
from napari_pandg.io.nifti import (
    apply_label_map,
    check_label_values,
    format_label_map,
    guess_is_label,
    load_volume,
    parse_label_map,
    save_volume,
    validate_pair,
)

__all__ = [
    "INDEX_COLUMNS",
    "LAYOUTS",
    "TOTALSEG_TO_AMOS",
    "MissingGeometryWarning",
    "ObliqueAffineWarning",
    "PandgFileNotFoundError",
    "PandgIOError",
    "apply_label_map",
    "build_index",
    "check_label_values",
    "data_to_world",
    "detect_layout",
    "format_label_map",
    "from_napari",
    "guess_is_label",
    "is_oblique",
    "load_case",
    "load_totalseg_labels",
    "load_volume",
    "napari_affine",
    "parse_label_map",
    "read_index",
    "save_volume",
    "to_napari",
    "transform_kwargs",
    "validate_pair",
    "voxel_to_world",
    "world_to_data",
    "world_to_voxel",
    "write_index",
]
