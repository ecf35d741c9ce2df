"""Fixtures for the window: a qasync loop over pytest-qt's QApplication, and real windows on a fresh data
directory with fast fake models, closed (server stopped, services closed) after each test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
import qasync
import shiboken6
from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtWidgets import QApplication, QCheckBox, QTableWidget, QWidget
from pytestqt.qtbot import QtBot

from app.autostart import Autostart
from app.main import build_window, prepare
from app.pages.hardware import probe_in_child
from app.pages.usage import UsagePage
from app.refcounts import guard_singletons
from app.window import MainWindow
from server.config import Settings
from server.gpu import Hardware
from server.metering.reports import UsageSeries

SCREENSHOTS = "screenshots"


def pytest_configure(config: pytest.Config) -> None:
    """As the window does at start-up: see app.refcounts (the GUI tests make millions of Qt calls)."""
    guard_singletons()


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    """A qasync loop that runs whenever pytest-qt lets Qt process events (``qtbot.wait…``)."""
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    yield loop
    # The loop never ran ``exec()`` itself, so it is stopped by hand; ``loop.stop()`` would call
    # ``QApplication.exit()``, which leaves every later ``QEventLoop.exec()`` returning at once.
    loop._QEventLoop__is_running = False
    asyncio.events._set_running_loop(None)
    loop.close()
    asyncio.set_event_loop_policy(None)  # back to a fresh default policy: no loop, as before the test


def close_window(qtbot: QtBot, window: MainWindow) -> None:
    """Quit the window as a user would (closing it, or the tray's Quit) and wait until the server and
    services are shut down."""
    if not shiboken6.isValid(window):  # closed and deleted already, by the test itself
        return
    if not window.is_closed:
        window.quit()
        qtbot.waitUntil(lambda: window.is_closed, timeout=20_000)
    window.deleteLater()


@pytest.fixture(scope="session")
def hardware() -> Callable[[], Hardware]:
    """The window's own hardware probe, run once for the session (it imports torch in a child process,
    seconds each time) and answered from memory for every later window."""
    lock = threading.Lock()
    found: list[Hardware] = []

    def probe() -> Hardware:
        with lock:
            if not found:
                found.append(probe_in_child())
            return found[0]

    return probe


@pytest.fixture
def make_window(
    qapp: QApplication,
    qloop: qasync.QEventLoop,
    qtbot: QtBot,
    make_settings: Callable[..., Settings],
    hardware: Callable[[], Hardware],
) -> Iterator[Callable[..., MainWindow]]:
    """Build a window as ``ai-service-platform`` does; by default shown, with its server running.

    ``settings`` replaces the test's own (fake models on a fresh data directory), e.g. to start again
    from what an earlier window saved there; ``probe`` replaces the session's one hardware probe;
    ``tray`` says whether the desktop shows tray icons (offscreen, none does)."""
    opened: list[MainWindow] = []

    def build(
        *,
        show: bool = True,
        start: bool = True,
        settings: Settings | None = None,
        probe: Callable[[], Hardware] = hardware,
        tray: bool = False,
        **overrides: Any,
    ) -> MainWindow:
        settings = settings if settings is not None else make_settings(**overrides)
        startup = replace(
            prepare(settings),
            probe=probe,
            tray_available=lambda: tray,
            # Starting at login is written under the test's own folder, never the real home.
            autostart=Autostart(config_home=settings.data_dir.parent / "config"),
        )
        assert startup.services.models.wait_loaded(60)
        window = build_window(qapp, startup)
        opened.append(window)
        if show:
            window.show()
            qtbot.waitExposed(window)
        if start:
            window.start_server()
            qtbot.waitUntil(
                lambda: window.server.view.running and window.server.view.transition is None, timeout=15_000
            )
        return window

    yield build
    for window in opened:
        close_window(qtbot, window)


SDK = Callable[..., openai.OpenAI]


@pytest.fixture
def sdk() -> Iterator[SDK]:
    """OpenAI SDK clients for a window's server (``sdk(window, key)``), closed after the test."""
    made: list[openai.OpenAI] = []

    def build(window: MainWindow, key: str, timeout: float = 10) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=window.server.view.base_url, api_key=key, max_retries=0, timeout=timeout
        )
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture
def window(make_window: Callable[..., MainWindow]) -> MainWindow:
    return make_window()


@pytest.fixture
def screenshots(artifacts: Path) -> Path:
    folder = artifacts / SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder


T = TypeVar("T")


def opened(thing: T | None) -> T:
    """What a page holds while it is open (a dialog, a selected row), asserting that it is."""
    assert thing is not None, "expected it to be open"
    return thing


def cell_text(table: QTableWidget, row: int, column: int) -> str:
    """The text of a filled cell."""
    item = table.item(row, column)
    assert item is not None, f"no item at ({row}, {column})"
    return item.text()


def shown(page: UsagePage) -> UsageSeries:
    """The usage the page shows (it has loaded at least once)."""
    assert page.series is not None, "the Usage page has not loaded yet"
    return page.series


def settle(qtbot: QtBot) -> None:
    """Let pending layout requests and queued events run."""
    for _ in range(3):  # a layout that changes size asks its parent to lay out again, and so on upwards
        QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
        qtbot.wait(20)


def click(qtbot: QtBot, widget: QWidget) -> None:
    """Click a widget with the left button where a user would: its middle, or a check box's box."""
    assert widget.isVisible() and widget.isEnabled(), f"{widget!r} cannot be clicked"
    x = 8 if isinstance(widget, QCheckBox) else widget.width() // 2
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(x, widget.height() // 2))
