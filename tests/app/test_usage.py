"""Usage: for every range and breakdown the graphs and tables show exactly the ledger's numbers, and the
export writes exactly what is shown."""

from __future__ import annotations

import csv
import datetime as dt
import html
import math
import time
from pathlib import Path

import pytest
from PySide6.QtCharts import QLineSeries
from PySide6.QtCore import QDateTime, Qt, QTime
from PySide6.QtWidgets import QFileDialog
from pytestqt.qtbot import QtBot

from app.pages.model_rows import COLUMNS, PRICE_COLUMN
from app.pages.usage import UsagePage
from app.theme import FONT_STEPS
from app.window import PAGES, MainWindow
from server.access.keys import KeyRecord
from server.metering.ledger import UsageEntry
from server.metering.reports import METRICS, format_time, format_value
from server.store import Store
from tests.support.ledger import ledger_totals

from .conftest import click, opened, settle, shown

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


def key_named(window: MainWindow, name: str) -> KeyRecord:
    return next(r for r in window.services.keys.list() if r.name == name)


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
    alice = key_named(window, "alice")
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


def choose_export_file(qtbot: QtBot, page: UsagePage, button_name: str, path: Path) -> QFileDialog:
    """Click an export button and pick ``path`` in its file dialog (not yet accepted)."""
    click(qtbot, getattr(page, button_name))
    dialog = page.file_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.selectFile(str(path))
    return dialog


def accept_export(qtbot: QtBot, page: UsagePage, dialog: QFileDialog, path: Path) -> int:
    """Accept the file dialog and wait for the export; the rows written."""
    with qtbot.waitSignal(page.exported, timeout=60_000) as done:
        dialog.accept()
    assert done.args[0] == str(path)
    return int(done.args[1])


def export_through_the_dialog(qtbot: QtBot, page: UsagePage, button_name: str, path: Path) -> int:
    return accept_export(qtbot, page, choose_export_file(qtbot, page, button_name, path), path)


def test_export_writes_exactly_what_is_shown(
    qtbot: QtBot, window: MainWindow, used: dict[str, str], tmp_path: Path
) -> None:
    page = show_usage(qtbot, window)
    pick(qtbot, page, "range", "week")
    pick(qtbot, page, "breakdown", "key")
    rows = export_through_the_dialog(qtbot, page, "export_table_button", tmp_path / "shown.csv")
    with (tmp_path / "shown.csv").open(encoding="utf-8-sig") as handle:
        exported = list(csv.DictReader(handle))
    series = shown(page)
    assert rows == len(exported) == len(series.buckets) * len(series.groups)
    shown_as = {page.full_label(g): page.label(g) for g in series.groups}
    for record in exported:
        row = series.buckets.index(
            next(b for b in series.buckets if format_time(b) == record["period_start"])
        )
        for metric in METRICS:
            assert record[metric] == page.views[metric].cell(row, shown_as[record["group"]])
    # The whole names, unambiguous in a spreadsheet: no "…" standing for what was cut.
    assert {r["group"] for r in exported} == {page.full_label(g) for g in series.groups}
    alice = key_named(window, "alice")
    assert f"alice (key ending {alice.hint[-4:]})" in {r["group"] for r in exported}
    assert all("…" not in r["group"] for r in exported) and {r["currency"] for r in exported} == {"USD"}
    assert page.status.text().startswith(f"Exported {rows} rows")

    count = export_through_the_dialog(qtbot, page, "export_ledger_button", tmp_path / "ledger.csv")
    with (tmp_path / "ledger.csv").open(encoding="utf-8-sig") as handle:
        requests = list(csv.DictReader(handle))
    assert count == len(requests) == ledger_totals(window.services.store, series.start, series.end).requests
    assert sum(int(r["input_tokens"]) for r in requests) == series.total().input_tokens
    for record in requests[:5]:  # a moment a spreadsheet reads as one, not seconds since 1970
        assert series.start <= dt.datetime.fromisoformat(record["created_at"]).timestamp() < series.end


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


def test_cards_show_today_and_this_month_in_the_operators_currency(
    qtbot: QtBot, window: MainWindow, used: dict[str, str]
) -> None:
    page = show_usage(qtbot, window)
    now = time.time()
    store = window.services.store
    day = time.localtime(now)
    midnight = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))
    first = time.mktime((day.tm_year, day.tm_mon, 1, 0, 0, 0, 0, 0, -1))
    for card, start in ((page.cards.today, midnight), (page.cards.month, first)):
        expected = ledger_totals(store, start // HOUR * HOUR, now + 1)
        assert card.requests.text() == f"<b>{expected.requests:,}</b> requests"
        tokens = expected.input_tokens + expected.output_tokens
        assert card.tokens.text().startswith(f"<b>{tokens:,}</b> tokens")
        assert card.cost.text().endswith(" USD</b>")
    assert page.tabs.tabText(3) == "Cost (USD)"

    window.show_page(PAGES.index("Settings"))
    settings = window.settings_page
    settings.currency_edit.setFocus()
    settings.currency_edit.selectAll()
    qtbot.keyClicks(settings.currency_edit, "EUR")
    with qtbot.waitSignal(settings.preferences_saved, timeout=5000):
        qtbot.keyClick(settings.currency_edit, Qt.Key.Key_Return)
    assert page.cards.month.cost.text().endswith(" EUR</b>") and page.tabs.tabText(3) == "Cost (EUR)"
    assert page.views["cost"].y_axis.titleText() == "EUR"
    price = opened(window.models_page.table.horizontalHeaderItem(COLUMNS.index(PRICE_COLUMN))).text()
    assert price == "Price in / out (EUR per 1M)"
    assert window.services.store.get_setting("window")["currency"] == "EUR"


def test_the_cost_axis_steps_in_round_amounts(qtbot: QtBot, window: MainWindow, used: dict[str, str]) -> None:
    page = show_usage(qtbot, window)
    pick(qtbot, page, "range", "month")
    for metric in METRICS:
        view = page.views[metric]
        page.tabs.setCurrentWidget(view)
        scale = view.scale
        peak = max(max(shown(page).values(metric, g)) for g in shown(page).groups)
        assert peak < scale.top <= peak + scale.step or scale.top == 5  # a step of room above the peak
        mantissa = scale.step / 10 ** math.floor(math.log10(scale.step) + 1e-9)
        assert round(mantissa, 9) in (1.0, 2.0, 2.5, 5.0), scale
        assert view.y_axis.tickCount() == scale.ticks and view.y_axis.max() == pytest.approx(scale.top)
        for i, text in enumerate(scale.labels()):  # every label is the amount it stands for, exactly
            assert float(text) == pytest.approx(i * scale.step, abs=1e-12)
        assert view.y_axis.labelFormat() == f"%.{scale.decimals}f"


def test_by_key_and_model_and_the_last_hour_by_the_minute(
    qtbot: QtBot, window: MainWindow, used: dict[str, str]
) -> None:
    page = show_usage(qtbot, window)
    pick(qtbot, page, "range", "week")
    pick(qtbot, page, "breakdown", "key_model")
    series = shown(page)
    alice = key_named(window, "alice")
    assert f"{used['alice']} fake-embed" in series.groups
    assert page.label(f"{used['alice']} fake-embed") == f"alice (…{alice.hint[-4:]}) · fake-embed"
    check_tables_against_the_ledger(page, window.services.store, "COALESCE(key_id, '') || ' ' || model")
    window.services.ledger.submit(
        UsageEntry(
            request_id="req_now",
            key_id=used["bob"],
            model="fake-chat",
            endpoint="chat.completions",
            input_tokens=3,
            output_tokens=4,
        )
    )
    window.services.ledger.flush()
    pick(qtbot, page, "range", "hour")
    series = shown(page)
    assert series.bucket_seconds == 60 and len(series.buckets) == 60
    assert series.start <= time.time() < series.end
    assert series.total().requests >= 1
    check_tables_against_the_ledger(page, window.services.store, "COALESCE(key_id, '') || ' ' || model")
    assert page.views["requests"].chart.title() == "Requests per minute"


def test_at_the_largest_font_maximised_every_name_reads_whole_and_apart(
    qtbot: QtBot, window: MainWindow, used: dict[str, str], screenshots: Path
) -> None:
    keys = window.services.keys
    alice = next(r for r in keys.list() if r.name == "alice")
    keys.rename(alice.id, "Alice workstation, second floor")
    _, rolled = keys.roll(alice.id, 3600)
    for n, key in enumerate((rolled.id, None)):
        window.services.ledger.submit(  # the new key's first request, and one refused before any model
            UsageEntry(
                request_id=f"req_extra_{n}",
                key_id=key,
                model="fake-chat" if key else "",
                endpoint="chat.completions",
                input_tokens=2,
                status="completed" if key else "rejected",
            )
        )
    window.services.ledger.flush()
    window.resize(1920, 1080)
    window.theme.set_font_size(FONT_STEPS[-1].key)
    page = show_usage(qtbot, window)
    pick(qtbot, page, "breakdown", "key")
    settle(qtbot)
    series = shown(page)
    names = [page.label(g) for g in series.groups]
    assert len(set(names)) == len(names), names  # the rolled key and its predecessor read apart
    old, new = page.label(alice.id), page.label(rolled.id)
    assert old.startswith("Alice workstation") and new.startswith("Alice workstation") and old != new
    view = page.views["requests"]
    page.tabs.setCurrentWidget(view)
    settle(qtbot)
    legend = view.legend
    assert legend.isVisible() and legend.heightForWidth(legend.width()) <= legend.height()
    for name in names:
        assert html.escape(name).replace(" ", "&nbsp;") in legend.text()
    assert "Alice workstation, second floor (key ending" in legend.toolTip()
    header = view.table.horizontalHeader()
    metrics = header.fontMetrics()
    for column in range(view.model.columnCount()):
        text = view.model.headerData(column, Qt.Orientation.Horizontal)
        assert header.sectionSize(column) >= metrics.horizontalAdvance(text), text
    right = header.sectionViewportPosition(header.count() - 1) + header.sectionSize(header.count() - 1)
    assert right <= view.table.viewport().width(), "the table does not show every column at once"
    pick(qtbot, page, "breakdown", "model")
    assert "(refused, no model)" in [page.label(g) for g in shown(page).groups]
    assert window.grab().save(str(screenshots / "3-usage-largest-maximised.png"))
