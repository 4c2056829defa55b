"""GUI tests: a real napari viewer on an X display (pytest-xvfb starts Xvfb when needed)."""

from __future__ import annotations

import os

import pytest

if os.environ.get("QT_QPA_PLATFORM") == "offscreen":  # vispy cannot render offscreen (no GL)
    pytest.skip("napari GUI tests need an X display (Xvfb), not QT_QPA_PLATFORM=offscreen", allow_module_level=True)

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


def wait_worker(qtbot, worker, timeout: int = 120_000) -> None:
    """Process Qt events until a napari worker has finished and its slots have run.

    Polls the worker registry instead of waiting for ``finished``, which a fast worker may
    emit before a signal wait is set up. A worker leaves ``_worker_set`` on its private
    ``_finished`` signal, emitted after ``finished``, so the widget's slots have run by then.
    """
    if worker is None:
        return
    qtbot.waitUntil(lambda: worker not in type(worker)._worker_set, timeout=timeout)
