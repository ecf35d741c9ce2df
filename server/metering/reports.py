"""Read-only usage reports for the window's graphs: requests, tokens and cost per time bucket.

Every report reads the hourly roll-up (``usage_hourly``), which the ledger updates in the same
transaction as its own rows, so the numbers equal the ledger while a range query touches at most one
row per hour, key, model and endpoint however many requests were made. Buckets are whole hours (the
roll-up's grain): a range is widened to whole hours before it is read. Finer buckets (the last hour, by
the minute) are read from the ledger rows themselves, for ranges short enough to hold few of them.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from server.metering.ledger import LEDGER_COLUMNS, ledger_rows
from server.store import Store

HOUR = 3600
MAX_BUCKETS = 10_000
"""More buckets than anyone can read on a graph; a larger request is refused rather than slow."""

GroupBy = Literal["model", "key", "key_model", "none"]
Metric = Literal["requests", "input_tokens", "output_tokens", "cost"]
METRICS: tuple[Metric, ...] = ("requests", "input_tokens", "output_tokens", "cost")
OTHER = "(other)"
"""The group that collects everything past ``max_groups``; no model name or key id can look like it."""

_GROUP_COLUMN: dict[GroupBy, str] = {
    "model": "model",
    "key": "key_id",
    "key_model": "COALESCE(key_id, '') || ' ' || model",
    "none": "''",
}
"""How each grouping reads a row. A key and model pair is joined by a space, which neither a key id nor
a model name holds (see :func:`split_pair`)."""
MAX_LEDGER_RANGE = 24 * HOUR
"""The longest range :func:`ledger_series` reads row by row."""


def split_pair(group: str) -> tuple[str, str]:
    """A ``key_model`` group as its key id ("" for none) and its model."""
    key, _, model = group.partition(" ")
    return key, model


@dataclass(frozen=True)
class Amounts:
    """What a set of requests used."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost + other.cost,
        )

    def get(self, metric: Metric) -> float:
        """One metric's value (cost is a float, the others whole numbers)."""
        value: float = getattr(self, metric)
        return value


ZERO = Amounts()


def _sum(amounts: Iterable[Amounts]) -> Amounts:
    total = ZERO
    for amount in amounts:
        total = total + amount
    return total


@dataclass(frozen=True)
class UsageSeries:
    """Usage per time bucket and group (model, key id, or ``""`` for everything when not grouped)."""

    start: int
    end: int
    bucket_seconds: int
    group_by: GroupBy
    buckets: tuple[int, ...]
    """The start of each bucket, epoch seconds; the last one may be cut short by ``end``."""
    groups: tuple[str, ...]
    """Groups that had any request in the range, the busiest first (then by name)."""
    cells: Mapping[tuple[int, str], Amounts] = field(default_factory=dict)

    def amounts(self, bucket: int, group: str) -> Amounts:
        return self.cells.get((bucket, group), ZERO)

    def bucket_end(self, bucket: int) -> int:
        return min(bucket + self.bucket_seconds, self.end)

    def values(self, metric: Metric, group: str) -> list[float]:
        """One group's metric over the buckets, zero where nothing happened."""
        return [self.amounts(b, group).get(metric) for b in self.buckets]

    def group_total(self, group: str) -> Amounts:
        return _sum(self.amounts(b, group) for b in self.buckets)

    def bucket_total(self, bucket: int) -> Amounts:
        return _sum(self.amounts(bucket, g) for g in self.groups)

    def total(self) -> Amounts:
        return _sum(self.cells.values())

    def limited(self, max_groups: int) -> UsageSeries:
        """The same usage with the quietest groups past ``max_groups - 1`` merged into :data:`OTHER`."""
        if max_groups < 2 or len(self.groups) <= max_groups:
            return self
        kept = self.groups[: max_groups - 1]
        cells: dict[tuple[int, str], Amounts] = {}
        for (bucket, group), amount in self.cells.items():
            target = group if group in kept else OTHER
            cells[(bucket, target)] = cells.get((bucket, target), ZERO) + amount
        return UsageSeries(
            self.start, self.end, self.bucket_seconds, self.group_by, self.buckets, (*kept, OTHER), cells
        )


def whole_hours(start: float, end: float) -> tuple[int, int]:
    """The range widened to whole hours, as the roll-up stores it."""
    return int(math.floor(start / HOUR) * HOUR), int(math.ceil(end / HOUR) * HOUR)


def usage_series(
    store: Store, start: float, end: float, *, bucket_seconds: int = HOUR, group_by: GroupBy = "model"
) -> UsageSeries:
    """Usage from ``start`` to ``end`` (epoch seconds, widened to whole hours) in buckets of
    ``bucket_seconds`` (a whole number of hours), grouped by model, by key, or not at all."""
    if bucket_seconds < HOUR or bucket_seconds % HOUR:
        raise ValueError(f"buckets must be whole hours, not {bucket_seconds} s")
    if group_by not in _GROUP_COLUMN:
        raise ValueError(f"cannot group usage by {group_by!r}")
    first, last = whole_hours(start, end)
    if last <= first:
        raise ValueError("the range must end after it starts")
    count = -(-(last - first) // bucket_seconds)
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} buckets are too many to show; choose longer buckets")
    column = _GROUP_COLUMN[group_by]
    # Integer division of the hour offset picks the bucket inside SQLite, so only one row per bucket and
    # group comes back to Python, however long the range.
    sql = (
        f"SELECT (hour - ?) / ? AS bucket, {column} AS grp, SUM(requests), SUM(input_tokens), "
        "SUM(output_tokens), SUM(cost) FROM usage_hourly WHERE hour >= ? AND hour < ? GROUP BY bucket, grp"
    )
    cells, groups = _fold(
        store.db.execute_sql(sql, (first, bucket_seconds, first, last)), first, bucket_seconds
    )
    buckets = tuple(first + i * bucket_seconds for i in range(count))
    return UsageSeries(first, last, bucket_seconds, group_by, buckets, groups, cells)


def _fold(
    rows: Iterable[tuple[Any, ...]], first: int, bucket_seconds: int
) -> tuple[dict[tuple[int, str], Amounts], tuple[str, ...]]:
    """Rows of (bucket index, group, requests, input, output, cost) as cells keyed on (bucket start, group),
    and the groups, busiest first."""
    cells: dict[tuple[int, str], Amounts] = {}
    busy: dict[str, int] = {}
    for index, group, requests, input_tokens, output_tokens, cost in rows:
        group = group or ""
        cells[(first + int(index) * bucket_seconds, group)] = Amounts(
            int(requests), int(input_tokens), int(output_tokens), float(cost)
        )
        busy[group] = busy.get(group, 0) + int(requests)
    return cells, tuple(sorted(busy, key=lambda g: (-busy[g], g)))


def ledger_series(
    store: Store, start: float, end: float, *, bucket_seconds: int = 60, group_by: GroupBy = "model"
) -> UsageSeries:
    """Like :func:`usage_series`, in buckets shorter than an hour (a minute by default), read from the
    ledger rows of a range of at most :data:`MAX_LEDGER_RANGE` (widened to whole buckets)."""
    if bucket_seconds < 1 or HOUR % bucket_seconds:
        raise ValueError(f"buckets must divide an hour, not {bucket_seconds} s")
    if group_by not in _GROUP_COLUMN:
        raise ValueError(f"cannot group usage by {group_by!r}")
    first = int(math.floor(start / bucket_seconds) * bucket_seconds)
    last = int(math.ceil(end / bucket_seconds) * bucket_seconds)
    if last <= first:
        raise ValueError("the range must end after it starts")
    if last - first > MAX_LEDGER_RANGE:
        raise ValueError("ranges longer than a day are read by the hour")
    column = _GROUP_COLUMN[group_by]
    sql = (
        f"SELECT CAST((created_at - ?) / ? AS INTEGER) AS bucket, {column} AS grp, COUNT(*), "
        "SUM(input_tokens), SUM(output_tokens), SUM(cost) FROM usage_record "
        "WHERE created_at >= ? AND created_at < ? GROUP BY bucket, grp"
    )
    cells, groups = _fold(
        store.db.execute_sql(sql, (first, bucket_seconds, first, last)), first, bucket_seconds
    )
    buckets = tuple(range(first, last, bucket_seconds))
    return UsageSeries(first, last, bucket_seconds, group_by, buckets, groups, cells)


def totals(store: Store, start: float | None = None, end: float | None = None) -> Amounts:
    """Everything recorded from ``start`` to ``end`` (widened to whole hours; all of it by default)."""
    first, last = whole_hours(start or 0.0, end if end is not None else 1e12)
    row = store.db.execute_sql(
        "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
        "COALESCE(SUM(cost), 0) FROM usage_hourly WHERE hour >= ? AND hour < ?",
        (first, last),
    ).fetchone()
    return Amounts(int(row[0]), int(row[1]), int(row[2]), float(row[3]))


def latest_rows(store: Store, limit: int) -> list[dict[str, Any]]:
    """The newest ledger rows, newest first, as plain dictionaries (the window's request log starts
    from these; what the ledger holds is metadata, never a prompt or a reply)."""
    cursor = store.db.execute_sql(
        f"SELECT {', '.join(LEDGER_COLUMNS)} FROM usage_record ORDER BY created_at DESC, id DESC LIMIT ?",
        (limit,),
    )
    rows = []
    for row in cursor:
        record = dict(zip(LEDGER_COLUMNS, row, strict=True))
        for flag in ("stream", "client_disconnected", "exact"):
            record[flag] = bool(record[flag])
        rows.append(record)
    return rows


def format_value(metric: Metric, value: float) -> str:
    """A metric as the window shows it and the CSV export writes it."""
    if metric == "cost":
        return f"{value:.6f}"
    return str(int(value))


def format_time(moment: float) -> str:
    """A bucket boundary in local time with its offset, unambiguous in a spreadsheet."""
    return dt.datetime.fromtimestamp(moment).astimezone().isoformat(timespec="minutes")


def format_instant(moment: float) -> str:
    """A moment in local time with its offset, to the millisecond."""
    return dt.datetime.fromtimestamp(moment).astimezone().isoformat(timespec="milliseconds")


SERIES_COLUMNS = ("period_start", "period_end", "group", "group_id", *METRICS, "currency")
CSV_ENCODING = "utf-8-sig"
"""UTF-8 with a byte-order mark: spreadsheets (Excel on Windows) then read names in any script right."""


def export_series_csv(
    series: UsageSeries, path: Path, label: Callable[[str], str] = str, currency: str = ""
) -> int:
    """Write every bucket and group of ``series`` as CSV (the numbers formatted as shown, the cost in
    ``currency``); returns the rows."""
    count = 0
    with path.open("w", encoding=CSV_ENCODING, newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(SERIES_COLUMNS)
        for bucket in series.buckets:
            for group in series.groups:
                amounts = series.amounts(bucket, group)
                writer.writerow(
                    (
                        format_time(bucket),
                        format_time(series.bucket_end(bucket)),
                        label(group),
                        group,
                        *(format_value(m, amounts.get(m)) for m in METRICS),
                        currency,
                    )
                )
                count += 1
    return count


def export_ledger_csv(
    store: Store,
    path: Path,
    start: float,
    end: float,
    progress: Callable[[int], None] | None = None,
    currency: str = "",
) -> int:
    """Write every ledger row from ``start`` to ``end`` as CSV for a spreadsheet: ``created_at`` in local
    time with its offset, the cost in ``currency``; ``progress`` hears the count now and then."""
    count = 0
    with path.open("w", encoding=CSV_ENCODING, newline="") as out:
        writer = csv.DictWriter(out, fieldnames=(*LEDGER_COLUMNS, "currency"), lineterminator="\n")
        writer.writeheader()
        for record in ledger_rows(store, start, end):
            record["created_at"] = format_instant(record["created_at"])
            record["currency"] = currency
            writer.writerow(record)
            count += 1
            if progress is not None and count % 10_000 == 0:
                progress(count)
    return count
