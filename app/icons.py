"""The window's icons, as files in ``resources/icons``: the program's own, and a line drawing per page
that takes the colour of the text around it (so it suits either theme) and the size of the font."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"
APP_ICON = ICONS / "ai-service-platform.svg"
PAGE_ICONS = ICONS / "pages"
SCALES = (1, 2)
"""Pixel densities drawn, for ordinary and high-density screens."""


def app_icon() -> QIcon:
    return QIcon(str(APP_ICON))


def _tinted(renderer: QSvgRenderer, side: int, colour: QColor, scale: int) -> QPixmap:
    pixmap = QPixmap(QSize(side * scale, side * scale))
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, side * scale, side * scale))
    painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceIn)
    painter.fillRect(pixmap.rect(), colour)
    painter.end()
    pixmap.setDevicePixelRatio(scale)
    return pixmap


def page_icon(name: str, side: int, colour: QColor, selected: QColor) -> QIcon:
    """The icon ``resources/icons/pages/<name>.svg``, ``side`` pixels square, drawn in ``colour`` (and in
    ``selected`` where its item is selected)."""
    renderer = QSvgRenderer(str(PAGE_ICONS / f"{name}.svg"))
    icon = QIcon()
    for scale in SCALES:
        icon.addPixmap(_tinted(renderer, side, colour, scale), QIcon.Mode.Normal)
        icon.addPixmap(_tinted(renderer, side, selected, scale), QIcon.Mode.Selected)
    return icon
