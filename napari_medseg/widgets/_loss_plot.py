"""A tiny live loss curve drawn with QPainter (no plotting library needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Training loss against step; the best (lowest) point is marked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._steps: list[int] = []
        self._losses: list[float] = []

    def clear(self) -> None:
        self._steps, self._losses = [], []
        self.update()

    def add(self, step: int, loss: float) -> None:
        self.extend([(step, loss)])

    def extend(self, points) -> None:
        """Append ``[(step, loss), ...]`` (non-finite losses skipped) and repaint once."""
        finite = [(int(s), float(v)) for s, v in points if math.isfinite(v)]
        if finite:
            self._steps += [s for s, _ in finite]
            self._losses += [v for _, v in finite]
            self.update()

    @property
    def losses(self) -> list[float]:
        return list(self._losses)

    def paintEvent(self, event):  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.rect().adjusted(34, 6, -6, -16)
        painter.setPen(QPen(QColor(110, 110, 110)))
        painter.drawRect(rect)
        if len(self._losses) < 2:
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "loss curve appears during fine-tuning")
            return
        lo, hi = min(self._losses), max(self._losses)
        hi = hi if hi > lo else lo + 1e-6
        s0, s1 = self._steps[0], max(self._steps[-1], self._steps[0] + 1)

        def to_point(step, loss):
            x = rect.left() + (step - s0) / (s1 - s0) * rect.width()
            y = rect.bottom() - (loss - lo) / (hi - lo) * rect.height()
            return QPointF(x, y)

        painter.setPen(QPen(QColor(80, 170, 255), 1.5))
        painter.drawPolyline(QPolygonF([to_point(s, v) for s, v in zip(self._steps, self._losses)]))
        best = min(range(len(self._losses)), key=self._losses.__getitem__)
        painter.setBrush(QColor(255, 200, 0))
        painter.drawEllipse(to_point(self._steps[best], self._losses[best]), 3, 3)
        painter.setPen(QPen(QColor(200, 200, 200)))
        painter.drawText(2, rect.top() + 10, f"{hi:.2f}")
        painter.drawText(2, rect.bottom(), f"{lo:.2f}")
        painter.drawText(rect.left(), self.height() - 2, f"step {s0}")
        painter.drawText(rect.right() - 60, self.height() - 2, f"step {self._steps[-1]}")
