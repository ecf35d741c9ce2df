"""The Responses API's memory: stored responses, their inputs, and ``previous_response_id`` chains.

A stored response belongs to the key that created it; any other key is told it does not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.errors import NotFound
from server.redaction import redact_keys
from server.store import Store, now

MAX_CHAIN = 256
"""Responses followed back through ``previous_response_id`` before the chain is refused."""


@dataclass(frozen=True)
class Stored:
    response_id: str
    key_id: str
    previous_response_id: str | None
    input_items: list[dict[str, Any]]
    body: dict[str, Any]


class ResponseStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._table = store.tables.StoredResponse

    def save(self, key_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        self._table.insert(
            response_id=body["id"],
            key_id=key_id,
            created_at=now(),
            model=body["model"],
            previous_response_id=body.get("previous_response_id"),
            # A key a client pasted into a conversation is not kept with it.
            input_items=redact_keys(json.dumps(input_items)),
            body=redact_keys(json.dumps(body)),
        ).on_conflict_replace().execute()

    def get(self, key_id: str, response_id: str) -> Stored:
        row = self._store.db.execute_sql(
            "SELECT response_id, key_id, previous_response_id, input_items, body FROM stored_response "
            "WHERE response_id = ? AND key_id = ?",
            (response_id, key_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return Stored(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]))

    def delete(self, key_id: str, response_id: str) -> None:
        deleted = (
            self._table.delete()
            .where((self._table.response_id == response_id) & (self._table.key_id == key_id))
            .execute()
        )
        if not deleted:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")

    def chain(self, key_id: str, response_id: str) -> list[Stored]:
        """The conversation ending at ``response_id``, oldest first."""
        out: list[Stored] = []
        current: str | None = response_id
        while current is not None:
            if len(out) >= MAX_CHAIN:
                raise NotFound(
                    f"The conversation behind '{response_id}' is longer than {MAX_CHAIN} responses.",
                    param="previous_response_id",
                )
            try:
                stored = self.get(key_id, current)
            except NotFound as exc:
                exc.param = "previous_response_id"
                raise
            out.append(stored)
            current = stored.previous_response_id
        out.reverse()
        return out
