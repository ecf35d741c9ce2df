"""Themes as data: the light and dark palettes, the font-size steps, and the one place they are applied.

The palette and font go to the whole application (Fusion draws every widget from them), so every page
follows at once; labels that carry a tone (:func:`set_tone`) are recoloured with it. QtCharts ignores both, so :meth:`ThemeManager.style_chart` colours and sizes a chart
explicitly; charts call it whenever they are rebuilt and whenever :attr:`ThemeManager.changed` fires.
"Follow the system" tracks ``QStyleHints.colorSchemeChanged`` live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from PySide6.QtCharts import QAbstractAxis, QChart
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPalette, QPen
from PySide6.QtWidgets import QApplication, QComboBox, QLabel

from app.style import WindowStyle

ThemeName = Literal["system", "light", "dark"]
Scheme = Literal["light", "dark"]

THEMES: tuple[tuple[ThemeName, str], ...] = (
    ("system", "Follow the system"),
    ("light", "Light"),
    ("dark", "Dark"),
)


@dataclass(frozen=True)
class FontStep:
    key: str
    label: str
    points: int


FONT_STEPS: tuple[FontStep, ...] = (
    FontStep("small", "Small", 9),
    FontStep("normal", "Normal", 10),
    FontStep("large", "Large", 12),
    FontStep("larger", "Larger", 14),
    FontStep("largest", "Largest", 18),
)
DEFAULT_FONT_STEP = "normal"

Role = QPalette.ColorRole

PALETTES: Mapping[Scheme, Mapping[QPalette.ColorRole, str]] = {
    "light": {
        Role.Window: "#f3f3f3",
        Role.WindowText: "#1b1b1b",
        Role.Base: "#ffffff",
        Role.AlternateBase: "#eef2f7",
        Role.ToolTipBase: "#ffffdc",
        Role.ToolTipText: "#1b1b1b",
        Role.PlaceholderText: "#6e6e6e",
        Role.Text: "#1b1b1b",
        Role.Button: "#e6e6e6",
        Role.ButtonText: "#1b1b1b",
        Role.BrightText: "#b00020",
        Role.Light: "#ffffff",
        Role.Midlight: "#e3e3e3",
        Role.Mid: "#b8b8b8",
        Role.Dark: "#9f9f9f",
        Role.Shadow: "#767676",
        Role.Highlight: "#2f6fcf",
        Role.HighlightedText: "#ffffff",
        Role.Link: "#1a5fb4",
        Role.LinkVisited: "#6a3fb4",
        Role.Accent: "#2f6fcf",
    },
    "dark": {
        Role.Window: "#2b2b2b",
        Role.WindowText: "#e8e8e8",
        Role.Base: "#1e1e1e",
        Role.AlternateBase: "#2a2f36",
        Role.ToolTipBase: "#3c3c3c",
        Role.ToolTipText: "#e8e8e8",
        Role.PlaceholderText: "#9a9a9a",
        Role.Text: "#e8e8e8",
        Role.Button: "#3a3a3a",
        Role.ButtonText: "#e8e8e8",
        Role.BrightText: "#ff8a80",
        Role.Light: "#505050",
        Role.Midlight: "#404040",
        Role.Mid: "#2f2f2f",
        Role.Dark: "#1a1a1a",
        Role.Shadow: "#000000",
        Role.Highlight: "#3d7fd9",
        Role.HighlightedText: "#ffffff",
        Role.Link: "#7ab8ff",
        Role.LinkVisited: "#c3a6ff",
        Role.Accent: "#3d7fd9",
    },
}
DISABLED_TEXT: Mapping[Scheme, str] = {"light": "#8a8a8a", "dark": "#7a7a7a"}
Tone = Literal["", "warning", "error", "good"]
TONES: Mapping[Scheme, Mapping[Tone, str]] = {
    "light": {"warning": "#9a4a00", "error": "#b00020", "good": "#1e7b34"},
    "dark": {"warning": "#ffb74d", "error": "#ff8a80", "good": "#81c995"},
}
"""Colours of labels that carry a tone (see :func:`set_tone`): warnings, errors and good news."""


def _scheme_of(palette: QPalette) -> Scheme:
    return "dark" if palette.color(Role.Window).lightness() < 128 else "light"


def _paint_tone(label: QLabel, tone: Tone) -> None:
    # A fresh palette with only the text colour set: every other role still follows the application's.
    palette = QPalette()
    if tone:
        palette.setColor(Role.WindowText, QColor(TONES[_scheme_of(QApplication.palette())][tone]))
    label.setPalette(palette)


def set_tone(label: QLabel, tone: Tone) -> None:
    """Colour a label's text as a warning, an error or good news ("" for plain text), in either theme.

    The tone is kept on the label, so :meth:`ThemeManager.apply` recolours it when the theme changes.
    """
    label.setProperty("tone", tone)
    _paint_tone(label, tone)


def _forget_combo_sizes() -> None:
    # A combo box keeps the minimum size it first computed, whatever the font becomes (Qt forgets only
    # its preferred size on a font change): back at a small font it would stay as tall as at the
    # largest. A style change is what makes it forget both.
    for widget in QApplication.allWidgets():
        if isinstance(widget, QComboBox):
            QApplication.sendEvent(widget, QEvent(QEvent.Type.StyleChange))
            widget.updateGeometry()


def font_step(key: str) -> FontStep:
    """The step named ``key`` (the default step if the name is unknown, e.g. from an older version)."""
    for step in FONT_STEPS:
        if step.key == key:
            return step
    return next(step for step in FONT_STEPS if step.key == DEFAULT_FONT_STEP)


@dataclass(frozen=True)
class Appearance:
    """A resolved theme: which palette and which font size."""

    scheme: Scheme
    points: int

    def palette(self) -> QPalette:
        palette = QPalette()
        for role, colour in PALETTES[self.scheme].items():
            palette.setColor(role, QColor(colour))
        disabled = QColor(DISABLED_TEXT[self.scheme])
        for role in (Role.WindowText, Role.Text, Role.ButtonText, Role.PlaceholderText):
            palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
        return palette

    def colour(self, role: QPalette.ColorRole) -> QColor:
        return QColor(PALETTES[self.scheme][role])


class ThemeManager(QObject):
    """Holds the chosen theme and font size and applies them to the application and its charts."""

    changed = Signal()
    """The palette or the font size changed and has been applied to the application."""

    def __init__(
        self, app: QApplication, theme: ThemeName = "system", font_size: str = DEFAULT_FONT_STEP
    ) -> None:
        super().__init__()
        self._app = app
        self._theme: ThemeName = theme
        self._font_size = font_step(font_size).key
        self._base_font = QFont(app.font())
        hints = app.styleHints()
        self._system: Scheme = "dark" if hints.colorScheme() == Qt.ColorScheme.Dark else "light"
        hints.colorSchemeChanged.connect(self._system_scheme_changed)
        if not isinstance(app.style(), WindowStyle):
            # Fusion draws from the palette on every platform, so light and dark look alike; the window's
            # own style on top of it draws check boxes that are visible in both and grow with the font.
            self._style = WindowStyle()
            app.setStyle(self._style)

    @property
    def theme(self) -> ThemeName:
        return self._theme

    @property
    def font_size(self) -> str:
        return self._font_size

    @property
    def appearance(self) -> Appearance:
        scheme: Scheme = self._system if self._theme == "system" else self._theme
        return Appearance(scheme, font_step(self._font_size).points)

    def set_theme(self, theme: ThemeName) -> None:
        self._theme = theme
        self.apply()

    def set_font_size(self, key: str) -> None:
        self._font_size = font_step(key).key
        self.apply()

    def detach(self) -> None:
        """Stop following the system's colour scheme (the window this theme served has closed)."""
        self._app.styleHints().colorSchemeChanged.disconnect(self._system_scheme_changed)

    def _system_scheme_changed(self, scheme: Qt.ColorScheme) -> None:
        # The signal's argument is the truth: offscreen and some desktops never update colorScheme().
        self._system = "dark" if scheme == Qt.ColorScheme.Dark else "light"
        if self._theme == "system":
            self.apply()

    def apply(self) -> None:
        """Give the application the current palette and font; charts restyle on :attr:`changed`."""
        appearance = self.appearance
        font = QFont(self._base_font)
        font.setPointSize(appearance.points)
        self._app.setPalette(appearance.palette())
        self._app.setFont(font)
        for widget in QApplication.allWidgets():
            tone = widget.property("tone")
            if isinstance(widget, QLabel) and tone is not None:
                _paint_tone(widget, tone)
        # Widgets take the new font from events posted just now: once they have, combo boxes forget
        # the size they measured with the old one.
        QTimer.singleShot(0, _forget_combo_sizes)
        self.changed.emit()

    def style_chart(self, chart: QChart) -> None:
        """Colour and size a chart's text like the rest of the window (QtCharts ignores both)."""
        appearance = self.appearance
        chart.setTheme(
            QChart.ChartTheme.ChartThemeDark
            if appearance.scheme == "dark"
            else QChart.ChartTheme.ChartThemeLight
        )
        text = QBrush(appearance.colour(Role.Text))
        font = QFont(self._base_font)
        font.setPointSize(appearance.points)
        title = QFont(font)
        title.setBold(True)
        chart.setBackgroundBrush(QBrush(appearance.colour(Role.Base)))
        chart.setTitleFont(title)
        chart.setTitleBrush(text)
        chart.legend().setFont(font)
        chart.legend().setLabelBrush(text)
        grid = QPen(appearance.colour(Role.Midlight if appearance.scheme == "light" else Role.Light))
        for axis in chart.axes():
            self._style_axis(axis, font, text, grid)

    @staticmethod
    def _style_axis(axis: QAbstractAxis, font: QFont, text: QBrush, grid: QPen) -> None:
        axis.setLabelsFont(font)
        axis.setLabelsBrush(text)
        axis.setTitleFont(font)
        axis.setTitleBrush(text)
        axis.setGridLinePen(grid)
