"""The main window: the server's status strip, a sidebar of pages, and the pages themselves.

Closing the window keeps the server serving in the background, with an icon in the system tray, when the
operator chose so (asked the first time; Settings changes it). Quitting (from the tray, or closing when
the operator chose to quit or the desktop has no tray) hides the window at once and then, off the GUI
thread, stops the server (letting open streams finish within its grace period), finishes the ledger
and closes the store; :attr:`closed` fires when all of that is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.autostart import Autostart
from app.icons import app_icon, page_icon
from app.pages.downloads import DownloadsDialog
from app.pages.hardware import probe_in_child
from app.pages.info import InfoPage
from app.pages.keys import KeysPage
from app.pages.logs import LogsPage
from app.pages.models import ModelsPage
from app.pages.playground import PlaygroundPage
from app.pages.settings import SettingsPage
from app.pages.usage import UsagePage
from app.preferences import Preferences
from app.server_control import ServerController
from app.single_instance import ActivationServer
from app.tasks import Tasks
from app.theme import ThemeManager
from app.tray import Tray
from app.widgets.page_area import PageArea
from app.widgets.server_header import ServerHeader
from server.gpu import Hardware
from server.logs import RecentRecords
from server.services import Services

PAGES = ("General Information", "API Keys", "Usage", "Logs", "Models", "Playground", "Settings")
PAGE_ICONS = ("information", "keys", "usage", "logs", "models", "playground", "settings")
"""Each page's icon in ``resources/icons/pages``, in :data:`PAGES` order."""
ICON_SHARE = 1.25
"""A sidebar icon's side as a share of the font's line height."""
STATUS_MESSAGE_MS = 10_000


@dataclass(frozen=True)
class Startup:
    """What the window is built from, all read before it exists."""

    services: Services
    preferences: Preferences
    help: dict[str, str]
    probe: Callable[[], Hardware] = probe_in_child
    """How the Models page finds what the hardware can run (blocking; called off the GUI thread)."""
    log_records: RecentRecords = field(default_factory=RecentRecords)
    """The server's latest log records (attached to the root logger; detached when the window closes)."""
    tray_available: Callable[[], bool] = Tray.available
    """Whether this desktop shows tray icons (without, closing the window quits)."""
    autostart: Autostart = field(default_factory=Autostart)
    """Starting at login, as this desktop does it."""


class Sidebar(QListWidget):
    """The page list with an icon each, exactly as wide as its longest entry at the current font size.
    The icons take the text's colour and grow with the font."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setSpacing(2)
        for name in PAGES:
            QListWidgetItem(name, self)
        self.restyle()

    def restyle(self) -> None:
        """Draw the icons again in the current palette's colours and at the current font's size."""
        side = round(self.fontMetrics().height() * ICON_SHARE)
        palette = self.palette()
        colour = palette.color(QPalette.ColorRole.Text)
        selected = palette.color(QPalette.ColorRole.HighlightedText)
        self.setIconSize(QSize(side, side))
        metrics, pad = self.fontMetrics(), max(6, side // 3)
        for row, name in enumerate(PAGE_ICONS):
            item = self.item(row)
            item.setIcon(page_icon(name, side, colour, selected))
            # Room around each entry, as a touch target and to the eye; as wide as its text needs.
            item.setSizeHint(QSize(side + metrics.horizontalAdvance(item.text()) + 3 * pad, side + pad))
        self.updateGeometry()

    def sizeHint(self) -> QSize:
        width = self.sizeHintForColumn(0) + 2 * self.frameWidth() + 24
        return QSize(width, super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:
        return QSize(self.sizeHint().width(), super().minimumSizeHint().height())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.PaletteChange):
            self.restyle()


class MainWindow(QMainWindow):
    """Sidebar navigation over the pages named in :data:`PAGES`."""

    closed = Signal()
    """The window was closed, the server has stopped and the services are closed."""
    page_changed = Signal(int)
    brought_forward = Signal()
    """The window was shown and raised (another launch asked, or the tray icon)."""
    went_to_background = Signal()
    """The window was closed and the server keeps serving; the tray icon brings the window back."""

    def __init__(self, startup: Startup, theme: ThemeManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services = startup.services
        self.setWindowTitle("AI Service Platform")
        self.theme = theme
        theme.setParent(self)  # lives and dies with the window (it listens to the system's colour scheme)
        self.tasks = Tasks(parent=self)
        self.server = ServerController(services, self.tasks, self)
        self._shutting_down = False
        self._closed = False
        self._told_background = False
        self.close_box: QMessageBox | None = None
        self.tray = Tray(app_icon(), self) if startup.tray_available() else None
        # A later launch on the same data folder brings this window forward.
        self.activation = ActivationServer(services.settings.data_dir, self)
        self.activation.activation_requested.connect(self.bring_forward)
        self.activation.listen()

        # Built in reading order (sidebar, status strip, pages), which is the order Tab visits them in.
        self.sidebar = Sidebar(self)
        self.sidebar.setAccessibleName("Pages")
        self.header = ServerHeader(self.server, self.tasks, self)
        self.info_page = InfoPage(
            startup.help, services.settings, self.server.view, startup.preferences.support_contact
        )
        currency = startup.preferences.currency
        self.keys_page = KeysPage(
            services.keys,
            services.limiter,
            services.ledger,
            [m.name for m in services.settings.models],
            self.tasks,
            currency=currency,
        )
        self.usage_page = UsagePage(services, self.tasks, theme, currency=currency)
        self.logs_page = LogsPage(services, startup.log_records, self.tasks, currency)
        self._log_records = startup.log_records
        self.models_page = ModelsPage(
            services.models, services.save_models, startup.probe, self.tasks, currency=currency
        )
        self.playground_page = PlaygroundPage(services.keys, services.settings.data_dir, self.tasks)
        self.settings_page = SettingsPage(
            services.store,
            services.settings.data_dir,
            startup.preferences,
            theme,
            self.server,
            self.tasks,
            autostart=startup.autostart,
            tray=self.tray is not None,
        )
        self.pages: list[QWidget] = [
            self.info_page,
            self.keys_page,
            self.usage_page,
            self.logs_page,
            self.models_page,
            self.playground_page,
            self.settings_page,
        ]
        self.stack = QStackedWidget(self)
        for page in self.pages:
            self.stack.addWidget(PageArea(page))
        self.sidebar.currentRowChanged.connect(self.show_page)

        right = QVBoxLayout()
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.header)
        right.addWidget(self.stack, 1)
        body = QHBoxLayout()
        body.addWidget(self.sidebar)
        body.addLayout(right, 1)
        central = QWidget(self)
        central.setLayout(body)
        self.setCentralWidget(central)
        self._add_shortcuts()

        self.server.status_changed.connect(self.info_page.show_server)
        self.server.status_changed.connect(self.playground_page.show_server)
        self.playground_page.show_server(self.server.view)
        self.server.requests_changed.connect(self.usage_page.requests_recorded)
        self.server.requests_changed.connect(self.logs_page.requests_recorded)
        # The key dialogs offer the models of the table (as soon as it changes), except those that failed.
        self.models_page.names_changed.connect(self.keys_page.set_models)
        self.server.status_changed.connect(self.keys_page.show_models)
        self.downloads_dialog: DownloadsDialog | None = None
        self.models_page.download_requested.connect(self.open_downloads)
        self.settings_page.preferences_saved.connect(self._preferences_saved)
        self.tasks.failed.connect(lambda message: self.statusBar().showMessage(message, STATUS_MESSAGE_MS))
        self.server.start_failed.connect(
            lambda message: self.statusBar().showMessage(message, STATUS_MESSAGE_MS)
        )
        if self.tray is not None:
            self.tray.open_requested.connect(self.bring_forward)
            self.tray.lan_toggled.connect(self.settings_page.serve_lan)
            self.tray.quit_requested.connect(self.quit)
            self.server.status_changed.connect(self.tray.show_status)
            self.tray.show_status(self.server.view)
            self.tray.show()
        self.sidebar.setCurrentRow(0)
        self.resize(1100, 760)

    def _preferences_saved(self, preferences: Preferences) -> None:
        self.info_page.set_support_contact(preferences.support_contact)
        for page in (self.keys_page, self.usage_page, self.logs_page, self.models_page):
            page.set_currency(preferences.currency)

    def _add_shortcuts(self) -> None:
        for index, name in enumerate(PAGES):
            action = QAction(f"Show {name}", self)
            action.setShortcut(QKeySequence(f"Ctrl+{index + 1}"))
            action.triggered.connect(lambda _=False, i=index: self.show_page(i))
            self.addAction(action)
        new_key = QAction("New API key", self)
        new_key.setShortcut(QKeySequence.StandardKey.New)
        new_key.triggered.connect(self.new_key)
        self.addAction(new_key)
        self.sidebar.setToolTip(" · ".join(f"Ctrl+{i + 1}: {name}" for i, name in enumerate(PAGES)))

    def show_page(self, index: int) -> None:
        """Show page ``index`` (0 … 4, in sidebar order)."""
        if self.sidebar.currentRow() != index:
            self.sidebar.setCurrentRow(index)  # comes back here through currentRowChanged
            return
        self.stack.setCurrentIndex(index)
        self.page_changed.emit(index)

    def current_page(self) -> QWidget:
        return self.pages[self.stack.currentIndex()]

    def new_key(self) -> None:
        """Go to API Keys and open the create dialog (Ctrl+N)."""
        self.show_page(PAGES.index("API Keys"))
        self.keys_page.new_key()

    def bring_forward(self) -> None:
        """Show the window (from the tray, or minimised) on top, with the keyboard focus."""
        if self._shutting_down:
            return
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.show()
        self.raise_()
        self.activateWindow()
        self.brought_forward.emit()

    def open_downloads(self) -> None:
        """Show the download window (one, kept while the window lives: downloads go on without it)."""
        if self.downloads_dialog is None:
            self.downloads_dialog = DownloadsDialog(
                self.services, self.tasks, lambda: self.models_page.hardware, self
            )
        self.downloads_dialog.show()
        self.downloads_dialog.raise_()

    def start_server(self) -> None:
        self.tasks.spawn(self.server.start(), "starting the server")

    # -- closing ---------------------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        return self._closed

    def open(self, background: bool = False) -> None:
        """Show the window; in the background (started at login) only the tray icon, if there is one."""
        if not background:
            self.show()
        elif self.tray is None:
            self.showMinimized()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closed:
            event.accept()
            return
        event.ignore()
        if self._shutting_down:
            return
        action = self.settings_page.close_action() if self.tray is not None else "quit"
        if action == "background":
            self.to_background()
        elif action == "ask":
            self._ask_on_close()
        else:
            self.quit()

    def _ask_on_close(self) -> None:
        """The first close: keep serving in the background, or quit? The answer is remembered."""
        if self.close_box is not None:
            return
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Keep serving in the background?",
            "The server can keep answering its clients after this window closes, with an icon in the system "
            "tray to open the window again or to quit.",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setInformativeText("This is asked once: Settings → In the background changes it.")
        keep = box.addButton("Keep serving in the background", QMessageBox.ButtonRole.AcceptRole)
        stop = box.addButton("Quit and stop serving", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(keep)

        def answered() -> None:
            self.close_box = None
            clicked = box.clickedButton()
            if clicked is keep:
                self.settings_page.set_close_action("background")
                self.to_background()
            elif clicked is stop:
                self.settings_page.set_close_action("quit")
                self.quit()

        box.finished.connect(answered)
        self.close_box = box
        box.open()

    def to_background(self) -> None:
        """Hide the window; the server keeps serving and the tray icon brings the window back."""
        self.hide()
        if self.tray is not None and not self._told_background:
            self._told_background = True
            self.tray.notify(
                "Still serving",
                "The AI Service Platform keeps serving in the background. Its icon here opens the window "
                "or quits.",
            )
        self.went_to_background.emit()

    def quit(self) -> None:
        """Stop serving and close for good (the tray's Quit; closing when there is no tray)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self.hide()
        if self.tray is not None:
            self.tray.hide()
        self.tasks.spawn(self._shut_down(), "closing")  # the last task spawned: see refuse_new

    async def _shut_down(self) -> None:
        self.activation.close()
        self.server.shut_down()
        self.tasks.refuse_new()
        try:
            await self.tasks.drain()  # a start still on its way must finish before the stop
            await self.server.stop()
            await self.tasks.call(self.services.close)
        finally:
            logging.getLogger().removeHandler(self._log_records)
            self.theme.detach()
            self._closed = True
            self.tasks.close()
            self.closed.emit()
