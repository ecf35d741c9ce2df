"""Chat through an upstream engine: the same prepared request and the same events as a local model.

Input tokens are not known until the upstream reports them, so a request is admitted on an upper bound
(the prompt's UTF-8 bytes); the exact counts come from the usage the upstream is always asked for. A
stream cut short before that usage arrives is billed on what was received and marked estimated.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

from server.engines.base import Message, Sampling
from server.engines.upstream import UpstreamClient, UpstreamFailure, UpstreamModel, sse_json
from server.errors import APIError, UpstreamError
from server.generation.events import ChoiceEnd, Delta, Event, Meter


@dataclass(frozen=True)
class Remote:
    """What an upstream request needs beyond the sampling settings."""

    model: UpstreamModel
    client: UpstreamClient
    messages: tuple[Message, ...]
    estimated_input: int
    stream: bool = True
    """Whether the client streams; a client that does not is served by one non-streamed upstream call."""
    json_schema: dict[str, Any] | None = None
    """The answer's JSON schema, relayed as ``response_format`` (``{}``: any JSON object)."""


def estimate_input(messages: list[Message]) -> int:
    """An upper bound on the prompt's tokens: its UTF-8 bytes plus the template's markers."""
    return sum(len(m.content.encode("utf-8")) + 8 for m in messages) + 8


def body(remote: Remote, sampling: Sampling, n: int, stream: bool = True) -> dict[str, Any]:
    value: dict[str, Any] = {
        "model": remote.model.remote_name,
        "messages": [
            {
                "role": m.role if m.role != "tool" else "user",
                "content": m.content,
                **({"name": m.name} if m.name else {}),
            }
            for m in remote.messages
        ],
        "stream": stream,
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if stream:
        value["stream_options"] = {"include_usage": True}
    if n != 1:
        value["n"] = n
    if sampling.stop:
        value["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        value["seed"] = sampling.seed
    if sampling.presence_penalty:
        value["presence_penalty"] = sampling.presence_penalty
    if sampling.frequency_penalty:
        value["frequency_penalty"] = sampling.frequency_penalty
    if sampling.logit_bias:
        value["logit_bias"] = {str(k): v for k, v in sampling.logit_bias.items()}
    if remote.json_schema is not None:
        value["response_format"] = (
            {"type": "json_object"}
            if not remote.json_schema
            else {"type": "json_schema", "json_schema": {"name": "output", "schema": remote.json_schema}}
        )
    if sampling.top_k:
        value["top_k"] = sampling.top_k  # vLLM and llama.cpp's server take it beside OpenAI's parameters
    return value


def as_api_error(failure: UpstreamFailure) -> APIError:
    """An upstream failure as the client should see it: its own 4xx as sent, anything else as 502."""
    if failure.body is not None and 400 <= failure.status < 500:
        error = failure.body.get("error") or {}
        relayed = UpstreamError(
            str(error.get("message") or failure.message), param=error.get("param"), code=error.get("code")
        )
        relayed.status = failure.status
        relayed.type = str(error.get("type") or "invalid_request_error")
        return relayed
    return UpstreamError(f"The upstream engine failed: {failure.message}")


def _meter_usage(meter: Meter, usage: dict[str, Any]) -> None:
    meter.input_tokens = int(usage.get("prompt_tokens") or 0)
    meter.output_tokens = int(usage["completion_tokens"])
    meter.cached_tokens = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    meter.reasoning_tokens = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    meter.exact = True


async def _run_whole(remote: Remote, sampling: Sampling, n: int, meter: Meter) -> AsyncGenerator[Event, None]:
    """One non-streamed upstream call, for a client that does not stream."""
    try:
        result = await remote.client.post_json(
            remote.model, "/chat/completions", body(remote, sampling, n, False)
        )
        choices = sorted(result["choices"], key=lambda c: int(c.get("index") or 0))
        usage = result.get("usage")
    except UpstreamFailure as failure:
        raise as_api_error(failure) from failure
    except (KeyError, TypeError, ValueError) as exc:
        raise UpstreamError(f"The upstream engine sent a malformed completion: {exc}") from exc
    meter.first_token_at = time.monotonic()
    ends = []
    for choice in choices[:n]:
        index = int(choice.get("index") or 0)
        message = choice.get("message") or {}
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        if content or reasoning:
            yield Delta(index, content=content, reasoning=reasoning)
        ends.append(ChoiceEnd(index, "length" if choice.get("finish_reason") == "length" else "stop"))
        if not isinstance(usage, dict):
            meter.output_tokens += max(1, len((content + reasoning).encode("utf-8")) // 4)
    if isinstance(usage, dict) and "completion_tokens" in usage:
        _meter_usage(meter, usage)
    for end in ends:
        yield end


async def run(remote: Remote, sampling: Sampling, n: int, meter: Meter) -> AsyncGenerator[Event, None]:
    """Relay the upstream's stream as events, metering as chunks arrive and exactly once usage comes."""
    meter.input_tokens = remote.estimated_input
    if not remote.stream:
        meter.exact = False
        async for event in _run_whole(remote, sampling, n, meter):
            yield event
        return
    meter.exact = False
    finishes: dict[int, Literal["stop", "length"]] = {}
    try:
        async with remote.client.open(remote.model, "/chat/completions", body(remote, sampling, n)) as (
            _,
            response,
        ):
            async for chunk in sse_json(response):
                usage = chunk.get("usage")
                if isinstance(usage, dict) and "completion_tokens" in usage:
                    meter.input_tokens = int(usage.get("prompt_tokens") or 0)
                    meter.output_tokens = int(usage["completion_tokens"])
                    meter.cached_tokens = int(
                        (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                    )
                    details = usage.get("completion_tokens_details") or {}
                    meter.reasoning_tokens = int(details.get("reasoning_tokens") or 0)
                    meter.exact = True
                for choice in chunk.get("choices") or []:
                    index = int(choice.get("index") or 0)
                    if not 0 <= index < n:
                        raise UpstreamFailure(f"the upstream sent a choice index {index} out of range")
                    delta = choice.get("delta") or {}
                    content = delta.get("content") or ""
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
                    if content or reasoning:
                        if meter.first_token_at is None:
                            meter.first_token_at = time.monotonic()
                        if not meter.exact:
                            meter.output_tokens += 1  # one token per chunk until the usage says
                        yield Delta(index, content=content, reasoning=reasoning)
                    if choice.get("finish_reason"):
                        finishes[index] = "length" if choice["finish_reason"] == "length" else "stop"
    except UpstreamFailure as failure:
        raise as_api_error(failure) from failure
    for index in range(n):
        yield ChoiceEnd(index, finishes.get(index, "stop"))
