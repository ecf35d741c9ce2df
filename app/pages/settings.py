"""Settings: theme and font size (applied at once and saved), the support contact, the currency, the
server's address, port and LAN switch (saved, applied by restarting the server), what closing the window
does and starting at login, and the data directory."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.autostart import Autostart
from app.currency import MAX_CURRENCY, clean_currency
from app.preferences import (
    CLOSE_ACTIONS,
    MAX_CONTACT,
    CloseAction,
    Network,
    Preferences,
    check_network,
    save_network,
    save_preferences,
)
from app.server_control import ServerController, lan_address
from app.tasks import Tasks
from app.theme import FONT_STEPS, THEMES, ThemeManager, Tone, set_tone
from server.store import Store

LAN_WARNING = (
    "Anyone on this network who has a key can use the service, and requests travel as plain HTTP that "
    "others on the network could read. Switch this on only on a network you trust."
)
OVERRIDES = {"AISP_HOST": "address", "AISP_PORT": "port", "AISP_LAN": "LAN switch"}


def _form(box: QGroupBox) -> QFormLayout:
    """A form whose fields go under their labels when the two do not fit side by side (large fonts)."""
    form = QFormLayout(box)
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


def _row_label(text: str, buddy: QWidget, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setBuddy(buddy)
    return label


class SettingsPage(QWidget):
    """The Settings page."""

    preferences_saved = Signal(object)
    """New :class:`Preferences` were applied and written to the store."""
    network_applied = Signal(object)
    """A new :class:`Network` was saved and the server restarted with it."""
    autostart_changed = Signal(bool)
    """Starting at login was switched on (True) or off."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        preferences: Preferences,
        theme: ThemeManager,
        server: ServerController,
        tasks: Tasks,
        parent: QWidget | None = None,
        *,
        autostart: Autostart | None = None,
        tray: bool = False,
    ) -> None:
        super().__init__(parent)
        self._store, self._data_dir, self._preferences = store, data_dir, preferences
        self._theme, self._server, self._tasks = theme, server, tasks
        self._autostart = autostart
        self._tray = tray
        self._writing = False
        title = QLabel("<h2>Settings</h2>", self)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self._appearance_box())
        layout.addWidget(self._support_box())
        layout.addWidget(self._costs_box())
        layout.addWidget(self._server_box())
        layout.addWidget(self._background_box())
        layout.addWidget(self._data_box())
        layout.addStretch(1)

    # -- appearance ------------------------------------------------------------------------------
    def _appearance_box(self) -> QGroupBox:
        box = QGroupBox("Appearance", self)
        self.theme_combo = QComboBox(box)
        for key, text in THEMES:
            self.theme_combo.addItem(text, key)
        self.theme_combo.setCurrentIndex([k for k, _ in THEMES].index(self._theme.theme))
        self.font_combo = QComboBox(box)
        for step in FONT_STEPS:
            self.font_combo.addItem(f"{step.label} ({step.points} pt)", step.key)
        self.font_combo.setCurrentIndex([s.key for s in FONT_STEPS].index(self._theme.font_size))
        for combo in (self.theme_combo, self.font_combo):
            combo.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)  # never cut short
        self.theme_combo.currentIndexChanged.connect(self._appearance_changed)
        self.font_combo.currentIndexChanged.connect(self._appearance_changed)
        form = _form(box)
        form.addRow(_row_label("&Theme:", self.theme_combo, box), self.theme_combo)
        form.addRow(_row_label("&Font size:", self.font_combo, box), self.font_combo)
        return box

    def _appearance_changed(self) -> None:
        theme, size = self.theme_combo.currentData(), self.font_combo.currentData()
        if theme != self._theme.theme:
            self._theme.set_theme(theme)
        if size != self._theme.font_size:
            self._theme.set_font_size(size)
        self._save(replace(self._preferences, theme=theme, font_size=size))

    # -- support contact -------------------------------------------------------------------------
    def _support_box(self) -> QGroupBox:
        box = QGroupBox("Support", self)
        self.contact_edit = QLineEdit(self._preferences.support_contact, box)
        self.contact_edit.setMaxLength(MAX_CONTACT)
        self.contact_edit.setPlaceholderText("e.g. IT desk, it@example.com, extension 1234")
        self.contact_edit.editingFinished.connect(self._contact_changed)
        hint = QLabel("Shown to users at the end of General Information.", box)
        hint.setWordWrap(True)
        form = _form(box)
        form.addRow(_row_label("Support &contact:", self.contact_edit, box), self.contact_edit)
        form.addRow("", hint)
        return box

    def _contact_changed(self) -> None:
        contact = self.contact_edit.text().strip()
        if contact != self._preferences.support_contact:
            self._save(replace(self._preferences, support_contact=contact))

    # -- costs ---------------------------------------------------------------------------------------
    def _costs_box(self) -> QGroupBox:
        box = QGroupBox("Costs", self)
        self.currency_edit = QLineEdit(self._preferences.currency, box)
        self.currency_edit.setMaxLength(MAX_CURRENCY)
        self.currency_edit.setPlaceholderText("e.g. USD, EUR, £")
        self.currency_edit.editingFinished.connect(self._currency_changed)
        hint = QLabel(
            "The models' prices are in this currency; costs and money budgets are shown in it.", box
        )
        hint.setWordWrap(True)
        form = _form(box)
        form.addRow(_row_label("C&urrency:", self.currency_edit, box), self.currency_edit)
        form.addRow("", hint)
        return box

    def _currency_changed(self) -> None:
        currency = clean_currency(self.currency_edit.text())
        self.currency_edit.setText(currency)
        if currency != self._preferences.currency:
            self._save(replace(self._preferences, currency=currency))

    def _save(self, preferences: Preferences) -> None:
        self._preferences = preferences
        if not self._writing:
            self._writing = True
            self._tasks.spawn(self._write(), "saving the settings")

    async def _write(self) -> None:
        # One writer at a time, always writing the latest choice: saves racing on worker threads could
        # otherwise land out of order and restore an older font size at the next start.
        try:
            while True:
                preferences = self._preferences
                await self._tasks.call(save_preferences, self._store, preferences)
                if preferences == self._preferences:
                    break
        finally:
            self._writing = False
        self.preferences_saved.emit(preferences)

    # -- server ----------------------------------------------------------------------------------
    def _server_box(self) -> QGroupBox:
        box = QGroupBox("Server", self)
        network = self._server.network
        self.host_edit = QLineEdit(network.host, box)
        self.host_edit.setToolTip("The address to listen on; 127.0.0.1 serves this computer only")
        self.port_spin = QSpinBox(box)
        self.port_spin.setRange(0, 65535)
        self.port_spin.setSpecialValueText("Any free port")
        self.port_spin.setValue(network.port)
        self.lan_check = QCheckBox("Serve the &LAN (other computers on this network)", box)
        self.lan_check.setChecked(network.lan)
        self.lan_warning = QLabel(LAN_WARNING, box)
        self.lan_warning.setWordWrap(True)
        set_tone(self.lan_warning, "warning")
        self.lan_address = QLabel(box)
        self.lan_address.setWordWrap(True)
        self.lan_address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.apply_button = QPushButton("Apply and &restart server", box)
        self.server_message = QLabel(box)
        self.server_message.setWordWrap(True)
        self.server_message.hide()
        overridden = [what for variable, what in OVERRIDES.items() if variable in os.environ]
        note = QLabel(
            f"Set in the environment ({', '.join(overridden)}): the environment wins at start-up.", box
        )
        note.setWordWrap(True)
        note.setVisible(bool(overridden))
        self.lan_check.toggled.connect(self._lan_toggled)
        self.apply_button.clicked.connect(self.apply_network)
        # What was said about the values applied last no longer holds once they are edited.
        self.host_edit.textEdited.connect(self._network_edited)
        self.port_spin.valueChanged.connect(self._network_edited)
        self.lan_check.toggled.connect(self._network_edited)
        buttons = QHBoxLayout()
        buttons.addWidget(self.apply_button)
        buttons.addStretch(1)
        form = _form(box)
        form.addRow(_row_label("A&ddress:", self.host_edit, box), self.host_edit)
        form.addRow(_row_label("&Port:", self.port_spin, box), self.port_spin)
        form.addRow("", self.lan_check)
        form.addRow("", self.lan_warning)
        form.addRow("", self.lan_address)
        form.addRow("", buttons)
        form.addRow("", self.server_message)
        form.addRow("", note)
        self._lan_toggled(network.lan)
        return box

    def _network_edited(self) -> None:
        if self.apply_button.isEnabled():  # not while a restart is under way: its outcome is coming
            self.server_message.hide()

    def network(self) -> Network:
        return Network(self.host_edit.text().strip(), self.port_spin.value(), self.lan_check.isChecked())

    def _lan_toggled(self, on: bool) -> None:
        self.lan_warning.setVisible(on)
        self.lan_address.setVisible(on)
        if on:
            self.lan_address.setText("Finding this computer's LAN address…")
            self._tasks.spawn(self._show_lan_address(), "finding the LAN address")

    async def _show_lan_address(self) -> None:
        network = self.network()
        found = await self._tasks.call(lan_address, network)
        if not self.lan_check.isChecked():
            return
        port = network.port or self._server.view.url.rsplit(":", 1)[-1]
        self.lan_address.setText(
            f"Other computers reach this server at http://{found}:{port}/v1"
            if found
            else "No network connection found: other computers cannot reach this one yet."
        )

    def apply_network(self) -> None:
        """Check, save and apply the address, port and LAN switch (the server restarts)."""
        network = self.network()
        problem = check_network(network)
        if problem is not None:
            self._server_note(problem, "error")
            return
        self._server_note("Restarting the server…", "")
        self.apply_button.setEnabled(False)
        self._tasks.spawn(self._apply(network), "applying the server settings")

    async def _apply(self, network: Network) -> None:
        try:
            await self._tasks.call(save_network, self._store, network)
            started = await self._server.restart(network)
        finally:
            self.apply_button.setEnabled(True)
        if started:
            self._server_note(f"Serving at {self._server.view.base_url}", "good")
        else:
            self._server_note(f"Saved, but the server did not start: {self._server.view.error}", "error")
        self.network_applied.emit(network)

    def _server_note(self, text: str, tone: Tone) -> None:
        self.server_message.setText(text)
        set_tone(self.server_message, tone)
        self.server_message.show()

    def serve_lan(self, on: bool) -> None:
        """Switch LAN serving on or off and apply it at once (the tray's menu does this)."""
        network = self._server.network
        self.host_edit.setText(network.host)
        self.port_spin.setValue(network.port)
        self.lan_check.setChecked(on)
        self.apply_network()

    # -- in the background -------------------------------------------------------------------------
    def _background_box(self) -> QGroupBox:
        box = QGroupBox("In the background", self)
        self.close_combo = QComboBox(box)
        for key, text in CLOSE_ACTIONS:
            self.close_combo.addItem(text, key)
        self.close_combo.setCurrentIndex(self.close_combo.findData(self._preferences.close_action))
        self.close_combo.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self.close_combo.setEnabled(self._tray)
        self.close_combo.currentIndexChanged.connect(self._close_action_changed)
        self.login_check = QCheckBox("Start at &login, in the tray", box)
        self.login_check.setEnabled(self._autostart is not None and self._autostart.available)
        self.login_check.toggled.connect(self._login_toggled)
        self.background_note = QLabel(box)
        self.background_note.setWordWrap(True)
        self.background_note.setText(
            "In the tray, the server keeps answering clients while the window is closed, and the tray icon "
            "opens the window again or quits. Started at login, it serves at once, with the window closed."
            if self._tray
            else "This desktop shows no system tray icons: closing the window quits and stops serving."
        )
        form = _form(box)
        form.addRow(_row_label("On closing the &window:", self.close_combo, box), self.close_combo)
        form.addRow("", self.login_check)
        form.addRow("", self.background_note)
        if self._autostart is not None and self._autostart.available:
            self._tasks.spawn(self._read_autostart(), "reading whether the window starts at login")
        return box

    def close_action(self) -> CloseAction:
        return self._preferences.close_action

    def set_close_action(self, action: CloseAction) -> None:
        """Remember what closing the window does (the window asks once, then says so here)."""
        self.close_combo.setCurrentIndex(self.close_combo.findData(action))

    def _close_action_changed(self) -> None:
        action: CloseAction = self.close_combo.currentData()
        if action != self._preferences.close_action:
            self._save(replace(self._preferences, close_action=action))

    async def _read_autostart(self) -> None:
        assert self._autostart is not None
        enabled = await self._tasks.call(self._autostart.enabled)
        self.login_check.blockSignals(True)
        self.login_check.setChecked(enabled)
        self.login_check.blockSignals(False)

    def _login_toggled(self, on: bool) -> None:
        if self._autostart is not None:
            self._tasks.spawn(self._set_autostart(on), "changing whether the window starts at login")

    async def _set_autostart(self, on: bool) -> None:
        assert self._autostart is not None
        try:
            await self._tasks.call(self._autostart.set_enabled, on)
        except OSError as exc:
            self.background_note.setText(f"Start at login could not be changed: {exc.strerror or exc}")
            set_tone(self.background_note, "error")
            raise
        self.autostart_changed.emit(on)

    # -- data directory --------------------------------------------------------------------------
    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Data", self)
        path = QLabel(str(self._data_dir), box)
        path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        path.setWordWrap(True)
        path.setAccessibleName("Data directory")
        self.open_data_button = QPushButton("&Open data folder", box)
        self.open_data_button.setToolTip(
            "The database (keys, usage, settings) and the server secret live here"
        )
        self.open_data_button.clicked.connect(self.open_data_dir)
        self.copy_path_button = QPushButton("Cop&y path", box)
        self.copy_path_button.setToolTip("Copy the data directory's path to the clipboard")
        self.copy_path_button.clicked.connect(self.copy_data_path)
        self.data_message = QLabel(box)
        self.data_message.setWordWrap(True)
        self.data_message.hide()
        row = QHBoxLayout()
        row.addWidget(self.open_data_button)
        row.addWidget(self.copy_path_button)
        row.addStretch(1)
        form = _form(box)
        form.addRow(_row_label("Data directory:", path, box), path)
        form.addRow("", row)
        form.addRow("", self.data_message)
        return box

    def open_data_dir(self) -> None:
        """Open the folder in the desktop's file manager, or say why not and how to get there."""
        if QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._data_dir))):
            self.data_message.hide()
            return
        self.data_message.setText(
            "No program to open folders was found on this desktop. Open the folder above in your file "
            "manager yourself: <b>Copy path</b> puts its path on the clipboard."
        )
        set_tone(self.data_message, "warning")
        self.data_message.show()

    def copy_data_path(self) -> None:
        QApplication.clipboard().setText(str(self._data_dir))
        self.copy_path_button.setText("Copied")
