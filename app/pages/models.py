"""Models: the model table with each model's state, source, size, settings, price, queue and whether it
fits; add, change, load, unload, reload and remove models without restarting the server; what the
hardware can run; and, for a model served by other servers, each replica's health.

Every call into the model manager and the file system runs through :class:`app.tasks.Tasks`. Changes to
the table are saved at once (:meth:`server.services.Services.save_models`) and read back at the next
start. The table is re-read every second while the page is visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.pages.hardware import HardwarePanel
from app.pages.model_dialog import ModelDialog
from app.pages.model_rows import (
    COLUMNS,
    PRICE_COLUMN,
    REPLICA_COLUMNS,
    ModelRow,
    cells,
    details_html,
    read_models,
    replica_cells,
)
from app.tasks import Tasks
from app.theme import set_tone
from app.widgets.confirm import confirm_destructive
from app.widgets.refresh import RefreshWhileShown
from app.widgets.rows_table import RowsTable, fill
from server.config import ModelConfig
from server.engines.manager import ModelManager
from server.gpu import Hardware

REFRESH_MS = 1000


class ModelsPage(QWidget):
    """The Models page."""

    table_refreshed = Signal()
    """The table has been re-read (and redrawn if anything changed)."""
    names_changed = Signal(object)
    """The models in the table changed: their names, in table order."""
    model_added = Signal(str)
    model_changed = Signal(str)
    """A model's settings were changed and saved."""
    model_loaded = Signal(str)
    """A load (or reload) finished, whatever its outcome: the table shows it."""
    model_unloaded = Signal(str)
    model_removed = Signal(str)
    download_requested = Signal()
    """Download models… was clicked (the window opens its download window)."""

    def __init__(
        self,
        models: ModelManager,
        save: Callable[[], None],
        probe: Callable[[], Hardware],
        tasks: Tasks,
        parent: QWidget | None = None,
        *,
        currency: str = "",
    ) -> None:
        super().__init__(parent)
        self._currency = currency
        self._models = models
        self._save = save
        self._tasks = tasks
        self._rows: list[ModelRow] = []
        self._shown: list[tuple[str, ...]] = []
        self._names: list[str] = []
        self._busy: set[str] = set()
        self._reading = False
        self._again = False
        self._table_lock = asyncio.Lock()  # reads never overlap an add, a change or a removal
        self.model_dialog: ModelDialog | None = None
        self.remove_box: QMessageBox | None = None

        title = QLabel("<h2>Models</h2>", self)
        intro = QLabel(
            "The models this server runs. Clients name them in the <code>model</code> field of a request. "
            "Changes apply at once, without restarting the server, and are kept for the next start.",
            self,
        )
        intro.setWordWrap(True)
        self.add_button = QPushButton("A&dd model…", self)
        self.add_button.setToolTip("Add a model from a GGUF file, a model directory or another server")
        self.download_button = QPushButton("Do&wnload models…", self)
        self.download_button.setToolTip("Download a model from Hugging Face: a preset's, or any repository")
        self.download_button.clicked.connect(self.download_requested)
        self.edit_button = QPushButton("&Edit…", self)
        self.edit_button.setToolTip(
            "Change the model's settings: prices and limits apply at once; a new file or context loads a "
            "new instance while this one keeps answering"
        )
        self.load_button = QPushButton("&Load", self)
        self.unload_button = QPushButton("&Unload", self)
        self.unload_button.setToolTip("Stop serving the model and free its memory until it is loaded again")
        self.reload_button = QPushButton("&Reload", self)
        self.remove_button = QPushButton("Remo&ve…", self)
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        set_tone(self.message, "error")
        self.message.hide()
        self.table = RowsTable(COLUMNS, "Models", 4, self)
        self.set_currency(currency)
        self.details_box = QGroupBox("Selected model", self)
        self.details = QLabel("Select a model to see its details.", self.details_box)
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setAccessibleName("Details of the selected model")
        self.replicas_label = QLabel("Replicas (health checked every few seconds):", self.details_box)
        self.replicas = RowsTable(REPLICA_COLUMNS, "Replicas of the selected model", 2, self.details_box)
        self.replicas.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.replicas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.replicas_label.setBuddy(self.replicas)
        self.replicas_label.hide()
        self.replicas.hide()
        self.hardware_panel = HardwarePanel(probe, tasks, self)

        self.add_button.clicked.connect(self.add_model)
        self.edit_button.clicked.connect(self.edit_selected)
        self.load_button.clicked.connect(self.load_selected)
        self.unload_button.clicked.connect(self.unload_selected)
        self.reload_button.clicked.connect(self.load_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.hardware_panel.hardware_probed.connect(self._hardware_probed)

        buttons = QHBoxLayout()
        for button in (
            self.add_button,
            self.download_button,
            self.edit_button,
            self.load_button,
            self.unload_button,
            self.reload_button,
            self.remove_button,
        ):
            buttons.addWidget(button)
        buttons.addStretch(1)
        details = QVBoxLayout(self.details_box)
        details.addWidget(self.details)
        details.addWidget(self.replicas_label)
        details.addWidget(self.replicas)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details_box)
        # Last: what the hardware check finds grows the panel, and moves nothing the operator aims at.
        layout.addWidget(self.hardware_panel)
        self._while_shown = RefreshWhileShown(self, REFRESH_MS, self.reload)
        self._update_buttons()

    def set_currency(self, currency: str) -> None:
        """Prices are in ``currency``: the price column says so."""
        self._currency = currency
        column = COLUMNS.index(PRICE_COLUMN)
        unit = f"{currency} per 1M" if currency else "per 1M"
        self.table.setHorizontalHeaderItem(column, QTableWidgetItem(f"Price in / out ({unit})"))

    # -- reading ---------------------------------------------------------------------------------
    @property
    def hardware(self) -> Hardware | None:
        return self.hardware_panel.hardware

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self.hardware is None:
            self.hardware_panel.refresh()  # once, the first time the page is shown; then on Refresh

    def reload(self) -> None:
        """Re-read the table off the GUI thread (once more after a read already on its way)."""
        if self._reading:
            self._again = True
        else:
            self._reading = True
            self._tasks.spawn(self._reread(), "reading the models' state")

    async def _reread(self) -> None:
        try:
            while True:
                self._again = False
                await self._read()
                if not self._again:
                    break
        finally:
            self._reading = False

    async def _read(self) -> None:
        async with self._table_lock:
            rows = await self._tasks.call(read_models, self._models, self.hardware)
        self._show(rows)

    def _show(self, rows: list[ModelRow]) -> None:
        shown = [cells(row) for row in rows]
        changed = rows != self._rows
        self._rows = rows
        if shown != self._shown:
            selected = self.selected_name()
            self._shown = shown
            tips = [cells(row, whole=True) for row in rows]
            self.table.blockSignals(True)  # refilling is not the operator choosing another model
            fill(self.table, shown, tips)
            for i, row in enumerate(rows):
                if row.config.name == selected:
                    self.table.selectRow(i)
            self.table.blockSignals(False)
        if changed:
            self._show_details()
            self._update_buttons()
        names = [row.config.name for row in rows]
        if names != self._names:
            self._names = names
            self.names_changed.emit(names)
        self.table_refreshed.emit()

    def rows(self) -> list[ModelRow]:
        return list(self._rows)

    def row(self, name: str) -> ModelRow | None:
        return next((row for row in self._rows if row.config.name == name), None)

    def cell(self, name: str, column: str) -> str:
        """The text the table shows for ``name`` in ``column``."""
        for row in self._shown:
            if row[0] == name:
                return row[COLUMNS.index(column)]
        raise KeyError(name)

    def select(self, name: str) -> None:
        for i, row in enumerate(self._rows):
            if row.config.name == name:
                self.table.selectRow(i)
                return

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self._shown):
            return None
        return self._shown[rows[0].row()][0]

    def selected(self) -> ModelRow | None:
        name = self.selected_name()
        return self.row(name) if name is not None else None

    def _selection_changed(self) -> None:
        self._show_details()
        self._update_buttons()

    def _show_details(self) -> None:
        row = self.selected()
        if row is None:
            self.details.setText("Select a model to see its details.")
            replicas: list[tuple[str, ...]] = []
        else:
            self.details.setText(details_html(row))
            replicas = replica_cells(row)
        upstream = row is not None and row.config.engine == "upstream"
        self.replicas_label.setVisible(upstream)
        self.replicas.setVisible(upstream)
        errors = [replica.last_error or "" for replica in row.status.replicas] if row is not None else []
        fill(
            self.replicas,
            replicas,
            [(*cells[:-1], error) for cells, error in zip(replicas, errors, strict=True)],
        )

    def _update_buttons(self) -> None:
        row = self.selected()
        state = row.status.state if row is not None else None
        idle = row is not None and state != "loading" and row.config.name not in self._busy
        self.edit_button.setEnabled(idle)
        self.load_button.setEnabled(idle and state in ("unloaded", "failed"))
        self.unload_button.setEnabled(idle and state == "loaded")
        self.reload_button.setEnabled(idle and state == "loaded")
        self.remove_button.setEnabled(idle)

    def _hardware_probed(self, hardware: Hardware) -> None:
        if self.model_dialog is not None:
            self.model_dialog.set_hardware(hardware)
        self.reload()  # the memory column can now be filled in

    def _fail(self, message: str) -> None:
        self.message.setText(message)
        self.message.show()

    # -- adding and changing ---------------------------------------------------------------------
    def add_model(self) -> None:
        """Open the form for a new model."""
        self._open_dialog(
            ModelDialog(self._tasks, self.hardware, self._names, parent=self, currency=self._currency)
        )

    def edit_selected(self) -> None:
        row = self.selected()
        if row is not None:
            serving = row.status.state in ("loaded", "restarting")
            dialog = ModelDialog(
                self._tasks,
                self.hardware,
                self._names,
                row.config,
                parent=self,
                loaded=serving,
                currency=self._currency,
            )
            self._open_dialog(dialog, row.status.state)

    def _open_dialog(self, dialog: ModelDialog, state: str = "unloaded") -> None:
        editing = dialog.existing is not None
        dialog.accepted.connect(
            lambda: self._tasks.spawn(
                self._change(dialog.config(), state) if editing else self._add(dialog.config()),
                "changing a model" if editing else "adding a model",
            )
        )
        dialog.finished.connect(lambda _: self._dialog_closed(dialog))
        self.model_dialog = dialog
        dialog.open()

    def _dialog_closed(self, dialog: ModelDialog) -> None:
        if self.model_dialog is dialog:
            self.model_dialog = None
        dialog.deleteLater()

    async def _add(self, config: ModelConfig) -> None:
        async with self._table_lock:
            try:
                await self._tasks.call(self._models.add, config)
            except ValueError as exc:
                self._fail(f"The model could not be added: {exc}")
                return
            await self._tasks.call(self._save)
        self.message.hide()
        self.model_added.emit(config.name)
        await self._read()
        self.select(config.name)
        await self._load(config.name)

    async def _change(self, config: ModelConfig, state: str) -> None:
        """Save new settings: those read per request apply at once; the others load a new instance
        (unless the operator had unloaded the model), the running one answering meanwhile."""
        self._busy.add(config.name)
        try:
            async with self._table_lock:
                reload = await self._tasks.call(self._models.replace, config)
                await self._tasks.call(self._save)
        finally:
            self._busy.discard(config.name)
        self.message.hide()
        self.model_changed.emit(config.name)
        if reload and state != "unloaded":
            await self._load(config.name)
        else:
            await self._read()

    # -- loading ---------------------------------------------------------------------------------
    def load_selected(self) -> None:
        """Load the selected model (Reload: unload it and load it again)."""
        row = self.selected()
        if row is not None:
            self._tasks.spawn(self._load(row.config.name), f"loading {row.config.name}")

    async def _load(self, name: str) -> None:
        self._busy.add(name)
        self._update_buttons()
        self.reload()  # shows "Loading…" while the load runs
        try:
            status = await self._tasks.call(self._models.load, name)  # failures are recorded, not raised
            # A model that failed (a missing or damaged file) is not tried again at every start.
            await self._tasks.call(self._remember, name, status.state == "loaded")
        finally:
            self._busy.discard(name)
        await self._read()
        self._update_buttons()
        self.model_loaded.emit(name)

    def unload_selected(self) -> None:
        row = self.selected()
        if row is not None:
            self._tasks.spawn(self._unload(row.config.name), f"unloading {row.config.name}")

    async def _unload(self, name: str) -> None:
        self._busy.add(name)
        self._update_buttons()
        try:
            await self._tasks.call(self._models.unload, name)
            await self._tasks.call(self._remember, name, False)
        finally:
            self._busy.discard(name)
        await self._read()
        self._update_buttons()
        self.model_unloaded.emit(name)

    def _remember(self, name: str, load_at_start: bool) -> None:
        """An unloaded model stays unloaded at the next start; a loaded one loads again (worker thread)."""
        self._models.set_load_at_start(name, load_at_start)
        self._save()

    # -- removing --------------------------------------------------------------------------------
    def remove_selected(self) -> None:
        row = self.selected()
        if row is None:
            return
        name = row.config.name
        self.remove_box = confirm_destructive(
            self,
            "Remove model",
            f"Remove “{name}” from the table?\n\nIt stops serving at once. Its file stays where it is, "
            "and keys that name it keep their settings.",
            "Remove model",
            lambda: self._tasks.spawn(self._remove(name), f"removing {name}"),
        )

    async def _remove(self, name: str) -> None:
        self._busy.add(name)
        try:
            async with self._table_lock:
                await self._tasks.call(self._models.remove, name)
                await self._tasks.call(self._save)
        finally:
            self._busy.discard(name)
        await self._read()
        self.model_removed.emit(name)
