"""Organ legend dock: colour swatch, organ name and label value of the active Labels layer.

Reads ``layer.metadata["medseg"]["label_set"]``; follows the layer selection.
Clicking a row makes that organ the layer's selected label (for painting).
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from ..labels import LabelSet

SWATCH_PX = 16


def layer_label_set(layer) -> LabelSet | None:
    """The medseg label set of a Labels layer, or None."""
    meta = getattr(layer, "metadata", None) or {}
    data = (meta.get("medseg") or {}).get("label_set")
    if not data:
        return None
    try:
        return LabelSet.from_dict(data)
    except (ValueError, KeyError, TypeError):
        return None


def _swatch(rgba) -> QIcon:
    pixmap = QPixmap(SWATCH_PX, SWATCH_PX)
    r, g, b, a = (max(0, min(255, int(round(c * 255)))) for c in rgba)
    pixmap.fill(QColor(r, g, b, a))
    return QIcon(pixmap)


class LegendWidget(QWidget):
    """Lists the organs of the active (or top-most) Labels layer with a medseg label set."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.layer = None
        self.title = QLabel("No labels layer")
        self.title.setWordWrap(True)
        self.list = QListWidget()
        self.list.itemClicked.connect(self._on_item_clicked)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.list)
        events = self.viewer.layers.events
        self.viewer.layers.selection.events.active.connect(self.refresh)
        events.inserted.connect(self.refresh)
        events.removed.connect(self.refresh)
        self.refresh()

    def _pick_layer(self):
        from napari.layers import Labels

        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and layer_label_set(active) is not None:
            return active
        for layer in reversed(list(self.viewer.layers)):  # top-most first
            if isinstance(layer, Labels) and layer_label_set(layer) is not None:
                return layer
        return None

    def refresh(self, event=None):
        """Re-read the label set (call after changing a layer's medseg metadata)."""
        self.layer = self._pick_layer()
        self.list.clear()
        if self.layer is None:
            self.title.setText("No labels layer with organ names")
            return
        label_set = layer_label_set(self.layer)
        self.title.setText(f"{self.layer.name}: {label_set.name}")
        for value, name in sorted(label_set.organs.items()):
            item = QListWidgetItem(_swatch(label_set.colors.get(value, (0.5, 0.5, 0.5, 1.0))), f"{name}  ({value})")
            item.setData(Qt.ItemDataRole.UserRole, value)
            self.list.addItem(item)

    def organ_names(self) -> list[str]:
        """Names currently listed, in label order."""
        label_set = layer_label_set(self.layer) if self.layer is not None else None
        return [] if label_set is None else [n for _, n in sorted(label_set.organs.items())]

    def _on_item_clicked(self, item):
        if self.layer is not None:
            self.layer.selected_label = int(item.data(Qt.ItemDataRole.UserRole))
