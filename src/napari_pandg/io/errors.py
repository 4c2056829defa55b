"""Exceptions and warnings raised by :mod:`napari_pandg.io`.

Every message names the file (or folder) concerned and says what to do about it, so
that the CLI and the napari reader can show it to the user unchanged.
"""

from __future__ import annotations


class PandgIOError(ValueError):
    """A file or dataset cannot be used as it is (missing, corrupt, wrong shape/values)."""


class PandgFileNotFoundError(PandgIOError, FileNotFoundError):
    """A file or folder that should exist does not (also a ``FileNotFoundError``)."""


class ObliqueAffineWarning(UserWarning):
    """The volume's axes are rotated against patient RAS; napari gets an ``affine=``."""


class MissingGeometryWarning(UserWarning):
    """A layer is written without the source image geometry (affine/header)."""
