"""Serving in the background: the first close asks once (keep serving or quit) and the answer sticks and
can change in Settings; with the window closed the server keeps serving and the tray icon opens the
window, switches LAN serving, copies the address and quits; started at login only the tray icon shows;
the start-at-login switch writes the desktop's autostart entry; without a tray, closing quits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.autostart import BACKGROUND, ENTRY_NAME, Autostart
from app.preferences import WINDOW_SETTING
from app.window import PAGES, MainWindow

from .conftest import click
from .test_window import reachable


def test_the_first_close_asks_then_the_server_keeps_serving_behind_the_tray(
    qtbot: QtBot, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window(tray=True)
    tray = window.tray
    assert tray is not None and tray.icon.isVisible()
    url = window.server.view.url
    window.close()
    box = window.close_box
    assert box is not None and box.isVisible() and window.isVisible()
    keep = next(b for b in box.buttons() if b.text() == "Keep serving in the background")
    with qtbot.waitSignal(window.went_to_background, timeout=5000):
        click(qtbot, keep)
    assert not window.isVisible() and not window.is_closed
    assert reachable(url) and window.server.view.running
    qtbot.waitUntil(
        lambda: window.services.store.get_setting(WINDOW_SETTING, {}).get("close_action") == "background"
    )
    assert window.settings_page.close_combo.currentData() == "background"

    with qtbot.waitSignal(window.brought_forward, timeout=5000):
        tray.open_action.trigger()
    assert window.isVisible()
    with qtbot.waitSignal(window.went_to_background, timeout=5000):
        window.close()  # asked once: now it just goes
    assert window.close_box is None and not window.isVisible()

    tray.copy_action.trigger()
    assert QApplication.clipboard().text() == window.server.view.base_url
    assert not tray.lan_action.isChecked()
    with qtbot.waitSignal(window.settings_page.network_applied, timeout=15_000):
        tray.lan_action.trigger()
    qtbot.waitUntil(lambda: window.server.view.lan and tray.lan_action.isChecked(), timeout=5000)
    lan_url = window.server.view.url
    assert reachable(lan_url)

    with qtbot.waitSignal(window.closed, timeout=20_000):
        tray.quit_action.trigger()
    assert not reachable(lan_url) and not tray.icon.isVisible()


def test_quit_chosen_at_the_first_close_sticks(qtbot: QtBot, make_window: Callable[..., MainWindow]) -> None:
    window = make_window(tray=True)
    url = window.server.view.url
    window.close()
    box = window.close_box
    assert box is not None
    with qtbot.waitSignal(window.closed, timeout=20_000):
        click(qtbot, next(b for b in box.buttons() if b.text() == "Quit and stop serving"))
    assert not reachable(url)
    again = make_window(tray=True)
    assert again.settings_page.close_combo.currentData() == "quit"
    with qtbot.waitSignal(again.closed, timeout=20_000):
        again.close()
    assert again.close_box is None


def test_started_at_login_only_the_tray_icon_shows(
    qtbot: QtBot, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window(show=False, tray=True)
    window.open(background=True)
    qtbot.wait(50)
    assert not window.isVisible() and window.tray is not None and window.tray.icon.isVisible()
    assert reachable(window.server.view.url)
    with qtbot.waitSignal(window.brought_forward, timeout=5000):
        window.tray.open_action.trigger()
    assert window.isVisible()


def test_without_a_tray_closing_quits(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    assert window.tray is None and not page.close_combo.isEnabled()
    assert "no system tray" in page.background_note.text()
    url = window.server.view.url
    with qtbot.waitSignal(window.closed, timeout=20_000):
        window.close()
    assert not reachable(url)


def test_the_start_at_login_switch_writes_the_autostart_entry(
    qtbot: QtBot, make_window: Callable[..., MainWindow], tmp_path: Path
) -> None:
    window = make_window(tray=True)
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    entry = tmp_path / "config" / "autostart" / ENTRY_NAME
    assert page.login_check.isEnabled() and not page.login_check.isChecked()
    with qtbot.waitSignal(page.autostart_changed, timeout=5000):
        click(qtbot, page.login_check)
    text = entry.read_text(encoding="utf-8")
    assert "[Desktop Entry]" in text and "Type=Application" in text
    exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
    assert exec_line.endswith(f" {BACKGROUND}")
    window.quit()
    qtbot.waitUntil(lambda: window.is_closed, timeout=20_000)
    again = make_window(tray=True)
    qtbot.waitUntil(again.settings_page.login_check.isChecked, timeout=5000)  # read back from the entry
    with qtbot.waitSignal(again.settings_page.autostart_changed, timeout=5000):
        again.show_page(PAGES.index("Settings"))
        click(qtbot, again.settings_page.login_check)
    assert not entry.exists()


def test_the_autostart_entry_quotes_a_path_with_spaces(tmp_path: Path) -> None:
    autostart = Autostart(["/opt/My Apps/ai-service-platform"], platform="linux", config_home=tmp_path)
    assert not autostart.enabled()
    autostart.set_enabled(True)
    assert autostart.enabled()
    assert 'Exec="/opt/My Apps/ai-service-platform" --background\n' in autostart.entry.read_text(
        encoding="utf-8"
    )
    autostart.set_enabled(False)
    assert not autostart.enabled() and not autostart.entry.exists()
