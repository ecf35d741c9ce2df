"""A prepared request run: each choice generated on the model's worker, its text split into reasoning,
answer and tool calls as it streams, every token metered; ``collect`` gathers a whole answer."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from server.engines.base import (
    EngineCrashedError,
    EngineFailureError,
    Piece,
    Sampling,
    TokenLogprob,
    ToolCall,
)
from server.errors import EngineCrashed, EngineFailure
from server.generation.events import ChoiceEnd, Delta, Event, Meter, ToolCallDelta
from server.generation.prepare import Prepared
from server.generation.remote import run as run_remote
from server.generation.thinking import ThinkSplitter
from server.generation.tool_calls import ToolCallSplitter


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
