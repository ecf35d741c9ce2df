"""API Keys: create, rename, roll and revoke keys, set what each may use, and a table of them with their
use against their limits that stays current.

The page calls :class:`server.access.keys.KeyService` and :class:`server.access.limits.Limiter` through
:class:`app.tasks.Tasks` only; the table is re-read every few seconds while the page is visible (last
use, expiry and use against limits change on their own) and at once after every change made here.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.pages.key_dialogs import (
    CreateKeyDialog,
    EditLimitsDialog,
    KeyForm,
    RenameDialog,
    RollDialog,
    SecretDialog,
)
from app.pages.key_limits import budget_text, budget_tooltip, rate_text
from app.server_control import ServerView
from app.tasks import Tasks
from app.theme import set_tone
from app.widgets.confirm import confirm_destructive
from app.widgets.refresh import RefreshWhileShown
from server.access.keys import KeyLimits, KeyRecord, KeyService
from server.access.limits import KeyActivity, Limiter
from server.errors import APIError
from server.metering.ledger import Ledger

REFRESH_MS = 2000
COLUMNS = ("Name", "Status", "Models", "Budget", "Last minute", "Last used", "Expires", "Created", "Hint")
"""What an operator looks for first comes first: at the default window size all of it up to the budget
shows without scrolling sideways."""


def when(moment: float | None, never: str = "Never") -> str:
    """A moment in local time, to the minute."""
    if moment is None:
        return never
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))


def status_text(record: KeyRecord, at: float) -> str:
    status = record.status(at)
    if status == "expiring":
        return f"Rolled: works until {when(record.expires_at)}"
    return {"active": "Active", "expired": "Expired", "revoked": "Revoked"}[status]


def models_text(record: KeyRecord) -> str:
    if record.allowed_models is None:
        return "All"
    return ", ".join(record.allowed_models) or "None"


def _row(record: KeyRecord, activity: KeyActivity, at: float, currency: str) -> tuple[str, ...]:
    return (
        record.name,
        status_text(record, at),
        models_text(record),
        budget_text(activity.budget, renews=False, currency=currency),
        rate_text(record.limits, activity),
        when(record.last_used_at),
        when(record.expires_at),
        when(record.created_at),
        record.hint,
    )


def _tooltip(record: KeyRecord, activity: KeyActivity, currency: str) -> str:
    models = (
        "all models" if record.allowed_models is None else ", ".join(record.allowed_models) or "no models"
    )
    note = f"<br>Note: {html.escape(record.owner_note)}" if record.owner_note else ""
    return (
        f"<b>{html.escape(record.name)}</b> ({record.id})<br>May use: {html.escape(models)}{note}"
        f"<br>Budget: {html.escape(budget_tooltip(activity.budget, currency))}"
    )


def read_keys(keys: KeyService, limiter: Limiter, ledger: Ledger) -> list[tuple[KeyRecord, KeyActivity]]:
    """Every key with its use against its limits, every request answered so far counted (blocking:
    reads the store)."""
    ledger.catch_up()
    return [(record, limiter.activity(record)) for record in keys.list()]


class KeysPage(QWidget):
    """The API Keys page."""

    key_created = Signal(str)
    """A key was created (the argument is its id); its secret has been shown."""
    key_renamed = Signal(str)
    key_revoked = Signal(str)
    key_deleted = Signal(str)
    expiry_changed = Signal(str)
    key_rolled = Signal(str, str)
    """A key was rolled: the old id, then the new one."""
    limits_changed = Signal(str)
    """A key's allowed models and limits were saved (the argument is its id)."""
    keys_loaded = Signal()
    """The table has been refilled from the store."""

    def __init__(
        self,
        keys: KeyService,
        limiter: Limiter,
        ledger: Ledger,
        models: Sequence[str],
        tasks: Tasks,
        parent: QWidget | None = None,
        *,
        currency: str = "",
    ) -> None:
        super().__init__(parent)
        self._currency = currency
        self._keys = keys
        self._limiter = limiter
        self._ledger = ledger
        self._names = list(models)
        self._failed: set[str] = set()
        self._tasks = tasks
        self._records: list[KeyRecord] = []
        self._shown: list[tuple[str, ...]] = []
        self._loading = False
        self.create_dialog: CreateKeyDialog | None = None
        self.secret_dialog: SecretDialog | None = None
        self.rename_dialog: RenameDialog | None = None
        self.limits_dialog: EditLimitsDialog | None = None
        self.roll_dialog: RollDialog | None = None
        self.revoke_box: QMessageBox | None = None
        self.delete_box: QMessageBox | None = None

        title = QLabel("<h2>API Keys</h2>", self)
        intro = QLabel(
            "Every request needs a key. Give each person or program its own, so you can see its usage "
            "and revoke it without disturbing anyone else.",
            self,
        )
        intro.setWordWrap(True)
        self.new_button = QPushButton("&New key…", self)
        self.new_button.setToolTip("Create a key (Ctrl+N)")
        self.limits_button = QPushButton("&Edit…", self)
        self.limits_button.setToolTip("Change the models, rates, budget and expiry of the key")
        self.rename_button = QPushButton("Rena&me…", self)
        self.roll_button = QPushButton("R&oll…", self)
        self.roll_button.setToolTip("Replace the key; the old one keeps working for a grace period")
        self.revoke_button = QPushButton("Re&voke…", self)
        self.revoke_button.setToolTip("Refuse the key from the next request on")
        self.delete_button = QPushButton("De&lete…", self)
        self.delete_button.setToolTip("Remove a revoked or expired key from the list (its usage stays)")
        self.new_button.clicked.connect(self.new_key)
        self.limits_button.clicked.connect(self.edit_limits_selected)
        self.rename_button.clicked.connect(self.rename_selected)
        self.roll_button.clicked.connect(self.roll_selected)
        self.revoke_button.clicked.connect(self.revoke_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setAccessibleName("API keys")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table; arrow keys move within it
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # scroll, never cut a name short
        self.table.setWordWrap(False)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.empty = QLabel("No keys yet. Press <b>New key</b> (Ctrl+N) to create one.", self)
        self.message = QLabel(self)
        set_tone(self.message, "error")
        self.message.setWordWrap(True)
        self.message.hide()

        buttons = QHBoxLayout()
        for button in (
            self.new_button,
            self.limits_button,
            self.rename_button,
            self.roll_button,
            self.revoke_button,
            self.delete_button,
        ):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(self.empty)
        layout.addWidget(self.table, 1)
        self._while_shown = RefreshWhileShown(self, REFRESH_MS, self.reload)
        self._update_buttons()

    # -- reading ---------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the keys off the GUI thread (skipped if a read is already on its way)."""
        if not self._loading:
            self._loading = True
            self._tasks.spawn(self._load(), "reading the API keys")

    async def _load(self) -> None:
        try:
            found = await self._tasks.call(read_keys, self._keys, self._limiter, self._ledger)
        finally:
            self._loading = False
        self._show(found)

    def _show(self, found: list[tuple[KeyRecord, KeyActivity]]) -> None:
        at = time.time()
        records = [record for record, _ in found]
        rows = [_row(record, activity, at, self._currency) for record, activity in found]
        if records == self._records and rows == self._shown:
            self.keys_loaded.emit()
            return
        selected = self.selected()
        self._records, self._shown = records, rows
        self.table.setRowCount(len(records))
        for i, ((record, activity), row) in enumerate(zip(found, rows, strict=True)):
            for column, text in enumerate(row):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, record.id)
                item.setToolTip(_tooltip(record, activity, self._currency))
                self.table.setItem(i, column, item)
            if selected is not None and record.id == selected.id:
                self.table.selectRow(i)
        self.empty.setVisible(not records)
        self._update_buttons()
        self.keys_loaded.emit()

    def records(self) -> list[KeyRecord]:
        return list(self._records)

    def selected(self) -> KeyRecord | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self._records):
            return None
        return self._records[rows[0].row()]

    def select(self, key_id: str) -> None:
        for i, record in enumerate(self._records):
            if record.id == key_id:
                self.table.selectRow(i)
                return

    def _update_buttons(self) -> None:
        record = self.selected()
        usable = record is not None and record.usable()
        self.rename_button.setEnabled(record is not None)
        self.limits_button.setEnabled(record is not None and record.status() != "revoked")
        self.roll_button.setEnabled(usable and record is not None and record.rolled_to is None)
        self.revoke_button.setEnabled(record is not None and record.status() != "revoked")
        self.delete_button.setEnabled(record is not None and not record.usable())

    def _fail(self, message: str) -> None:
        self.message.setText(message)
        self.message.show()

    # -- creating --------------------------------------------------------------------------------
    def new_key(self) -> None:
        """Open the create dialog (Ctrl+N)."""
        dialog = CreateKeyDialog(self._models, self)
        dialog.accepted.connect(lambda: self._tasks.spawn(self._create(dialog.form()), "creating a key"))
        self.create_dialog = dialog
        dialog.open()

    async def _create(self, form: KeyForm) -> None:
        try:
            secret, record = await self._tasks.call(
                self._keys.create,
                form.name,
                owner_note=form.owner_note,
                allowed_models=form.allowed_models,
                expires_at=form.expires_at,
                limits=form.limits,
            )
        except APIError as exc:
            self._fail(f"The key could not be created: {exc.message}")
            return
        self.message.hide()
        await self._load()
        self.select(record.id)
        self._show_secret(secret, record.name)
        self.key_created.emit(record.id)

    def _show_secret(self, secret: str, name: str) -> None:
        dialog = SecretDialog(secret, name, self)
        dialog.finished.connect(lambda _: self._forget_secret(dialog))
        self.secret_dialog = dialog
        dialog.open()

    def _forget_secret(self, dialog: SecretDialog) -> None:
        # Shown once means once: the secret does not linger in a hidden widget after the dialog closes.
        dialog.forget()
        dialog.deleteLater()
        if self.secret_dialog is dialog:
            self.secret_dialog = None

    # -- changing --------------------------------------------------------------------------------
    def set_currency(self, currency: str) -> None:
        """Money budgets are shown in ``currency`` from now on."""
        if currency != self._currency:
            self._currency = currency
            self._shown = []  # redrawn at the next read, which is now
            self.reload()

    def set_models(self, names: Sequence[str]) -> None:
        """The model table changed: offer these names in the key dialogs from now on."""
        self._names = list(names)

    def show_models(self, view: ServerView) -> None:
        """The server's models and their states: those that failed to load are not offered."""
        self._failed = {m.name for m in view.models if m.state == "failed"}

    @property
    def _models(self) -> list[str]:
        return [name for name in self._names if name not in self._failed]

    def edit_limits_selected(self) -> None:
        record = self.selected()
        if record is None:
            return
        dialog = EditLimitsDialog(record, self._models, self)
        dialog.accepted.connect(
            lambda: self._tasks.spawn(
                self._set_limits(record, dialog.allowed_models(), dialog.key_limits(), dialog.expires_at()),
                "changing a key's limits",
            )
        )
        self.limits_dialog = dialog
        dialog.open()

    async def _set_limits(
        self,
        record: KeyRecord,
        models: tuple[str, ...] | None,
        limits: KeyLimits,
        expires_at: float | None,
    ) -> None:
        try:
            await self._tasks.call(self._keys.set_limits, record.id, limits)
            await self._tasks.call(self._keys.set_models, record.id, models)
            if expires_at != record.expires_at:
                await self._tasks.call(self._keys.set_expiry, record.id, expires_at)
        except APIError as exc:
            self._fail(f"The key could not be changed: {exc.message}")
            return
        self.message.hide()
        await self._load()
        self.limits_changed.emit(record.id)
        if expires_at != record.expires_at:
            self.expiry_changed.emit(record.id)

    def rename_selected(self) -> None:
        record = self.selected()
        if record is None:
            return
        dialog = RenameDialog(record.name, self)
        dialog.accepted.connect(
            lambda: self._tasks.spawn(self._rename(record.id, dialog.new_name()), "renaming a key")
        )
        self.rename_dialog = dialog
        dialog.open()

    async def _rename(self, key_id: str, name: str) -> None:
        try:
            await self._tasks.call(self._keys.rename, key_id, name)
        except APIError as exc:
            self._fail(f"The key could not be renamed: {exc.message}")
            return
        await self._load()
        self.key_renamed.emit(key_id)

    def revoke_selected(self) -> None:
        record = self.selected()
        if record is None:
            return
        key_id = record.id
        self.revoke_box = confirm_destructive(
            self,
            "Revoke API key",
            f"Revoke “{record.name}” ({record.hint})?\n\nPrograms using it are refused from their next "
            "request on. This cannot be undone.",
            "Revoke key",
            lambda: self._tasks.spawn(self._revoke(key_id), "revoking a key"),
        )

    async def _revoke(self, key_id: str) -> None:
        await self._tasks.call(self._keys.revoke, key_id)
        await self._load()
        self.key_revoked.emit(key_id)

    def delete_selected(self) -> None:
        record = self.selected()
        if record is None or record.usable():
            return
        key_id = record.id
        self.delete_box = confirm_destructive(
            self,
            "Delete API key",
            f"Delete “{record.name}” ({record.hint}) from the list?\n\nIt no longer works either way. Its "
            "usage stays in the ledger and on the Usage page, as a deleted key.",
            "Delete key",
            lambda: self._tasks.spawn(self._delete(key_id), "deleting a key"),
        )

    async def _delete(self, key_id: str) -> None:
        try:
            await self._tasks.call(self._keys.delete, key_id)
        except APIError as exc:
            self._fail(f"The key could not be deleted: {exc.message}")
            return
        await self._load()
        self.key_deleted.emit(key_id)

    def roll_selected(self) -> None:
        record = self.selected()
        if record is None:
            return
        dialog = RollDialog(record.name, self)
        dialog.accepted.connect(
            lambda: self._tasks.spawn(self._roll(record.id, dialog.grace_seconds()), "rolling a key")
        )
        self.roll_dialog = dialog
        dialog.open()

    async def _roll(self, key_id: str, grace_seconds: float) -> None:
        try:
            secret, record = await self._tasks.call(self._keys.roll, key_id, grace_seconds)
        except APIError as exc:
            self._fail(f"The key could not be rolled: {exc.message}")
            return
        await self._load()
        self.select(record.id)
        self._show_secret(secret, record.name)
        self.key_rolled.emit(key_id, record.id)
