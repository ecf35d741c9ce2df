"""Usage: today and this month at a glance, then requests, input and output tokens and cost over a chosen
range (the last hour by the minute, up to months by the day), by model, by key, or by key and model.

The numbers come from :func:`server.metering.reports.usage_series` (the hourly roll-up, fast at millions of
ledger rows; the last hour from the ledger's own rows), read off the GUI thread; a newer request wins
over an older one still on its way. The page re-reads when it is shown, when the range or breakdown
changes, and when the server records requests while it is visible. Costs are in the operator's
currency (Settings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QDateTime, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDateTimeEdit,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.currency import DEFAULT_CURRENCY
from app.pages.usage_cards import Glance, GlanceCards, read_glance
from app.pages.usage_chart import MetricView
from app.pages.usage_labels import KeyName, Labels, key_names
from app.tasks import Tasks
from app.theme import ThemeManager
from app.widgets.refresh import RefreshWhileShown
from server.metering.reports import (
    HOUR,
    METRICS,
    GroupBy,
    UsageSeries,
    export_ledger_csv,
    export_series_csv,
    ledger_series,
    usage_series,
)
from server.services import Services

DAY = 24 * HOUR
MAX_GROUPS = 8
"""Lines on one graph before the quietest are merged into "other"; more cannot be told apart."""
SETTLE_MS = 250
"""Changes arriving closer together than this (typing a date, a burst of requests) cause one re-read."""
REFRESH_MS = 60_000
"""While visible, re-read at least this often so the range follows the clock."""

MINUTE = 60
PRESETS: tuple[tuple[str, str], ...] = (
    ("hour", "Last hour"),
    ("day", "Last 24 hours"),
    ("week", "Last 7 days"),
    ("month", "Last 30 days"),
    ("custom", "Custom range"),
)
BREAKDOWNS: tuple[tuple[GroupBy, str], ...] = (
    ("model", "By model"),
    ("key", "By API key"),
    ("key_model", "By key and model"),
    ("none", "Total only"),
)
DEFAULT_PRESET = "day"


@dataclass(frozen=True)
class Span:
    """A range to show and the bucket length to show it in."""

    start: float
    end: float
    bucket_seconds: int


def _local_midnight(moment: float) -> float:
    day = time.localtime(moment)
    midnight = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))
    return midnight - midnight % HOUR  # the roll-up is per UTC hour; half-hour time zones round down


def preset_span(preset: str, now: float) -> Span:
    """The last hour (by the minute), day (hourly), week (6-hourly) or month (daily), ending with the
    bucket that holds now."""
    if preset == "hour":
        end = (now // MINUTE + 1) * MINUTE
        return Span(end - HOUR, end, MINUTE)
    span, bucket = {"day": (DAY, HOUR), "week": (7 * DAY, 6 * HOUR), "month": (30 * DAY, DAY)}[preset]
    midnight = _local_midnight(now)
    end = midnight + -(-(now - midnight) // bucket) * bucket
    if end <= now:
        end += bucket
    return Span(end - span, end, bucket)


def custom_span(start: float, end: float) -> Span:
    """A range the operator chose, in buckets that keep the graph readable."""
    length = max(end - start, HOUR)
    for limit, bucket in ((2 * DAY, HOUR), (14 * DAY, 6 * HOUR), (180 * DAY, DAY)):
        if length <= limit:
            return Span(start, start + length, bucket)
    return Span(start, start + length, 7 * DAY)


class UsagePage(QWidget):
    """The Usage page."""

    usage_loaded = Signal()
    """The graphs and tables show freshly read numbers."""
    exported = Signal(str, int)
    """An export finished: the file written and the rows in it."""
    export_failed = Signal(str)

    def __init__(
        self,
        services: Services,
        tasks: Tasks,
        theme: ThemeManager,
        parent: QWidget | None = None,
        *,
        currency: str = DEFAULT_CURRENCY,
    ) -> None:
        super().__init__(parent)
        self._services = services
        self._tasks = tasks
        self._currency = currency
        self._generation = 0
        self._series: UsageSeries | None = None
        self._keys: dict[str, KeyName] = {}
        self._labels = Labels("model", {})
        self._glance: Glance | None = None
        self._span: Span | None = None
        self.file_dialog: QFileDialog | None = None
        self.exporting = False

        # Built in reading order (controls, graphs, exports), which is the order Tab visits them in.
        title = QLabel("<h2>Usage</h2>", self)
        self.cards = GlanceCards(self)
        self.range = QComboBox(self)
        for key, text in PRESETS:
            self.range.addItem(text, key)
        self.range.setCurrentIndex(self.range.findData(DEFAULT_PRESET))
        range_label = QLabel("&Range:", self)
        range_label.setBuddy(self.range)
        self.breakdown = QComboBox(self)
        for key, text in BREAKDOWNS:
            self.breakdown.addItem(text, key)
        breakdown_label = QLabel("&Breakdown:", self)
        breakdown_label.setBuddy(self.breakdown)
        now = QDateTime.currentDateTime()
        self.start_edit = QDateTimeEdit(now.addDays(-7), self)
        self.end_edit = QDateTimeEdit(now, self)
        self.start_label = QLabel("&From:", self)
        self.start_label.setBuddy(self.start_edit)
        self.end_label = QLabel("&To:", self)
        self.end_label.setBuddy(self.end_edit)
        for edit in (self.start_edit, self.end_edit):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.dateTimeChanged.connect(self._changed)
        self.tabs = QTabWidget(self)
        self.tabs.setAccessibleName("Usage metrics")
        self.views = {m: MetricView(m, theme, self.tabs) for m in METRICS}
        for view in self.views.values():
            view.set_currency(currency)
            self.tabs.addTab(view, view.title())
        self.export_table_button = QPushButton("Export &table…", self)
        self.export_table_button.setToolTip("Save the numbers shown (every period and group) as CSV")
        self.export_ledger_button = QPushButton("Export &ledger rows…", self)
        self.export_ledger_button.setToolTip("Save every request in the range, one row each, as CSV")
        self.export_table_button.clicked.connect(lambda: self._choose_file("table"))
        self.export_ledger_button.clicked.connect(lambda: self._choose_file("ledger"))
        self.status = QLabel(self)
        self.status.setWordWrap(True)

        for combo in (self.range, self.breakdown):
            combo.setSizePolicy(
                QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed
            )  # never cut an entry short
        controls = QHBoxLayout()
        for widget in (range_label, self.range, breakdown_label, self.breakdown):
            controls.addWidget(widget)
        controls.addStretch(1)
        custom = QHBoxLayout()  # a row of its own: the dates are wide at large font sizes
        for part in (self.start_label, self.start_edit, self.end_label, self.end_edit):
            custom.addWidget(part)
        custom.addStretch(1)
        exports = QHBoxLayout()
        exports.addWidget(self.export_table_button)
        exports.addWidget(self.export_ledger_button)
        exports.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.cards)
        layout.addLayout(controls)
        layout.addLayout(custom)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(exports)

        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.reload)
        self._while_shown = RefreshWhileShown(self, REFRESH_MS, self.reload)
        self.range.currentIndexChanged.connect(self._range_changed)
        self.breakdown.currentIndexChanged.connect(self.reload)
        self._show_custom_range(False)

    # -- what to show ----------------------------------------------------------------------------
    def _range_changed(self) -> None:
        self._show_custom_range(self.range.currentData() == "custom")
        self.reload()

    def _show_custom_range(self, custom: bool) -> None:
        for widget in (self.start_label, self.start_edit, self.end_label, self.end_edit):
            widget.setVisible(custom)

    def _changed(self) -> None:
        if self.range.currentData() == "custom":
            self._settle.start()

    def span(self) -> Span:
        preset = str(self.range.currentData())
        if preset == "custom":
            return custom_span(
                self.start_edit.dateTime().toSecsSinceEpoch(), self.end_edit.dateTime().toSecsSinceEpoch()
            )
        return preset_span(preset, time.time())

    @property
    def series(self) -> UsageSeries | None:
        return self._series

    def label(self, group: str) -> str:
        """How a group is named on the graphs and in the tables (its whole name is in their tooltips)."""
        return self._labels.short(group)

    def full_label(self, group: str) -> str:
        """A group's whole name, as the export writes it."""
        return self._labels.full(group)

    def set_currency(self, currency: str) -> None:
        """Costs are in ``currency`` from now on."""
        self._currency = currency
        for index, view in enumerate(self.views.values()):
            view.set_currency(currency)
            self.tabs.setTabText(index, view.title())
        if self._glance is not None:
            self.cards.show_glance(self._glance, currency)
        self._show_status()

    # -- reading ---------------------------------------------------------------------------------
    def requests_recorded(self, _count: int) -> None:
        """The server recorded requests: re-read soon if anyone is looking."""
        if self.isVisible():
            self._settle.start()

    def reload(self) -> None:
        """Re-read the usage for the current choices; an older read still on its way is ignored."""
        self._generation += 1
        self._tasks.spawn(
            self._load(self._generation, self.span(), self.breakdown.currentData()), "reading usage"
        )

    async def _load(self, generation: int, span: Span, group_by: GroupBy) -> None:
        series, keys, glance = await self._tasks.call(self._read, span, group_by)
        if generation != self._generation:
            return
        unchanged = series == self._series and keys == self._keys
        self._series, self._keys, self._span, self._glance = series, keys, span, glance
        if not unchanged:  # a periodic re-read usually finds nothing new: then nothing is redrawn
            self._labels = Labels(series.group_by, keys, series.groups)
            for view in self.views.values():
                view.show_series(series, self._labels)
        self.cards.show_glance(glance, self._currency)
        self._show_status()
        self.usage_loaded.emit()

    def _show_status(self) -> None:
        if self._series is None or self.exporting:
            return
        total = self._series.total()
        self.status.setText(
            f"{total.requests:,} requests · {total.input_tokens:,} input and {total.output_tokens:,} output "
            f"tokens · cost {total.cost:.6f} {self._currency}"
        )

    def _read(self, span: Span, group_by: GroupBy) -> tuple[UsageSeries, dict[str, KeyName], Glance]:
        self._services.ledger.catch_up()  # every request answered so far is counted
        store = self._services.store
        read = ledger_series if span.bucket_seconds < HOUR else usage_series
        series = read(
            store, span.start, span.end, bucket_seconds=span.bucket_seconds, group_by=group_by
        ).limited(MAX_GROUPS)
        keys = key_names(self._services.keys) if group_by in ("key", "key_model") else {}
        return series, keys, read_glance(store, time.time())

    # -- exporting -------------------------------------------------------------------------------
    def _choose_file(self, what: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M")
        name = f"usage-{stamp}.csv" if what == "table" else f"ledger-{stamp}.csv"
        dialog = QFileDialog(self, "Export usage table" if what == "table" else "Export ledger rows")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setNameFilter("CSV files (*.csv)")
        dialog.setDefaultSuffix("csv")
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog)  # the same non-blocking dialog everywhere
        dialog.selectFile(str(Path.home() / name))
        dialog.fileSelected.connect(lambda path: self.export(what, Path(path)))
        self.file_dialog = dialog
        dialog.open()

    def export(self, what: str, path: Path) -> None:
        """Write the table shown (``table``) or the ledger rows of its range (``ledger``) to ``path``."""
        self._tasks.spawn(self._export(what, path), "exporting usage")

    async def _export(self, what: str, path: Path) -> None:
        series, span = self._series, self._span
        if series is None or span is None:
            return
        self.exporting = True
        for button in (self.export_table_button, self.export_ledger_button):
            button.setEnabled(False)
        self.status.setText(f"Exporting to {path}…")
        try:
            if what == "table":
                labels = {group: self.full_label(group) for group in series.groups}
                rows = await self._tasks.call(
                    export_series_csv, series, path, labels.__getitem__, self._currency
                )
            else:
                await self._tasks.call(self._services.ledger.catch_up)
                rows = await self._tasks.call(
                    export_ledger_csv,
                    self._services.store,
                    path,
                    series.start,
                    series.end,
                    None,
                    self._currency,
                )
        except OSError as exc:
            self.status.setText(f"The export failed: {exc.strerror or exc}")
            self.export_failed.emit(str(exc))
            return
        finally:
            self.exporting = False
            for button in (self.export_table_button, self.export_ledger_button):
                button.setEnabled(True)
        self.status.setText(f"Exported {rows} rows to {path}")
        self.exported.emit(str(path), rows)
