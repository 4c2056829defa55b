"""Exceptions raised by :mod:`napari_pandg.sam`."""

from __future__ import annotations


class SamError(Exception):
    """Base class of every error raised by the SAM engine."""


class SamCheckpointError(SamError):
    """A checkpoint file is missing, unreadable, or does not fit the chosen config."""


class SamPromptError(SamError, ValueError):
    """Bad prompts or input (box outside the image, empty slice, non-3D image, ...)."""


class SamStateError(SamError, RuntimeError):
    """An operation was called in the wrong state (no volume set, no mask to correct, ...)."""
