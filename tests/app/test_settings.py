"""Settings: theme and font size apply at once (graphs included) and survive a restart; "follow the
system" follows it live; the LAN switch warns and shows the LAN address; port and LAN are saved where
the server reads them and applied by a restart; the data directory opens."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import QObject, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QPalette
from PySide6.QtWidgets import QApplication, QLabel
from pytestqt.qtbot import QtBot

from app.preferences import SERVER_SETTING, WINDOW_SETTING, Preferences
from app.theme import FONT_STEPS, PALETTES
from app.window import PAGES, MainWindow
from server.services import settings_from_store

from .conftest import click, close_window, opened, settle

WINDOW = QPalette.ColorRole.Window


def window_colour() -> str:
    return QApplication.palette().color(WINDOW).name()


def choose(qtbot: QtBot, window: MainWindow, combo_name: str, data: str) -> None:
    """Pick an entry of a Settings combo box with the keyboard, as a user would, and wait for the save."""
    page = window.settings_page
    combo = getattr(page, combo_name)
    target = combo.findData(data)
    assert target >= 0
    combo.setFocus()
    field = "theme" if combo_name == "theme_combo" else "font_size"
    with qtbot.waitSignal(
        page.preferences_saved, timeout=5000, check_params_cb=lambda p: getattr(p, field) == data
    ):
        while combo.currentIndex() != target:
            qtbot.keyClick(combo, Qt.Key.Key_Down if combo.currentIndex() < target else Qt.Key.Key_Up)


def test_theme_and_font_size_apply_everywhere_and_survive_a_restart(
    qtbot: QtBot, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window()
    window.show_page(PAGES.index("Settings"))
    largest = FONT_STEPS[-1]
    assert window_colour() == PALETTES["light"][WINDOW]  # the system is not dark here: light
    choose(qtbot, window, "theme_combo", "dark")
    assert window_colour() == PALETTES["dark"][WINDOW]
    choose(qtbot, window, "font_combo", largest.key)
    assert QApplication.font().pointSize() == largest.points
    # Every page's text follows, and so do the graphs, whose text QtCharts styles on its own.
    for page in window.pages:
        label = opened(page.findChild(QLabel))
        assert label.font().pointSize() == largest.points
        assert (
            label.palette().color(QPalette.ColorRole.WindowText).name()
            == PALETTES["dark"][QPalette.ColorRole.WindowText]
        )
    chart = window.usage_page.views["requests"].chart
    assert chart.titleFont().pointSize() == largest.points
    assert chart.legend().font().pointSize() == largest.points
    assert all(axis.labelsFont().pointSize() == largest.points for axis in chart.axes())
    assert chart.backgroundBrush().color().name() == PALETTES["dark"][QPalette.ColorRole.Base]
    saved = window.services.store.get_setting(WINDOW_SETTING)
    assert saved["theme"] == "dark" and saved["font_size"] == largest.key

    close_window(qtbot, window)
    choose_default = make_window()  # the same data directory
    assert choose_default.settings_page.theme_combo.currentData() == "dark"
    assert choose_default.settings_page.font_combo.currentData() == largest.key
    assert window_colour() == PALETTES["dark"][WINDOW]
    assert QApplication.font().pointSize() == largest.points
    new_chart = choose_default.usage_page.views["cost"].chart
    assert new_chart.titleFont().pointSize() == largest.points


def test_follow_the_system_follows_it_live(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page(PAGES.index("Settings"))
    assert window.settings_page.theme_combo.currentData() == "system"
    hints = QApplication.styleHints()
    try:
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # what the desktop does when the user switches
        assert window_colour() == PALETTES["dark"][WINDOW]
        chart = window.usage_page.views["requests"].chart
        assert chart.backgroundBrush().color().name() == PALETTES["dark"][QPalette.ColorRole.Base]
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
        assert window_colour() == PALETTES["light"][WINDOW]
        choose(qtbot, window, "theme_combo", "light")
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # a chosen theme stays put
        assert window_colour() == PALETTES["light"][WINDOW]
    finally:
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_lan_is_off_by_default_and_switching_it_on_warns_and_shows_the_address(
    qtbot: QtBot, make_window: Callable[..., MainWindow], tmp_path: Path
) -> None:
    window = make_window()
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    assert not page.lan_check.isChecked() and not window.services.settings.lan
    assert not page.lan_warning.isVisible() and not page.lan_address.isVisible()
    click(qtbot, page.lan_check)
    assert page.lan_warning.isVisible() and "network you trust" in page.lan_warning.text()
    qtbot.waitUntil(lambda: "…" not in page.lan_address.text())
    text = page.lan_address.text()
    assert text.startswith("Other computers reach this server at http://") or text.startswith("No network")

    port = free_port()
    page.port_spin.setValue(port)
    with qtbot.waitSignal(page.network_applied, timeout=15_000):
        click(qtbot, page.apply_button)
    view = window.server.view
    assert view.running and view.lan and view.url.endswith(f":{port}")
    assert window.header.scope.text().startswith("LAN: ")
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200  # bound to every interface
    assert window.services.store.get_setting(SERVER_SETTING) == {
        "host": "127.0.0.1",
        "port": port,
        "lan": True,
    }
    if view.lan_address is not None:
        assert view.url == f"http://{view.lan_address}:{port}"
    # The next start-up (the window or `ai-service-platform serve`) reads them from the store.
    close_window(qtbot, window)
    settings = settings_from_store({"AISP_DATA_DIR": str(tmp_path / "data")})
    assert (settings.port, settings.lan, settings.bind_host) == (port, True, "0.0.0.0")


def test_an_unusable_address_is_refused_and_nothing_is_saved(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    url = window.server.view.url
    page.host_edit.setText("192.0.2.7")  # not loopback, and LAN serving is off
    click(qtbot, page.apply_button)
    assert page.server_message.isVisible() and "loopback" in page.server_message.text()
    assert page.server_message.property("tone") == "error"
    page.host_edit.setText("localhost, please")
    click(qtbot, page.apply_button)
    assert "IP address" in page.server_message.text()
    assert window.services.store.get_setting(SERVER_SETTING) is None
    assert window.server.view.url == url and window.server.view.running


class UrlCatcher(QObject):
    """Receives the URLs the window asks the desktop to open (Qt's own hook for this)."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.opened.append(url)


@pytest.fixture
def desktop() -> Iterator[UrlCatcher]:
    catcher = UrlCatcher()
    # PySide6 6.12 takes the slot's name as a str, although its annotations say bytes.
    QDesktopServices.setUrlHandler("file", catcher, "open")  # type: ignore[arg-type]
    yield catcher
    QDesktopServices.unsetUrlHandler("file")


def test_the_data_directory_is_shown_and_opens(qtbot: QtBot, window: MainWindow, desktop: UrlCatcher) -> None:
    window.show_page(PAGES.index("Settings"))
    data_dir = window.services.settings.data_dir
    labels = [label.text() for label in window.settings_page.findChildren(QLabel)]
    assert str(data_dir) in labels
    click(qtbot, window.settings_page.open_data_button)
    assert [url.toLocalFile() for url in desktop.opened] == [str(data_dir)]


def test_the_support_contact_is_saved_and_shown_in_general_information(
    qtbot: QtBot, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window()
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    page.contact_edit.setFocus()
    qtbot.keyClicks(page.contact_edit, "IT desk, it@example.com, ext. 1234")
    with qtbot.waitSignal(page.preferences_saved, timeout=5000):
        qtbot.keyClick(page.contact_edit, Qt.Key.Key_Return)
    support = window.info_page.documents[-1]
    assert any("IT desk, it@example.com, ext. 1234" in label.text() for label in support.findChildren(QLabel))
    close_window(qtbot, window)
    again = make_window()
    assert again.settings_page.contact_edit.text() == "IT desk, it@example.com, ext. 1234"
    assert any("ext. 1234" in label.text() for label in again.info_page.documents[-1].findChildren(QLabel))


def test_back_from_the_largest_font_the_form_is_as_compact_as_before(
    qtbot: QtBot, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window()
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    settle(qtbot)
    fields = (page.theme_combo, page.font_combo, page.host_edit, page.port_spin)
    before = [field.height() for field in fields]
    choose(qtbot, window, "font_combo", FONT_STEPS[-1].key)
    close_window(qtbot, window)
    again = make_window()  # starts at the largest font, as saved
    again.show_page(PAGES.index("Settings"))
    page = again.settings_page
    settle(qtbot)
    choose(qtbot, again, "font_combo", "normal")
    settle(qtbot)
    fields = (page.theme_combo, page.font_combo, page.host_edit, page.port_spin)
    assert [field.height() for field in fields] == before
    for field in fields:  # each label sits level with its field
        label = next(lab for lab in page.findChildren(QLabel) if lab.buddy() is field)
        middle = label.mapTo(page, label.rect().center()).y()
        assert abs(middle - field.mapTo(page, field.rect().center()).y()) <= 2, label.text()


def test_a_validation_message_goes_once_the_value_is_edited(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    page.host_edit.setText("192.0.2.7")
    click(qtbot, page.apply_button)
    assert page.server_message.isVisible()
    page.host_edit.selectAll()
    qtbot.keyClicks(page.host_edit, "127.0.0.1")
    assert not page.server_message.isVisible()


def test_without_a_file_manager_the_data_folder_says_where_it_is(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    click(qtbot, page.open_data_button)  # offscreen there is no desktop to open folders with
    assert page.data_message.isVisible() and "No program to open folders" in page.data_message.text()
    click(qtbot, page.copy_path_button)
    assert QApplication.clipboard().text() == str(window.services.settings.data_dir)


def test_every_window_setting_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in Preferences.__dataclass_fields__:
        assert f"| `{name}` |" in text, f"docs/configuration.md does not document the window setting {name}"
