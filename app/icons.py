"""The window's icons: the program's own, as files in ``resources/icons``."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QIcon

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"
APP_ICON = ICONS / "ai-service-platform.svg"


def app_icon() -> QIcon:
    return QIcon(str(APP_ICON))
