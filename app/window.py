"""The main window: the server's status strip, a sidebar of pages, and the pages themselves.

Closing the window hides it at once and then, off the GUI thread, stops the server (letting open
streams finish within its grace period), finishes the ledger and closes the store; :attr:`closed`
fires when all of that is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QSize, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListWidget,
    QMainWindow,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.pages.downloads import DownloadsDialog
from app.pages.hardware import probe_in_child
from app.pages.info import InfoPage
from app.pages.keys import KeysPage
from app.pages.models import ModelsPage
from app.pages.settings import SettingsPage
from app.pages.usage import UsagePage
from app.preferences import Preferences
from app.server_control import ServerController
from app.tasks import Tasks
from app.theme import ThemeManager
from app.widgets.page_area import PageArea
from app.widgets.server_header import ServerHeader
from server.gpu import Hardware
from server.services import Services

PAGES = ("General Information", "API Keys", "Usage", "Models", "Settings")
STATUS_MESSAGE_MS = 10_000


@dataclass(frozen=True)
class Startup:
    """What the window is built from, all read before it exists."""

    services: Services
    preferences: Preferences
    help: dict[str, str]
    probe: Callable[[], Hardware] = probe_in_child
    """How the Models page finds what the hardware can run (blocking; called off the GUI thread)."""


class Sidebar(QListWidget):
    """The page list, exactly as wide as its longest entry at the current font size."""

    def sizeHint(self) -> QSize:
        width = self.sizeHintForColumn(0) + 2 * self.frameWidth() + 24
        return QSize(width, super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:
        return QSize(self.sizeHint().width(), super().minimumSizeHint().height())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:
            self.updateGeometry()


class MainWindow(QMainWindow):
    """Sidebar navigation over General Information, API Keys, Usage, Models and Settings."""

    closed = Signal()
    """The window was closed, the server has stopped and the services are closed."""
    page_changed = Signal(int)

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

        # Built in reading order (sidebar, status strip, pages), which is the order Tab visits them in.
        self.sidebar = Sidebar(self)
        self.sidebar.setAccessibleName("Pages")
        self.sidebar.addItems(list(PAGES))
        self.sidebar.setSpacing(2)
        self.header = ServerHeader(self.server, self.tasks, self)
        self.info_page = InfoPage(
            startup.help, services.settings, self.server.view, startup.preferences.support_contact
        )
        self.keys_page = KeysPage(
            services.keys, services.limiter, [m.name for m in services.settings.models], self.tasks
        )
        self.usage_page = UsagePage(services, self.tasks, theme)
        self.models_page = ModelsPage(services.models, services.save_models, startup.probe, self.tasks)
        self.settings_page = SettingsPage(
            services.store, services.settings.data_dir, startup.preferences, theme, self.server, self.tasks
        )
        self.pages: list[QWidget] = [
            self.info_page,
            self.keys_page,
            self.usage_page,
            self.models_page,
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
        self.server.requests_changed.connect(self.usage_page.requests_recorded)
        self.models_page.names_changed.connect(self.keys_page.set_models)
        self.downloads_dialog: DownloadsDialog | None = None
        self.models_page.download_requested.connect(self.open_downloads)
        self.settings_page.preferences_saved.connect(
            lambda p: self.info_page.set_support_contact(p.support_contact)
        )
        self.tasks.failed.connect(lambda message: self.statusBar().showMessage(message, STATUS_MESSAGE_MS))
        self.server.start_failed.connect(
            lambda message: self.statusBar().showMessage(message, STATUS_MESSAGE_MS)
        )
        self.sidebar.setCurrentRow(0)
        self.resize(1100, 760)

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

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closed:
            event.accept()
            return
        event.ignore()
        self.hide()
        if not self._shutting_down:
            self._shutting_down = True
            self.tasks.spawn(self._shut_down(), "closing")  # the last task spawned: see refuse_new

    async def _shut_down(self) -> None:
        self.server.shut_down()
        self.tasks.refuse_new()
        try:
            await self.tasks.drain()  # a start still on its way must finish before the stop
            await self.server.stop()
            await self.tasks.call(self.services.close)
        finally:
            self._closed = True
            self.tasks.close()
            self.closed.emit()
