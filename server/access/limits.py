"""Per-key limits: requests and tokens per minute, requests in flight, and budgets that hold under
concurrency; and a throttle on failed authentication per client address.

A rolled key and the key it replaced are one client: they share one budget and one set of rate windows
(otherwise the grace period would double both). Rates and concurrency are counted in memory (one server
process serves a data directory), per lineage of keys. Budgets are kept in SQLite: the worst case of a request is reserved by one conditional INSERT, so that no number
of concurrent requests can together reserve more than the budget left; the reservation is removed in
the same transaction that writes the request's ledger row (see ``usage.Ledger``), and reservations left
by a process that died are released at start-up.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from server.access.keys import BudgetPeriod, KeyLimits, KeyRecord
from server.config import ModelConfig
from server.errors import QuotaExceeded, RateLimited
from server.metering.ledger import cost_of
from server.store import Store

WINDOW_S = 60.0


def period_start(period: BudgetPeriod, at: float) -> float:
    """The UTC moment the current budget period began."""
    if period == "lifetime":
        return 0.0
    moment = dt.datetime.fromtimestamp(at, dt.UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day.timestamp()
    if period == "week":
        return (day - dt.timedelta(days=day.weekday())).timestamp()
    return day.replace(day=1).timestamp()


def period_end(period: BudgetPeriod, at: float) -> float | None:
    """When the current budget period renews (``None`` for a lifetime budget)."""
    start = dt.datetime.fromtimestamp(period_start(period, at), dt.UTC)
    if period == "lifetime":
        return None
    if period == "day":
        return (start + dt.timedelta(days=1)).timestamp()
    if period == "week":
        return (start + dt.timedelta(days=7)).timestamp()
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month).timestamp()


_RESERVE = (
    'INSERT INTO "budget_reservation" ("key_id", "unit", "amount", "boot", "created_at", "request_id", '
    '"model", "endpoint", "stream") '
    "SELECT ?1, ?2, ?3, ?4, ?5, ?9, ?10, ?11, ?12 WHERE "
    '(SELECT COALESCE(SUM(CASE ?2 WHEN \'tokens\' THEN "tokens" ELSE "cost" END), 0) FROM "key_spend_daily" '
    'WHERE "key_id" IN (SELECT value FROM json_each(?8)) AND "day" >= ?6) '
    '+ (SELECT COALESCE(SUM("amount"), 0) FROM "budget_reservation" '
    'WHERE "key_id" IN (SELECT value FROM json_each(?8)) AND "unit" = ?2) '
    "+ ?3 <= ?7"
)
_LINEAGE = (
    # The keys a key replaced (older, with how far back) and the keys that replaced it (newer).
    'WITH RECURSIVE older(id, depth) AS (SELECT ?1, 0 UNION SELECT k."public_id", older.depth + 1 '
    'FROM "api_key" k JOIN older ON k."rolled_to" = older.id), '
    'newer(id) AS (SELECT ?1 UNION SELECT k."rolled_to" FROM "api_key" k JOIN newer ON k."public_id" = newer.id '
    'WHERE k."rolled_to" IS NOT NULL) '
    "SELECT id, depth FROM older UNION SELECT id, -1 FROM newer"
)
LINEAGE_MEMO = 4096


@dataclass(frozen=True)
class BudgetState:
    unit: str
    amount: float
    period: BudgetPeriod
    spent: float
    reserved: float
    renews_at: float | None


@dataclass
class Admission:
    """A request let in: it holds a place in its key's windows and maybe a budget reservation."""

    key_id: str
    """The lineage the request counts in: the first key of the rolls that led to the request's key."""
    estimate: int
    reservation_id: int | None
    stamp: list[float]
    """Its ``[time, tokens]`` entry in the key's one-minute window."""
    released: bool = False


@dataclass
class _KeyWindow:
    """The last minute of one key's requests, with a running token total (every step O(1))."""

    events: deque[list[float]] = field(default_factory=deque)  # [time, tokens]
    tokens: float = 0.0
    in_flight: int = 0


@dataclass(frozen=True)
class KeyActivity:
    """A key's use against its limits, right now."""

    requests_last_minute: int
    tokens_last_minute: int
    in_flight: int
    budget: BudgetState | None


class Limiter:
    """Admits or refuses each request for its key's limits."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.boot = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyWindow] = {}
        self._firsts: dict[str, str] = {}
        """Key id → the first key of its lineage (a key's predecessors never change once it exists)."""

    def release_orphans(self) -> int:
        """Release reservations held by processes that are gone (called once at start-up, once what they
        had used is billed: see ``inflight.recover``)."""
        cursor = self._store.db.execute_sql(
            'DELETE FROM "budget_reservation" WHERE "boot" != ?', (self.boot,)
        )
        return int(cursor.rowcount)

    def lineage(self, key: KeyRecord) -> tuple[str, ...]:
        """The keys that share ``key``'s budget and rates: the first of its lineage first, then the rest."""
        first = self._firsts.get(key.id)
        if first == key.id and key.rolled_to is None:
            return (key.id,)  # never rolled, and replaced no key: the common case costs no query
        rows = self._store.db.execute_sql(_LINEAGE, (key.id,)).fetchall()
        first = max(rows, key=lambda row: row[1])[0]
        if len(self._firsts) >= LINEAGE_MEMO:
            self._firsts.clear()
        self._firsts[key.id] = first
        return (first, *sorted({row[0] for row in rows} - {first}))

    def admit(
        self,
        key: KeyRecord,
        model: ModelConfig,
        input_tokens: int,
        max_output: int,
        *,
        request_id: str | None = None,
        endpoint: str = "",
        stream: bool = False,
    ) -> Admission:
        """Let the request in, or raise ``RateLimited`` / ``QuotaExceeded``. A budget's reservation names the
        request (``request_id``, ``endpoint``, ``stream``): if the process dies, the next start bills it."""
        limits = key.limits
        estimate = input_tokens + max_output
        now = time.monotonic()
        lineage = self.lineage(key)
        with self._lock:
            window = self._keys.setdefault(lineage[0], _KeyWindow())
            self._prune(window, now)
            self._check_rates(limits, window, estimate, now)
            reservation = (
                self._reserve(
                    key, lineage, model, input_tokens, max_output, (request_id, model.name, endpoint, stream)
                )
                if limits.has_budget
                else None
            )
            stamp = [now, float(estimate)]
            window.events.append(stamp)
            window.tokens += estimate
            window.in_flight += 1
        return Admission(lineage[0], estimate, reservation, stamp)

    def _check_rates(self, limits: KeyLimits, window: _KeyWindow, estimate: int, now: float) -> None:
        if limits.max_concurrent is not None and window.in_flight >= limits.max_concurrent:
            raise RateLimited(
                f"Rate limit reached: at most {limits.max_concurrent} concurrent requests for this key.",
                retry_after=1,
            )
        if limits.rpm is not None and len(window.events) >= limits.rpm:
            wait = window.events[0][0] + WINDOW_S - now
            raise RateLimited(
                f"Rate limit reached: {limits.rpm} requests per minute for this key. "
                f"Please try again in {max(wait, 0):.1f}s.",
                retry_after=wait,
            )
        if limits.tpm is not None:
            if estimate > limits.tpm:
                raise RateLimited(
                    f"Request too large: it may use {estimate} tokens, more than this key's limit of "
                    f"{limits.tpm} tokens per minute. Reduce the input or max tokens.",
                    retry_after=WINDOW_S,
                )
            used = window.tokens
            if used + estimate > limits.tpm:
                freed, wait = used, 0.0
                for stamp, tokens in window.events:
                    freed -= tokens
                    wait = stamp + WINDOW_S - now
                    if freed + estimate <= limits.tpm:
                        break
                raise RateLimited(
                    f"Rate limit reached: {limits.tpm} tokens per minute for this key (used {int(used)}, "
                    f"requested {estimate}). Please try again in {max(wait, 0):.1f}s.",
                    retry_after=wait,
                )

    def _reserve(
        self,
        key: KeyRecord,
        lineage: tuple[str, ...],
        model: ModelConfig,
        input_tokens: int,
        max_output: int,
        request: tuple[Any, ...],
    ) -> int:
        limits = key.limits
        assert limits.budget_unit and limits.budget_period and limits.budget_amount is not None
        if limits.budget_unit == "tokens":
            amount = float(input_tokens + max_output)
        else:
            amount = cost_of(model, input_tokens, max_output)
        wall = time.time()
        start = period_start(limits.budget_period, wall)
        cursor = self._store.db.execute_sql(
            _RESERVE,
            (
                key.id,
                limits.budget_unit,
                amount,
                self.boot,
                wall,
                int(start),
                limits.budget_amount,
                json.dumps(lineage),
                *request,
            ),
        )
        if cursor.rowcount != 1:
            state = self.budget(key)
            left = max(0.0, (state.amount - state.spent - state.reserved) if state else 0.0)
            what = "tokens" if limits.budget_unit == "tokens" else "cost"
            raise QuotaExceeded(
                f"You exceeded this key's {limits.budget_period} budget: this request may need {amount:g} "
                f"{what}, {left:g} left. Ask the operator to raise the budget"
                + ("." if limits.budget_period == "lifetime" else ", or wait for it to renew.")
            )
        return int(cursor.lastrowid)

    def settle(self, admission: Admission, actual_tokens: int) -> None:
        """Replace the estimate in the token window by what the request really used, and leave."""
        with self._lock:
            if admission.released:
                return
            admission.released = True
            window = self._keys.get(admission.key_id)
            if window is None:
                return
            window.in_flight = max(0, window.in_flight - 1)
            stamp = admission.stamp
            if window.events and stamp[0] >= window.events[0][0]:  # still inside the window
                window.tokens += actual_tokens - stamp[1]
            stamp[1] = float(actual_tokens)

    def release_reservation(self, admission: Admission) -> None:
        """Drop a reservation when no ledger row will be written for the request."""
        if admission.reservation_id is not None:
            self._store.db.execute_sql(
                'DELETE FROM "budget_reservation" WHERE "id" = ?', (admission.reservation_id,)
            )
            admission.reservation_id = None

    @staticmethod
    def _prune(window: _KeyWindow, now: float) -> None:
        events = window.events
        while events and events[0][0] <= now - WINDOW_S:
            window.tokens -= events.popleft()[1]
        if not events:
            window.tokens = 0.0  # no drift from float sums

    def budget(self, key: KeyRecord) -> BudgetState | None:
        limits = key.limits
        if not limits.has_budget:
            return None
        assert limits.budget_unit and limits.budget_period and limits.budget_amount is not None
        wall = time.time()
        column = "tokens" if limits.budget_unit == "tokens" else "cost"
        lineage = json.dumps(self.lineage(key))
        spent = self._store.db.execute_sql(
            f'SELECT COALESCE(SUM("{column}"), 0) FROM "key_spend_daily" '
            'WHERE "key_id" IN (SELECT value FROM json_each(?)) AND "day" >= ?',
            (lineage, int(period_start(limits.budget_period, wall))),
        ).fetchone()[0]
        reserved = self._store.db.execute_sql(
            'SELECT COALESCE(SUM("amount"), 0) FROM "budget_reservation" '
            'WHERE "key_id" IN (SELECT value FROM json_each(?)) AND "unit" = ?',
            (lineage, limits.budget_unit),
        ).fetchone()[0]
        return BudgetState(
            limits.budget_unit,
            limits.budget_amount,
            limits.budget_period,
            float(spent),
            float(reserved),
            period_end(limits.budget_period, wall),
        )

    def activity(self, key: KeyRecord) -> KeyActivity:
        """The key's use against its limits, for the window and ``keys list``."""
        now = time.monotonic()
        first = self.lineage(key)[0]
        with self._lock:
            window = self._keys.get(first, _KeyWindow())
            self._prune(window, now)
            requests, tokens, in_flight = (
                len(window.events),
                int(window.tokens),
                window.in_flight,
            )
        return KeyActivity(requests, tokens, in_flight, self.budget(key))


class AuthThrottle:
    """Slows down guessing: once an address has failed to authenticate too often, its failures are answered
    429 with ``Retry-After`` rather than 401, until they age out of the window.

    Only failures are throttled: a valid key is never refused, whichever address it comes from and however
    many bad keys that address sent (every process of the machine shares 127.0.0.1, and one forgotten
    script with a revoked key must not lock the others out). Counted per address, so a flood from one
    machine changes nothing for the others.
    """

    def __init__(self, max_failures: int = 20, window_s: float = 60.0, max_addresses: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def failed(self, address: str) -> None:
        """Count a failed authentication; raise ``RateLimited`` if the address has failed too often."""
        now = time.monotonic()
        with self._lock:
            if address not in self._failures and len(self._failures) >= self.max_addresses:
                # Bounded memory: forget the address whose failures are oldest.
                oldest = min(self._failures, key=lambda a: self._failures[a][-1] if self._failures[a] else 0)
                del self._failures[oldest]
            failures = self._failures.setdefault(address, deque())
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            throttled = len(failures) >= self.max_failures
            failures.append(now)
            while len(failures) > self.max_failures:
                failures.popleft()
            if throttled:
                raise RateLimited(
                    "Too many failed authentication attempts from your address; try again later.",
                    retry_after=failures[0] + self.window_s - now,
                )
