"""What a handler knows of the application: its services, and the ids it gives requests and responses."""

from __future__ import annotations

import secrets
import time

from fastapi import Request

from server.services import Services


def services(request: Request) -> Services:
    """What the application serves with (``create_app`` keeps it on ``app.state``)."""
    found: Services = request.app.state.services
    return found


def new_id(prefix: str) -> str:
    """``prefix``, then the time in milliseconds since the epoch (11 hex digits) and 64 random bits (16).

    Ids made later sort later (to the millisecond), so the ledger's and the response store's unique
    indexes on them grow at their right-hand end: a random id would change a random page of an index that
    outgrows the page cache, for every row, and write that whole page to the log at each commit."""
    return f"{prefix}{time.time_ns() // 1_000_000:011x}{secrets.randbits(64):016x}"
