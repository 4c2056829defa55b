"""Small Qt helpers shared by the dock widgets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtWidgets import QComboBox, QLabel


def set_combo_items(combo: QComboBox, names: Sequence[str]) -> None:
    """Replace a combo box's items, keeping the current choice when it still exists."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(names))
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def layer_names(viewer: Any, kind: str, ndim: int = 3, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the viewer's ``kind`` layers ("Image" / "Labels") of dimension ``ndim``."""
    import napari

    cls = getattr(napari.layers, kind)
    return [ly.name for ly in viewer.layers if isinstance(ly, cls) and ly.ndim == ndim and ly.name not in exclude]


def report_error(status: QLabel, exc: BaseException) -> None:
    """Show a worker's error in the widget's status line and as a napari notification."""
    from napari.utils.notifications import show_error

    status.setText(f"Error: {exc}")
    show_error(str(exc))
