"""napari-pandg: domain-shift-aware pancreas segmentation in multi-sequence, multi-center MRI.

The package is usable without Qt: ``napari_pandg.phantom`` (physics-based phantom),
``napari_pandg.io`` (NIfTI I/O, dataset index) and the ``pandg`` command line.
Qt widgets live under ``napari_pandg._qt`` and are only imported by napari.
"""

from napari_pandg import _triton_guard
from napari_pandg.volume import Volume

# Before anything can import torch: triton's LLVM must not bind to Mesa's (napari segfault).
_triton_guard.install()

__version__ = "0.1.0"
__all__ = ["Volume", "__version__"]
