from __future__ import annotations

import io
import json
import time
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from server.config import ModelConfig
from server.services import Services
from server.usage import UsageEntry, cost_of, export, ledger_rows


def _entry(i: int, **extra: object) -> UsageEntry:
    values: dict[str, object] = {
        "request_id": f"req_{i}",
        "key_id": f"key_{i % 3}",
        "model": ["a", "b"][i % 2],
        "endpoint": "chat.completions",
        "input_tokens": i,
        "output_tokens": 2 * i,
        "cost": i / 1000,
        "created_at": 1_700_000_000 + i * 600,
    }
    values.update(extra)
    return UsageEntry(**values)  # type: ignore[arg-type]


def test_rows_rollups_and_spend_agree(make_services: Callable[..., Services]) -> None:
    services = make_services()
    for i in range(500):
        services.ledger.submit(_entry(i))
    services.ledger.flush()
    db = services.store.db
    ledger = db.execute_sql(
        "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost) FROM usage_record"
    ).fetchone()
    rollup = db.execute_sql(
        "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cost) FROM usage_hourly"
    ).fetchone()
    assert ledger[:3] == rollup[:3] == (500, sum(range(500)), 2 * sum(range(500)))
    assert abs(ledger[3] - rollup[3]) < 1e-9
    spend = db.execute_sql("SELECT SUM(tokens) FROM key_spend_daily").fetchone()[0]
    assert spend == 3 * sum(range(500))


def test_a_replayed_row_is_recorded_once(make_services: Callable[..., Services]) -> None:
    services = make_services()
    services.ledger.submit(_entry(7))
    services.ledger.submit(_entry(7))
    services.ledger.flush()
    services.ledger.submit(_entry(7))
    services.ledger.flush()
    assert services.store.db.execute_sql("SELECT COUNT(*) FROM usage_record").fetchone()[0] == 1
    assert services.store.db.execute_sql("SELECT SUM(requests) FROM usage_hourly").fetchone()[0] == 1


def test_export_csv_and_json(make_services: Callable[..., Services]) -> None:
    services = make_services()
    for i in range(5):
        services.ledger.submit(_entry(i))
    services.ledger.flush()
    out = io.StringIO()
    assert export(services.store, out, "csv") == 5
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("request_id,created_at,key_id")
    assert len(lines) == 6
    out = io.StringIO()
    since = 1_700_000_000 + 2 * 600
    assert export(services.store, out, "json", since=since) == 3
    rows = json.loads(out.getvalue())
    assert [r["request_id"] for r in rows] == ["req_2", "req_3", "req_4"]
    assert rows[0]["stream"] is False


def test_ledger_throughput_batches(make_services: Callable[..., Services]) -> None:
    services = make_services()
    started = time.perf_counter()
    for i in range(20_000):
        services.ledger.submit(_entry(i))
    services.ledger.flush(timeout=60)
    rate = 20_000 / (time.perf_counter() - started)
    assert len(list(ledger_rows(services.store))) == 20_000
    assert rate > 5_000, f"only {rate:.0f} rows/s"


PRICED = ModelConfig(
    name="p", kind="chat", engine="fake", price_input_per_million=0.4, price_output_per_million=1.6
)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_cost_is_linear_in_each_kind_of_token(inputs: int, outputs: int) -> None:
    total = cost_of(PRICED, inputs, outputs)
    assert abs(total - (cost_of(PRICED, inputs, 0) + cost_of(PRICED, 0, outputs))) <= 1e-9 * max(1.0, total)
    assert abs(total - (inputs * 0.4 + outputs * 1.6) / 1e6) <= 1e-9 * max(1.0, total)
    assert cost_of(None, inputs, outputs) == 0.0
