"""``POST /v1/chat/completions``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.responses import Response

from server import generation
from server.access.keys import KeyRecord
from server.api.auth import Key
from server.api.billing import Bill, Intake
from server.api.body import read_json
from server.api.errors import JSON
from server.api.models import model_loaded
from server.api.request import services
from server.api.streaming import EventStream, until_disconnected
from server.engines.base import Message, ToolCall
from server.errors import APIError, InvalidRequest, ModelNotFound
from server.generation.events import Delta, Meter, ToolCallDelta
from server.generation.tool_calls import Tool
from server.protocol import chat as wire
from server.protocol.wire import SSE_DONE, sse_data


def _refuse_unsupported(req: wire.ChatCompletionRequest) -> None:
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true.", param="top_logprobs")
    if req.functions or req.function_call is not None:
        raise InvalidRequest(
            "functions and function_call are the deprecated form of tools: send tools and tool_choice.",
            param="functions" if req.functions else "function_call",
        )
    if req.tool_choice is not None and not req.tools and req.tool_choice != "none":
        raise InvalidRequest("tool_choice needs tools to choose from.", param="tool_choice")
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


def _messages(req: wire.ChatCompletionRequest) -> tuple[Message, ...]:
    return tuple(
        generation.message(
            m.role,
            m.text,
            name=m.name,
            tool_calls=tuple(
                ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                for c in m.tool_calls or ()
            ),
            tool_call_id=m.tool_call_id,
        )
        for m in req.messages
    )


def _tool_choice(req: wire.ChatCompletionRequest) -> str:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.function.name


def ask(req: wire.ChatCompletionRequest) -> generation.Ask:
    """The request as generation sees it."""
    _refuse_unsupported(req)
    max_tokens, max_param = _max_tokens(req)
    return generation.Ask(
        messages=_messages(req),
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=(req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ()),
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias={int(k): v for k, v in (req.logit_bias or {}).items()},
        json_schema=_json_schema(req),
        tools=tuple(
            Tool(t.function.name, t.function.description or "", t.function.parameters or {"type": "object"})
            for t in req.tools or ()
        ),
        tool_choice=_tool_choice(req),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        effort=req.reasoning_effort,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        n=req.n or 1,
        stream=bool(req.stream),
        params={"max_tokens": max_param},
    )


async def prepare_chat(
    request: Request, req: wire.ChatCompletionRequest, key: KeyRecord
) -> generation.Prepared:
    asked = ask(req)
    if not key.may_use(req.model):
        raise ModelNotFound(req.model)
    await model_loaded(request, req.model)
    return await generation.prepare(
        services(request).models, req.model, asked, upstream=services(request).upstream
    )


def _logprob_entries(entries: Any) -> list[dict[str, Any]]:
    return [
        {
            **wire.token_logprob(entry.token, entry.bytes, entry.logprob),
            "top_logprobs": [wire.token_logprob(t, b, lp) for t, b, lp in entry.top],
        }
        for entry in entries
    ]


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
            body,
            headers={"x-request-id": request_id},
            on_close=lambda: bill.abandon(disconnected=True),
            error_frame=lambda error: sse_data(error.body()) + SSE_DONE,
        )
    try:
        collected = await until_disconnected(
            request, generation.collect(generation.run(prepared, meter, key.id), prepared.n)
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
                collected.contents[i],
                collected.reasonings[i] if prepared.config.reasoning else None,
                [wire.tool_call(c.id, c.name, c.arguments) for c in collected.tool_calls[i]],
            ),
            collected.finish_reasons[i],
            wire.logprobs(_logprob_entries(collected.logprobs[i]))
            if prepared.sampling.logprobs is not None
            else None,
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
    prepared: generation.Prepared,
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

    events = generation.run(prepared, meter, key.id)
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
                logprobs = wire.logprobs(_logprob_entries(event.logprobs)) if event.logprobs else None
                yield frame([wire.chunk_choice(event.index, delta, logprobs_=logprobs)])
            elif isinstance(event, ToolCallDelta):
                call = wire.tool_call_delta(
                    event.call_index, event.call.id, event.call.name, event.call.arguments
                )
                yield frame([wire.chunk_choice(event.index, {"tool_calls": [call]})])
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
