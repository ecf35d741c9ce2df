"""One metric of the Usage page: a QtCharts line graph over time, its legend, and under them a table of
the same numbers.

All are filled from the same :class:`server.metering.reports.UsageSeries`, so what the graph draws, what the
table lists and what the export writes cannot disagree. The legend is a wrapping label of its own (the
chart's legend cuts names short when they do not fit on one line); every name it and the table headings
show in short has its whole name in a tooltip. The value axis steps in round numbers (1, 2, 2.5 or 5
times a power of ten), so its labels read as the amounts they are.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCharts import QChart, QChartView, QDateTimeAxis, QLineSeries, QValueAxis
from PySide6.QtCore import (
    QAbstractTableModel,
    QDateTime,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPointF,
    Qt,
)
from PySide6.QtGui import QFont, QFontMetrics, QPainter, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.pages.usage_labels import Labels
from app.theme import ThemeManager
from server.metering.reports import Metric, UsageSeries, format_value

METRIC_TITLES: dict[Metric, str] = {
    "requests": "Requests",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
    "cost": "Cost",
}
DAY = 86400
_ROOT = QModelIndex()
STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)
"""Round steps for the value axis, times a power of ten."""
TICKS = 4
"""Steps between zero and the top of the value axis, about."""


@dataclass(frozen=True)
class Scale:
    """A value axis from zero in round steps."""

    top: float
    step: float
    decimals: int

    @property
    def ticks(self) -> int:
        return round(self.top / self.step) + 1

    def labels(self) -> list[str]:
        return [f"{i * self.step:.{self.decimals}f}" for i in range(self.ticks)]


def nice_scale(peak: float, whole: bool) -> Scale:
    """Zero to a little above ``peak`` in about :data:`TICKS` round steps (whole ones for counts)."""
    if whole:
        peak = max(peak, TICKS)  # a few requests still get a few lines
    if peak <= 0:
        return Scale(1.0, 0.25, 2)
    raw = peak / TICKS
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(s * power for s in STEPS if s * power >= raw * (1 - 1e-9))
    if whole:
        step = max(1.0, math.ceil(step))
    top = (
        math.floor(peak / step + 1e-9) + 1
    ) * step  # a step above the highest point: it never grazes the top
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step, decimals) != step:  # 2.5 times a power of ten takes one more
        decimals += 1
    return Scale(top, step, decimals)


def bucket_label(start: int, bucket_seconds: int) -> str:
    """A bucket as the table shows it: a date for whole days from midnight, the minute for minutes, else
    a date and an hour."""
    local = time.localtime(start)
    if bucket_seconds < 3600:
        return time.strftime("%H:%M", local)
    if bucket_seconds >= DAY and local.tm_hour == 0 and local.tm_min == 0:
        return time.strftime("%Y-%m-%d", local)
    return time.strftime("%Y-%m-%d %H:%M", local)


def _per(bucket_seconds: int) -> str:
    if bucket_seconds == 60:
        return "per minute"
    if bucket_seconds < 3600:
        return f"per {bucket_seconds // 60} minutes"
    if bucket_seconds == 3600:
        return "per hour"
    if bucket_seconds % DAY == 0:
        days = bucket_seconds // DAY
        return "per day" if days == 1 else f"per {days} days"
    return f"per {bucket_seconds // 3600} hours"


class SeriesTableModel(QAbstractTableModel):
    """The numbers of one metric as text, a row per bucket and a last row of totals (in bold)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._headers: list[str] = []
        self._tips: list[str] = []
        self._rows: list[list[str]] = []
        self._bold = QFont()
        self._bold.setBold(True)  # only the weight: the size still follows the font setting

    def set_rows(self, headers: list[str], rows: list[list[str]], tips: list[str] | None = None) -> None:
        self.beginResetModel()
        self._headers, self._rows = headers, rows
        self._tips = tips if tips is not None else headers
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._headers)

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            return self._rows[index.row()][index.column()]
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column():
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role == Qt.ItemDataRole.FontRole and index.row() == len(self._rows) - 1:
            return self._bold
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self._headers[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tips[section]
        return None

    def cell(self, row: int, header: str) -> str:
        return self._rows[row][self._headers.index(header)]


class MetricView(QSplitter):
    """The graph, its legend and the table of one metric: the table below, as wide as the page."""

    def __init__(self, metric: Metric, theme: ThemeManager, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Vertical, parent)
        self.measure = metric
        self._theme = theme
        self._currency = ""
        title = METRIC_TITLES[metric]
        self.chart = QChart()
        self.chart.legend().hide()  # the legend below wraps instead of cutting names short
        self.chart_view = QChartView(self.chart, self)
        self.chart_view.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.chart_view.setAccessibleName(f"{title} graph")
        self.chart_view.setMinimumSize(320, 200)
        self.legend = QLabel(self)
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setAccessibleName(f"{title} legend")
        self.legend.hide()
        graph = QWidget(self)
        column = QVBoxLayout(graph)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.chart_view, 1)
        column.addWidget(self.legend)
        self.model = SeriesTableModel(self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setAccessibleName(f"{title} table")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)
        self.table.setAlternatingRowColors(True)
        self.table.setMinimumHeight(120)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.addWidget(graph)
        self.addWidget(self.table)
        self.setStretchFactor(0, 3)
        self.setStretchFactor(1, 2)
        self.setChildrenCollapsible(False)
        self._pending: tuple[UsageSeries, Labels] | None = None
        self._drawn: tuple[UsageSeries, Labels] | None = None
        self._lines: dict[str, QLineSeries] = {}
        # The axes live as long as the chart: rebuilding them on every refresh makes QtCharts lay the
        # whole chart out again, which costs tens of milliseconds of the GUI thread.
        self.x_axis = QDateTimeAxis()
        self.y_axis = QValueAxis()
        self.scale = nice_scale(0, metric != "cost")
        self.chart.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        self.chart.addAxis(self.y_axis, Qt.AlignmentFlag.AlignLeft)
        self._buckets = 2
        self.chart.plotAreaChanged.connect(self._fit_ticks)
        theme.changed.connect(self._restyle)
        self._restyle()

    def title(self) -> str:
        """The metric's name, with the currency for cost."""
        name = METRIC_TITLES[self.measure]
        return f"{name} ({self._currency})" if self.measure == "cost" and self._currency else name

    def set_currency(self, currency: str) -> None:
        self._currency = currency
        self.y_axis.setTitleText(currency if self.measure == "cost" else "")

    def show_series(self, series: UsageSeries, labels: Labels) -> None:
        """List ``series`` (groups named by ``labels``) now, and draw it now or as soon as it is shown."""
        self._fill_table(series, labels)
        self._pending = (series, labels)
        if self.isVisible():
            self._draw()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._draw()

    def _draw(self) -> None:
        if self._pending is not None:
            series, labels = self._pending
            self._pending = None
            self._fill_chart(series, labels)
            self._drawn = (series, labels)

    def _fill_chart(self, series: UsageSeries, labels: Labels) -> None:
        chart = self.chart
        chart.setTitle(f"{self.title()} {_per(series.bucket_seconds)}")
        days = (series.end - series.start) / DAY
        x_axis, y_axis = self.x_axis, self.y_axis
        x_axis.setFormat(
            "HH:mm" if days <= 1 else "MMM d" if series.bucket_seconds >= DAY or days > 3 else "MMM d HH:mm"
        )
        x_axis.setRange(_datetime(series.start), _datetime(series.end))
        self._buckets = len(series.buckets)
        self._fit_ticks()
        groups = series.groups or ("",)
        names = [labels.short(g) for g in groups]
        if list(self._lines) != names:
            chart.removeAllSeries()
            self._lines = {}
            for name in names:
                line = QLineSeries()
                line.setName(name)
                line.setPointsVisible(True)
                chart.addSeries(line)
                line.attachAxis(x_axis)
                line.attachAxis(y_axis)
                self._lines[name] = line
        peak = 0.0
        for group, line in zip(groups, self._lines.values(), strict=True):
            values = series.values(self.measure, group)
            peak = max([peak, *values])
            line.replace([QPointF(b * 1000.0, v) for b, v in zip(series.buckets, values, strict=True)])
        self.scale = nice_scale(peak, self.measure != "cost")
        y_axis.setRange(0, self.scale.top)
        y_axis.setTickCount(self.scale.ticks)
        y_axis.setLabelFormat(f"%.{self.scale.decimals}f")
        self._fill_legend(series, labels)
        total = format_value(self.measure, series.total().get(self.measure))
        self.chart_view.setAccessibleDescription(
            f"{self.title()} {_per(series.bucket_seconds)}: {total} in all, from "
            f"{bucket_label(series.start, 3600)} to {bucket_label(series.end, 3600)}"
        )

    def _fill_legend(self, series: UsageSeries, labels: Labels) -> None:
        """A swatch and a name per line, wrapping from one line to the next between entries only."""
        if not series.groups:
            self.legend.hide()
            return
        entries = []
        for group, line in zip(series.groups, self._lines.values(), strict=True):
            colour = line.color().name()
            name = html.escape(labels.short(group)).replace(" ", "&nbsp;")
            entries.append(f'<span style="color:{colour}">&#9632;</span>&nbsp;{name}')
        self.legend.setText("&nbsp;&nbsp; ".join(entries))
        self.legend.setToolTip("\n".join(labels.full(group) for group in series.groups))
        self.legend.show()

    def _fit_ticks(self) -> None:
        """As many time labels as fit the plot's width at the current font, so none is cut short."""
        axis = self.x_axis
        # "W" is about as wide as the widest letters a month's name can have.
        sample = QFontMetrics(axis.labelsFont()).horizontalAdvance(axis.format().replace("M", "W")) + 16
        fits = int(self.chart.plotArea().width() // max(sample, 1))
        # Ticks fall on bucket boundaries (every 3 hours, every day…) when the spaces divide the buckets.
        spaces = max((d for d in range(1, min(fits, 8) + 1) if self._buckets % d == 0), default=1)
        ticks = spaces + 1
        if ticks != axis.tickCount():
            axis.setTickCount(ticks)

    def _fill_table(self, series: UsageSeries, labels: Labels) -> None:
        groups = list(series.groups)
        headers = ["Period", *(labels.short(g) for g in groups)]
        tips = ["The start of each period", *(labels.full(g) for g in groups)]
        with_total = len(groups) != 1
        if with_total:
            headers.append("Total")
            tips.append("Every group together")
        rows: list[list[str]] = []
        for bucket in series.buckets:
            cells = [series.amounts(bucket, g).get(self.measure) for g in groups]
            if with_total:
                cells.append(series.bucket_total(bucket).get(self.measure))
            rows.append(
                [bucket_label(bucket, series.bucket_seconds), *(format_value(self.measure, v) for v in cells)]
            )
        totals = [series.group_total(g).get(self.measure) for g in groups]
        if with_total:
            totals.append(series.total().get(self.measure))
        rows.append(["Total", *(format_value(self.measure, v) for v in totals)])
        self.model.set_rows(headers, rows, tips)

    def cell(self, row: int, header: str) -> str:
        """The text of the table cell in ``row`` under the column titled ``header``."""
        return self.model.cell(row, header)

    def _restyle(self) -> None:
        self._theme.style_chart(self.chart)
        self._fit_ticks()
        if self._drawn is not None:  # a new chart theme gives the lines new colours
            self._fill_legend(*self._drawn)


def _datetime(epoch: int) -> QDateTime:
    return QDateTime.fromSecsSinceEpoch(epoch)
