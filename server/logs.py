"""Logging for the appliance: one format, a filter that keeps API keys out of every line, a rotating file
in the data directory, and the latest records in memory for the window's Logs page.

Nothing a client sends (prompts, replies) is ever logged: records say what the server did.
"""

from __future__ import annotations

import itertools
import logging
import logging.handlers
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from server.redaction import redact


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record: a traceback or stack can carry a key that the message does not."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE_BYTES = 5 * 1024 * 1024
LOG_FILE_BACKUPS = 3
"""The log file is at most this many megabytes times the backups plus one: about 20 MB in all."""


class PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A rotating log file readable by its owner only, like everything else in the data directory."""

    def _open(self):  # type: ignore[no-untyped-def]  # (the base class leaves it unannotated)
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(descriptor, self.mode.replace("w", "a"), encoding=self.encoding, errors=self.errors)


def file_handler(path: Path) -> logging.Handler:
    """The server's log file at ``path`` (its folder is created), rotated at :data:`LOG_FILE_BYTES`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = PrivateRotatingFile(
        path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(RedactingFormatter(FORMAT))
    handler.addFilter(RedactSecrets())
    return handler


def configure_logging(level: str = "info", log_file: Path | None = None) -> None:
    """Log to standard error and, when ``log_file`` is given, to that rotating file too."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(FORMAT))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()  # a log file configured before (a second call in one process) is closed, not leaked
    root.handlers[:] = [handler]
    if log_file is not None:
        try:
            root.addHandler(file_handler(log_file))
        except OSError as exc:  # a read-only data directory: the window and the server still run
            root.warning("cannot write the log file %s: %s", log_file, exc)
    root.setLevel(level.upper())


@dataclass(frozen=True)
class LogLine:
    """One record as the window shows it."""

    number: int
    """Counts up from 1: what a reader has seen."""
    at: float
    level: str
    levelno: int
    text: str
    """The whole formatted record (a traceback included), keys redacted."""


class RecentRecords(logging.Handler):
    """The latest records in memory, for the window to show as they happen."""

    def __init__(self, size: int = 2000) -> None:
        super().__init__()
        self._lines: deque[LogLine] = deque(maxlen=size)
        self._numbers = itertools.count(1)
        self.setFormatter(RedactingFormatter(FORMAT))
        self.addFilter(RedactSecrets())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted must not break the code that logged it
            self.handleError(record)
            return
        self._lines.append(
            LogLine(next(self._numbers), record.created, record.levelname, record.levelno, text)
        )

    def since(self, number: int) -> list[LogLine]:
        """The records after the one numbered ``number`` (all kept, from 0), oldest first."""
        return [line for line in list(self._lines) if line.number > number]
