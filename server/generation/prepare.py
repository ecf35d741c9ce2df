"""What a client asked for (``Ask``) made ready to run: the model found, its template's capabilities
checked, thinking decided, the prompt rendered and bounded by the context, the sampling and the grammar
the answer must follow."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from server.config import ModelConfig, SamplingPreset
from server.engines.base import (
    Capabilities,
    ChatBackend,
    EngineCrashedError,
    Message,
    Prompt,
    Sampling,
    Template,
    ToolCall,
)
from server.engines.manager import ModelManager
from server.engines.upstream import UpstreamClient, UpstreamModel
from server.engines.worker import ModelWorker
from server.errors import EngineCrashed, EngineFailure, InvalidRequest
from server.generation.remote import Remote, estimate_input
from server.generation.tool_calls import Choice, SchemaError, Tool, output_grammar

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
