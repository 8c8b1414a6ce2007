"""The Cases dock's table: one row per worklist entry (case, status, corrected slices, last Dice before/after)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
)

from napari_medseg.worklist import UNREADABLE, describe_effort

COLUMNS = ("Case", "Status", "Corrected", "Before", "After")
HEADER_TIPS = ("The scan (hover: its path, case folder and your effort on it so far)", "new / in progress / reviewed / done / unreadable",
               "Edited or reviewed slices saved with the case (+ other slices holding scribbles)",
               "Mean Dice of the model on this case's corrected slices before its last fine-tune",
               "The same after that fine-tune")
_UNREADABLE_COLOUR = QColor("#e07050")


def _dice(value) -> str:
    return "" if value is None else f"{value:.2f}"


class CasesTable(QTableWidget):
    """Read-only rows of :class:`~napari_medseg.worklist.CaseEntry`; the open case is shown in bold."""

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(COLUMNS))
        for col, tip in enumerate(HEADER_TIPS):  # short headers leave the case's name room in a narrow dock
            self.horizontalHeaderItem(col).setToolTip(tip)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # "b_di…icom": both ends of a long name stay
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.setMinimumHeight(160)

    def show_rows(self, rows, open_id: str | None = None) -> None:
        """Fill the table; an unreadable row carries its reason as tooltip (on every cell)."""
        self.setRowCount(len(rows))
        for i, row in enumerate(rows):
            cells = (row.source.name, row.status, _corrected(row) if row.status != UNREADABLE else "",
                     _dice(row.dice_before), _dice(row.dice_after))
            effort = describe_effort(row.active_seconds, row.changed_voxels, row.stroke_voxels)
            tip = row.reason if row.status == UNREADABLE else (f"{row.source}\ncase folder: cases/{row.case_id}"
                                                               + (f"\nyour effort so far: {effort}" if effort else ""))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tip or "")
                item.setData(Qt.ItemDataRole.UserRole, row.case_id)
                if row.status == UNREADABLE:
                    item.setForeground(_UNREADABLE_COLOUR)
                if row.case_id == open_id:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.setItem(i, col, item)


def _corrected(row) -> str:
    """``"2"``, or ``"2 + 3 scribbled"`` when other slices of the case hold scribbles."""
    return f"{row.corrected} + {row.scribbled} scribbled" if row.scribbled else str(row.corrected)
