"""Layout parts shared by the docks: combo boxes that elide, a row of widgets, a scrolling dock body,
a status line that scrolls past a few lines.

Docks share the right-hand side of napari's window with each other: a combo box
that widens with a long layer name or path takes width from the canvas, and a
dock taller than the screen makes the window taller than the screen.
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy, QStyle,
                            QStyleOptionComboBox, QStylePainter)

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


#: Lines of a dock's status shown before it scrolls: a long status (after a fine-tune) must not push the
#: buttons above it out of a short window.
STATUS_LINES = 6


class StatusLabel(QLabel):
    """A dock's word-wrapped status line (plain ``setText`` / ``text``); in its :class:`StatusArea` it
    scrolls beyond :data:`STATUS_LINES` lines."""

    def __init__(self, text: str = ""):
        super().__init__(text)
        self.setWordWrap(True)
        self.area: StatusArea | None = None

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        super().setText(text)
        if self.area is not None:
            self.area.updateGeometry()


class StatusArea(QScrollArea):
    """Holds a :class:`StatusLabel`: as tall as its text, at most ``max_lines`` lines, then a scroll bar."""

    def __init__(self, label: StatusLabel, max_lines: int = STATUS_LINES, parent=None):
        super().__init__(parent)
        self.label, self.max_lines = label, int(max_lines)
        label.area = self
        self.setWidget(label)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    def _chrome(self) -> int:
        """Pixels the area adds around its viewport (a style sheet's border or padding)."""
        if self.height() > 1 and self.viewport().height() > 1:
            return max(0, self.height() - self.viewport().height())
        return 2 * self.frameWidth()

    def text_height(self) -> int:
        """Pixels the area needs to show the label's whole text at its current width."""
        width = self.viewport().width() if self.viewport().width() > 1 else self.label.sizeHint().width()
        height = self.label.heightForWidth(width)
        return (height if height > 0 else self.label.sizeHint().height()) + self._chrome()

    def lines_height(self, lines: int) -> int:
        """Pixels the area needs to show ``lines`` lines of the label's text."""
        margins = self.label.contentsMargins()
        return lines * self.label.fontMetrics().lineSpacing() + margins.top() + margins.bottom() + self._chrome()

    def sizeHint(self) -> QSize:
        return QSize(self.label.minimumSizeHint().width(), min(self.text_height(), self.lines_height(self.max_lines)))

    def minimumSizeHint(self) -> QSize:  # squeezed: two lines (or the whole text when shorter), then it scrolls
        return QSize(self.label.minimumSizeHint().width(), min(self.text_height(), self.lines_height(2)))

    def resizeEvent(self, event):  # a new width wraps the text anew: ask for the height that fits it
        super().resizeEvent(event)
        if event.oldSize().width() != event.size().width():
            self.updateGeometry()
