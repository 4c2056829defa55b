"""The one object volumes travel in between modules."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Volume:
    """A 3D image or label map with its geometry and provenance.

    ``array`` is indexed like the NIfTI array on disk (i, j, k); ``affine`` maps voxel
    indices to patient RAS+ millimetres, exactly as ``nibabel`` reports it. Conversions
    to napari's (S, A, R) display order live in :mod:`napari_pandg.io.napari_layers`.
    """

    array: np.ndarray
    affine: np.ndarray
    subject: str = ""
    center: str = ""
    sequence: str = ""
    is_label: bool = False
    source_path: Path | None = None
    header: Any = None  # nibabel header of the source file, kept for exact write-back
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {self.affine.shape}")
        if self.array.ndim != 3:
            raise ValueError(
                f"Volume must be 3D, got an array of shape {self.array.shape}"
                + (f" from {self.source_path}" if self.source_path else "")
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (column norms of the affine)."""
        sp = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return tuple(float(s) for s in sp)  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """A copy with another array of the same shape on the same grid."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the volume's {self.array.shape}")
        return replace(self, array=array, **changes)

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        inv = np.linalg.inv(self.affine)
        return xyz @ inv[:3, :3].T + inv[:3, 3]
