"""A small read-only table of per-organ volume (mL), mean intensity and, when known, mean uncertainty."""

from __future__ import annotations

from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


class OrganTable(QTableWidget):
    """Rows of ``napari_medseg.organ_stats.OrganStat`` with a colour swatch per organ."""

    HEADERS = ("organ", "volume (mL)", "mean", "uncertainty")
    UNCERTAINTY_TIP = ("Mean normalised entropy of the model's prediction inside the organ: 0 = certain, "
                       "1 = guessing. An organ the model is unsure of is the first to check. "
                       "Shown when the segmentation computed its uncertainty.")

    def __init__(self, parent=None):
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(self.HEADERS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeaderItem(3).setToolTip(self.UNCERTAINTY_TIP)
        self.setColumnHidden(3, True)

    def show_stats(self, rows, label_set, unit: str = "HU") -> None:
        """Fill the table; ``unit`` labels the mean-intensity column.  The uncertainty column shows
        only when some row has a mean uncertainty."""
        from napari_medseg.organ_stats import format_number, has_uncertainty

        self.setHorizontalHeaderItem(2, QTableWidgetItem(f"mean ({unit})"))
        self.setColumnHidden(3, not has_uncertainty(rows))
        self.setRowCount(len(rows))
        for r, stat in enumerate(rows):
            name = QTableWidgetItem(stat.name)
            rgba = label_set.colors.get(stat.value, (0.5, 0.5, 0.5, 1.0))
            name.setData(1, QColor.fromRgbF(*[float(c) for c in rgba[:3]], 1.0))  # DecorationRole swatch
            vol = QTableWidgetItem(f"{stat.volume_ml:.1f}")
            mean = QTableWidgetItem(format_number(stat.mean_intensity, 0))
            unc = QTableWidgetItem(format_number(stat.mean_uncertainty, 2))
            unc.setToolTip(self.UNCERTAINTY_TIP)
            for col, item in enumerate((name, vol, mean, unc)):
                if col:
                    item.setTextAlignment(0x0082)  # AlignRight | AlignVCenter
                self.setItem(r, col, item)
        self.resizeRowsToContents()
        height = self.horizontalHeader().height() + sum(self.rowHeight(i) for i in range(len(rows))) + 4
        self.setFixedHeight(min(max(height, 60), 320))

    def rows_text(self) -> list[tuple[str, ...]]:
        """Texts of the visible cells, for tests."""
        columns = [c for c in range(self.columnCount()) if not self.isColumnHidden(c)]
        return [tuple(self.item(r, c).text() for c in columns) for r in range(self.rowCount())]
