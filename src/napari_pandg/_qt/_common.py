"""Small Qt helpers shared by the dock widgets."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)


#: combo boxes in a dock are at least this many characters wide, not as wide as their longest item
COMBO_MIN_CHARS = 8


class DockScrollArea(QScrollArea):
    """The frameless scroll area of :func:`scrolling_layout`.

    When first shown it lets every combo box shrink to :data:`COMBO_MIN_CHARS` characters (Qt
    sizes them to their longest item by default: a checkpoint path made the Segment widget
    wider than its dock; the full text of the current item is the tooltip), and lets form rows
    wrap (the field goes under its label) when the dock is narrow, so that nothing is clipped
    at the default dock width.
    """

    _compacted = False

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if not self._compacted:
            self._compacted = True
            inner = self.widget()
            if inner is not None:
                for combo in inner.findChildren(QComboBox):
                    compact_combo(combo)
                for form in inner.findChildren(QFormLayout):
                    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        super().showEvent(event)


def compact_combo(combo: QComboBox) -> None:
    """Let ``combo`` shrink to :data:`COMBO_MIN_CHARS` characters; its tooltip shows the choice."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(COMBO_MIN_CHARS)
    if not combo.property("pandg_tooltip"):
        combo.setProperty("pandg_tooltip", True)
        own = combo.toolTip()
        combo.currentTextChanged.connect(lambda text: combo.setToolTip(own or text))
        combo.setToolTip(own or combo.currentText())


def scrolling_layout(owner: QWidget) -> QVBoxLayout:
    """The content layout of a dock widget, placed inside a frameless :class:`QScrollArea`.

    Without it a dock's minimum height is its whole content (700 px for the MedSAM2 widget),
    and docking the five widgets grew the napari window to 2700 px. In a scroll area the
    minimum size is small, so any number of docks fit a laptop screen; content that does not
    fit scrolls.
    """
    inner = QWidget()
    lay = QVBoxLayout(inner)
    area = DockScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setWidget(inner)
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    owner.scroll_area = area  # type: ignore[attr-defined]
    return lay


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
    return [
        ly.name
        for ly in viewer.layers
        if isinstance(ly, cls) and ly.ndim == ndim and ly.name not in exclude
    ]


def preferred_layer(viewer: Any, kind: str, ndim: int = 3, exclude: Sequence[str] = ()) -> str | None:
    """The layer a widget should offer first: the active (selected) ``kind`` layer if it is
    visible, else the topmost visible one, else ``None`` (a hidden layer is never preferred:
    napari makes every added layer the active one, also the hidden sequences of the sample)."""
    import napari

    cls = getattr(napari.layers, kind)

    def ok(ly: Any) -> bool:
        return isinstance(ly, cls) and ly.ndim == ndim and ly.name not in exclude

    active = viewer.layers.selection.active
    if active is not None and ok(active) and active.visible:
        return active.name
    for ly in reversed(list(viewer.layers)):  # the top of the layer list is drawn on top
        if ok(ly) and ly.visible:
            return ly.name
    return None


_USER_CHOICE = "pandg_user_choice"


def set_layer_combo(
    combo: QComboBox,
    viewer: Any,
    kind: str,
    *,
    ndim: int = 3,
    exclude: Sequence[str] = (),
    first: Sequence[str] = (),
    follow_selection: bool = False,
) -> None:
    """Fill ``combo`` with the viewer's ``kind`` layers (after the ``first`` fixed items) and
    choose the layer the user means: the one they picked in this combo, if it still exists;
    with ``follow_selection`` the layer they just selected in the layer list; else the
    :func:`preferred_layer` (selected or topmost visible), never a hidden one by default."""
    names = [*first, *layer_names(viewer, kind, ndim, exclude)]
    if combo.property(_USER_CHOICE) is None:
        combo.setProperty(_USER_CHOICE, "")
        combo.activated.connect(lambda *_: combo.setProperty(_USER_CHOICE, combo.currentText()))
    user = str(combo.property(_USER_CHOICE) or "")
    preferred = preferred_layer(viewer, kind, ndim, exclude)
    set_combo_items(combo, names)
    combo.blockSignals(True)
    active = viewer.layers.selection.active
    if follow_selection and active is not None and active.name == preferred and preferred in names:
        combo.setCurrentText(preferred)
        combo.setProperty(_USER_CHOICE, "")
    elif user and user in names:
        combo.setCurrentText(user)
    elif preferred in names:
        combo.setCurrentText(preferred)
    combo.blockSignals(False)


def report_error(status: QLabel, exc: BaseException) -> None:
    """Show a worker's error in the widget's status line and as a napari notification."""
    from napari.utils.notifications import show_error

    status.setText(f"Error: {exc}")
    show_error(str(exc))


class ProgressSignals(QObject):
    """Thread-safe progress reports from a worker thread: ``(done, total, message)``."""

    progress = Signal(int, int, str)


class WorkerControls:
    """Run / Cancel buttons, a progress bar, a cancel flag and the handlers of one worker.

    A mixin for the dock widgets whose work runs in a napari thread worker (Segment, Feature
    UMAP, Fine-tune). The widget calls :meth:`_init_worker_controls` in ``__init__`` (after
    creating ``self.status``), places the returned button row and ``self.progress``, and
    implements ``run()``. In ``run()`` it calls :meth:`_start_worker` with the worker; the worker
    function reports through :meth:`_report` (safe from any thread) and polls
    ``self._cancel.is_set``. Set ``fill_progress_when_idle = False`` when a finished or
    cancelled run should leave the bar where it stopped (the Fine-tune epochs), and
    ``progress_messages_to_status = True`` to show the worker's stage messages in the status
    line (otherwise they label the progress bar).
    """

    status: QLabel
    fill_progress_when_idle = True
    progress_messages_to_status = False

    def _init_worker_controls(self, run_text: str) -> QHBoxLayout:
        self._worker: Any = None
        self._cancel = threading.Event()
        self._progress_signals = ProgressSignals()
        self._progress_signals.progress.connect(self._on_progress)
        self.run_btn = QPushButton(run_text)
        self.run_btn.clicked.connect(lambda: self.run())
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        row = QHBoxLayout()
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        return row

    def run(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - every widget defines it
        raise NotImplementedError

    def _start_worker(
        self, worker: Any, on_returned: Callable[[Any], None], total: int = 0
    ) -> Any:
        """Connect and start ``worker`` (created with ``_ignore_errors=True``); busy until it ends."""
        self._cancel.clear()
        worker.returned.connect(on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._idle)
        self._worker = worker
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setRange(0, max(int(total), 0))
        self.progress.setValue(0)
        worker.start()
        return worker

    def _report(self, done: int, total: int, what: str = "") -> None:
        """Progress from the worker thread (total 0: busy without a known end)."""
        self._progress_signals.progress.emit(int(done), int(total), str(what))

    def _on_progress(self, done: int, total: int, what: str) -> None:
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        if what and self.progress_messages_to_status:
            self.status.setText(what)
        else:
            self.progress.setFormat(f"{what}: %v / %m" if what else "%p%")

    def cancel(self) -> None:
        """Ask the running worker to stop at its next check."""
        self._cancel.set()

    def _idle(self) -> None:
        self._worker = None
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        if self.fill_progress_when_idle:
            self.progress.setValue(self.progress.maximum())

    def _on_error(self, exc: BaseException) -> None:
        report_error(self.status, exc)
