"""General Information: the help documents from ``resources/help``, filled in with this server's real
address, the models loaded now and the support contact, refilled whenever any of them changes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.server_control import ServerView
from app.widgets.code_block import CodeBlock
from app.widgets.document import DocumentView
from server.config import Settings

HELP_DIR = Path(__file__).resolve().parents[2] / "resources" / "help"
SECTIONS = ("overview", "features", "getting-started", "best-practices", "openai-compatibility", "support")
"""The documents of the page, in order (``resources/help/<name>.md``)."""
NO_CONTACT = (
    "No support contact has been set yet. Whoever runs this computer can add one in **Settings** → "
    "**Support contact**."
)


def load_help(directory: Path = HELP_DIR) -> dict[str, str]:
    """Read the page's documents (done at start-up, before the window exists)."""
    return {name: (directory / f"{name}.md").read_text(encoding="utf-8") for name in SECTIONS}


def _configured(settings: Settings, kind: str) -> str | None:
    return next((m.name for m in settings.models if m.kind == kind), None)


def help_values(view: ServerView, settings: Settings, support_contact: str) -> dict[str, str]:
    """The placeholders' values: the address clients should use and the models they can name."""
    chat, embedding = view.loaded("chat"), view.loaded("embedding")
    loaded = [f"`{name}` (chat)" for name in chat] + [f"`{name}` (embeddings)" for name in embedding]
    if view.lan:
        scope = "Other computers on your network can use it (LAN serving is on)."
    else:
        scope = "It answers this computer only; to share it, switch on LAN serving in **Settings**."
    return {
        "base_url": view.base_url,
        "scope_note": scope,
        "chat_model": chat[0] if chat else _configured(settings, "chat") or "MODEL_NAME",
        "embedding_model": embedding[0] if embedding else _configured(settings, "embedding") or "MODEL_NAME",
        "models_list": ", ".join(loaded) if loaded else "none loaded yet (see the **Models** page)",
        "models_note": f"Loaded now: {', '.join(loaded)}."
        if loaded
        else "No model has finished loading yet.",
        "support_contact": support_contact.strip() or NO_CONTACT,
    }


class InfoPage(QWidget):
    """The General Information page."""

    example_copied = Signal(str)
    """An example was copied to the clipboard."""

    def __init__(
        self,
        documents: Mapping[str, str],
        settings: Settings,
        view: ServerView,
        support_contact: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings = settings
        self._view = view
        self._contact = support_contact
        values = help_values(view, settings, support_contact)
        self.documents = [DocumentView(documents[name], values, self) for name in SECTIONS]
        layout = QVBoxLayout(self)
        for document in self.documents:
            document.copied.connect(self.example_copied)
            layout.addWidget(document)
        layout.addStretch(1)

    def show_server(self, view: ServerView) -> None:
        """The server's address or models changed: fill the examples in again."""
        self._view = view
        self._refill()

    def set_support_contact(self, contact: str) -> None:
        self._contact = contact
        self._refill()

    def _refill(self) -> None:
        values = help_values(self._view, self._settings, self._contact)
        for document in self.documents:
            document.set_values(values)

    def examples(self) -> list[CodeBlock]:
        """Every example on the page, in order."""
        return [block for document in self.documents for block in document.code_blocks()]
