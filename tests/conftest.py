"""Shared fixtures: a small phantom dataset written once per test session."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import pytest

# Load torch's compiler stack (and triton's C extension) before any test loads PyQt6: importing
# triton for the first time after PyQt6 segfaults in this environment (seen when the SAM widget
# tests run before tests/test_sam.py in one process, where torchvision imports torch._dynamo).
with suppress(ImportError):
    import torch._dynamo  # noqa: F401


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One subject per center for two centers, all five sequences, written to disk
    (2.5 mm anatomy grid instead of 1.5 mm to keep the suite fast)."""
    from napari_pandg.phantom import write_dataset

    out = tmp_path_factory.mktemp("phantom") / "data"
    write_dataset(out, n_subjects=1, centers=("A", "B"), seed=3, fine_spacing=2.5)
    return out


@pytest.fixture(scope="session")
def phantom_index(phantom_dir: Path):
    from napari_pandg.io import build_index

    return build_index(phantom_dir)
