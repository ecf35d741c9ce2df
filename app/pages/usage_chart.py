"""One metric of the Usage page: a QtCharts line graph over time and, beside it, a table of the same numbers.

Both are filled from the same :class:`server.reports.UsageSeries`, so what the graph draws, what the
table lists and what the export writes cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QSplitter, QTableView, QWidget

from app.theme import ThemeManager
from server.reports import Metric, UsageSeries, format_value

METRIC_TITLES: dict[Metric, str] = {
    "requests": "Requests",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
    "cost": "Cost",
}
DAY = 86400
_ROOT = QModelIndex()


def bucket_label(start: int, bucket_seconds: int) -> str:
    """A bucket as the table shows it: a date for whole days from midnight, else a date and an hour."""
    local = time.localtime(start)
    if bucket_seconds >= DAY and local.tm_hour == 0 and local.tm_min == 0:
        return time.strftime("%Y-%m-%d", local)
    return time.strftime("%Y-%m-%d %H:%M", local)


def _per(bucket_seconds: int) -> str:
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
        self._rows: list[list[str]] = []
        self._bold = QFont()
        self._bold.setBold(True)  # only the weight: the size still follows the font setting

    def set_rows(self, headers: list[str], rows: list[list[str]]) -> None:
        self.beginResetModel()
        self._headers, self._rows = headers, rows
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
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self._headers[section]
        return None

    def cell(self, row: int, header: str) -> str:
        return self._rows[row][self._headers.index(header)]


class MetricView(QSplitter):
    """The graph and the table of one metric."""

    def __init__(self, metric: Metric, theme: ThemeManager, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.measure = metric
        self._theme = theme
        title = METRIC_TITLES[metric]
        self.chart = QChart()
        self.chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
        self.chart_view = QChartView(self.chart, self)
        self.chart_view.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.chart_view.setAccessibleName(f"{title} graph")
        self.chart_view.setMinimumSize(320, 240)
        self.model = SeriesTableModel(self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setAccessibleName(f"{title} table")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.addWidget(self.chart_view)
        self.addWidget(self.table)
        self.setStretchFactor(0, 3)
        self.setStretchFactor(1, 2)
        self.setSizes([600, 400])
        self.setChildrenCollapsible(False)
        self._pending: tuple[UsageSeries, Callable[[str], str]] | None = None
        self._lines: dict[str, QLineSeries] = {}
        # The axes live as long as the chart: rebuilding them on every refresh makes QtCharts lay the
        # whole chart out again, which costs tens of milliseconds of the GUI thread.
        self.x_axis = QDateTimeAxis()
        self.y_axis = QValueAxis()
        self.y_axis.setLabelFormat("%.4f" if metric == "cost" else "%d")
        self.chart.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        self.chart.addAxis(self.y_axis, Qt.AlignmentFlag.AlignLeft)
        self._buckets = 2
        self.chart.plotAreaChanged.connect(self._fit_ticks)
        theme.changed.connect(self._restyle)
        self._restyle()

    def show_series(self, series: UsageSeries, label: Callable[[str], str]) -> None:
        """List ``series`` (groups named by ``label``) now, and draw it now or as soon as it is shown."""
        self._fill_table(series, label)
        self._pending = (series, label)
        if self.isVisible():
            self._draw()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._draw()

    def _draw(self) -> None:
        if self._pending is not None:
            series, label = self._pending
            self._pending = None
            self._fill_chart(series, label)

    def _fill_chart(self, series: UsageSeries, label: Callable[[str], str]) -> None:
        chart = self.chart
        chart.setTitle(f"{METRIC_TITLES[self.measure]} {_per(series.bucket_seconds)}")
        days = (series.end - series.start) / DAY
        x_axis, y_axis = self.x_axis, self.y_axis
        x_axis.setFormat(
            "HH:mm" if days <= 1 else "MMM d" if series.bucket_seconds >= DAY or days > 3 else "MMM d HH:mm"
        )
        x_axis.setRange(_datetime(series.start), _datetime(series.end))
        self._buckets = len(series.buckets)
        self._fit_ticks()
        groups = series.groups or ("",)
        names = [label(g) for g in groups]
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
        chart.legend().setVisible(bool(series.groups))
        if self.measure == "cost":
            y_axis.setRange(0, peak * 1.1 if peak > 0 else 0.0001)
        else:
            y_axis.setRange(0, max(peak * 1.1, 4))
            y_axis.applyNiceNumbers()
        total = format_value(self.measure, series.total().get(self.measure))
        self.chart_view.setAccessibleDescription(
            f"{METRIC_TITLES[self.measure]} {_per(series.bucket_seconds)}: {total} in all, from "
            f"{bucket_label(series.start, 3600)} to {bucket_label(series.end, 3600)}"
        )

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

    def _fill_table(self, series: UsageSeries, label: Callable[[str], str]) -> None:
        groups = list(series.groups)
        headers = ["Period", *(label(g) for g in groups)]
        with_total = len(groups) != 1
        if with_total:
            headers.append("Total")
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
        self.model.set_rows(headers, rows)

    def cell(self, row: int, header: str) -> str:
        """The text of the table cell in ``row`` under the column titled ``header``."""
        return self.model.cell(row, header)

    def _restyle(self) -> None:
        self._theme.style_chart(self.chart)
        self._fit_ticks()


def _datetime(epoch: int) -> QDateTime:
    return QDateTime.fromSecsSinceEpoch(epoch)
