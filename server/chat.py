"""Chat generation as the API uses it: messages in, a metered stream of deltas out.

Both ``/v1/chat/completions`` and ``/v1/responses`` go through :func:`prepare` and :func:`run`; only
the HTTP layer knows how the events are framed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from server.config import ModelConfig
from server.engines.base import (
    ChatBackend,
    EngineCrashedError,
    EngineFailureError,
    Message,
    Piece,
    Prompt,
    Sampling,
)
from server.engines.manager import ModelManager
from server.engines.upstream import UpstreamClient, UpstreamModel
from server.engines.worker import ModelWorker
from server.errors import EngineCrashed, EngineFailure, InvalidRequest
from server.events import ChoiceEnd, Delta, Event, Meter

__all__ = ["ChoiceEnd", "Delta", "Event", "Meter", "Prepared", "collect", "prepare", "run", "to_messages"]
from server.reasoning import ThinkSplitter
from server.upstream_chat import Remote, estimate_input
from server.upstream_chat import run as run_remote

ROLES: dict[str, Literal["system", "user", "assistant", "tool"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


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

    @property
    def input_tokens(self) -> int:
        """Prompt tokens, or their upper bound for an upstream (reserved before its usage is known)."""
        return self.remote.estimated_input if self.remote is not None else len(self.prompt)

    @property
    def worst_case_output(self) -> int:
        return self.sampling.max_tokens * self.n


def to_messages(turns: Sequence[tuple[str, str, str | None]]) -> list[Message]:
    """``(role, text, name)`` triples as engine messages, with OpenAI's roles mapped to the template's."""
    return [Message(role=ROLES[role], content=text, name=name) for role, text, name in turns]


async def prepare(
    models: ModelManager,
    model: str,
    messages: list[Message],
    *,
    max_tokens: int | None,
    max_tokens_param: str,
    messages_param: str = "messages",
    json_schema_param: str = "response_format",
    temperature: float | None,
    top_p: float | None,
    stop: tuple[str, ...] = (),
    seed: int | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    logit_bias: dict[int, float] | None = None,
    json_schema: dict[str, Any] | None = None,
    n: int = 1,
    upstream: UpstreamClient | None = None,
    stream: bool = True,
) -> Prepared:
    """Find the model, render the prompt off the event loop, and check it fits the context."""
    backend, worker, config = models.get(model, "chat")

    def sampling_for(room: int) -> Sampling:
        # A request that sets no maximum gets the model's default one, within the room left.
        default = min(room, config.default_max_tokens or room)
        return Sampling(
            max_tokens=max_tokens if max_tokens is not None else default,
            temperature=1.0 if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            stop=stop,
            seed=seed,
            presence_penalty=presence_penalty or 0.0,
            frequency_penalty=frequency_penalty or 0.0,
            logit_bias=logit_bias or {},
            json_schema=json_schema,
        )

    if isinstance(backend, UpstreamModel):
        if upstream is None:
            raise EngineFailure("upstream engines are not available in this server")
        estimate = estimate_input(messages)
        sampling = sampling_for(max(16, config.context_length - estimate))
        remote = Remote(backend, upstream, tuple(messages), estimate, stream)
        return Prepared(config, None, None, Prompt(tokens=()), sampling, n, remote)
    chat: ChatBackend = backend  # type: ignore[assignment]
    assert worker is not None
    worker.ensure_room()
    try:
        prompt = await asyncio.to_thread(chat.render, messages)
    except EngineCrashedError as exc:
        raise EngineCrashed(exc.model, exc.reason, down=exc.down) from exc
    context = chat.context_length
    room = context - len(prompt)
    if room < 1:
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens. However, your messages resulted in "
            f"{len(prompt)} tokens. Please reduce the length of the messages.",
            param=messages_param,
            code="context_length_exceeded",
        )
    if max_tokens is not None and max_tokens > room:
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the messages, {max_tokens} in the completion). "
            f"Please reduce the length of the messages or completion.",
            param=max_tokens_param,
            code="context_length_exceeded",
        )
    sampling = sampling_for(room)
    if json_schema is not None:  # an engine refuses what it cannot run before any response starts
        try:
            await asyncio.to_thread(chat.check_sampling, sampling)
        except InvalidRequest as exc:
            exc.param = json_schema_param
            raise
        except EngineCrashedError as exc:
            raise EngineCrashed(exc.model, exc.reason, down=exc.down) from exc
    return Prepared(config=config, backend=chat, worker=worker, prompt=prompt, sampling=sampling, n=n)


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
        splitter = ThinkSplitter() if prepared.config.reasoning else None
        finish: Literal["stop", "length"] = "length"
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
                if splitter is None:
                    if piece.text:
                        yield Delta(index, content=piece.text)
                else:
                    before = splitter.mode
                    parts = splitter.feed(piece.text)
                    if piece.finish_reason is not None:
                        parts += splitter.flush()
                    if (
                        before == "reasoning"
                        or splitter.mode == "reasoning"
                        or any(c == "reasoning" for c, _ in parts)
                    ):
                        meter.reasoning_tokens += piece.tokens
                    for channel, text in parts:
                        yield (
                            Delta(index, reasoning=text)
                            if channel == "reasoning"
                            else Delta(index, content=text)
                        )
                if piece.finish_reason is not None:
                    finish = piece.finish_reason
        except EngineCrashedError as exc:
            raise EngineCrashed(exc.model, exc.reason, down=exc.down) from exc
        except EngineFailureError as exc:
            raise EngineFailure(f"The model failed while generating: {exc}") from exc
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        yield ChoiceEnd(index, finish)


@dataclass
class Collected:
    """A finished generation gathered into whole texts, for non-streamed responses."""

    contents: list[str]
    reasonings: list[str]
    finish_reasons: list[str]


async def collect(events: AsyncGenerator[Event, None], n: int) -> Collected:
    contents = [""] * n
    reasonings = [""] * n
    finishes = ["stop"] * n
    content_parts: list[list[str]] = [[] for _ in range(n)]
    reasoning_parts: list[list[str]] = [[] for _ in range(n)]
    try:
        async for event in events:
            if isinstance(event, Delta):
                if event.content:
                    content_parts[event.index].append(event.content)
                if event.reasoning:
                    reasoning_parts[event.index].append(event.reasoning)
            else:
                finishes[event.index] = event.finish_reason
    finally:
        await events.aclose()  # cancelled: stop generation and meter what was generated
    for i in range(n):
        contents[i] = "".join(content_parts[i])
        reasonings[i] = "".join(reasoning_parts[i])
    return Collected(contents, reasonings, finishes)
