"""Layout parts shared by the docks: combo boxes that elide, a row of widgets, a scrolling dock body.

Docks share the right-hand side of napari's window with each other: a combo box
that widens with a long layer name or path takes width from the canvas, and a
dock taller than the screen makes the window taller than the screen.
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QComboBox, QFrame, QHBoxLayout, QPushButton, QScrollArea, QStyle, QStyleOptionComboBox, QStylePainter

#: Characters a name or path combo box has room for before it elides.
NAME_CHARS = 18


class ElidedComboBox(QComboBox):
    """A combo box as wide as :data:`NAME_CHARS` characters that elides a long current text.

    ``mode``: ``Qt.TextElideMode.ElideMiddle`` (layer names: ``"patient 7 … labels"`` keeps
    both ends) or ``ElideLeft`` (paths: ``"…/models/liver.v3.safetensors"`` keeps the file name).
    The full text is in the tooltip.
    """

    def __init__(self, parent=None, mode=Qt.TextElideMode.ElideMiddle):
        super().__init__(parent)
        self.mode = mode
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(NAME_CHARS)
        self.view().setTextElideMode(mode)
        self.currentTextChanged.connect(self.setToolTip)

    def shown_text(self, option: QStyleOptionComboBox | None = None) -> str:
        """The current text as drawn: elided to the width of the text field."""
        if option is None:
            option = QStyleOptionComboBox()
            self.initStyleOption(option)
        field = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                            QStyle.SubControl.SC_ComboBoxEditField, self)
        return self.fontMetrics().elidedText(self.currentText(), self.mode, field.width())

    def paintEvent(self, event):  # as QComboBox's own, with the current text elided
        painter = QStylePainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        option.currentText = self.shown_text(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)


def fill_layer_combo(combo: QComboBox, layers) -> None:
    """List ``layers`` by name (their ids as item data), keeping the chosen layer chosen, renamed or not.

    Emits no change signal: the caller refreshes what depends on the choice.
    """
    chosen = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for layer in layers:
        combo.addItem(layer.name, str(layer.unique_id))
    if chosen is not None and combo.findData(chosen) >= 0:
        combo.setCurrentIndex(combo.findData(chosen))
    combo.blockSignals(False)


def button(text: str, on_click, tip: str = "") -> QPushButton:
    """A push button that calls ``on_click()`` when clicked (with a tooltip when ``tip`` is given)."""
    b = QPushButton(text)
    b.setToolTip(tip)
    b.clicked.connect(lambda checked=False: on_click())
    return b


def row(*widgets) -> QHBoxLayout:
    """The widgets side by side."""
    layout = QHBoxLayout()
    for w in widgets:
        layout.addWidget(w)
    return layout


class DockScrollArea(QScrollArea):
    """Scrolls a dock's body vertically when the window is too short for it.

    It asks for the body's full height and takes no more (the next dock gets the rest).
    """

    def __init__(self, body, parent=None):
        super().__init__(parent)
        self.setWidget(body)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def sizeHint(self) -> QSize:  # QScrollArea caps its hint at 24 lines of text
        hint = self.widget().sizeHint()
        return QSize(hint.width() + self._bar_width(), hint.height())

    def minimumSizeHint(self) -> QSize:  # never narrower than the body: it does not scroll sideways
        return QSize(self.widget().minimumSizeHint().width() + self._bar_width(), super().minimumSizeHint().height())

    def _bar_width(self) -> int:
        return self.verticalScrollBar().sizeHint().width()


def scrolling(dock, body, footer=None) -> None:
    """Make ``body`` (a QWidget holding the dock's controls) scroll in a :class:`DockScrollArea` filling the dock;
    ``footer`` (a QWidget, optional) stays under it, never scrolled away: what the user watches while
    the dock is squeezed between others (run buttons, progress, status)."""
    from qtpy.QtWidgets import QVBoxLayout

    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.setSpacing(0)
    outer.addWidget(DockScrollArea(body), 1)
    if footer is not None:
        outer.addWidget(footer)
