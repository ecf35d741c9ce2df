"""The API Keys page's dialogs: create, show a secret once, change a key's limits, rename, roll.

Every dialog is opened with ``open()`` (window-modal, non-blocking) so the event loop keeps running;
the page acts on ``accepted``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QDateTime, Qt
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.pages.key_limits import LimitsBox, ModelPicker
from app.theme import set_tone
from app.widgets.code_block import monospace
from server.access.keys import KeyLimits, KeyRecord
from server.errors import InvalidRequest

DAY = 86400.0
GRACE_PERIODS: tuple[tuple[str, float], ...] = (
    ("Stop the old key at once", 0.0),
    ("1 hour", 3600.0),
    ("1 day", DAY),
    ("7 days", 7 * DAY),
    ("30 days", 30 * DAY),
)
DEFAULT_GRACE = 2  # one day: long enough to update a program, short enough to limit a leak


def _label(text: str, buddy: QWidget, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setBuddy(buddy)
    return label


def _buttons(dialog: QDialog, ok_text: str) -> QDialogButtonBox:
    box = QDialogButtonBox(
        QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, dialog
    )
    box.button(QDialogButtonBox.StandardButton.Ok).setText(ok_text)
    box.accepted.connect(dialog.accept)
    box.rejected.connect(dialog.reject)
    return box


@dataclass(frozen=True)
class KeyForm:
    """What the operator asked for in the create dialog."""

    name: str
    owner_note: str
    expires_at: float | None
    allowed_models: tuple[str, ...] | None
    """``None`` allows every model, including ones added later."""
    limits: KeyLimits = KeyLimits()


def _refuse(dialog: QDialog, error: QLabel, limits: LimitsBox) -> KeyLimits | None:
    """The limits, or ``None`` after showing what is wrong (the dialog stays open)."""
    try:
        return limits.limits()
    except InvalidRequest as exc:
        error.setText(exc.message)
        error.show()
        limits.field(exc.param).setFocus()
        return None


class ExpiryRow(QWidget):
    """“Expires” and, when ticked, the moment: a key's expiry as the create and edit dialogs ask for it."""

    def __init__(self, expires_at: float | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        now = QDateTime.currentDateTime()
        start = now.addDays(30) if expires_at is None else QDateTime.fromSecsSinceEpoch(int(expires_at))
        self.expires = QCheckBox("Expires", self)
        self.expires.setChecked(expires_at is not None)
        self.expiry = QDateTimeEdit(start, self)
        self.expiry.setCalendarPopup(True)
        self.expiry.setMinimumDateTime(min(now, start))
        self.expiry.setDisplayFormat("yyyy-MM-dd HH:mm")
        self.expiry.setAccessibleName("Expiry date and time")
        self.expiry.setEnabled(expires_at is not None)
        self.expires.toggled.connect(self.expiry.setEnabled)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.expires)
        row.addWidget(self.expiry, 1)

    def expires_at(self) -> float | None:
        if not self.expires.isChecked():
            return None
        return float(self.expiry.dateTime().toSecsSinceEpoch())


class CreateKeyDialog(QDialog):
    """Name, owner note, optional expiry, allowed models and limits of a new key."""

    def __init__(self, models: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New API key")
        self.name = QLineEdit(self)
        self.name.setPlaceholderText("e.g. Alice's laptop, or the build server")
        self.name.setMaxLength(200)
        self.note = QLineEdit(self)
        self.note.setPlaceholderText("optional: who to ask about this key")
        self.note.setMaxLength(2000)
        self.expiry_row = ExpiryRow(None, self)
        self.expires, self.expiry = self.expiry_row.expires, self.expiry_row.expiry
        self.picker = ModelPicker(models, None, self)
        self.all_models, self.models = self.picker.all_models, self.picker.models
        self.limits = LimitsBox(KeyLimits(), self)
        self.error = QLabel(self)
        set_tone(self.error, "error")
        self.error.setWordWrap(True)
        self.error.hide()
        self.buttons = _buttons(self, "Create key")
        self.name.textChanged.connect(self._check)
        self.picker.changed.connect(self._check)

        form = QFormLayout()
        form.addRow(_label("&Name:", self.name, self), self.name)
        form.addRow(_label("Owner &note:", self.note, self), self.note)
        form.addRow(_label("E&xpiry:", self.expires, self), self.expiry_row)
        form.addRow(_label("&Models:", self.all_models, self), self.picker)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.limits)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self._check()

    def _check(self) -> None:
        ok = bool(self.name.text().strip()) and self.picker.valid()
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)

    def accept(self) -> None:
        """Close only with limits the server accepts; otherwise say what is wrong."""
        if _refuse(self, self.error, self.limits) is not None:
            self.error.hide()
            super().accept()

    def form(self) -> KeyForm:
        return KeyForm(
            name=self.name.text().strip(),
            owner_note=self.note.text().strip(),
            expires_at=self.expiry_row.expires_at(),
            allowed_models=self.picker.allowed(),
            limits=self.limits.limits(),
        )

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()


class EditLimitsDialog(QDialog):
    """The models an existing key may use, its rates and budget, and its expiry."""

    def __init__(self, record: KeyRecord, models: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit API key")
        self.key_id = record.id
        self._rolled = record.rolled_to is not None
        heading = QLabel(f"What “{record.name}” ({record.hint}) may use, and until when", self)
        heading.setTextFormat(Qt.TextFormat.PlainText)
        heading.setWordWrap(True)
        self.expiry_row = ExpiryRow(record.expires_at, self)
        if self._rolled:  # a rolled key stops at the end of its grace period, which may move but not go
            self.expiry_row.expires.setEnabled(False)
            self.expiry_row.expires.setToolTip("A rolled key works until the end of its grace period")
        self.picker = ModelPicker(models, record.allowed_models, self)
        self.limits = LimitsBox(record.limits, self)
        self.error = QLabel(self)
        set_tone(self.error, "error")
        self.error.setWordWrap(True)
        self.error.hide()
        self.buttons = _buttons(self, "Save limits")
        self.picker.changed.connect(
            lambda: self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(self.picker.valid())
        )
        form = QFormLayout()
        form.addRow(_label("E&xpiry:", self.expiry_row.expires, self), self.expiry_row)
        form.addRow(_label("&Models:", self.picker.all_models, self), self.picker)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addLayout(form)
        layout.addWidget(self.limits)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

    def accept(self) -> None:
        if _refuse(self, self.error, self.limits) is None:
            return
        expires = self.expiry_row.expires_at()
        if expires is not None and expires <= QDateTime.currentDateTime().toSecsSinceEpoch():
            self.error.setText("The expiry must be in the future")
            self.error.show()
            self.expiry_row.expiry.setFocus()
            return
        self.error.hide()
        super().accept()

    def expires_at(self) -> float | None:
        return self.expiry_row.expires_at()

    def allowed_models(self) -> tuple[str, ...] | None:
        return self.picker.allowed()

    def key_limits(self) -> KeyLimits:
        return self.limits.limits()


class SecretDialog(QDialog):
    """Shows a new key's secret once, with a Copy button and a plain warning.

    Closing it without copying the key (Escape, the window's close button) asks first: the key cannot be
    shown again. “I have saved the key” closes it at once.
    """

    def __init__(self, secret: str, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Copy your new API key")
        self.secret = secret
        self.copied = False
        self.confirm_box: QMessageBox | None = None
        heading = QLabel(f"<b>The key “{html.escape(name)}” is ready.</b>", self)
        heading.setTextFormat(Qt.TextFormat.RichText)
        warning = QLabel(
            "Copy it now and keep it somewhere safe. <b>This is the only time it is shown</b>: the server "
            "stores only a fingerprint of it and cannot show it again. Anyone who has this key can use "
            "the service, so do not share it in e-mail or chat.",
            self,
        )
        warning.setTextFormat(Qt.TextFormat.RichText)
        warning.setWordWrap(True)
        set_tone(warning, "warning")
        self.field = QLineEdit(secret, self)
        self.field.setReadOnly(True)
        self.field.setFont(monospace())
        self.field.setAccessibleName("The new API key")
        self.field.setMinimumWidth(self.field.fontMetrics().horizontalAdvance(secret) + 24)
        self.copy_button = QPushButton("&Copy key", self)
        self.copy_button.setAccessibleName("Copy the key to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        self.done_button = QPushButton("I have saved the key", self)
        self.done_button.clicked.connect(self.accept)
        row = QHBoxLayout()
        row.addWidget(self.field, 1)
        row.addWidget(self.copy_button)
        closing = QHBoxLayout()
        closing.addStretch(1)
        closing.addWidget(self.done_button)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(warning)
        layout.addLayout(row)
        layout.addLayout(closing)
        self.copy_button.setFocus()

    def copy(self) -> None:
        QApplication.clipboard().setText(self.secret)
        self.copy_button.setText("Copied")
        self.copied = True

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Copy) and not self.field.hasSelectedText():
            self.copy()  # Ctrl+C anywhere in the dialog copies the key
            return
        super().keyPressEvent(event)

    def reject(self) -> None:
        """Escape or the close button: at once if the key was copied, else only once confirmed."""
        if self.copied or not self.secret:
            super().reject()
            return
        if self.confirm_box is not None:
            return
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Close without copying the key?",
            "You have not copied the key. Once this window closes, it cannot be shown again: you would "
            "have to roll the key (or create another) to get a new one.",
            QMessageBox.StandardButton.NoButton,
            self,
        )
        back = box.addButton("Go back and copy it", QMessageBox.ButtonRole.RejectRole)
        close = box.addButton("Close without copying", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(back)
        box.setEscapeButton(back)
        box.finished.connect(lambda _: self._close_confirmed(box.clickedButton() is close))
        self.confirm_box = box
        box.open()

    def _close_confirmed(self, confirmed: bool) -> None:
        self.confirm_box = None
        if confirmed:
            super().reject()

    def forget(self) -> None:
        """Drop the secret from the dialog (it is closed and will not be shown again)."""
        self.secret = ""
        self.field.clear()


class RenameDialog(QDialog):
    def __init__(self, current: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Rename API key")
        self.name = QLineEdit(current, self)
        self.name.setMaxLength(200)
        self.name.selectAll()
        buttons = _buttons(self, "Rename")
        self.name.textChanged.connect(
            lambda text: buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(text.strip()))
        )
        form = QFormLayout()
        form.addRow(_label("New &name:", self.name, self), self.name)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def new_name(self) -> str:
        return self.name.text().strip()


class RollDialog(QDialog):
    """Replace a key: the new one has the same name and models; the old one works for a grace period."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Roll API key")
        explanation = QLabel(
            f"Rolling “{name}” creates a new key with the same name, models and expiry. The old "
            "key keeps working for the grace period you choose, so programs can switch to the new key "
            "without an outage.",
            self,
        )
        explanation.setTextFormat(Qt.TextFormat.PlainText)
        explanation.setWordWrap(True)
        self.grace = QComboBox(self)
        for label, seconds in GRACE_PERIODS:
            self.grace.addItem(label, seconds)
        self.grace.setCurrentIndex(DEFAULT_GRACE)
        self.grace.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        form = QFormLayout()
        form.addRow(_label("Old key works for:", self.grace, self), self.grace)
        layout = QVBoxLayout(self)
        layout.addWidget(explanation)
        layout.addLayout(form)
        layout.addWidget(_buttons(self, "Roll key"))

    def grace_seconds(self) -> float:
        return float(self.grace.currentData())
