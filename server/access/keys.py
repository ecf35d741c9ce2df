"""API keys: generate, digest, verify, roll, revoke.

A key is ``aisp-`` + 43 base62 characters (256 random bits) + a 6-character base62 CRC32 of them, so a
mistyped or forged key is refused by its shape alone, before any database query. Only an HMAC-SHA256 of
the key under the server secret (kept in the data directory, outside the database) is stored.
"""

from __future__ import annotations

import builtins
import hmac
import json
import logging
import os
import re
import secrets
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import peewee as pw

from server.errors import InvalidRequest, NotFound, Unauthenticated
from server.store import Store, now

log = logging.getLogger(__name__)

PREFIX = "aisp-"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY = 43  # 62**43 > 2**256
_CHECK = 6  # 62**6 > 2**32
KEY_LENGTH = len(PREFIX) + _BODY + _CHECK
_SHAPE = re.compile(rf"{PREFIX}[0-9A-Za-z]{{{_BODY + _CHECK}}}")
LAST_USED_RESOLUTION = 60.0
RECORD_MEMO_SIZE = 4096
"""Seconds: last use is written at most this often per key, not on every request."""

KeyStatus = Literal["active", "expiring", "expired", "revoked"]
BudgetUnit = Literal["tokens", "cost"]
BudgetPeriod = Literal["day", "week", "month", "lifetime"]


@dataclass(frozen=True)
class KeyLimits:
    """What one key may consume; ``None`` means unlimited."""

    rpm: int | None = None
    """Requests per minute."""
    tpm: int | None = None
    """Tokens per minute (input plus the most output a request may produce)."""
    max_concurrent: int | None = None
    """Requests in flight at once."""
    budget_unit: BudgetUnit | None = None
    """Whether the budget counts tokens or money."""
    budget_amount: float | None = None
    budget_period: BudgetPeriod | None = None
    """The budget renews each UTC day, ISO week, calendar month, or never (lifetime)."""

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 1 <= value <= 10_000_000_000):
                raise InvalidRequest(f"{name} must be a positive whole number", param=name)
        has_budget = (self.budget_unit, self.budget_amount, self.budget_period)
        if any(v is not None for v in has_budget) and any(v is None for v in has_budget):
            raise InvalidRequest("a budget needs a unit, an amount and a period", param="budget")
        if self.budget_amount is not None and not 0 <= self.budget_amount <= 1e15:
            raise InvalidRequest("the budget must be zero or more", param="budget_amount")
        if self.budget_unit not in (None, "tokens", "cost"):
            raise InvalidRequest("the budget unit is tokens or cost", param="budget_unit")
        if self.budget_period not in (None, "day", "week", "month", "lifetime"):
            raise InvalidRequest("the budget period is day, week, month or lifetime", param="budget_period")

    @property
    def has_budget(self) -> bool:
        return self.budget_amount is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_concurrent": self.max_concurrent,
            "budget_unit": self.budget_unit,
            "budget_amount": self.budget_amount,
            "budget_period": self.budget_period,
        }


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK)


def generate_key() -> str:
    body = _base62(secrets.randbits(256), _BODY)
    return PREFIX + body + _checksum(body)


def well_formed(token: str) -> bool:
    """The token has the key's shape and a valid checksum (no database involved)."""
    if len(token) != KEY_LENGTH or _SHAPE.fullmatch(token) is None:
        return False
    body, check = token[len(PREFIX) : -_CHECK], token[-_CHECK:]
    return hmac.compare_digest(_checksum(body), check)


def hint(token: str) -> str:
    return f"{PREFIX}…{token[-4:]}"


def load_or_create_secret(path: Path) -> bytes:
    """The server secret that keys are digested with: 32 random bytes, readable by the owner only."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return data


@dataclass(frozen=True)
class KeyRecord:
    """A key as the window and the CLI see it: everything but the secret."""

    id: str
    name: str
    owner_note: str
    hint: str
    created_at: float
    last_used_at: float | None
    expires_at: float | None
    revoked_at: float | None
    allowed_models: tuple[str, ...] | None
    rolled_to: str | None
    limits: KeyLimits = KeyLimits()

    def status(self, at: float | None = None) -> KeyStatus:
        moment = now() if at is None else at
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= moment:
            return "expired"
        if self.rolled_to is not None:
            return "expiring"
        return "active"

    def usable(self, at: float | None = None) -> bool:
        return self.status(at) in ("active", "expiring")

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner_note": self.owner_note,
            "hint": self.hint,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "allowed_models": list(self.allowed_models) if self.allowed_models is not None else None,
            "status": self.status(),
            "limits": self.limits.as_dict(),
        }


_COLUMNS = (
    "public_id, name, owner_note, hint, created_at, last_used_at, expires_at, revoked_at, "
    "allowed_models, rolled_to, rpm, tpm, max_concurrent, budget_unit, budget_amount, budget_period"
)


def _record(row: tuple[Any, ...]) -> KeyRecord:
    models = json.loads(row[8]) if row[8] is not None else None
    return KeyRecord(
        id=row[0],
        name=row[1],
        owner_note=row[2],
        hint=row[3],
        created_at=row[4],
        last_used_at=row[5],
        expires_at=row[6],
        revoked_at=row[7],
        allowed_models=tuple(models) if models is not None else None,
        rolled_to=row[9],
        limits=KeyLimits(row[10], row[11], row[12], row[13], row[14], row[15]),
    )


def _clean_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidRequest("a key's name must be 1 to 200 characters", param="name")
    return name


class KeyService:
    """Everything done with keys, for the API, the window and the CLI alike."""

    def __init__(self, store: Store, secret: bytes) -> None:
        self._store = store
        self._secret = secret
        self._table = store.tables.ApiKey
        self._records: dict[str, tuple[tuple[Any, ...], KeyRecord]] = {}
        self._stamper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="key-last-used")
        """Writes keys' last-use times: bookkeeping nobody waits for stays off the event loop."""
        self._stamped: dict[str, float] = {}
        """When each key's last use was last handed to the stamper (its row may not say so yet)."""

    def close(self) -> None:
        """Finish writing last-use times (before the store closes)."""
        self._stamper.shutdown(wait=True)

    def digest(self, token: str) -> str:
        return hmac.digest(self._secret, token.encode("ascii"), "sha256").hex()

    def create(
        self,
        name: str,
        *,
        owner_note: str = "",
        allowed_models: builtins.list[str] | tuple[str, ...] | None = None,
        expires_at: float | None = None,
        limits: KeyLimits | None = None,
    ) -> tuple[str, KeyRecord]:
        """Make a key; the secret is returned here once and never stored."""
        token = generate_key()
        public_id = "key_" + secrets.token_hex(8)
        models = None if allowed_models is None else json.dumps(sorted(set(allowed_models)))
        self._table.create(
            public_id=public_id,
            name=_clean_name(name),
            owner_note=owner_note.strip()[:2000],
            digest=self.digest(token),
            hint=hint(token),
            created_at=now(),
            expires_at=expires_at,
            allowed_models=models,
            **(limits or KeyLimits()).as_dict(),
        )
        return token, self.get(public_id)

    def get(self, key_id: str) -> KeyRecord:
        row = self._store.db.execute_sql(
            f"SELECT {_COLUMNS} FROM api_key WHERE public_id = ?", (key_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}", param="key_id")
        return _record(row)

    def list(self) -> list[KeyRecord]:
        rows = self._store.db.execute_sql(f"SELECT {_COLUMNS} FROM api_key ORDER BY created_at DESC, id DESC")
        return [_record(row) for row in rows]

    def rename(self, key_id: str, name: str) -> KeyRecord:
        self._update(key_id, name=_clean_name(name))
        return self.get(key_id)

    def set_limits(self, key_id: str, limits: KeyLimits) -> KeyRecord:
        self.get(key_id)
        self._update(key_id, **limits.as_dict())
        return self.get(key_id)

    def set_models(
        self, key_id: str, allowed_models: builtins.list[str] | tuple[str, ...] | None
    ) -> KeyRecord:
        self.get(key_id)
        self._update(
            key_id, allowed_models=None if allowed_models is None else json.dumps(sorted(set(allowed_models)))
        )
        return self.get(key_id)

    def set_expiry(self, key_id: str, expires_at: float | None) -> KeyRecord:
        """Give a key a new expiry (``None``: never). A revoked key stays revoked; a rolled key's expiry
        is the end of its grace period, which this moves."""
        record = self.get(key_id)
        if record.revoked_at is not None:
            raise InvalidRequest(f"key {key_id} is revoked; its expiry cannot change", param="key_id")
        if expires_at is not None and expires_at <= now():
            raise InvalidRequest("the expiry must be in the future", param="expires_at")
        if expires_at is None and record.rolled_to is not None:
            raise InvalidRequest("a rolled key stops when its grace period ends", param="expires_at")
        self._update(key_id, expires_at=expires_at)
        return self.get(key_id)

    def delete(self, key_id: str) -> None:
        """Remove a revoked or expired key from the list (its usage stays in the ledger, by id)."""
        record = self.get(key_id)
        if record.usable():
            raise InvalidRequest(f"key {key_id} still works: revoke it before deleting it", param="key_id")
        self._table.delete().where(self._table.public_id == key_id).execute()

    def revoke(self, key_id: str) -> KeyRecord:
        record = self.get(key_id)
        if record.revoked_at is None:
            self._update(key_id, revoked_at=now())
        return self.get(key_id)

    def roll(self, key_id: str, grace_seconds: float) -> tuple[str, KeyRecord]:
        """Issue a replacement with the same name and scope; the old key stops after the grace period."""
        old = self.get(key_id)
        if not old.usable():
            raise InvalidRequest(f"key {key_id} is {old.status()} and cannot be rolled", param="key_id")
        if not 0 <= grace_seconds <= 90 * 86400:
            raise InvalidRequest("the grace period must be between 0 and 90 days", param="grace_seconds")
        with self._store.db.atomic():
            token, new = self.create(
                old.name,
                owner_note=old.owner_note,
                allowed_models=old.allowed_models,
                expires_at=old.expires_at,
                limits=old.limits,
            )
            deadline = now() + grace_seconds
            if old.expires_at is not None:
                deadline = min(deadline, old.expires_at)
            self._update(key_id, expires_at=deadline, rolled_to=new.id)
        return token, new

    def authenticate(self, token: str) -> KeyRecord:
        """The key behind a bearer token, or :class:`Unauthenticated`. Malformed tokens never reach SQL."""
        if len(token) != KEY_LENGTH or not token.isascii():
            raise Unauthenticated("Incorrect API key provided.")
        digest = self.digest(token)
        known = self._records.get(digest)
        # A token whose digest is a known key's is that key's token, whose shape was checked when it was
        # first seen.
        if known is None and not well_formed(token):
            raise Unauthenticated("Incorrect API key provided.")
        row = self._store.db.execute_sql(
            f"SELECT {_COLUMNS} FROM api_key WHERE digest = ?", (digest,)
        ).fetchone()
        if row is None:
            raise Unauthenticated("Incorrect API key provided.")
        # The row is read on every request (a revocation counts from the next one); only turning an
        # unchanged row into a record again is saved.
        if known is not None and known[0] == row:
            record = known[1]
        else:
            record = _record(row)
            if len(self._records) >= RECORD_MEMO_SIZE:
                self._records.clear()
            self._records[digest] = (row, record)
        moment = now()
        status = record.status(moment)
        if status == "revoked":
            raise Unauthenticated("This API key has been revoked.")
        if status == "expired":
            raise Unauthenticated("This API key has expired.")
        if (
            moment - max(record.last_used_at or 0.0, self._stamped.get(record.id, 0.0))
            >= LAST_USED_RESOLUTION
        ):
            if len(self._stamped) >= RECORD_MEMO_SIZE:
                self._stamped.clear()
            self._stamped[record.id] = moment
            self._stamper.submit(self._stamp, record.id, moment)
        return record

    def _stamp(self, key_id: str, moment: float) -> None:
        try:
            self._update(key_id, last_used_at=moment)
        except pw.PeeweeException as exc:  # a full or read-only disk must not lock every key out
            log.warning("cannot note when key %s was last used: %s", key_id, exc)

    def _update(self, key_id: str, **values: Any) -> None:
        self._table.update(**values).where(self._table.public_id == key_id).execute()


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m`` or ``45s`` as seconds."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhdw])\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    return int(match.group(1)) * unit
