"""MedSAM2 / SAM2.1 zero-shot prompting of 3D volumes (Qt-free engine).

Importing this package is cheap: torch and sam2 are imported only when a model is built.

>>> from napari_pandg.sam import load_sam_model, VolumeSegmenter
>>> engine = load_sam_model("MedSAM2_latest.pt")          # config from the file (hiera-tiny), 512 px
>>> seg = VolumeSegmenter(engine)                         # doctest: +SKIP
>>> seg.set_volume(volume.array)                          # (X, Y, Z) NIfTI order  # doctest: +SKIP
>>> mask = seg.propagate(z=40, box=(x0, y0, x1, y1))      # doctest: +SKIP

See ``docs/sam.md`` for the axis convention, the protocol and its differences from MedSAM2.
"""

from __future__ import annotations

from napari_pandg.sam.cli import (
    add_sam_arguments,
    parse_box,
    parse_object,
    parse_points,
    run_from_args,
    run_sam_cli,
    write_mask_nifti,
)
from napari_pandg.sam.errors import SamCheckpointError, SamError, SamPromptError, SamStateError
from napari_pandg.sam.model import (
    AUTO_CONFIG,
    CONFIGS,
    SamEngine,
    build_image_predictor,
    detect_config,
    load_sam_model,
    resolve_config,
    save_checkpoint,
    suggest_config,
)
from napari_pandg.sam.preprocess import (
    CT_WINDOWS,
    normalize_ct,
    normalize_mri,
    normalize_volume,
    slice_to_model_input,
    stack_to_model_input,
)
from napari_pandg.sam.segmenter import VolumeSegmenter, largest_connected_component

__all__ = [
    "AUTO_CONFIG",
    "CONFIGS",
    "CT_WINDOWS",
    "SamCheckpointError",
    "SamEngine",
    "SamError",
    "SamPromptError",
    "SamStateError",
    "VolumeSegmenter",
    "add_sam_arguments",
    "build_image_predictor",
    "largest_connected_component",
    "load_sam_model",
    "normalize_ct",
    "normalize_mri",
    "normalize_volume",
    "parse_box",
    "parse_object",
    "parse_points",
    "resolve_config",
    "run_from_args",
    "run_sam_cli",
    "save_checkpoint",
    "slice_to_model_input",
    "stack_to_model_input",
    "suggest_config",
    "detect_config",
    "write_mask_nifti",
]
