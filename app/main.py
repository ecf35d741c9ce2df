"""``ai-service-platform``: with no arguments, the window with the server running behind it; with any
argument, the headless commands of :mod:`server.cli` (``serve``, ``keys …``, ``usage export``).

The window appears as soon as the store is open: models load on their own thread and the server starts
on a worker thread, both reported in the window as they progress.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence

import qasync
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.autostart import BACKGROUND
from app.icons import app_icon
from app.pages.info import load_help
from app.preferences import load_preferences
from app.refcounts import guard_singletons
from app.single_instance import activate_running
from app.theme import ThemeManager
from app.window import PAGES, MainWindow, Startup
from server import cli
from server.config import ConfigError, Settings
from server.instance import DataDirInUse
from server.logs import RecentRecords, configure_logging
from server.services import Services, settings_from_store

APP_NAME = "AI Service Platform"
SCREENSHOT_DELAY_MS = 1500


def prepare(settings: Settings) -> Startup:
    """Open the services (the models start loading in the background) and read what the window needs.

    The server's log records are kept for the Logs page from here on, the models' loading included."""
    records = RecentRecords()
    root = logging.getLogger()
    root.addHandler(records)
    try:
        services = Services.open(settings)
    except BaseException:
        root.removeHandler(records)
        raise
    try:
        return Startup(services, load_preferences(services.store), load_help(), log_records=records)
    except BaseException:
        services.close()
        root.removeHandler(records)
        raise


def build_window(app: QApplication, startup: Startup) -> MainWindow:
    """The themed window for ``startup`` (not shown, the server not started)."""
    guard_singletons()  # whoever builds a window (the program, a test, a benchmark): see app.refcounts
    theme = ThemeManager(app, startup.preferences.theme, startup.preferences.font_size)
    theme.apply()
    return MainWindow(startup, theme)


def screenshot_when_shown(window: MainWindow, environ: Mapping[str, str] | None = None) -> None:
    """``AISP_SCREENSHOT=path``: once the window shows its first page, save it there as a PNG whose text
    ``aisp-page`` names the page on screen; with ``AISP_QUIT_AFTER_SCREENSHOT=1``, then close the window
    (which stops the server and ends the program). Used to check a packaged build without a display."""
    environ = os.environ if environ is None else environ
    path = environ.get("AISP_SCREENSHOT")
    if not path:
        return
    quit_after = environ.get("AISP_QUIT_AFTER_SCREENSHOT") == "1"

    def capture() -> None:
        image = window.grab().toImage()
        image.setText("aisp-page", PAGES[window.stack.currentIndex()])
        image.save(path)
        if quit_after:
            window.quit()

    QTimer.singleShot(SCREENSHOT_DELAY_MS, capture)


async def run_window(window: MainWindow, background: bool = False) -> None:
    """Show the window (in the background: only its tray icon), start the server, and return once the
    window has quit and shut everything down."""
    closed = asyncio.Event()
    window.closed.connect(closed.set)
    window.open(background)
    screenshot_when_shown(window)
    window.start_server()
    await closed.wait()


def open_window(background: bool = False) -> int:
    """Run the window until it quits; the exit status for the shell. ``background``: started at login,
    serving with only the tray icon showing."""
    guard_singletons()  # before Qt is used from Python at all: see app.refcounts
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setWindowIcon(app_icon())
    app.setDesktopFileName("ai-service-platform")  # desktops match the window to its menu entry and icon
    app.setQuitOnLastWindowClosed(False)  # the window quits once the server has stopped, not before
    try:
        # Defaults, then the store (server settings and model table), then the environment.
        settings = settings_from_store()
    except ConfigError as exc:
        QMessageBox.critical(None, APP_NAME, f"The settings cannot be used:\n\n{exc}")
        return 2
    configure_logging(settings.log_level, settings.log_path)
    try:
        startup = prepare(settings)
    except DataDirInUse as exc:
        # Already running on this data folder: bring that window forward rather than open another.
        if activate_running(settings.data_dir):
            return 0
        QMessageBox.critical(None, APP_NAME, str(exc))
        return 1
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)  # before the window, whose widgets may schedule work as they are built
    window = build_window(app, startup)
    with loop:
        loop.run_until_complete(run_window(window, background))
    asyncio.set_event_loop(None)  # the loop is closed; leave no closed loop behind as the current one
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: the window with no arguments, otherwise the headless commands."""
    # In a frozen bundle, a child process (the embedding engine's) starts through this same executable.
    multiprocessing.freeze_support()
    args = list(sys.argv[1:] if argv is None else argv)
    if args == [BACKGROUND]:  # started at login
        return open_window(background=True)
    if args:
        return cli.main(args)
    return open_window()


if __name__ == "__main__":
    sys.exit(main())
