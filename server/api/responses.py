"""``/v1/responses``: create (stored, chained, streamed), retrieve, delete, and list input items."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import Request
from starlette.responses import Response

from server import chat
from server.api.billing import Bill, Intake
from server.api.http import JSON, EventStream, Key, new_id, read_json, services, until_disconnected
from server.api.models import model_loaded
from server.errors import APIError, InvalidRequest, ModelNotFound
from server.events import ChoiceEnd, Delta, Meter
from server.keys import KeyRecord
from server.protocol import responses as wire
from server.protocol.wire import sse_event
from server.responses import ResponseStore


def _history(store: ResponseStore, key: KeyRecord, previous: str | None) -> list[tuple[str, str, str | None]]:
    """The turns of the stored conversation that ``previous`` ends."""
    turns: list[tuple[str, str, str | None]] = []
    if previous is None:
        return turns
    for stored in store.chain(key.id, previous):
        for item in stored.input_items:
            turns.append((item["role"], _item_text(item), None))
        for item in stored.body.get("output", []):
            if item.get("type") == "message":
                turns.append(("assistant", _item_text(item), None))
    return turns


def _item_text(item: dict[str, Any]) -> str:
    content = item.get("content", "")
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text") or part.get("refusal") or "" for part in content)


def _json_schema(req: wire.ResponseRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {}
    if fmt.schema_ is None:
        raise InvalidRequest("A text.format of type json_schema needs a schema.", param="text.format.schema")
    return fmt.schema_


async def create_response(request: Request, key: Key) -> Response:
    """``POST /v1/responses``."""
    intake = Intake(request, key, "responses")
    try:
        return await _respond(request, key, intake)
    except APIError as error:
        intake.refused(error)
        raise


async def _respond(request: Request, key: KeyRecord, intake: Intake) -> Response:
    svc = services(request)
    req = await read_json(request, wire.ResponseRequest)
    intake.model = req.model
    if not key.may_use(req.model):
        raise ModelNotFound(req.model)
    await model_loaded(request, req.model)
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("stream_options is only allowed when stream is true.", param="stream_options")
    items = req.items()
    turns = await asyncio.to_thread(_history, svc.responses, key, req.previous_response_id)
    if req.instructions:
        turns.insert(0, ("system", req.instructions, None))
    turns += [(item.role, item.text, None) for item in items]
    asked = chat.Ask(
        messages=tuple(chat.message(role, text, name=name) for role, text, name in turns),
        max_tokens=req.max_output_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        json_schema=_json_schema(req),
        effort=req.reasoning.effort if req.reasoning is not None else None,
        stream=bool(req.stream),
        params={"messages": "input", "max_tokens": "max_output_tokens", "format": "text.format"},
    )
    prepared = await chat.prepare(svc.models, req.model, asked, upstream=svc.upstream)
    request_id: str = request.state.request_id
    response_id = "resp_" + request_id.removeprefix("req_")
    input_items = [wire.input_item(item.id or new_id("msg_"), item) for item in items]
    meter = Meter()
    run = _Run(req, key, svc.responses, response_id, input_items, prepared, meter)
    run.bill = intake.admit(
        prepared.config,
        stream=bool(req.stream),
        meter=meter,
        input_tokens=prepared.input_tokens,
        max_output=prepared.worst_case_output,
    )
    if req.stream:
        return EventStream(
            run.stream(),
            headers={"x-request-id": request_id},
            on_close=lambda: run.bill.abandon(disconnected=True),
            error_frame=run.failure,
        )
    try:
        collected = await until_disconnected(request, chat.collect(chat.run(prepared, meter, key.id), 1))
    except BaseException as exc:
        run.bill.abandon(
            disconnected=isinstance(exc, asyncio.CancelledError), http_status=getattr(exc, "status", 500)
        )
        raise
    if collected is None:
        run.bill.abandon(disconnected=True)
        return Response(status_code=499)  # nobody is listening
    body = run.finish(collected.contents[0], collected.reasonings[0], collected.finish_reasons[0])
    await run.bill.settle()
    await run.save(body)
    return JSON(body)


class _Run:
    """One response being generated: its ids, its events, and how it ends."""

    bill: Bill

    def __init__(
        self,
        req: wire.ResponseRequest,
        key: KeyRecord,
        store: ResponseStore,
        response_id: str,
        input_items: list[dict[str, Any]],
        prepared: chat.Prepared,
        meter: Meter,
    ) -> None:
        self.req, self.key, self.store = req, key, store
        self.response_id = response_id
        self.input_items = input_items
        self.prepared, self.meter = prepared, meter
        self.created_at = int(time.time())
        self.message_id = "msg_" + response_id.removeprefix("resp_")
        self.reasoning_id = "rs_" + response_id.removeprefix("resp_")
        self.sequence = 0

    def body(
        self,
        status: Literal["completed", "failed", "in_progress", "incomplete"],
        output: list[dict[str, Any]],
        error: dict[str, Any] | None = None,
        incomplete_reason: str | None = None,
    ) -> dict[str, Any]:
        m = self.meter
        done = status in ("completed", "incomplete")
        return wire.response_object(
            response_id=self.response_id,
            created_at=self.created_at,
            status=status,
            request=self.req,
            output=output,
            usage=wire.response_usage(m.input_tokens, m.output_tokens, m.cached_tokens, m.reasoning_tokens)
            if done
            else None,
            error=error,
            incomplete_reason=incomplete_reason,
            completed_at=int(time.time()) if done else None,
        )

    def outputs(self, text: str, reasoning: str) -> list[dict[str, Any]]:
        output = [wire.reasoning_item(self.reasoning_id, reasoning)] if reasoning else []
        return [*output, wire.output_message(self.message_id, text)]

    def finish(self, text: str, reasoning: str, finish_reason: str) -> dict[str, Any]:
        if finish_reason == "length":
            return self.body(
                "incomplete", self.outputs(text, reasoning), incomplete_reason="max_output_tokens"
            )
        return self.body("completed", self.outputs(text, reasoning))

    async def save(self, body: dict[str, Any]) -> None:
        if self.req.store is not False:
            await asyncio.to_thread(self.store.save, self.key.id, body, self.input_items)

    def event(self, kind: str, **fields: Any) -> bytes:
        value = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(kind, value)

    async def stream(self) -> AsyncIterator[bytes]:
        yield self.event("response.created", response=self.body("in_progress", []))
        yield self.event("response.in_progress", response=self.body("in_progress", []))
        text: list[str] = []
        reasoning: list[str] = []
        finish = "stop"
        message_index: int | None = None
        events = chat.run(self.prepared, self.meter, self.key.id)
        try:
            async for event in events:
                if isinstance(event, ChoiceEnd):
                    finish = event.finish_reason
                    continue
                if not isinstance(event, Delta):
                    continue  # tool calls: the Responses API's function tools are not offered yet
                if event.reasoning:
                    if not reasoning:
                        yield self.event(
                            "response.output_item.added",
                            output_index=0,
                            item={**wire.reasoning_item(self.reasoning_id, ""), "content": []},
                        )
                    reasoning.append(event.reasoning)
                    yield self.event(
                        "response.reasoning_text.delta",
                        item_id=self.reasoning_id,
                        output_index=0,
                        content_index=0,
                        delta=event.reasoning,
                    )
                if event.content:
                    if message_index is None:
                        for chunk in self._close_reasoning(reasoning):
                            yield chunk
                        message_index = 1 if reasoning else 0
                        for chunk in self._open_message(message_index):
                            yield chunk
                    text.append(event.content)
                    yield self.event(
                        "response.output_text.delta",
                        item_id=self.message_id,
                        output_index=message_index,
                        content_index=0,
                        delta=event.content,
                        logprobs=[],
                    )
            if message_index is None:
                for chunk in self._close_reasoning(reasoning):
                    yield chunk
                message_index = 1 if reasoning else 0
                for chunk in self._open_message(message_index):
                    yield chunk
            full = "".join(text)
            body = self.finish(full, "".join(reasoning), finish)
            await self.bill.settle()
            await self.save(body)
            yield self.event(
                "response.output_text.done",
                item_id=self.message_id,
                output_index=message_index,
                content_index=0,
                text=full,
                logprobs=[],
            )
            yield self.event(
                "response.content_part.done",
                item_id=self.message_id,
                output_index=message_index,
                content_index=0,
                part=wire.output_text_part(full),
            )
            yield self.event(
                "response.output_item.done",
                output_index=message_index,
                item=wire.output_message(self.message_id, full),
            )
            kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
            yield self.event(kind, response=body)
        except APIError as error:
            self.bill.abandon(disconnected=False, http_status=error.status)
            yield self.failure(error)
        except BaseException:
            await events.aclose()  # stop generating before billing, so every token made is counted
            self.bill.abandon(disconnected=True)
            raise

    def failure(self, error: APIError) -> bytes:
        """The events that end a response that failed."""
        failed = self.body(
            "failed", [], error={"code": _response_error_code(error), "message": error.message}
        )
        return self.event("error", code=error.code, message=error.message, param=error.param) + self.event(
            "response.failed", response=failed
        )

    def _close_reasoning(self, reasoning: list[str]) -> list[bytes]:
        if not reasoning:
            return []
        full = "".join(reasoning)
        return [
            self.event(
                "response.reasoning_text.done",
                item_id=self.reasoning_id,
                output_index=0,
                content_index=0,
                text=full,
            ),
            self.event(
                "response.output_item.done", output_index=0, item=wire.reasoning_item(self.reasoning_id, full)
            ),
        ]

    def _open_message(self, index: int) -> list[bytes]:
        item = {**wire.output_message(self.message_id, "", status="in_progress"), "content": []}
        return [
            self.event("response.output_item.added", output_index=index, item=item),
            self.event(
                "response.content_part.added",
                item_id=self.message_id,
                output_index=index,
                content_index=0,
                part=wire.output_text_part(""),
            ),
        ]


def _response_error_code(error: APIError) -> str:
    """A failed response's ``error.code``: the spec allows only its own short list of codes."""
    if error.status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if 400 <= error.status < 500 else "server_error"


async def retrieve_response(request: Request, key: Key, response_id: str) -> Response:
    """``GET /v1/responses/{response_id}``."""
    stored = await asyncio.to_thread(services(request).responses.get, key.id, response_id)
    return JSON(stored.body)


async def delete_response(request: Request, key: Key, response_id: str) -> Response:
    """``DELETE /v1/responses/{response_id}``."""
    await asyncio.to_thread(services(request).responses.delete, key.id, response_id)
    return JSON(wire.deleted(response_id))


async def list_input_items(request: Request, key: Key, response_id: str) -> Response:
    """``GET /v1/responses/{response_id}/input_items``."""
    query = request.query_params
    raw_limit = query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest("limit must be an integer from 1 to 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
    stored = await asyncio.to_thread(services(request).responses.get, key.id, response_id)
    items = list(stored.input_items)
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after}'.", param="after")
        items = items[ids.index(after) + 1 :]
    limit = int(raw_limit)
    return JSON(wire.item_list(items[:limit], has_more=len(items) > limit))
