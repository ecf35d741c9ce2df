"""The ledger's own totals, read straight from its rows: what the reports and the Usage page must equal."""

from __future__ import annotations

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
