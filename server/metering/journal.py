"""The ledger's journal: a completed request's row, appended to a file before the request's last bytes
are sent, and moved into SQLite with the next batch of rows.

A SQLite transaction for one row writes its table and index pages to the database's log and takes and
releases its locks: a dozen system calls and most of the server's own work for a short request, paid by
each request when they come one at a time. One line appended to a file is one system call, and the rows
go to SQLite in batches, like those nobody waits for. The line is in the operating system's cache once
the call returns: it survives the process dying (a crash, ``kill -9``) as a commit to SQLite's log does
(the database runs at ``synchronous = NORMAL``), though not a power cut.

The journal is a folder of segments, each a file of JSON lines (one object per row, the columns the
ledger stores). The writer closes the segment it takes rows from, and deletes it once every row in it is
committed. At start, segments a previous run left are written to the ledger before anything else: a row
already committed is not written twice (rows are unique by request id), and a line that cannot be read
(cut short by a power cut, or damaged) is skipped and counted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

JOURNAL_FOLDER = "ledger-journal"
"""The journal's folder in the data directory."""
SUFFIX = ".jsonl"
MAX_LINE_BYTES = 64 * 1024
"""A row is a few hundred bytes; a longer line is damage, skipped without being parsed."""


class Segment:
    """One journal file and how many rows were appended to it."""

    __slots__ = ("fd", "path", "rows")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o600)
        self.rows = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Journal:
    """The segments in one folder. ``lock`` is held by whoever appends a row and queues it for the writer,
    and by the writer while it closes the segment and takes the queued rows: a closed segment's rows are
    then all among those the writer took."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:  # every append then fails, and the ledger commits rows one by one
            log.warning("the usage ledger journal's folder %s cannot be made: %s", directory, exc)
        self._current: Segment | None = None
        self._next = 1 + max((_number(p) for p in self.left_behind()), default=0)

    def left_behind(self) -> list[Path]:
        """The segments on disk, oldest first (at start: what a previous run did not commit)."""
        return sorted(
            (p for p in self.directory.glob(f"ledger-*{SUFFIX}") if _number(p) > 0 and p.is_file()),
            key=_number,
        )

    def append_locked(self, line: bytes) -> None:
        """Append one row's line (the caller holds ``lock``); OSError if it is not all written."""
        segment = self._current
        if segment is None:
            segment = self._current = Segment(self.directory / f"ledger-{self._next:09d}{SUFFIX}")
            self._next += 1
        try:
            written = os.write(segment.fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "the ledger journal was written only in part")
        except OSError:
            # What follows would join the cut line: the next row starts a new segment. The rows in this
            # one stay to be committed (and a cut line is skipped if it is ever read).
            self._current = None
            if segment.rows == 0:
                self.retire(segment)
            raise
        segment.rows += 1

    def close_segment_locked(self) -> Segment | None:
        """Close the segment rows are appended to (the caller holds ``lock``); the next row opens another.
        Returns it, if any row is in it."""
        segment, self._current = self._current, None
        if segment is not None and segment.rows == 0:
            self._current = segment  # nothing to retire: keep appending to it
            return None
        return segment

    @staticmethod
    def retire(segment: Segment) -> None:
        """Every row of ``segment`` is committed (or it has none): delete it."""
        segment.close()
        try:
            segment.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # read again at the next start, where its rows are already there
            log.warning("could not delete the ledger journal segment %s: %s", segment.path.name, exc)

    def close(self) -> None:
        """Stop appending; the segment's file stays (its rows may not all be committed)."""
        with self.lock:
            segment, self._current = self._current, None
        if segment is not None:
            if segment.rows == 0:
                self.retire(segment)
            else:
                segment.close()


def _number(path: Path) -> int:
    digits = path.name.removeprefix("ledger-").removesuffix(SUFFIX)
    return int(digits) if digits.isdigit() else 0


def encode(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row) + b"\n"


def read_segment(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows in a segment, and how many lines could not be read as a row object."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in _lines(path):
        if line is None:
            bad += 1
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(value, dict):
            rows.append(value)
        else:
            bad += 1
    return rows, bad


def _lines(path: Path) -> Iterator[bytes | None]:
    """The non-blank lines of a segment; None for a line longer than ``MAX_LINE_BYTES`` (damage)."""
    with path.open("rb") as handle:
        while True:
            line = handle.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES:
                while line and not line.endswith(b"\n"):  # skip to its end: one damaged line
                    line = handle.readline(MAX_LINE_BYTES + 1)
                yield None
                continue
            if line.strip():
                yield line
