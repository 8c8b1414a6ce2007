"""A small read-only table of per-organ volume (mL), mean intensity and, when known, mean uncertainty.

Clicking an organ's row emits :attr:`OrganTable.organ_clicked` with the organ's label value and
the slice to look at first (``OrganStat.focus_slice``).  :func:`check_first_html` is the same
hint as one line of links, for a dock without room for the table."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from napari_medseg.organ_stats import format_number, has_uncertainty, least_certain


class OrganTable(QTableWidget):
    """Rows of ``napari_medseg.organ_stats.OrganStat`` with a colour swatch per organ."""

    organ_clicked = Signal(int, int)  # (label value, focus slice); only for organs with voxels

    HEADERS = ("organ", "volume (mL)", "mean", "uncertainty")
    UNCERTAINTY_TIP = ("Mean normalised entropy of the model's prediction inside the organ: 0 = certain, "
                       "1 = guessing. An organ the model is unsure of is the first to check. "
                       "Click the organ's row to go to its least certain slice.")
    FOCUS_WHY = {True: "where the organ is least certain", False: "the organ's largest section"}

    def __init__(self, parent=None):
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(self.HEADERS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._rows = []
        self.cellClicked.connect(self._on_cell_clicked)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeaderItem(3).setToolTip(self.UNCERTAINTY_TIP)
        self.setColumnHidden(3, True)

    def show_stats(self, rows, label_set, unit: str = "HU") -> None:
        """Fill the table; ``unit`` labels the mean-intensity column.  The uncertainty column shows
        only when some row has a mean uncertainty."""
        self.setHorizontalHeaderItem(2, QTableWidgetItem(f"mean ({unit})"))
        uncertain = has_uncertainty(rows)
        self.setColumnHidden(3, not uncertain)
        self._rows = list(rows)
        self.clearSelection()
        self.setRowCount(len(rows))
        for r, stat in enumerate(rows):
            name = QTableWidgetItem(stat.name)
            rgba = label_set.colors.get(stat.value, (0.5, 0.5, 0.5, 1.0))
            name.setData(1, QColor.fromRgbF(*[float(c) for c in rgba[:3]], 1.0))  # DecorationRole swatch
            if stat.focus_slice is not None:
                name.setToolTip(f"Click: go to slice {stat.focus_slice} ({self.FOCUS_WHY[uncertain]}) "
                                f"and paint with {stat.name}")
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

    def _on_cell_clicked(self, row: int, _column: int) -> None:
        stat = self._rows[row] if 0 <= row < len(self._rows) else None
        if stat is not None and stat.focus_slice is not None:
            self.organ_clicked.emit(int(stat.value), int(stat.focus_slice))

    def rows_text(self) -> list[tuple[str, ...]]:
        """Texts of the visible cells, for tests."""
        columns = [c for c in range(self.columnCount()) if not self.isColumnHidden(c)]
        return [tuple(self.item(r, c).text() for c in columns) for r in range(self.rowCount())]


def check_first_html(rows, n: int = 3, colour: str | None = None) -> str:
    """``"Check first (uncertainty, 0 = certain): <a href="4:12">kidney right</a> 0.64 · ..."``: the ``n``
    least certain found organs (href ``"value:focus slice"``, for :func:`parse_organ_link`); empty without
    uncertainty.  ``colour``: the links' colour (e.g. the label's text colour: Qt's default link blue is
    unreadable on a dark theme)."""
    worst = least_certain(rows, n)
    if not worst:
        return ""
    style = f' style="color:{colour}"' if colour else ""
    links = [f'<a href="{r.value}:{r.focus_slice}"{style}>{r.name}</a> {r.mean_uncertainty:.2f}' for r in worst]
    return "Check first (uncertainty, 0 = certain): " + " \u00b7 ".join(links)


def parse_organ_link(href: str) -> tuple[int, int]:
    """``"4:12"`` -> ``(label value 4, slice 12)``."""
    value, z = href.split(":")
    return int(value), int(z)
