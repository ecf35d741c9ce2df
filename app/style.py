"""How the window draws its controls: Fusion, with check boxes and radio buttons drawn from the palette so
that they are plain to see in either theme and grow with the font.

Fusion outlines an unchecked box in a shade of the window colour, which in a dark theme is almost the
colour of the box itself, and draws it 14 pixels wide whatever the font size. Here the outline is mixed
from the text and base colours (so it keeps its contrast whatever the palette) and the box is as tall as
most of a line of text.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle, QStyleOption, QWidget

INDICATOR_SHARE = 0.8
"""An indicator's side as a share of the font's line height."""
OUTLINE_MIX = 0.55
"""How much of the text colour goes into an indicator's outline (the rest is the base colour)."""
MIN_INDICATOR = 13

_INDICATORS = {
    QStyle.PixelMetric.PM_IndicatorWidth,
    QStyle.PixelMetric.PM_IndicatorHeight,
    QStyle.PixelMetric.PM_ExclusiveIndicatorWidth,
    QStyle.PixelMetric.PM_ExclusiveIndicatorHeight,
}


def mix(a: QColor, b: QColor, share: float) -> QColor:
    """``share`` of ``a`` and the rest of ``b``."""
    return QColor.fromRgbF(
        a.redF() * share + b.redF() * (1 - share),
        a.greenF() * share + b.greenF() * (1 - share),
        a.blueF() * share + b.blueF() * (1 - share),
    )


def indicator_outline(palette: QPalette, enabled: bool = True) -> QColor:
    """The outline of an unchecked box: between the text and the base colour, visible on either."""
    group = QPalette.ColorGroup.Active if enabled else QPalette.ColorGroup.Disabled
    text = palette.color(group, QPalette.ColorRole.Text)
    return mix(text, palette.color(group, QPalette.ColorRole.Base), OUTLINE_MIX)


class WindowStyle(QProxyStyle):
    """Fusion with visible, font-sized check boxes and radio buttons."""

    def __init__(self) -> None:
        super().__init__("Fusion")

    def pixelMetric(
        self,
        metric: QStyle.PixelMetric,
        option: QStyleOption | None = None,
        widget: QWidget | None = None,
    ) -> int:
        if metric in _INDICATORS:
            metrics = widget.fontMetrics() if widget is not None else QApplication.fontMetrics()
            return max(MIN_INDICATOR, round(metrics.height() * INDICATOR_SHARE))
        return super().pixelMetric(metric, option, widget)

    def drawPrimitive(
        self,
        element: QStyle.PrimitiveElement,
        option: QStyleOption,
        painter: QPainter,
        widget: QWidget | None = None,
    ) -> None:
        if element in (
            QStyle.PrimitiveElement.PE_IndicatorCheckBox,
            QStyle.PrimitiveElement.PE_IndicatorItemViewItemCheck,
        ):
            self._draw_indicator(option, painter, round_box=False)
        elif element == QStyle.PrimitiveElement.PE_IndicatorRadioButton:
            self._draw_indicator(option, painter, round_box=True)
        else:
            super().drawPrimitive(element, option, painter, widget)

    @staticmethod
    def _draw_indicator(option: QStyleOption, painter: QPainter, round_box: bool) -> None:
        state = option.state
        enabled = bool(state & QStyle.StateFlag.State_Enabled)
        on = bool(state & QStyle.StateFlag.State_On)
        partly = bool(state & QStyle.StateFlag.State_NoChange)
        palette = option.palette
        group = QPalette.ColorGroup.Active if enabled else QPalette.ColorGroup.Disabled
        side = min(option.rect.width(), option.rect.height())
        box = QRectF(0, 0, side, side)
        box.moveCenter(QRectF(option.rect).center())
        line = max(1.0, side / 12)
        box = box.adjusted(line / 2, line / 2, -line / 2, -line / 2)
        highlight = palette.color(group, QPalette.ColorRole.Highlight)
        marked = (on or partly) and enabled
        if marked:
            outline, fill = highlight, highlight
        else:
            outline = indicator_outline(palette, enabled)
            fill = palette.color(group, QPalette.ColorRole.Base)
            if enabled and state & QStyle.StateFlag.State_MouseOver:
                outline = highlight
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(outline, line))
        painter.setBrush(fill)
        if round_box:
            painter.drawEllipse(box)
        else:
            painter.drawRoundedRect(box, side / 6, side / 6)
        mark = palette.color(group, QPalette.ColorRole.HighlightedText) if enabled else outline
        if round_box and on:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(mark)
            dot = box.width() * 0.2
            painter.drawEllipse(box.center(), dot, dot)
        elif on:
            pen = QPen(mark, max(1.5, side / 7))
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            x, y, w, h = box.x(), box.y(), box.width(), box.height()
            tick = QPainterPath(QPointF(x + w * 0.24, y + h * 0.52))
            tick.lineTo(QPointF(x + w * 0.43, y + h * 0.72))
            tick.lineTo(QPointF(x + w * 0.77, y + h * 0.3))
            painter.drawPath(tick)
        elif partly:
            pen = QPen(mark, max(1.5, side / 7))
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            painter.setPen(pen)
            middle = box.center().y()
            painter.drawLine(
                QPointF(box.x() + box.width() * 0.27, middle),
                QPointF(box.right() - box.width() * 0.27, middle),
            )
        painter.restore()
