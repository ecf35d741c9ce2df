"""Check boxes are plain to see in both themes and grow with the font: the LAN switch, a key's expiry and
the allowed-models list, unchecked, outlined at 3:1 contrast or more against what surrounds them."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRect, QSize
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QCheckBox, QListWidget, QStyle, QWidget
from pytestqt.qtbot import QtBot

from app.theme import FONT_STEPS
from app.window import PAGES, MainWindow

from .conftest import settle

LARGEST = FONT_STEPS[-1]


def luminance(colour: QColor) -> float:
    def channel(value: float) -> float:
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    return (
        0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())
    )


def contrast(a: QColor, b: QColor) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def best_contrast(image: QImage, area: QRect, background: QColor) -> float:
    """The strongest contrast any pixel of ``area`` has against ``background``."""
    return max(
        contrast(image.pixelColor(x, y), background)
        for x in range(max(0, area.left()), min(image.width(), area.right() + 1))
        for y in range(max(0, area.top()), min(image.height(), area.bottom() + 1))
    )


def box_contrast(widget: QWidget, area: QRect, background: QColor) -> float:
    return best_contrast(widget.grab().toImage(), area, background)


def check_box_area(box: QCheckBox) -> QRect:
    side = box.style().pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, box)
    return QRect(0, (box.height() - side) // 2, side + 2, side)


def test_unchecked_boxes_stand_out_in_both_themes_and_grow_with_the_font(
    qtbot: QtBot, window: MainWindow
) -> None:
    window.show_page(PAGES.index("Settings"))
    lan = window.settings_page.lan_check
    assert not lan.isChecked()
    small: dict[str, int] = {}
    for theme in ("dark", "light"):
        for step in (FONT_STEPS[1], LARGEST):
            window.theme.set_theme(theme)
            window.theme.set_font_size(step.key)
            settle(qtbot)
            background = lan.palette().color(lan.backgroundRole())
            where = f"{theme}, {step.label}"
            assert box_contrast(lan, check_box_area(lan), background) >= 3.0, where
            side = lan.style().pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, lan)
            assert side >= 0.75 * lan.fontMetrics().height(), where
            small.setdefault(theme, side)
            if step is LARGEST:
                assert side > small[theme], f"{where}: the box did not grow with the font"


def test_the_expiry_box_and_the_allowed_models_list_stand_out_in_the_dark(
    qtbot: QtBot, window: MainWindow
) -> None:
    window.theme.set_theme("dark")
    window.new_key()
    dialog = window.keys_page.create_dialog
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    dialog.all_models.setChecked(False)
    settle(qtbot)
    expires = dialog.expires
    background = expires.palette().color(expires.backgroundRole())
    assert box_contrast(expires, check_box_area(expires), background) >= 3.0
    models: QListWidget = dialog.models
    item = models.visualItemRect(models.item(0))
    side = models.style().pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, models)
    area = QRect(item.left(), item.top(), side + 8, item.height())
    viewport = models.viewport()
    base = models.palette().color(models.viewport().backgroundRole())
    assert best_contrast(viewport.grab().toImage(), area, base) >= 3.0
    dialog.reject()


def test_the_sidebar_icons_follow_the_theme_and_the_font(qtbot: QtBot, window: MainWindow) -> None:
    sidebar = window.sidebar
    sides = []
    for theme in ("light", "dark"):
        for step in (FONT_STEPS[0], LARGEST):
            window.theme.set_theme(theme)
            window.theme.set_font_size(step.key)
            settle(qtbot)
            side = sidebar.iconSize().width()
            assert side >= sidebar.fontMetrics().height(), (theme, step.label)
            text = sidebar.palette().color(QPalette.ColorRole.Text)
            for row in range(sidebar.count()):
                image = sidebar.item(row).icon().pixmap(QSize(side, side)).toImage()
                colours = {
                    image.pixelColor(x, y).name()
                    for x in range(image.width())
                    for y in range(image.height())
                    if image.pixelColor(x, y).alpha() == 255
                }
                assert text.name() in colours, f"{PAGES[row]}: not drawn in the text's colour ({theme})"
            sides.append(side)
    assert sides[1] > sides[0]
    assert window.grab().save(str(Path(__file__).parents[1] / "artifacts" / "sidebar-dark-largest.png"))
