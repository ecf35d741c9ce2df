"""Usage: for every range and breakdown the graphs and tables show exactly the ledger's numbers, and the
export writes exactly what is shown."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from PySide6.QtCharts import QLineSeries
from PySide6.QtCore import QDateTime, QTime
from pytestqt.qtbot import QtBot

from app.pages.usage import UsagePage
from app.window import MainWindow
from server.reports import METRICS, format_time, format_value
from server.store import Store
from server.usage import UsageEntry
from tests.support.ledger import ledger_totals

from .conftest import click, shown

HOUR, DAY = 3600, 86400


@pytest.fixture
def used(window: MainWindow) -> dict[str, str]:
    """Five weeks of requests from two keys (and one without a key) on two models, through the ledger."""
    keys = window.services.keys
    _, alice = keys.create("alice")
    _, bob = keys.create("bob")
    now = time.time()
    ids = [alice.id, bob.id, None]
    for n in range(700):
        at = now - n * 4321.0  # back about 35 days, at uneven moments
        model = "fake-chat" if n % 3 else "fake-embed"
        window.services.ledger.submit(
            UsageEntry(
                request_id=f"req_{n}",
                key_id=ids[n % 3],
                model=model,
                endpoint="chat.completions" if model == "fake-chat" else "embeddings",
                input_tokens=10 + n % 13,
                output_tokens=(n % 7) if model == "fake-chat" else 0,
                cost=(10 + n % 13) * 1e-6 + (n % 7) * 2e-6,
                created_at=at,
            )
        )
    window.services.ledger.flush()
    return {"alice": alice.id, "bob": bob.id}


def show_usage(qtbot: QtBot, window: MainWindow) -> UsagePage:
    page = window.usage_page
    with qtbot.waitSignal(page.usage_loaded, timeout=10_000):
        window.show_page(2)
    return page


def pick(qtbot: QtBot, page: UsagePage, combo_name: str, data: str) -> None:
    combo = getattr(page, combo_name)
    with qtbot.waitSignal(page.usage_loaded, timeout=10_000):
        combo.setCurrentIndex(combo.findData(data))


def check_tables_against_the_ledger(page: UsagePage, store: Store, column: str) -> None:
    """Every cell of every table (each bucket × group, and the totals) equals a query of the ledger."""
    series = shown(page)
    assert series is not None
    for metric in METRICS:
        view = page.views[metric]
        page.tabs.setCurrentWidget(view)  # a graph is drawn when its tab is shown
        assert view.table.model().rowCount() == len(series.buckets) + 1
        for row, bucket in enumerate(series.buckets):
            end = series.bucket_end(bucket)
            for group in series.groups:
                expected = ledger_totals(store, bucket, end, f"{column} = ?", group).get(metric)
                assert view.cell(row, page.label(group)) == format_value(metric, expected), (
                    metric,
                    row,
                    group,
                )
        total = ledger_totals(store, series.start, series.end).get(metric)
        last = len(series.buckets)
        heading = "Total" if len(series.groups) != 1 else page.label(series.groups[0])
        assert view.cell(last, heading) == format_value(metric, total)
        # The graph draws the same numbers: one line per group, one point per bucket.
        lines = [s for s in view.chart.series() if isinstance(s, QLineSeries)]
        assert [line.name() for line in lines] == [page.label(g) for g in series.groups]
        for line, group in zip(lines, series.groups, strict=True):
            assert [p.y() for p in line.points()] == pytest.approx(series.values(metric, group))


@pytest.mark.parametrize(
    ("preset", "buckets", "bucket_seconds"), [("day", 24, HOUR), ("week", 28, 6 * HOUR), ("month", 30, DAY)]
)
def test_each_range_by_model_equals_the_ledger(
    qtbot: QtBot, window: MainWindow, used: dict[str, str], preset: str, buckets: int, bucket_seconds: int
) -> None:
    page = show_usage(qtbot, window)
    if preset != "day":
        pick(qtbot, page, "range", preset)
    series = shown(page)
    assert series is not None and len(series.buckets) == buckets and series.bucket_seconds == bucket_seconds
    assert series.start <= time.time() < series.end
    assert set(series.groups) == {"fake-chat", "fake-embed"}
    check_tables_against_the_ledger(page, window.services.store, "model")
    assert "requests" in page.status.text()


def test_by_key_names_each_key_and_equals_the_ledger(
    qtbot: QtBot, window: MainWindow, used: dict[str, str]
) -> None:
    page = show_usage(qtbot, window)
    pick(qtbot, page, "range", "month")
    pick(qtbot, page, "breakdown", "key")
    series = shown(page)
    assert series is not None
    assert set(series.groups) == {used["alice"], used["bob"], ""}
    alice = next(r for r in window.services.keys.list() if r.name == "alice")
    assert page.label(used["alice"]) == f"alice (…{alice.hint[-4:]})"
    assert page.label("") == "(no key)"
    check_tables_against_the_ledger(page, window.services.store, "COALESCE(key_id, '')")
    pick(qtbot, page, "breakdown", "none")
    assert shown(page).groups == ("",) and page.label("") == "All requests"
    check_tables_against_the_ledger(page, window.services.store, "''")


def test_a_custom_range(qtbot: QtBot, window: MainWindow, used: dict[str, str]) -> None:
    page = show_usage(qtbot, window)
    assert not page.start_edit.isVisible()
    pick(qtbot, page, "range", "custom")
    assert page.start_edit.isVisible() and page.end_edit.isVisible()
    start = QDateTime.currentDateTime().addDays(-12)
    start.setTime(QTime(start.time().hour(), 0))  # a whole hour: the roll-up's grain
    with qtbot.waitSignal(page.usage_loaded, timeout=10_000):
        page.start_edit.setDateTime(start)
        page.end_edit.setDateTime(start.addDays(3))
    series = shown(page)
    assert series.bucket_seconds == 6 * HOUR and len(series.buckets) == 12
    assert (series.start, series.end) == (start.toSecsSinceEpoch(), start.addDays(3).toSecsSinceEpoch())
    check_tables_against_the_ledger(page, window.services.store, "model")


def export_through_the_dialog(qtbot: QtBot, page: UsagePage, button_name: str, path: Path) -> int:
    click(qtbot, getattr(page, button_name))
    dialog = page.file_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.selectFile(str(path))
    with qtbot.waitSignal(page.exported, timeout=60_000) as done:
        dialog.accept()
    assert done.args[0] == str(path)
    return int(done.args[1])


def test_export_writes_exactly_what_is_shown(
    qtbot: QtBot, window: MainWindow, used: dict[str, str], tmp_path: Path
) -> None:
    page = show_usage(qtbot, window)
    pick(qtbot, page, "range", "week")
    pick(qtbot, page, "breakdown", "key")
    rows = export_through_the_dialog(qtbot, page, "export_table_button", tmp_path / "shown.csv")
    with (tmp_path / "shown.csv").open(encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    series = shown(page)
    assert rows == len(exported) == len(series.buckets) * len(series.groups)
    for record in exported:
        row = series.buckets.index(
            next(b for b in series.buckets if format_time(b) == record["period_start"])
        )
        for metric in METRICS:
            assert record[metric] == page.views[metric].cell(row, record["group"])
    assert {r["group"] for r in exported} == {page.label(g) for g in series.groups}
    assert page.status.text().startswith(f"Exported {rows} rows")

    count = export_through_the_dialog(qtbot, page, "export_ledger_button", tmp_path / "ledger.csv")
    with (tmp_path / "ledger.csv").open(encoding="utf-8") as handle:
        requests = list(csv.DictReader(handle))
    assert count == len(requests) == ledger_totals(window.services.store, series.start, series.end).requests
    assert sum(int(r["input_tokens"]) for r in requests) == series.total().input_tokens


def test_the_page_follows_new_requests_while_visible(qtbot: QtBot, window: MainWindow) -> None:
    page = show_usage(qtbot, window)
    assert shown(page).total().requests == 0
    with qtbot.waitSignal(page.usage_loaded, timeout=10_000):
        window.services.ledger.submit(
            UsageEntry(
                request_id="req_live",
                key_id=None,
                model="fake-chat",
                endpoint="chat.completions",
                input_tokens=5,
            )
        )
    assert shown(page).total().requests == 1
    assert page.views["input_tokens"].cell(len(shown(page).buckets), "fake-chat") == "5"
