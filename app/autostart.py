"""Starting the window when the operator logs in, in the background (``--background``: the server runs,
the window waits in the system tray).

On Linux an XDG autostart entry (``$XDG_CONFIG_HOME/autostart/ai-service-platform.desktop``), which every
freedesktop session reads; on Windows the current user's ``Run`` key, which the installer's "start at
login" option writes too, under the same name. The switch in Settings reads and writes exactly these,
so it always tells the truth, whoever set it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSettings

BACKGROUND = "--background"
ENTRY_NAME = "ai-service-platform.desktop"
RUN_KEY = "HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
RUN_VALUE = "AI Service Platform"
"""The name under ``Run`` (installer.iss writes the same)."""


def program_command() -> list[str]:
    """How this program is started: the bundle's executable, the installed command, or this Python."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    installed = shutil.which("ai-service-platform")
    if installed:
        return [installed]
    return [sys.executable, "-m", "app.main"]


def _desktop_quote(argument: str) -> str:
    """An argument as the Desktop Entry Specification wants it in ``Exec``."""
    if argument and not any(c in argument for c in " \t\n\"'\\><~|&;$*?#()`"):
        return argument
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in argument)
    return f'"{escaped}"'


def _windows_quote(argument: str) -> str:
    return f'"{argument}"' if " " in argument else argument


class Autostart:
    """Whether this program starts at login, and the switch to change it."""

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        platform: str = sys.platform,
        config_home: Path | None = None,
    ) -> None:
        self.command = list(command) if command is not None else program_command()
        self.platform = platform
        home = config_home or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        self.entry = home / "autostart" / ENTRY_NAME

    @property
    def available(self) -> bool:
        return self.platform == "win32" or self.platform.startswith("linux")

    def enabled(self) -> bool:
        """Starts at login now (blocking: reads a file or the registry)."""
        if self.platform == "win32":
            return bool(QSettings(RUN_KEY, QSettings.Format.NativeFormat).value(RUN_VALUE))
        try:
            text = self.entry.read_text(encoding="utf-8")
        except OSError:
            return False
        return "Hidden=true" not in text and "X-GNOME-Autostart-enabled=false" not in text

    def set_enabled(self, on: bool) -> None:
        """Start at login from now on, or not (blocking: writes a file or the registry)."""
        if self.platform == "win32":
            settings = QSettings(RUN_KEY, QSettings.Format.NativeFormat)
            if on:
                settings.setValue(RUN_VALUE, " ".join(map(_windows_quote, [*self.command, BACKGROUND])))
            else:
                settings.remove(RUN_VALUE)
            settings.sync()
            return
        if not on:
            self.entry.unlink(missing_ok=True)
            return
        self.entry.parent.mkdir(parents=True, exist_ok=True)
        exec_line = " ".join(_desktop_quote(part) for part in [*self.command, BACKGROUND])
        self.entry.write_text(
            "[Desktop Entry]\n"
            "Type=Application\n"
            "Name=AI Service Platform\n"
            "Comment=Serve local AI models in the background (the window waits in the system tray)\n"
            f"Exec={exec_line}\n"
            "Icon=ai-service-platform\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n",
            encoding="utf-8",
        )
