"""Shared fixtures: a small phantom dataset written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

# No import-order workaround here: importing napari_pandg installs its own guard that loads
# triton safely after napari's OpenGL context (napari_pandg._triton_guard), as in a user's
# session. tests/qt/test_user_session.py checks the widgets in fresh processes.
import napari_pandg  # noqa: F401


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
