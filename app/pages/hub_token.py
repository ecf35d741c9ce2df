"""The Hugging Face access token, as the download window asks for it: where one is kept, a field to give
one (never shown again), and a way to forget it. Reading and writing the credential store runs off the
GUI thread (a keyring can take a moment, or ask the desktop to unlock it)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from app.tasks import Tasks
from app.theme import set_tone
from server.hub.credentials import TokenStore

EXPLANATION = (
    "Gated models (EmbeddingGemma is one) download only for an account that accepted their licence: "
    "sign in at huggingface.co, accept it on the model's page, then create a token under <a href=\""
    'https://huggingface.co/settings/tokens">Settings → Access Tokens</a> (read access is enough) and give it '
    "here. It is sent to Hugging Face alone."
)


class TokenBox(QGroupBox):
    """Give, replace or forget the access token."""

    token_saved = Signal(str)
    """A token was kept; the argument says where."""
    token_forgotten = Signal()
    place_shown = Signal(str)

    def __init__(self, tokens: TokenStore, tasks: Tasks, parent: QWidget) -> None:
        super().__init__("Hugging Face access token", parent)
        self._tokens = tokens
        self._tasks = tasks
        self.explanation = QLabel(EXPLANATION, self)
        self.explanation.setWordWrap(True)
        self.explanation.setTextFormat(Qt.TextFormat.RichText)
        self.explanation.setOpenExternalLinks(True)
        self.state = QLabel("Looking for a kept token…", self)
        self.state.setWordWrap(True)
        self.field = QLineEdit(self)
        self.field.setEchoMode(QLineEdit.EchoMode.Password)
        self.field.setPlaceholderText("hf_…")
        self.field.setAccessibleName("Access token")
        label = QLabel("&Token:", self)
        label.setBuddy(self.field)
        self.save_button = QPushButton("&Keep token", self)
        self.save_button.setEnabled(False)
        self.forget_button = QPushButton("&Forget token", self)
        self.field.textChanged.connect(lambda text: self.save_button.setEnabled(bool(text.strip())))
        self.field.returnPressed.connect(self.save)
        self.save_button.clicked.connect(self.save)
        self.forget_button.clicked.connect(self.forget)
        row = QHBoxLayout()
        row.addWidget(label)
        row.addWidget(self.field, 1)
        row.addWidget(self.save_button)
        row.addWidget(self.forget_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.explanation)
        layout.addLayout(row)
        layout.addWidget(self.state)

    def refresh(self) -> None:
        self._tasks.spawn(self._show_place(), "reading where the access token is kept")

    async def _show_place(self) -> None:
        source = await self._tasks.call(lambda: self._tokens.source)
        place = await self._tasks.call(lambda: self._tokens.place)
        text = (
            f"A token is kept in {source}."
            if source
            else f"No token is kept. One given here goes to {place}."
        )
        self.state.setText(text)
        set_tone(self.state, "")
        self.forget_button.setEnabled(source is not None and "HF_TOKEN" not in source)
        self.place_shown.emit(text)

    def save(self) -> None:
        token = self.field.text()
        if token.strip():
            self._tasks.spawn(self._save(token), "keeping the access token")

    async def _save(self, token: str) -> None:
        try:
            place = await self._tasks.call(self._tokens.set, token)
        except ValueError as exc:
            self.state.setText(str(exc))
            set_tone(self.state, "error")
            return
        self.field.clear()
        await self._show_place()
        self.state.setText(f"The token is kept in {place}.")
        set_tone(self.state, "good")
        self.token_saved.emit(place)

    def forget(self) -> None:
        self._tasks.spawn(self._forget(), "forgetting the access token")

    async def _forget(self) -> None:
        await self._tasks.call(self._tokens.clear)
        await self._show_place()
        self.token_forgotten.emit()
