"""A dialog that lets the user pick one DICOM series of a folder (UID, description, slices, spacing)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

COLUMNS = ("#", "Description", "Modality", "Slices", "Spacing (row x col x slice)", "Series UID")


class SeriesChooser(QDialog):
    """Modal list of :class:`~napari_medseg.io.DicomSeries`; the largest is preselected."""

    def __init__(self, folder, series: list, parent=None):
        super().__init__(parent)
        self.series = list(series)
        self.setWindowTitle("Choose a DICOM series")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{folder} holds {len(self.series)} DICOM series. Open which one?"))
        self.table = QTableWidget(len(self.series), len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        for row, s in enumerate(self.series):
            cells = (str(row), s.description or "(no description)", s.modality, str(s.num_files), s.spacing_text(), s.uid)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col in (0, 3):
                    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectRow(0)
        self.table.doubleClicked.connect(self.accept)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel, parent=self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(min(1100, 80 + self.table.horizontalHeader().length()), 140 + 30 * len(self.series))

    def chosen(self):
        """The selected series, or None."""
        rows = self.table.selectionModel().selectedRows()
        return self.series[rows[0].row()] if rows else None


def can_ask() -> bool:
    """True when a visible window exists to put a dialog over (never in headless or hidden-viewer runs)."""
    app = QApplication.instance()
    return app is not None and any(w.isVisible() for w in app.topLevelWidgets())


def choose_series(folder, series: list):
    """Ask the user; the chosen :class:`DicomSeries`, or None when cancelled."""
    dialog = SeriesChooser(folder, series, parent=QApplication.activeWindow())
    return dialog.chosen() if dialog.exec_() == QDialog.Accepted else None
