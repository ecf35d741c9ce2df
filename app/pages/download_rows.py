"""The downloads in progress, one row each: what is downloaded, a progress bar, the speed and time left,
and Pause, Resume, Cancel (or Dismiss, once it is done). Fed with :class:`DownloadStatus` values; the
buttons only announce what was clicked."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.theme import set_tone
from server.hub.downloads import DownloadStatus
from server.hub.progress import describe

STEPS = 1000


class DownloadRow(QFrame):
    """One download."""

    def __init__(self, status: DownloadStatus, parent: QWidget) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.status = status
        self.title = QLabel(self)
        self.title.setWordWrap(True)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, STEPS)
        self.bar.setAccessibleName(f"Progress of {status.name}")
        self.detail = QLabel(self)
        self.detail.setWordWrap(True)
        self.detail.setAccessibleName(f"State of {status.name}")
        self.pause_button = QPushButton("Pause", self)
        self.resume_button = QPushButton("Resume", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.dismiss_button = QPushButton("Dismiss", self)
        for button, what in (
            (self.pause_button, "Pause the download of"),
            (self.resume_button, "Resume the download of"),
            (self.cancel_button, "Cancel and delete the download of"),
            (self.dismiss_button, "Clear the finished download of"),
        ):
            button.setAccessibleName(f"{what} {status.name}")
        buttons = QHBoxLayout()
        buttons.addWidget(self.bar, 1)
        for button in (self.pause_button, self.resume_button, self.cancel_button, self.dismiss_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(buttons)
        layout.addWidget(self.detail)
        self.show_status(status)

    def show_status(self, status: DownloadStatus) -> None:
        self.status = status
        files = f"{len(status.files)} files" if len(status.files) > 1 else status.files[0]
        self.title.setText(f"<b>{status.name}</b> from {status.repo_id} ({files})")
        self.bar.setValue(round(status.fraction * STEPS))
        self.bar.setFormat(f"{status.fraction:.0%}")
        self.detail.setText(describe(status))
        set_tone(
            self.detail, "error" if status.state == "failed" else "good" if status.state == "done" else ""
        )
        self.pause_button.setVisible(status.state == "downloading")
        self.resume_button.setVisible(status.resumable)
        self.resume_button.setText("Retry" if status.state == "failed" else "Resume")
        self.cancel_button.setVisible(status.state not in ("done", "installing"))
        self.dismiss_button.setVisible(status.state == "done")


class DownloadList(QWidget):
    """Every download the service knows, oldest first."""

    pause_clicked = Signal(str)
    resume_clicked = Signal(str)
    cancel_clicked = Signal(str)
    dismiss_clicked = Signal(str)

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.rows: dict[str, DownloadRow] = {}
        self.empty = QLabel("Nothing is being downloaded.", self)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.addWidget(self.empty)

    def show_statuses(self, statuses: list[DownloadStatus]) -> None:
        wanted = {status.id for status in statuses}
        for ident in [i for i in self.rows if i not in wanted]:
            row = self.rows.pop(ident)
            self._layout.removeWidget(row)
            row.deleteLater()
        for status in statuses:
            found = self.rows.get(status.id)
            if found is None:
                row = self.rows[status.id] = DownloadRow(status, self)
                row.pause_button.clicked.connect(lambda _=False, i=status.id: self.pause_clicked.emit(i))
                row.resume_button.clicked.connect(lambda _=False, i=status.id: self.resume_clicked.emit(i))
                row.cancel_button.clicked.connect(lambda _=False, i=status.id: self.cancel_clicked.emit(i))
                row.dismiss_button.clicked.connect(lambda _=False, i=status.id: self.dismiss_clicked.emit(i))
                self._layout.addWidget(row)
            elif found.status != status:
                found.show_status(status)
        self.empty.setVisible(not statuses)
