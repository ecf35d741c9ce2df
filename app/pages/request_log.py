"""The Logs page's request log: each request as it happens (time, key, model, endpoint, status, tokens,
time to the first token, duration, and what the client was told went wrong), filtered by key, model and
status, with all of a request's metadata for the one selected.

Requests come from the ledger: the latest ones from its memory, with their error messages (which are
never written to disk), and, when the page first opens, the newest rows it holds on disk from earlier.
No prompt and no reply is ever among them: the ledger records what a request used, not what it said.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.currency import money
from app.widgets.flow import FlowRow
from server.metering.ledger import UsageEntry
from server.metering.reports import latest_rows
from server.services import Services

HISTORY = 500
"""Rows read from disk when the page first opens."""
KEEP = 2000
"""Requests the page keeps; older ones leave it (the ledger and the Usage page keep them all)."""
LONGEST_ERROR = 120
COLUMNS = (
    "Time",
    "Key",
    "Model",
    "Endpoint",
    "Status",
    "Input",
    "Output",
    "First token",
    "Duration",
    "Error",
)
STATUSES = (
    ("", "Every status"),
    ("completed", "Completed"),
    ("rejected", "Refused"),
    ("failed", "Failed"),
    ("disconnected", "Disconnected"),
)
STATUS_WORDS = {"completed": "OK", "rejected": "Refused", "failed": "Failed", "disconnected": "Disconnected"}
_ROOT = QModelIndex()


@dataclass(frozen=True)
class LoggedRequest:
    """One request's metadata, as the log shows it."""

    request_id: str
    at: float
    key_id: str | None
    model: str
    endpoint: str
    status: str
    http_status: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: float
    latency_ms: float
    ttft_ms: float | None
    stream: bool
    client_disconnected: bool
    exact: bool
    error: str | None
    live: bool
    """Seen as it happened (its error message known), not read back from disk."""


def from_entry(entry: UsageEntry) -> LoggedRequest:
    return LoggedRequest(
        entry.request_id,
        entry.created_at,
        entry.key_id,
        entry.model,
        entry.endpoint,
        entry.status,
        entry.http_status,
        entry.input_tokens,
        entry.output_tokens,
        entry.cached_tokens,
        entry.reasoning_tokens,
        entry.cost,
        entry.latency_ms,
        entry.ttft_ms,
        entry.stream,
        entry.client_disconnected,
        entry.exact,
        entry.error,
        True,
    )


def from_row(row: dict[str, Any]) -> LoggedRequest:
    return LoggedRequest(
        row["request_id"],
        row["created_at"],
        row["key_id"],
        row["model"],
        row["endpoint"],
        row["status"],
        row["http_status"],
        row["input_tokens"],
        row["output_tokens"],
        row["cached_tokens"],
        row["reasoning_tokens"],
        row["cost"],
        row["latency_ms"],
        row["ttft_ms"],
        row["stream"],
        row["client_disconnected"],
        row["exact"],
        None,
        False,
    )


@dataclass(frozen=True)
class LogRead:
    last: int
    """The number of the latest request the ledger's memory held."""
    requests: list[LoggedRequest]
    """New since the previous read, newest first."""
    keys: dict[str, str]
    """Key id → its name as the log shows it."""


def read_requests(services: Services, after: int) -> LogRead:
    """The requests after the one numbered ``after`` (from the start: the newest on disk too) and the
    keys' names (blocking: reads the store)."""
    recent = [(number, entry) for number, entry in list(services.ledger.recent) if number > after]
    last = recent[-1][0] if recent else after
    found = [from_entry(entry) for _, entry in reversed(recent)]
    if after == 0:
        seen = {request.request_id for request in found}
        found += [
            from_row(row) for row in latest_rows(services.store, HISTORY) if row["request_id"] not in seen
        ]
        found.sort(key=lambda request: request.at, reverse=True)
    keys = {record.id: f"{record.name} (…{record.hint[-4:]})" for record in services.keys.list()}
    return LogRead(last, found, keys)


def _when(moment: float) -> str:
    local = time.localtime(moment)
    today = time.localtime()
    same_day = (local.tm_year, local.tm_yday) == (today.tm_year, today.tm_yday)
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", local)


def _duration(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _cut(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= LONGEST_ERROR else line[: LONGEST_ERROR - 1] + "…"


class RequestsModel(QAbstractTableModel):
    """The requests shown, newest first."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.requests: list[LoggedRequest] = []
        self.keys: dict[str, str] = {}

    def key_name(self, key_id: str | None) -> str:
        if not key_id:
            return "(no key)"
        return self.keys.get(key_id, f"deleted key {key_id}")

    def cells(self, request: LoggedRequest) -> tuple[str, ...]:
        return (
            _when(request.at),
            self.key_name(request.key_id),
            request.model or "(none)",
            request.endpoint,
            f"{STATUS_WORDS.get(request.status, request.status)} {request.http_status}",
            f"{request.input_tokens:,}",
            f"{request.output_tokens:,}",
            _duration(request.ttft_ms),
            _duration(request.latency_ms),
            _cut(request.error) if request.error else "",
        )

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self.requests)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        request = self.requests[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.cells(request)[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole and COLUMNS[index.column()] == "Error" and request.error:
            return request.error
        if role == Qt.ItemDataRole.TextAlignmentRole and 5 <= index.column() <= 8:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def add(self, newest: list[LoggedRequest]) -> None:
        """Put ``newest`` (newest first) at the top, and let the oldest go past :data:`KEEP`."""
        if newest:
            self.beginInsertRows(_ROOT, 0, len(newest) - 1)
            self.requests[:0] = newest
            self.endInsertRows()
        if len(self.requests) > KEEP:
            self.beginRemoveRows(_ROOT, KEEP, len(self.requests) - 1)
            del self.requests[KEEP:]
            self.endRemoveRows()

    def replace(self, requests: list[LoggedRequest]) -> None:
        self.beginResetModel()
        self.requests = requests[:KEEP]
        self.endResetModel()


class RequestLogView(QWidget):
    """The filters, the table of requests and the selected request's details."""

    def __init__(self, currency: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._currency = currency
        self._all: list[LoggedRequest] = []
        self.model = RequestsModel(self)
        self.filters = FlowRow(self)  # wraps at large fonts rather than widen the page
        self.key_filter = self._filter("&Key:", "Key", "Every key")
        self.model_filter = self._filter("&Model:", "Model", "Every model")
        self.status_filter = self._filter("St&atus:", "Status", None)
        for value, text in STATUSES:
            self.status_filter.addItem(text, value)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setAccessibleName("Requests")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(160)
        self.table.selectionModel().selectionChanged.connect(self._show_details)
        self.details_box = QGroupBox("Selected request", self)
        self.details = QLabel(self.details_box)
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setAccessibleName("Details of the selected request")
        self._show_details()
        box = QVBoxLayout(self.details_box)
        box.addWidget(self.details)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filters)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details_box)
        for combo in (self.key_filter, self.model_filter, self.status_filter):
            combo.currentIndexChanged.connect(self._refilter)

    def _filter(self, caption: str, what: str, every: str | None) -> QComboBox:
        holder = self.filters.group()
        label = QLabel(caption, holder)
        combo = QComboBox(holder)
        label.setBuddy(combo)
        FlowRow.fill(holder, label, combo)
        combo.setAccessibleName(f"Show the requests of this {what.lower()}")
        combo.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        if every is not None:
            combo.addItem(every, "")
        return combo

    # -- what is shown ---------------------------------------------------------------------------
    def _wanted(self) -> Callable[[LoggedRequest], bool]:
        key, model, status = (
            self.key_filter.currentData(),
            self.model_filter.currentData(),
            self.status_filter.currentData(),
        )

        def wanted(request: LoggedRequest) -> bool:
            return (
                (not key or (request.key_id or "-") == key)
                and (not model or (request.model or "-") == model)
                and (not status or request.status == status)
            )

        return wanted

    def add(self, read: LogRead) -> None:
        """Requests new since the last read (newest first), and the keys' names as they are now."""
        names_changed = read.keys != self.model.keys
        self.model.keys = read.keys
        self._all[:0] = read.requests
        del self._all[KEEP:]
        self._offer(read.requests)
        if names_changed:
            self.model.replace([r for r in self._all if self._wanted()(r)])
        else:
            wanted = self._wanted()
            self.model.add([r for r in read.requests if wanted(r)])
        self._show_details()

    def _offer(self, requests: list[LoggedRequest]) -> None:
        """Keys and models seen in the log become choices of their filters."""
        for combo, values in (
            (self.key_filter, {(r.key_id or "-", self.model.key_name(r.key_id)) for r in requests}),
            (self.model_filter, {(r.model or "-", r.model or "(none)") for r in requests}),
        ):
            for value, text in sorted(values, key=lambda pair: pair[1].lower()):
                index = combo.findData(value)
                if index < 0:
                    combo.blockSignals(True)
                    combo.addItem(text, value)
                    combo.blockSignals(False)
                elif combo.itemText(index) != text:
                    combo.setItemText(index, text)

    def _refilter(self) -> None:
        self.model.replace([r for r in self._all if self._wanted()(r)])
        self._show_details()

    def set_currency(self, currency: str) -> None:
        self._currency = currency
        self._show_details()

    def shown(self) -> list[LoggedRequest]:
        return list(self.model.requests)

    def select(self, request_id: str) -> None:
        for row, request in enumerate(self.model.requests):
            if request.request_id == request_id:
                self.table.selectRow(row)
                return

    def selected(self) -> LoggedRequest | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.model.requests):
            return None
        return self.model.requests[rows[0].row()]

    def _show_details(self) -> None:
        request = self.selected()
        if request is None:
            self.details.setText(
                "Select a request to see everything the server recorded about it. Nothing a client sends "
                "is recorded: no prompt and no reply, only what a request used and how it went."
            )
            return
        moment = dt.datetime.fromtimestamp(request.at).astimezone().isoformat(timespec="milliseconds")
        if request.error:
            error = html.escape(request.error)
        elif request.live or request.status == "completed":
            error = "none"
        else:
            error = "not kept across restarts (the status says what happened)"
        tokens = f"{request.input_tokens:,} in ({request.cached_tokens:,} from the cache), {request.output_tokens:,} out"
        if request.reasoning_tokens:
            tokens += f" ({request.reasoning_tokens:,} of them reasoning)"
        lines = [
            f"<b>{html.escape(request.request_id)}</b> at {moment}",
            f"Key: {html.escape(self.model.key_name(request.key_id))}"
            + (f" ({html.escape(request.key_id)})" if request.key_id else ""),
            f"Model: {html.escape(request.model or '(none)')} · endpoint: {html.escape(request.endpoint)}"
            + (" · streamed" if request.stream else ""),
            f"Status: {STATUS_WORDS.get(request.status, request.status)} (HTTP {request.http_status})"
            + (" · the client went away" if request.client_disconnected else ""),
            f"Error: {error}",
            f"Tokens: {tokens}" + ("" if request.exact else " (estimated)"),
            f"Cost: {money(request.cost, self._currency)}",
            f"First token after {_duration(request.ttft_ms)} · done after {_duration(request.latency_ms)}",
        ]
        self.details.setText("<br>".join(lines))
