"""GUI tests: a real napari viewer on an X display (pytest-xvfb starts Xvfb when needed)."""

from __future__ import annotations

import os

import pytest

if os.environ.get("QT_QPA_PLATFORM") == "offscreen":  # vispy cannot render offscreen (no GL)
    pytest.skip("napari GUI tests need an X display (Xvfb), not QT_QPA_PLATFORM=offscreen", allow_module_level=True)

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


def wait_worker(qtbot, worker, timeout: int = 60_000) -> None:
    """Block (processing Qt events) until a napari worker has finished."""
    if worker is None:
        return
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass
