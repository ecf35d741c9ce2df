"""Fill a store with many ledger rows and their hourly roll-up, fast, for the tests that need volume.

The rows are built inside SQLite (seconds rather than minutes through Python), spread evenly over a
range in time order as the ledger writes them, and the roll-up is aggregated from them exactly as the
ledger would have written it.
"""

from __future__ import annotations

from server.store import Store

MODELS = 5
KEYS = 50


def fill_ledger(store: Store, rows: int, start: float, end: float) -> None:
    """``rows`` completed chat requests from ``start`` to ``end`` over 5 models and 50 keys (once per store:
    the request ids are fixed)."""
    with store.db.atomic():
        store.db.execute_sql(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO usage_record (request_id, created_at, key_id, model, endpoint, input_tokens, "
            "output_tokens, total_tokens, cached_tokens, reasoning_tokens, cost, latency_ms, ttft_ms, status, "
            "http_status, stream, client_disconnected, exact) "
            "SELECT printf('fill_%08d', i), ? + i * ?, 'key_' || (i % ?), 'model-' || (i % ?), 'chat.completions', "
            "i % 100, i % 37, i % 100 + i % 37, 0, 0, (i % 100) * 1e-6 + (i % 37) * 2e-6, 5.0, NULL, "
            "'completed', 200, 0, 0, 1 FROM n",
            (rows - 1, start, (end - start) / rows, KEYS, MODELS),
        )
        store.db.execute_sql(
            "INSERT INTO usage_hourly (hour, key_id, model, endpoint, requests, input_tokens, output_tokens, cost) "
            "SELECT CAST(created_at / 3600 AS INTEGER) * 3600, key_id, model, endpoint, COUNT(*), "
            "SUM(input_tokens), SUM(output_tokens), SUM(cost) FROM usage_record "
            "WHERE request_id LIKE 'fill!_%' ESCAPE '!' GROUP BY 1, 2, 3, 4 "
            "ON CONFLICT (hour, key_id, model, endpoint) DO UPDATE SET requests = requests + excluded.requests, "
            "input_tokens = input_tokens + excluded.input_tokens, "
            "output_tokens = output_tokens + excluded.output_tokens, cost = cost + excluded.cost"
        )
