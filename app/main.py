"""``ai-service-platform``: with no arguments, the window with the server running behind it; with any
argument, the headless commands of :mod:`server.cli` (``serve``, ``keys …``, ``usage export``).

The window appears as soon as the store is open: models load on their own thread and the server starts
on a worker thread, both reported in the window as they progress.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence

import qasync
from PySide6.QtWidgets import QApplication, QMessageBox

from app.pages.info import load_help
from app.preferences import load_preferences, stored_server_settings
from app.theme import ThemeManager
from app.window import MainWindow, Startup
from server import cli
from server.config import ConfigError, Settings, load_settings
from server.logs import configure_logging
from server.services import Services
from server.store import Store

APP_NAME = "AI Service Platform"


def window_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the defaults, what the window saved in the store, and the environment (which wins)."""
    environ = os.environ if environ is None else environ
    base = load_settings(environ)
    store = Store(base.database_path)
    try:
        stored = stored_server_settings(store)
    finally:
        store.close()
    return load_settings(environ, stored=stored)


def prepare(settings: Settings) -> Startup:
    """Open the services (the models start loading in the background) and read what the window needs."""
    services = Services.open(settings)
    try:
        return Startup(services, load_preferences(services.store), load_help())
    except BaseException:
        services.close()
        raise


def build_window(app: QApplication, startup: Startup) -> MainWindow:
    """The themed window for ``startup`` (not shown, the server not started)."""
    theme = ThemeManager(app, startup.preferences.theme, startup.preferences.font_size)
    theme.apply()
    return MainWindow(startup, theme)


async def run_window(window: MainWindow) -> None:
    """Show the window, start the server, and return once the window has closed and shut everything down."""
    closed = asyncio.Event()
    window.closed.connect(closed.set)
    window.show()
    window.start_server()
    await closed.wait()


def open_window() -> int:
    """Run the window until it is closed; the exit status for the shell."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setQuitOnLastWindowClosed(False)  # the window quits once the server has stopped, not before
    try:
        settings = window_settings()
    except ConfigError as exc:
        QMessageBox.critical(None, APP_NAME, f"The settings cannot be used:\n\n{exc}")
        return 2
    configure_logging(settings.log_level)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)  # before the window, whose widgets may schedule work as they are built
    window = build_window(app, prepare(settings))
    with loop:
        loop.run_until_complete(run_window(window))
    asyncio.set_event_loop(None)  # the loop is closed; leave no closed loop behind as the current one
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: the window with no arguments, otherwise the headless commands."""
    # In a frozen bundle, a child process (the embedding engine's) starts through this same executable.
    multiprocessing.freeze_support()
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        return cli.main(args)
    return open_window()


if __name__ == "__main__":
    sys.exit(main())
