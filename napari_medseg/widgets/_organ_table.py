"""A small read-only table of per-organ volume (mL) and mean intensity."""

from __future__ import annotations

import math

from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


class OrganTable(QTableWidget):
    """Rows of ``napari_medseg.organ_stats.OrganStat`` with a colour swatch per organ."""

    HEADERS = ("organ", "volume (mL)", "mean")

    def __init__(self, parent=None):
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(self.HEADERS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)

    def show_stats(self, rows, label_set, unit: str = "HU") -> None:
        """Fill the table; ``unit`` labels the mean-intensity column."""
        self.setHorizontalHeaderItem(2, QTableWidgetItem(f"mean ({unit})"))
        self.setRowCount(len(rows))
        for r, stat in enumerate(rows):
            name = QTableWidgetItem(stat.name)
            rgba = label_set.colors.get(stat.value, (0.5, 0.5, 0.5, 1.0))
            name.setData(1, QColor.fromRgbF(*[float(c) for c in rgba[:3]], 1.0))  # DecorationRole swatch
            vol = QTableWidgetItem(f"{stat.volume_ml:.1f}")
            mean = QTableWidgetItem("-" if math.isnan(stat.mean_intensity) else f"{stat.mean_intensity:.0f}")
            for col, item in enumerate((name, vol, mean)):
                if col:
                    item.setTextAlignment(0x0082)  # AlignRight | AlignVCenter
                self.setItem(r, col, item)
        self.resizeRowsToContents()
        height = self.horizontalHeader().height() + sum(self.rowHeight(i) for i in range(len(rows))) + 4
        self.setFixedHeight(min(max(height, 60), 320))

    def rows_text(self) -> list[tuple[str, str, str]]:
        """Cell texts, for tests."""
        return [tuple(self.item(r, c).text() for c in range(3)) for r in range(self.rowCount())]
