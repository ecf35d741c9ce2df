"""Usage reports read the hourly roll-up and must agree with the ledger, row for row, and stay fast."""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from server.metering import reports
from server.metering.ledger import UsageEntry
from server.metering.reports import HOUR, Amounts, usage_series
from server.services import Services
from tests.ledger_fill import fill_ledger
from tests.support.ledger import ledger_totals

BASE = 1_700_000_000 // HOUR * HOUR  # a fixed hour, so buckets are predictable


def _entry(
    n: int, at: float, model: str, key: str | None, tokens: tuple[int, int], cost: float
) -> UsageEntry:
    return UsageEntry(
        request_id=f"req_{n}",
        key_id=key,
        model=model,
        endpoint="chat.completions",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=cost,
        created_at=at,
    )


@pytest.fixture
def recorded(make_services: Callable[..., Services]) -> Services:
    """Requests written through the real ledger, spread over three days, two models and three keys."""
    services = make_services()
    models, keys = ("fake-chat", "fake-embed"), ("key_a", "key_b", None)
    for n in range(600):
        at = BASE + n * 431.5  # not aligned to hours or buckets
        services.ledger.submit(_entry(n, at, models[n % 2], keys[n % 3], (n % 17 + 1, n % 5), n * 1e-6))
    services.ledger.flush()
    return services


def _same(a: Amounts, b: Amounts) -> None:
    assert (a.requests, a.input_tokens, a.output_tokens) == (b.requests, b.input_tokens, b.output_tokens)
    assert a.cost == pytest.approx(b.cost, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("group_by", ["model", "key", "key_model", "none"])
@pytest.mark.parametrize("bucket_hours", [1, 6, 24])
def test_every_bucket_and_group_equals_the_ledger(
    recorded: Services, group_by: reports.GroupBy, bucket_hours: int
) -> None:
    start, end = BASE + 5 * HOUR, BASE + 60 * HOUR
    series = usage_series(recorded.store, start, end, bucket_seconds=bucket_hours * HOUR, group_by=group_by)
    assert series.buckets[0] == start and len(series.buckets) == -(-55 // bucket_hours)
    column = {
        "model": "model",
        "key": "COALESCE(key_id, '')",
        "key_model": "COALESCE(key_id, '') || ' ' || model",
        "none": "''",
    }[group_by]
    for bucket in series.buckets:
        for group in series.groups:
            expected = ledger_totals(
                recorded.store, bucket, series.bucket_end(bucket), f"{column} = ?", group
            )
            _same(series.amounts(bucket, group), expected)
    _same(series.total(), ledger_totals(recorded.store, start, end))


def test_groups_are_the_busiest_first_and_no_key_is_its_own_group(recorded: Services) -> None:
    series = usage_series(recorded.store, BASE, BASE + 72 * HOUR, bucket_seconds=24 * HOUR, group_by="key")
    assert set(series.groups) == {"key_a", "key_b", ""}
    totals = [series.group_total(g).requests for g in series.groups]
    assert totals == sorted(totals, reverse=True)
    assert sum(totals) == 600


def test_a_range_is_widened_to_whole_hours(recorded: Services) -> None:
    series = usage_series(recorded.store, BASE + 10, BASE + 2 * HOUR - 10)
    assert (series.start, series.end) == (BASE, BASE + 2 * HOUR)
    _same(series.total(), ledger_totals(recorded.store, BASE, BASE + 2 * HOUR))


def test_limited_merges_the_quietest_groups_without_losing_usage(recorded: Services) -> None:
    series = usage_series(recorded.store, BASE, BASE + 72 * HOUR, bucket_seconds=6 * HOUR, group_by="key")
    two = series.limited(2)
    assert two.groups == (series.groups[0], reports.OTHER)
    _same(two.total(), series.total())
    for bucket in series.buckets:
        _same(two.bucket_total(bucket), series.bucket_total(bucket))


def test_bad_ranges_are_refused(recorded: Services) -> None:
    with pytest.raises(ValueError, match="whole hours"):
        usage_series(recorded.store, BASE, BASE + HOUR, bucket_seconds=1800)
    with pytest.raises(ValueError, match="after it starts"):
        usage_series(recorded.store, BASE + HOUR, BASE)
    with pytest.raises(ValueError, match="too many"):
        usage_series(recorded.store, 0, BASE)


def test_series_export_writes_what_the_series_holds(recorded: Services, tmp_path: Path) -> None:
    series = usage_series(recorded.store, BASE, BASE + 24 * HOUR, bucket_seconds=6 * HOUR, group_by="model")
    path = tmp_path / "usage.csv"
    rows = reports.export_series_csv(series, path, label=str.upper, currency="EUR")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # a byte-order mark, for spreadsheets
    with path.open(encoding="utf-8-sig") as handle:
        read = list(csv.DictReader(handle))
    assert rows == len(read) == len(series.buckets) * len(series.groups)
    assert {r["group"] for r in read} == {g.upper() for g in series.groups}
    assert sum(int(r["requests"]) for r in read) == series.total().requests
    assert sum(float(r["cost"]) for r in read) == pytest.approx(series.total().cost, abs=1e-5)
    first = read[0]
    assert first["period_start"] == reports.format_time(BASE) and first["currency"] == "EUR"
    assert first["input_tokens"] == reports.format_value(
        "input_tokens", series.amounts(BASE, first["group_id"]).input_tokens
    )


def test_ledger_export_writes_every_row_in_range(recorded: Services, tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    seen: list[int] = []
    count = reports.export_ledger_csv(
        recorded.store, path, BASE, BASE + 24 * HOUR, progress=seen.append, currency="EUR"
    )
    with path.open(encoding="utf-8-sig") as handle:
        read = list(csv.DictReader(handle))
    assert count == len(read) == ledger_totals(recorded.store, BASE, BASE + 24 * HOUR).requests
    assert read[0]["request_id"] == "req_0" and read[0]["currency"] == "EUR"
    # A moment a spreadsheet reads as one: local time with its offset, not seconds since 1970.
    assert read[0]["created_at"] == reports.format_instant(BASE)
    assert dt.datetime.fromisoformat(read[1]["created_at"]).timestamp() == pytest.approx(BASE + 431.5)


def test_minute_buckets_come_from_the_ledger_rows(recorded: Services) -> None:
    start, end = BASE + 2 * HOUR + 100, BASE + 3 * HOUR + 100
    series = reports.ledger_series(recorded.store, start, end, group_by="key_model")
    assert series.bucket_seconds == 60 and len(series.buckets) == 61
    for bucket in series.buckets:
        for group in series.groups:
            key, model = reports.split_pair(group)
            expected = ledger_totals(
                recorded.store,
                bucket,
                series.bucket_end(bucket),
                "COALESCE(key_id, '') = ? AND model = ?",
                key,
                model,
            )
            _same(series.amounts(bucket, group), expected)
    _same(series.total(), ledger_totals(recorded.store, series.start, series.end))
    with pytest.raises(ValueError, match="by the hour"):
        reports.ledger_series(recorded.store, BASE, BASE + 48 * HOUR)


def test_totals_for_a_range_and_for_everything(recorded: Services) -> None:
    _same(reports.totals(recorded.store), ledger_totals(recorded.store, 0, 1e12))
    _same(
        reports.totals(recorded.store, BASE + HOUR, BASE + 5 * HOUR),
        ledger_totals(recorded.store, BASE + HOUR, BASE + 5 * HOUR),
    )


def test_a_range_over_a_million_ledger_rows_is_fast(make_services: Callable[..., Services]) -> None:
    services = make_services()
    fill_ledger(services.store, 1_000_000, BASE, BASE + 30 * 24 * HOUR)
    assert services.store.db.execute_sql("SELECT COUNT(*) FROM usage_record").fetchone()[0] == 1_000_000
    store = services.store
    end = BASE + 30 * 24 * HOUR
    timings = []
    for group_by in ("model", "key", "none"):
        for days, bucket in ((1, HOUR), (7, 6 * HOUR), (30, 24 * HOUR)):
            began = time.perf_counter()
            series = usage_series(
                store, end - days * 24 * HOUR, end, bucket_seconds=bucket, group_by=group_by
            )
            timings.append(time.perf_counter() - began)
            assert series.total().requests > 0
    assert max(timings) < 0.2, f"slowest range query took {max(timings) * 1000:.0f} ms"
    whole = usage_series(store, BASE, end, bucket_seconds=24 * HOUR, group_by="model")
    _same(whole.total(), ledger_totals(store, BASE, end))
