"""``POST /v1/chat/completions``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.responses import Response

from server import chat
from server.api.billing import Bill, Intake
from server.api.http import JSON, EventStream, Key, read_json, services, until_disconnected
from server.errors import APIError, InvalidRequest, ModelNotFound
from server.events import Delta, Meter
from server.keys import KeyRecord
from server.protocol import chat as wire
from server.protocol.wire import SSE_DONE, sse_data


def _refuse_unsupported(req: wire.ChatCompletionRequest) -> None:
    if req.logprobs:
        raise InvalidRequest("logprobs are not supported by this server.", param="logprobs")
    if req.top_logprobs:
        raise InvalidRequest(
            "top_logprobs requires logprobs, which this server does not support.", param="top_logprobs"
        )
    if req.tools or req.functions:
        raise InvalidRequest(
            "Tool calling is not supported by this server's models.",
            param="tools" if req.tools else "functions",
        )
    if req.modalities and "audio" in req.modalities or req.audio is not None:
        raise InvalidRequest("This server is text-only: audio output is not supported.", param="modalities")
    if req.web_search_options is not None:
        raise InvalidRequest("Web search is not supported by this server.", param="web_search_options")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("stream_options is only allowed when stream is true.", param="stream_options")


def _json_schema(req: wire.ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {}
    if fmt.json_schema is None:
        raise InvalidRequest(
            "response_format of type json_schema needs a json_schema.", param="response_format"
        )
    return fmt.json_schema.schema_ or {}


def _max_tokens(req: wire.ChatCompletionRequest) -> tuple[int | None, str]:
    if req.max_completion_tokens is not None:
        return req.max_completion_tokens, "max_completion_tokens"
    return req.max_tokens, "max_tokens"


async def prepare_chat(request: Request, req: wire.ChatCompletionRequest, key: KeyRecord) -> chat.Prepared:
    _refuse_unsupported(req)
    if not key.may_use(req.model):
        raise ModelNotFound(req.model)
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    max_tokens, max_param = _max_tokens(req)
    return await chat.prepare(
        services(request).models,
        req.model,
        chat.to_messages([(m.role, m.text, m.name) for m in req.messages]),
        max_tokens=max_tokens,
        max_tokens_param=max_param,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=stop,
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias={int(k): v for k, v in (req.logit_bias or {}).items()},
        json_schema=_json_schema(req),
        n=req.n or 1,
        upstream=services(request).upstream,
        stream=bool(req.stream),
    )


async def create_chat_completion(request: Request, key: Key) -> Response:
    """``POST /v1/chat/completions``."""
    intake = Intake(request, key, "chat.completions")
    try:
        return await _complete(request, key, intake)
    except APIError as error:
        intake.refused(error)
        raise


async def _complete(request: Request, key: KeyRecord, intake: Intake) -> Response:
    req = await read_json(request, wire.ChatCompletionRequest)
    intake.model = req.model
    prepared = await prepare_chat(request, req, key)
    request_id: str = request.state.request_id
    meter = Meter()
    bill = intake.admit(
        prepared.config,
        stream=bool(req.stream),
        meter=meter,
        input_tokens=prepared.input_tokens,
        max_output=prepared.worst_case_output,
    )
    completion_id = "chatcmpl-" + request_id.removeprefix("req_")
    created = int(time.time())
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = _stream(prepared, meter, bill, key, completion_id, created, include_usage)
        return EventStream(
            body, headers={"x-request-id": request_id}, on_close=lambda: bill.abandon(disconnected=True)
        )
    try:
        collected = await until_disconnected(
            request, chat.collect(chat.run(prepared, meter, key.id), prepared.n)
        )
    except BaseException as exc:
        bill.abandon(
            disconnected=isinstance(exc, asyncio.CancelledError), http_status=getattr(exc, "status", 500)
        )
        raise
    if collected is None:
        bill.abandon(disconnected=True)
        return Response(status_code=499)  # nobody is listening
    await bill.settle()
    choices = [
        wire.choice(
            i,
            wire.assistant_message(
                collected.contents[i], collected.reasonings[i] if prepared.config.reasoning else None
            ),
            collected.finish_reasons[i],
        )
        for i in range(prepared.n)
    ]
    usage = wire.usage(
        meter.input_tokens,
        meter.output_tokens,
        cached_tokens=meter.cached_tokens,
        reasoning_tokens=meter.reasoning_tokens,
    )
    return JSON(wire.completion(completion_id, created, prepared.config.name, choices, usage))


async def _stream(
    prepared: chat.Prepared,
    meter: Meter,
    bill: Bill,
    key: KeyRecord,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    model = prepared.config.name

    def frame(choices: list[dict[str, Any]]) -> bytes:
        value = wire.chunk(completion_id, created, model, choices)
        if include_usage:
            value["usage"] = None
        return sse_data(value)

    events = chat.run(prepared, meter, key.id)
    try:
        for index in range(prepared.n):
            yield frame([wire.chunk_choice(index, {"role": "assistant", "content": "", "refusal": None})])
        async for event in events:
            if isinstance(event, Delta):
                delta: dict[str, Any] = {}
                if event.reasoning:
                    delta["reasoning_content"] = event.reasoning
                if event.content:
                    delta["content"] = event.content
                yield frame([wire.chunk_choice(event.index, delta)])
            else:
                yield frame([wire.chunk_choice(event.index, {}, event.finish_reason)])
        await bill.settle()
        if include_usage:
            usage = wire.usage(
                meter.input_tokens,
                meter.output_tokens,
                cached_tokens=meter.cached_tokens,
                reasoning_tokens=meter.reasoning_tokens,
            )
            yield sse_data(wire.chunk(completion_id, created, model, [], usage))
        yield SSE_DONE
    except APIError as error:
        bill.abandon(disconnected=False, http_status=error.status)
        yield sse_data(error.body())
        yield SSE_DONE
    except BaseException:
        # Closed while waiting to send: stop the generation first, so the bill holds every token made.
        await events.aclose()
        bill.abandon(disconnected=True)
        raise
