"""The ledger's own totals, read straight from its rows (what the reports and the Usage page must equal), and
rows to put in it."""

from __future__ import annotations

from server.metering.ledger import UsageEntry
from server.metering.reports import Amounts
from server.store import Store


def ledger_totals(store: Store, start: float, end: float, where: str = "1", *args: object) -> Amounts:
    """Requests, tokens and cost of the rows in ``[start, end)`` that match ``where``."""
    row = store.db.execute_sql(
        "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost), 0) "
        f"FROM usage_record WHERE created_at >= ? AND created_at < ? AND {where}",
        (start, end, *args),
    ).fetchone()
    return Amounts(int(row[0]), int(row[1]), int(row[2]), float(row[3]))


def usage_entry(i: int, **extra: object) -> UsageEntry:
    """Ledger row number ``i``: ``i`` input and ``2 i`` output tokens, three keys and two models in turn,
    ten minutes apart; ``extra`` overrides any field."""
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
