"""Trained segmentation models: checkpoints, registry and inference (no Qt).

* :mod:`.checkpoint` -- :class:`ModelDescription`, :func:`save_checkpoint`,
  :func:`load_checkpoint` (napari-pandg checkpoints and MaskGen ``best.pth``);
* :mod:`.registry` -- :func:`list_models`, :func:`resolve_model` (shipped ``weights/*.pt``
  and the user folder ``$PANDG_MODELS`` or ``~/.pandg/models``);
* :mod:`.inference` -- :func:`segment_volume`, :func:`segment_files`, :func:`run_segment_cli`;
* :mod:`.networks` -- architectures (MONAI UNet/DynUNet, anatomix-style PlainUnet).

Needs ``torch`` and ``monai`` (the ``seg`` extra).
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562), so that ``pandg models`` and the registry do
# not pay for torch: reading a description needs neither torch nor MONAI.
_WHERE = {
    "DEFAULT_NORMALIZATION": "description",
    "ModelDescription": "description",
    "read_description_fast": "description",
    "SegModel": "checkpoint",
    "build_model": "checkpoint",
    "check_label_map": "checkpoint",
    "load_anatomix": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_description": "checkpoint",
    "save_checkpoint": "checkpoint",
    "ArchitectureMismatchError": "errors",
    "CheckpointFormatError": "errors",
    "LabelMapError": "errors",
    "ModelError": "errors",
    "ModelNotFoundError": "errors",
    "SegmentationCancelled": "errors",
    "run_segment_cli": "inference",
    "segment_files": "inference",
    "segment_volume": "inference",
    "list_models": "registry",
    "resolve_model": "registry",
    "shipped_model_dir": "registry",
    "user_model_dir": "registry",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [  # noqa: F822 - provided by __getattr__
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
    "read_description_fast",
    "resolve_model",
    "run_segment_cli",
    "save_checkpoint",
    "segment_files",
    "segment_volume",
    "shipped_model_dir",
    "user_model_dir",
]
