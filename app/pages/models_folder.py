"""The download window's view of the models folder: where it is (and choosing another), what it holds with
each model's size and the table's models served from it, and deleting what none of them uses."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.tasks import Tasks
from app.theme import set_tone
from app.widgets.confirm import confirm_destructive
from app.widgets.rows_table import RowsTable, fill
from server.hub.library import StoredModel
from server.hub.progress import size
from server.services import Services

COLUMNS = ("In the models folder", "Size", "Served as")


class ModelsFolderBox(QGroupBox):
    """The models folder and what it holds."""

    stored_shown = Signal()
    """The folder's contents were read and shown."""
    folder_changed = Signal(str)

    def __init__(self, services: Services, tasks: Tasks, parent: QWidget) -> None:
        super().__init__("Models folder", parent)
        self._services = services
        self._downloads = services.downloads
        self._tasks = tasks
        self._items: list[StoredModel] = []
        self.picker: QFileDialog | None = None
        self.delete_box: QMessageBox | None = None
        self.folder = QLabel(str(self._downloads.folder), self)
        self.folder.setWordWrap(True)
        self.folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder_button = QPushButton("&Change folder…", self)
        self.stored = RowsTable(COLUMNS, "Models in the models folder", 2, self)
        self.delete_button = QPushButton("De&lete from disk…", self)
        self.delete_button.setEnabled(False)
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        set_tone(self.message, "error")
        self.message.hide()
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(self.folder_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.delete_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(folder_row)
        layout.addWidget(self.stored)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        self.folder_button.clicked.connect(self.choose_folder)
        self.stored.itemSelectionChanged.connect(self._selected)
        self.delete_button.clicked.connect(self.delete_selected)

    def refresh(self) -> None:
        """Read the folder again (off the GUI thread)."""
        self._tasks.spawn(self._show(), "reading the models folder")

    async def _show(self) -> None:
        self._items = await self._tasks.call(self._downloads.stored)
        base = self._downloads.folder
        rows: list[tuple[str, ...]] = [
            (str(item.path.relative_to(base)), size(item.size), ", ".join(item.used_by) or "not in the table")
            for item in self._items
        ]
        tips: list[tuple[str, ...]] = [
            (str(i.path), f"{i.size} bytes", ", ".join(i.used_by)) for i in self._items
        ]
        fill(self.stored, rows, tips)
        self._selected()
        self.stored_shown.emit()

    def _selected(self) -> None:
        self.delete_button.setEnabled(self.selected() is not None)

    def selected(self) -> StoredModel | None:
        rows = self.stored.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self._items):
            return None
        return self._items[rows[0].row()]

    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.show()

    # -- deleting --------------------------------------------------------------------------------
    def delete_selected(self) -> None:
        """Ask, then delete the selected model's files; one the table serves is refused with the reason."""
        item = self.selected()
        if item is None:
            return
        if item.used_by:
            self._say(
                f"{item.path.name} is served as {', '.join(item.used_by)}: remove that model on the Models page "
                "first."
            )
            return
        path = item.path
        self.delete_box = confirm_destructive(
            self,
            "Delete from disk",
            f"Delete {path} ({size(item.size)}) from disk?",
            "Delete",
            lambda: self._tasks.spawn(self._delete(path), f"deleting {path}"),
        )

    async def _delete(self, path: Path) -> None:
        try:
            await self._tasks.call(self._downloads.delete, path)
        except (OSError, ValueError) as exc:
            self._say(str(exc))
        else:
            self.message.hide()
        await self._show()

    # -- moving ----------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        """Pick another models folder: new downloads go there, from now on and after a restart."""
        picker = QFileDialog(self, "Choose the models folder", str(self._downloads.folder))
        picker.setFileMode(QFileDialog.FileMode.Directory)
        picker.setOption(QFileDialog.Option.ShowDirsOnly, True)
        picker.fileSelected.connect(
            lambda chosen: self._tasks.spawn(self._change(Path(chosen)), "changing the models folder")
        )
        self.picker = picker
        picker.open()

    async def _change(self, folder: Path) -> None:
        try:
            await self._tasks.call(self._downloads.set_folder, folder)
            await self._tasks.call(self._services.save_server_settings, models_dir=str(folder))
        except (OSError, ValueError) as exc:
            self._say(str(exc))
            return
        self.message.hide()
        self.folder.setText(str(self._downloads.folder))
        self.folder_changed.emit(str(self._downloads.folder))
        await self._show()
