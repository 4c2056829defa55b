"""Trained segmentation models: checkpoints, registry and inference (no Qt).

* :mod:`.checkpoint` -- :class:`ModelDescription`, :func:`save_checkpoint`,
  :func:`load_checkpoint` (napari-pandg checkpoints and MaskGen ``best.pth``);
* :mod:`.registry` -- :func:`list_models`, :func:`resolve_model` (shipped ``weights/*.pt``
  and the user folder ``$PANDG_MODELS`` or ``~/.pandg/models``);
* :mod:`.inference` -- :func:`segment_volume`, :func:`segment_files`, :func:`run_segment_cli`;
* :mod:`.networks` -- architectures (MONAI UNet/DynUNet, anatomix-style PlainUnet).

Needs ``torch`` and ``monai`` (the ``seg`` extra).
"""

from napari_pandg.models.checkpoint import (
    DEFAULT_NORMALIZATION,
    ModelDescription,
    SegModel,
    build_model,
    check_label_map,
    load_anatomix,
    load_checkpoint,
    read_description,
    save_checkpoint,
)
from napari_pandg.models.errors import (
    ArchitectureMismatchError,
    CheckpointFormatError,
    LabelMapError,
    ModelError,
    ModelNotFoundError,
    SegmentationCancelled,
)
from napari_pandg.models.inference import run_segment_cli, segment_files, segment_volume
from napari_pandg.models.registry import (
    list_models,
    resolve_model,
    shipped_model_dir,
    user_model_dir,
)

__all__ = [
    "DEFAULT_NORMALIZATION",
    "ArchitectureMismatchError",
    "CheckpointFormatError",
    "LabelMapError",
    "ModelDescription",
    "ModelError",
    "ModelNotFoundError",
    "SegModel",
    "SegmentationCancelled",
    "build_model",
    "check_label_map",
    "list_models",
    "load_anatomix",
    "load_checkpoint",
    "read_description",
    "resolve_model",
    "run_segment_cli",
    "save_checkpoint",
    "segment_files",
    "segment_volume",
    "shipped_model_dir",
    "user_model_dir",
]
