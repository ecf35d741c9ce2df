"""``/v1/responses``: create (stored, chained, streamed), retrieve, delete, and list input items."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import Request
from starlette.responses import Response

from server import generation
from server.access.keys import KeyRecord
from server.api.auth import Key
from server.api.billing import Bill, Intake
from server.api.body import read_json
from server.api.errors import JSON
from server.api.models import model_loaded
from server.api.request import new_id, services
from server.api.response_output import Event as OutputEvent
from server.api.response_output import Output
from server.api.streaming import EventStream, until_disconnected
from server.errors import APIError, InvalidRequest, ModelNotFound
from server.generation.events import ChoiceEnd, Delta, Event, Meter, ToolCallDelta
from server.generation.tool_calls import Tool
from server.protocol import responses as wire
from server.protocol.wire import sse_event
from server.stored_responses import ResponseStore, conversation

ID_PREFIXES = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


def _history(store: ResponseStore, key: KeyRecord, previous: str | None) -> list[dict[str, Any]]:
    """The items of the stored conversation that ``previous`` ends: each response's input, then its output."""
    items: list[dict[str, Any]] = []
    if previous is None:
        return items
    for stored in store.chain(key.id, previous):
        items += stored.input_items
        items += stored.body.get("output", [])
    return items


def _json_schema(req: wire.ResponseRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {}
    if fmt.schema_ is None:
        raise InvalidRequest("A text.format of type json_schema needs a schema.", param="text.format.schema")
    return fmt.schema_


def _tool_choice(req: wire.ResponseRequest) -> str:
    choice = req.tool_choice
    if choice is not None and not req.tools and choice != "none":
        raise InvalidRequest("tool_choice needs tools to choose from.", param="tool_choice")
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.name


def _ask(
    req: wire.ResponseRequest, history: list[dict[str, Any]], items: list[dict[str, Any]]
) -> generation.Ask:
    """The request as generation sees it: the stored conversation, the instructions and the new items."""
    turns = conversation([*history, *items])
    if req.instructions:
        turns.insert(0, generation.message("system", req.instructions))
    return generation.Ask(
        messages=tuple(turns),
        max_tokens=req.max_output_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        json_schema=_json_schema(req),
        tools=tuple(
            Tool(t.name, t.description or "", t.parameters or {"type": "object"}) for t in req.tools or ()
        ),
        tool_choice=_tool_choice(req),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        effort=req.reasoning.effort if req.reasoning is not None else None,
        stream=bool(req.stream),
        params={"messages": "input", "max_tokens": "max_output_tokens", "format": "text.format"},
    )


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
    input_items = [wire.input_item(item.id or new_id(ID_PREFIXES[item.type]), item) for item in req.items()]
    history = await asyncio.to_thread(_history, svc.responses, key, req.previous_response_id)
    prepared = await generation.prepare(
        svc.models, req.model, _ask(req, history, input_items), upstream=svc.upstream
    )
    request_id: str = request.state.request_id
    response_id = "resp_" + request_id.removeprefix("req_")
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
        finish = await until_disconnected(request, run.generate())
    except BaseException as exc:
        run.bill.abandon(
            disconnected=isinstance(exc, asyncio.CancelledError), http_status=getattr(exc, "status", 500)
        )
        raise
    if finish is None:
        run.bill.abandon(disconnected=True)
        return Response(status_code=499)  # nobody is listening
    run.output.finish(finish)
    body = run.finish(finish)
    await run.bill.settle()
    await run.save(body)
    return JSON(body)


class _Run:
    """One response being generated: its ids, its output, its events, and how it ends."""

    bill: Bill

    def __init__(
        self,
        req: wire.ResponseRequest,
        key: KeyRecord,
        store: ResponseStore,
        response_id: str,
        input_items: list[dict[str, Any]],
        prepared: generation.Prepared,
        meter: Meter,
    ) -> None:
        self.req, self.key, self.store = req, key, store
        self.response_id = response_id
        self.input_items = input_items
        self.prepared, self.meter = prepared, meter
        self.created_at = int(time.time())
        self.output = Output(response_id)
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

    def finish(self, finish_reason: str) -> dict[str, Any]:
        """The finished response, once its output is closed."""
        if finish_reason == "length":
            return self.body("incomplete", self.output.items, incomplete_reason="max_output_tokens")
        return self.body("completed", self.output.items)

    async def save(self, body: dict[str, Any]) -> None:
        if self.req.store is not False:
            await asyncio.to_thread(self.store.save, self.key.id, body, self.input_items)

    def event(self, kind: str, **fields: Any) -> bytes:
        value = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(kind, value)

    def _feed(self, event: Event) -> list[OutputEvent]:
        if isinstance(event, ToolCallDelta):
            return self.output.call(event.call)
        if isinstance(event, Delta):
            return [
                *(self.output.reasoning(event.reasoning) if event.reasoning else []),
                *(self.output.text(event.content) if event.content else []),
            ]
        return []

    async def generate(self) -> str:
        """Generate the whole output (not streamed); the finish reason."""
        finish = "stop"
        events = generation.run(self.prepared, self.meter, self.key.id)
        try:
            async for event in events:
                if isinstance(event, ChoiceEnd):
                    finish = event.finish_reason
                else:
                    self._feed(event)
        finally:
            await events.aclose()  # cancelled: stop generation and meter what was generated
        return finish

    async def stream(self) -> AsyncIterator[bytes]:
        yield self.event("response.created", response=self.body("in_progress", []))
        yield self.event("response.in_progress", response=self.body("in_progress", []))
        finish = "stop"
        events = generation.run(self.prepared, self.meter, self.key.id)
        try:
            async for event in events:
                if isinstance(event, ChoiceEnd):
                    finish = event.finish_reason
                for kind, fields in self._feed(event):
                    yield self.event(kind, **fields)
            closing = self.output.finish(finish)
            body = self.finish(finish)
            await self.bill.settle()
            await self.save(body)
            for kind, fields in closing:
                yield self.event(kind, **fields)
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
