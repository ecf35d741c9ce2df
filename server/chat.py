"""Chat generation as the API uses it: messages in, a metered stream of deltas and tool calls out.

Both ``/v1/chat/completions`` and ``/v1/responses`` describe what the client asked for as an ``Ask`` and go
through :func:`prepare` and :func:`run`; only the HTTP layer knows how the events are framed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from server.config import ModelConfig, SamplingPreset
from server.engines.base import (
    Capabilities,
    ChatBackend,
    EngineCrashedError,
    EngineFailureError,
    Message,
    Piece,
    Prompt,
    Sampling,
    Template,
    TokenLogprob,
    ToolCall,
)
from server.engines.manager import ModelManager
from server.engines.upstream import UpstreamClient, UpstreamModel
from server.engines.worker import ModelWorker
from server.errors import EngineCrashed, EngineFailure, InvalidRequest
from server.events import ChoiceEnd, Delta, Event, Meter, ToolCallDelta
from server.reasoning import ThinkSplitter
from server.tool_calls import Choice, SchemaError, Tool, ToolCallSplitter, output_grammar
from server.upstream_chat import Remote, estimate_input
from server.upstream_chat import run as run_remote

__all__ = [
    "Ask",
    "ChoiceEnd",
    "Delta",
    "Event",
    "Meter",
    "Prepared",
    "ToolCallDelta",
    "collect",
    "prepare",
    "run",
]

ROLES: dict[str, Literal["system", "user", "assistant", "tool"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
NO_THINKING = frozenset({"none", "minimal"})
"""Reasoning efforts that switch a model's thinking off."""


def message(
    role: str,
    content: str,
    *,
    name: str | None = None,
    tool_calls: tuple[ToolCall, ...] = (),
    tool_call_id: str | None = None,
) -> Message:
    """A turn as the engine takes it, with OpenAI's roles mapped to the template's."""
    return Message(
        role=ROLES[role], content=content, name=name, tool_calls=tool_calls, tool_call_id=tool_call_id
    )


@dataclass(frozen=True)
class Ask:
    """What a client asked for, in the terms of generation rather than of one endpoint's wire format."""

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    """Constrain the answer to this schema; ``{}`` is any JSON object; None leaves it free."""
    tools: tuple[Tool, ...] = ()
    tool_choice: Choice = "auto"
    parallel_tool_calls: bool = True
    effort: str | None = None
    """The reasoning effort asked for: ``none`` and ``minimal`` switch a reasoning model's thinking off."""
    logprobs: int | None = None
    n: int = 1
    stream: bool = True
    params: dict[str, str] = field(default_factory=dict)
    """Where each concern sits in this endpoint's request, for error messages: ``messages``,
    ``max_tokens``, ``format``, ``tools``, ``tool_choice``."""

    def param(self, concern: str) -> str:
        defaults = {"messages": "messages", "max_tokens": "max_tokens", "format": "response_format"}
        return self.params.get(concern, defaults.get(concern, concern))


@dataclass(frozen=True)
class Prepared:
    """A validated chat request, its rendered prompt, and the model to run it on."""

    config: ModelConfig
    backend: ChatBackend | None
    worker: ModelWorker | None
    prompt: Prompt
    sampling: Sampling
    n: int
    remote: Remote | None = None
    """Set when an upstream engine serves the model."""
    tools: bool = False
    """The answer may hold tool calls (they are taken out of its text)."""
    thinking: bool = False
    """The answer may start with a thought (returned as reasoning)."""

    @property
    def input_tokens(self) -> int:
        """Prompt tokens, or their upper bound for an upstream (reserved before its usage is known)."""
        return self.remote.estimated_input if self.remote is not None else len(self.prompt)

    @property
    def worst_case_output(self) -> int:
        return self.sampling.max_tokens * self.n


def thinking(config: ModelConfig, capabilities: Capabilities, effort: str | None) -> tuple[bool, bool | None]:
    """Whether the model will think, and the template's ``enable_thinking`` (None: leave it unset)."""
    if not config.reasoning:
        return False, None
    wanted = effort not in NO_THINKING if effort is not None else config.thinking_default
    if not capabilities.thinking_switch:
        return True, None  # it thinks as its template has it
    return wanted, wanted


def _preset(config: ModelConfig, ask: Ask, thinks: bool) -> SamplingPreset | None:
    if ask.temperature is not None or ask.top_p is not None:
        return None  # the client chose: nothing of the preset applies
    return config.sampling_thinking if thinks else config.sampling_direct


def _sampling(config: ModelConfig, ask: Ask, thinks: bool, room: int, grammar: str | None) -> Sampling:
    preset = _preset(config, ask, thinks)
    # A request that sets no maximum gets the model's default one, within the room left.
    default = min(room, config.default_max_tokens or room)
    return Sampling(
        max_tokens=ask.max_tokens if ask.max_tokens is not None else default,
        temperature=preset.temperature if preset else 1.0 if ask.temperature is None else ask.temperature,
        top_p=preset.top_p if preset else 1.0 if ask.top_p is None else ask.top_p,
        top_k=preset.top_k if preset else 0,
        min_p=preset.min_p if preset else 0.0,
        stop=ask.stop,
        seed=ask.seed,
        presence_penalty=ask.presence_penalty or 0.0,
        frequency_penalty=ask.frequency_penalty or 0.0,
        logit_bias=ask.logit_bias,
        grammar=grammar,
        logprobs=ask.logprobs,
    )


def _tools_in_use(config: ModelConfig, capabilities: Capabilities, ask: Ask) -> tuple[Tool, ...]:
    """The tools the model is shown, after checking it can be shown them and the choice names one."""
    if not ask.tools or ask.tool_choice == "none":
        return ()
    if not capabilities.tools:
        raise InvalidRequest(
            f"The model '{config.name}' cannot call tools: its chat template does not render them.",
            param=ask.param("tools"),
        )
    if ask.tool_choice not in ("auto", "required") and ask.tool_choice not in {t.name for t in ask.tools}:
        raise InvalidRequest(
            f"tool_choice names the function '{ask.tool_choice}', which is not among the tools.",
            param=ask.param("tool_choice"),
        )
    return ask.tools


def _grammar(ask: Ask, tools: tuple[Tool, ...], thinks: bool) -> str | None:
    required = bool(tools) and ask.tool_choice != "auto"
    callable_ = tuple(
        t for t in tools if ask.tool_choice in ("auto", "required") or t.name == ask.tool_choice
    )
    try:
        return output_grammar(
            schema=ask.json_schema or None if ask.json_schema is not None else False,
            tools=callable_,
            require_call=required,
            parallel=ask.parallel_tool_calls and ask.tool_choice in ("auto", "required"),
            thinking=thinks,
        )
    except SchemaError as exc:
        concern = "tools" if tools and (required or ask.json_schema is None) else "format"
        what = "a tool's parameters" if concern == "tools" else "the JSON schema"
        raise InvalidRequest(f"{what} cannot be used: {str(exc)[:300]}", param=ask.param(concern)) from exc


async def prepare(
    models: ModelManager, model: str, ask: Ask, *, upstream: UpstreamClient | None = None
) -> Prepared:
    """Find the model, render the prompt off the event loop, and check it fits the context."""
    backend, worker, config = models.get(model, "chat")
    if isinstance(backend, UpstreamModel):
        if upstream is None:
            raise EngineFailure("upstream engines are not available in this server")
        if ask.tools and ask.tool_choice != "none":
            raise InvalidRequest(
                f"The model '{config.name}' is served by an upstream engine, which this server does not relay "
                "tool calls to.",
                param=ask.param("tools"),
            )
        estimate = estimate_input(list(ask.messages))
        sampling = _sampling(config, ask, False, max(16, config.context_length - estimate), None)
        remote = Remote(backend, upstream, ask.messages, estimate, ask.stream, ask.json_schema)
        return Prepared(config, None, None, Prompt(tokens=()), sampling, ask.n, remote)
    chat: ChatBackend = backend  # type: ignore[assignment]
    assert worker is not None
    worker.ensure_room()
    capabilities = chat.capabilities
    tools = _tools_in_use(config, capabilities, ask)
    thinks, switch = thinking(config, capabilities, ask.effort)
    template = Template(tools=tuple(t.openai() for t in tools), thinking=switch)
    try:
        prompt = await asyncio.to_thread(chat.render, list(ask.messages), template)
    except EngineCrashedError as exc:
        raise EngineCrashed(exc.model, exc.reason, down=exc.down) from exc
    context = chat.context_length
    room = context - len(prompt)
    if room < 1:
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens. However, your messages resulted in "
            f"{len(prompt)} tokens. Please reduce the length of the messages.",
            param=ask.param("messages"),
            code="context_length_exceeded",
        )
    if ask.max_tokens is not None and ask.max_tokens > room:
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{len(prompt) + ask.max_tokens} tokens ({len(prompt)} in the messages, {ask.max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
            param=ask.param("max_tokens"),
            code="context_length_exceeded",
        )
    grammar = _grammar(ask, tools, thinks and config.reasoning)
    sampling = _sampling(config, ask, thinks, room, grammar)
    if grammar is not None:  # an engine refuses what it cannot run before any response starts
        try:
            await asyncio.to_thread(chat.check_sampling, sampling)
        except InvalidRequest as exc:
            exc.param = ask.param("tools" if tools and ask.json_schema is None else "format")
            raise
        except EngineCrashedError as exc:
            raise EngineCrashed(exc.model, exc.reason, down=exc.down) from exc
    return Prepared(
        config, chat, worker, prompt, sampling, ask.n, tools=bool(tools), thinking=config.reasoning
    )


class _Channels:
    """Splits one choice's generated text into reasoning, answer text and tool calls, as it streams."""

    def __init__(self, index: int, prepared: Prepared) -> None:
        self.index = index
        self.think = ThinkSplitter() if prepared.thinking else None
        self.calls = ToolCallSplitter() if prepared.tools else None
        self.called = 0

    def feed(self, piece: Piece, meter: Meter) -> list[Event]:
        final = piece.finish_reason is not None
        parts: list[tuple[str, str]]
        if self.think is None:
            parts = [("content", piece.text)] if piece.text else []
        else:
            before = self.think.mode
            parts = [*self.think.feed(piece.text), *(self.think.flush() if final else [])]
            if (
                before == "reasoning"
                or self.think.mode == "reasoning"
                or any(c == "reasoning" for c, _ in parts)
            ):
                meter.reasoning_tokens += piece.tokens
        events: list[Event] = []
        for channel, text in parts:
            if channel == "reasoning":
                events.append(Delta(self.index, reasoning=text))
            else:
                events += self._answer(text)
        if final and self.calls is not None:
            events += self._answer_parts(self.calls.flush(cut=piece.finish_reason == "length"))
        return events

    def _answer(self, text: str) -> list[Event]:
        if self.calls is None:
            return [Delta(self.index, content=text)] if text else []
        return self._answer_parts(self.calls.feed(text))

    def _answer_parts(self, parts: list[Any]) -> list[Event]:
        events: list[Event] = []
        for kind, value in parts:
            if kind == "call":
                events.append(ToolCallDelta(self.index, self.called, value))
                self.called += 1
            elif value:
                events.append(Delta(self.index, content=value))
        return events


async def run(prepared: Prepared, meter: Meter, fairness_key: str) -> AsyncGenerator[Event, None]:
    """Generate each of the ``n`` choices in turn, metering every token as it is generated.

    Closing the generator early stops generation; the tokens generated but never delivered are
    metered too, once the engine has stopped.
    """
    if prepared.remote is not None:
        async for event in run_remote(prepared.remote, prepared.sampling, prepared.n, meter):
            yield event
        return
    assert prepared.backend is not None and prepared.worker is not None
    backend, worker = prepared.backend, prepared.worker
    meter.input_tokens = len(prepared.prompt)

    def undelivered(piece: Piece) -> None:
        meter.output_tokens += piece.tokens

    for index in range(prepared.n):
        channels = _Channels(index, prepared)
        finish: Literal["stop", "length", "tool_calls"] = "length"
        sampling = prepared.sampling
        if index and sampling.seed is not None:
            # Each choice is its own sample: the same seed would make every choice the same text.
            sampling = replace(sampling, seed=sampling.seed + index)

        def work(should_stop: Any, sampling: Sampling = sampling) -> Any:
            return backend.generate(prepared.prompt, sampling, should_stop)

        stream: AsyncIterator[Piece] = worker.run(fairness_key, work, undelivered)
        try:
            async for piece in stream:
                if meter.first_token_at is None and piece.tokens:
                    meter.first_token_at = time.monotonic()
                if index == 0:
                    meter.cached_tokens += piece.cached_tokens
                meter.output_tokens += piece.tokens
                if piece.logprobs:
                    yield Delta(index, logprobs=piece.logprobs)
                for event in channels.feed(piece, meter):
                    yield event
                if piece.finish_reason is not None:
                    finish = piece.finish_reason
        except EngineCrashedError as exc:
            raise EngineCrashed(exc.model, exc.reason, down=exc.down) from exc
        except EngineFailureError as exc:
            raise EngineFailure(f"The model failed while generating: {exc}") from exc
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        yield ChoiceEnd(index, "tool_calls" if channels.called and finish == "stop" else finish)


@dataclass
class Collected:
    """A finished generation gathered into whole texts, for non-streamed responses."""

    contents: list[str]
    reasonings: list[str]
    finish_reasons: list[str]
    tool_calls: list[list[ToolCall]]
    logprobs: list[list[TokenLogprob]]


async def collect(events: AsyncGenerator[Event, None], n: int) -> Collected:
    finishes = ["stop"] * n
    content_parts: list[list[str]] = [[] for _ in range(n)]
    reasoning_parts: list[list[str]] = [[] for _ in range(n)]
    calls: list[list[ToolCall]] = [[] for _ in range(n)]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
    try:
        async for event in events:
            if isinstance(event, Delta):
                if event.content:
                    content_parts[event.index].append(event.content)
                if event.reasoning:
                    reasoning_parts[event.index].append(event.reasoning)
                logprobs[event.index] += event.logprobs
            elif isinstance(event, ToolCallDelta):
                calls[event.index].append(event.call)
            else:
                finishes[event.index] = event.finish_reason
    finally:
        await events.aclose()  # cancelled: stop generation and meter what was generated
    return Collected(
        ["".join(parts) for parts in content_parts],
        ["".join(parts) for parts in reasoning_parts],
        finishes,
        calls,
        logprobs,
    )
