"""The download window, opened from the Models page: get a model from Hugging Face, follow the downloads,
and see what the models folder holds.

A preset offers its repository (Qwen3-30B-A3B's GGUF quantisations, EmbeddingGemma's model folder) and any
repository id can be typed. A GGUF repository lists its quantisations by size with the one this machine
suits; a gated one says what to do and takes an access token. Downloads go on when this window is closed
(and after a restart); finished ones are added to the model table and loaded, and the Models page shows
them. Every call into the download service runs through :class:`app.tasks.Tasks`.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.pages.download_rows import DownloadList
from app.pages.hub_token import TokenBox
from app.pages.models_folder import ModelsFolderBox
from app.tasks import Tasks
from app.theme import set_tone
from app.widgets.refresh import RefreshWhileShown
from app.widgets.rows_table import RowsTable, fill
from server.gpu import Hardware
from server.hub import library
from server.hub.downloads import DownloadStatus
from server.hub.errors import HubError
from server.hub.listing import RepoListing, parse_repo_id
from server.hub.progress import size
from server.hub.quants import quants, recommend
from server.model_presets import PRESETS, preset_for_repository
from server.services import Services

REFRESH_MS = 500
CHOICE_COLUMNS = ("Download", "Size", "Files", "")
OTHER = ""
"""The source entry for a repository the operator types."""


class Choice:
    """One thing a repository offers to download: a quantisation, or a model folder."""

    def __init__(self, label: str, paths: list[str], total: int, note: str = "") -> None:
        self.label, self.paths, self.total, self.note = label, paths, total, note


def choices(listing: RepoListing, hardware: Hardware | None) -> tuple[list[Choice], int, str]:
    """What ``listing`` offers, the index of the one to suggest, and why."""
    if listing.kind == "sentence-transformers":
        files = listing.directory_files()
        folder = Choice("The model folder", [f.path for f in files], sum(f.size for f in files))
        return [folder], 0, "Its folder is downloaded whole."
    found = quants(listing)
    advice = recommend(found, hardware)
    rows = [
        Choice(q.label, [f.path for f in q.files], q.size, "recommended" if q == advice.quant else "")
        for q in found
    ]
    best = found.index(advice.quant) if advice.quant is not None else 0
    return rows, best, f"Recommended for this machine: {advice.reason}."


class DownloadsDialog(QDialog):
    """Download models from Hugging Face."""

    listed = Signal(object)
    """A repository was looked up; the argument is its :class:`RepoListing`."""
    lookup_failed = Signal(str)
    download_started = Signal(str)
    download_refused = Signal(str)
    download_finished = Signal(str)
    """A download was added to the model table (and loaded, or failed to load); the argument is its id."""
    statuses_shown = Signal()

    def __init__(
        self,
        services: Services,
        tasks: Tasks,
        hardware: Callable[[], Hardware | None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Download models")
        self._services = services
        self._downloads = services.downloads
        self._tasks = tasks
        self._hardware = hardware
        self._listing: RepoListing | None = None
        self._advised_blind = False
        """The recommendation shown was made before the hardware was known."""
        self._choices: list[Choice] = []
        self._name_edited = False
        self._reading = False
        self._finished: set[str] = set()
        self.statuses: list[DownloadStatus] = []

        intro = QLabel(
            f"Models come from Hugging Face ({services.settings.hf_endpoint}) into the models folder. A "
            "download goes on when this window is closed, and after a restart; once every file is verified "
            "the model is added to the table and loaded.",
            self,
        )
        intro.setWordWrap(True)

        get = QGroupBox("Get a model", self)
        self.source = QComboBox(get)
        for item in PRESETS:
            if item.repository:
                self.source.addItem(f"{item.name}: {item.repository}", item.repository)
        self.source.addItem("Another repository…", OTHER)
        source_label = QLabel("&From:", get)
        source_label.setBuddy(self.source)
        self.repository = QLineEdit(get)
        self.repository.setPlaceholderText("owner/name, e.g. Qwen/Qwen3-30B-A3B-GGUF, or the page's address")
        repository_label = QLabel("&Repository:", get)
        repository_label.setBuddy(self.repository)
        self.look_up_button = QPushButton("&Look up", get)
        self.listing_note = QLabel("Choose a preset's repository or type one, then look it up.", get)
        self.listing_note.setWordWrap(True)
        self.gated_note = QLabel(get)
        self.gated_note.setWordWrap(True)
        self.gated_note.setTextFormat(Qt.TextFormat.RichText)
        self.gated_note.setOpenExternalLinks(True)
        set_tone(self.gated_note, "warning")
        self.gated_note.hide()
        self.choices = RowsTable(CHOICE_COLUMNS, "What to download", 4, get)
        self.name = QLineEdit(get)
        self.name.setMaxLength(128)
        name_label = QLabel("Served &as:", get)
        name_label.setBuddy(self.name)
        self.download_button = QPushButton("&Download", get)
        self.download_button.setEnabled(False)
        self.message = QLabel(get)
        self.message.setWordWrap(True)
        set_tone(self.message, "error")
        self.message.hide()
        form = QGridLayout()
        form.addWidget(source_label, 0, 0)
        form.addWidget(self.source, 0, 1, 1, 2)
        form.addWidget(repository_label, 1, 0)
        form.addWidget(self.repository, 1, 1)
        form.addWidget(self.look_up_button, 1, 2)
        form.setColumnStretch(1, 1)
        naming = QHBoxLayout()
        naming.addWidget(name_label)
        naming.addWidget(self.name, 1)
        naming.addWidget(self.download_button)
        get_layout = QVBoxLayout(get)
        get_layout.addLayout(form)
        get_layout.addWidget(self.listing_note)
        get_layout.addWidget(self.gated_note)
        get_layout.addWidget(self.choices)
        get_layout.addLayout(naming)
        get_layout.addWidget(self.message)

        self.token_box = TokenBox(services.tokens, tasks, self)

        running = QGroupBox("Downloads", self)
        self.list = DownloadList(running)
        self.list_message = QLabel(running)
        self.list_message.setWordWrap(True)
        set_tone(self.list_message, "error")
        self.list_message.hide()
        running_layout = QVBoxLayout(running)
        running_layout.addWidget(self.list)
        running_layout.addWidget(self.list_message)

        self.folder_box = ModelsFolderBox(services, tasks, self)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(get)
        layout.addWidget(self.token_box)
        layout.addWidget(running)
        layout.addWidget(self.folder_box, 1)

        self.source.currentIndexChanged.connect(self._source_chosen)
        self.repository.returnPressed.connect(self.look_up)
        self.repository.textEdited.connect(lambda _: self._forget_listing())
        self.look_up_button.clicked.connect(self.look_up)
        self.choices.itemSelectionChanged.connect(self._choice_changed)
        self.name.textEdited.connect(self._name_typed)
        self.download_button.clicked.connect(self.download)
        self.list.pause_clicked.connect(lambda i: self._act(self._downloads.pause, i, "pausing"))
        self.list.resume_clicked.connect(lambda i: self._act(self._downloads.resume, i, "resuming"))
        self.list.cancel_clicked.connect(lambda i: self._act(self._downloads.cancel, i, "cancelling"))
        self.list.dismiss_clicked.connect(lambda i: self._act(self._downloads.dismiss, i, "clearing"))
        self.token_box.token_saved.connect(lambda _: self.gated_note.hide())
        self._while_shown = RefreshWhileShown(self, REFRESH_MS, self.refresh)
        if parent is not None:
            parent.installEventFilter(self)  # hidden with the window it belongs to
        self._source_chosen()
        self.resize(820, 900)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.parent() and event.type() == QEvent.Type.Hide:
            self.hide()
        return super().eventFilter(watched, event)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.token_box.refresh()
        self.folder_box.refresh()

    # -- choosing --------------------------------------------------------------------------------
    def _source_chosen(self) -> None:
        repository = self.source.currentData()
        self.repository.setText(repository or "")
        self.repository.setReadOnly(bool(repository))
        self._forget_listing()
        if not repository:
            self.repository.setFocus()

    def _forget_listing(self) -> None:
        self._listing, self._choices = None, []
        fill(self.choices, [], [])
        self.gated_note.hide()
        self.download_button.setEnabled(False)

    def look_up(self) -> None:
        """List the repository's files (off the GUI thread)."""
        try:
            repo = parse_repo_id(self.repository.text())
        except HubError as exc:
            self._say(self.message, exc.message)
            return
        self._tasks.spawn(self._look_up(repo), f"looking up {repo}")

    async def _look_up(self, repo: str) -> None:
        self.look_up_button.setEnabled(False)
        self.message.hide()
        self.listing_note.setText(f"Looking up {repo}…")
        try:
            listing = await self._tasks.call(self._downloads.inspect, repo)
        except HubError as exc:
            self.listing_note.setText(f"{repo} could not be looked up.")
            self._say(self.message, exc.message)
            self.lookup_failed.emit(exc.message)
            return
        finally:
            self.look_up_button.setEnabled(True)
        self._show_listing(listing)
        self.listed.emit(listing)

    def _show_listing(self, listing: RepoListing) -> None:
        if listing.kind is None:
            self.listing_note.setText(
                f"{listing.repo_id} holds neither GGUF files nor a sentence-transformers model: this server "
                "cannot run it."
            )
            self._forget_listing()
            return
        self._listing = listing
        hardware = self._hardware()
        self._advised_blind = hardware is None and listing.kind == "gguf"
        self._choices, best, why = choices(listing, hardware)
        if self._advised_blind:
            why = why.rstrip(".") + " (until the hardware check finishes)."
        kind = "GGUF quantisations" if listing.kind == "gguf" else "a sentence-transformers model"
        self.listing_note.setText(f"{listing.repo_id} at {listing.revision[:12]}: {kind}. {why}")
        if listing.gated:
            page = f"{self._services.settings.hf_endpoint}/{listing.repo_id}"
            self.gated_note.setText(
                f'{listing.repo_id} is gated: accept its licence at <a href="{page}">{page}</a> while signed in '
                "to Hugging Face, and give an access token of that account below."
            )
            self.gated_note.show()
        else:
            self.gated_note.hide()
        rows: list[tuple[str, ...]] = [
            (c.label, size(c.total), str(len(c.paths)), c.note) for c in self._choices
        ]
        tips: list[tuple[str, ...]] = [
            (", ".join(c.paths), f"{c.total} bytes", "\n".join(c.paths), c.note) for c in self._choices
        ]
        fill(self.choices, rows, tips)
        self._name_edited = False
        self.choices.selectRow(best)
        self._choice_changed()

    def chosen(self) -> Choice | None:
        rows = self.choices.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self._choices):
            return None
        return self._choices[rows[0].row()]

    def _choice_changed(self) -> None:
        choice, listing = self.chosen(), self._listing
        self.download_button.setEnabled(choice is not None and listing is not None)
        if choice is None or listing is None or listing.kind is None or self._name_edited:
            return
        known = preset_for_repository(listing.repo_id)
        picked = RepoListing(
            listing.repo_id, listing.revision, listing.gated, tuple(map(listing.file, choice.paths))
        )
        self.name.setText(known.name if known is not None else library.default_name(picked, listing.kind))

    def _name_typed(self, _text: str) -> None:
        self._name_edited = True

    # -- downloading -----------------------------------------------------------------------------
    def download(self) -> None:
        """Start downloading the chosen files."""
        choice, listing = self.chosen(), self._listing
        if choice is not None and listing is not None:
            name = self.name.text().strip() or None
            self._tasks.spawn(self._start(listing, choice.paths, name), f"downloading {listing.repo_id}")

    async def _start(self, listing: RepoListing, paths: list[str], name: str | None) -> None:
        self.download_button.setEnabled(False)
        try:
            status = await self._tasks.call(self._downloads.start, listing, paths, name)
        except (HubError, ValueError) as exc:
            text = exc.message if isinstance(exc, HubError) else str(exc)
            self._say(self.message, text)
            self.download_refused.emit(text)
            return
        finally:
            self.download_button.setEnabled(self.chosen() is not None)
        self.message.hide()
        self.download_started.emit(status.id)
        await self._refresh()

    def _act(self, action: Callable[[str], object], ident: str, what: str) -> None:
        self._tasks.spawn(self._run_action(action, ident), f"{what} a download")

    async def _run_action(self, action: Callable[[str], object], ident: str) -> None:
        try:
            await self._tasks.call(action, ident)
        except (HubError, ValueError, KeyError) as exc:
            self._say(self.list_message, exc.message if isinstance(exc, HubError) else str(exc))
        else:
            self.list_message.hide()
        await self._refresh()

    def refresh(self) -> None:
        """Re-read the downloads (off the GUI thread), unless a read is on its way; recommend again once the
        hardware is known."""
        if self._advised_blind and self._listing is not None and self._hardware() is not None:
            self._show_listing(self._listing)
        if not self._reading:
            self._tasks.spawn(self._refresh(), "reading the downloads")

    async def _refresh(self) -> None:
        self._reading = True
        try:
            self.statuses = await self._tasks.call(self._downloads.statuses)
        finally:
            self._reading = False
        self.list.show_statuses(self.statuses)
        finished = [s.id for s in self.statuses if s.state == "done" and s.id not in self._finished]
        self._finished.update(finished)
        for ident in finished:
            self.download_finished.emit(ident)
        if finished:
            self.folder_box.refresh()
        self.statuses_shown.emit()

    def status(self, ident: str) -> DownloadStatus | None:
        return next((s for s in self.statuses if s.id == ident), None)

    @staticmethod
    def _say(label: QLabel, text: str) -> None:
        label.setText(text)
        label.show()
