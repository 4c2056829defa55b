"""Exceptions raised by :mod:`napari_pandg.models` and :mod:`napari_pandg.train`.

Every message names the file concerned and says what was expected, so that the CLI and
the napari widgets can show it to the user unchanged.
"""

from __future__ import annotations


class ModelError(ValueError):
    """A model or checkpoint cannot be used as it is."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A checkpoint file or registered model name does not exist."""


class CheckpointFormatError(ModelError):
    """The file is not a readable checkpoint (corrupt, truncated, unknown layout)."""


class ArchitectureMismatchError(ModelError):
    """The state dict does not fit the architecture the checkpoint describes (or asked for)."""


class LabelMapError(ModelError):
    """The model's output-index -> AMOS-id label map is inconsistent or not what was expected."""


class SegmentationCancelled(RuntimeError):
    """Raised inside :func:`segment_volume` when the ``cancel`` callback returns True."""
