"""The Responses API's memory: stored responses, their inputs, ``previous_response_id`` chains, and the
conversation they hold as chat turns.

A stored response belongs to the key that created it; any other key is told it does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from server.engines.base import Message, ToolCall
from server.errors import NotFound
from server.generation import message
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


def conversation(items: Iterable[dict[str, Any]]) -> list[Message]:
    """Items in their stored form (input items and output items, oldest first) as the chat turns a
    template renders: a model's function calls join the assistant turn before them (a Responses output's
    message and calls are one chat turn), each output is a tool turn naming its function. Reasoning items
    are left out: templates render no earlier turns' thoughts."""
    turns: list[Message] = []
    names: dict[str, str] = {}
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            turns.append(message(item["role"], _text(item.get("content", ""))))
        elif kind == "function_call":
            call = ToolCall(id=item["call_id"], name=item["name"], arguments=item["arguments"])
            names[call.id] = call.name
            if turns and turns[-1].role == "assistant":
                turns[-1] = replace(turns[-1], tool_calls=(*turns[-1].tool_calls, call))
            else:
                turns.append(message("assistant", "", tool_calls=(call,)))
        elif kind == "function_call_output":
            call_id = item["call_id"]
            turns.append(
                message("tool", _text(item.get("output", "")), name=names.get(call_id), tool_call_id=call_id)
            )
    return turns


def _text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text") or part.get("refusal") or "" for part in content)
