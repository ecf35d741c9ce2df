"""Chat with llama.cpp from a GGUF file, through llama-cpp-python's low-level API.

The model's own chat template (from the GGUF) renders the prompt. Generation runs in slots of one context,
several requests decoded together (``llama_slots.Scheduler``), token by token so that every piece carries
its exact token count, a disconnect frees its slot within one step, and a slot's cached prompt prefix is
reused by the next request that starts the same way (reported as cached tokens).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from server.config import ModelConfig
from server.engines import llama_backends
from server.engines.base import (
    Capabilities,
    EngineFailureError,
    Event,
    LoadError,
    Message,
    Piece,
    Prompt,
    Sampling,
    ShouldStop,
    Template,
)
from server.engines.llama_slots import Scheduler
from server.errors import InvalidRequest
from server.gpu import default_slots, estimate, probe

log = logging.getLogger(__name__)


def _import_llama() -> Any:
    """llama-cpp-python, with the backends for this machine registered (see ``llama_backends``)."""
    try:
        import llama_cpp  # noqa: PLC0415  (optional at import time: the GUI must start without it)

        llama_backends.load()
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise LoadError(f"llama-cpp-python is not installed: {exc}") from exc
    except llama_backends.BackendError as exc:
        raise LoadError(str(exc)) from exc
    return llama_cpp


class LlamaChat:
    """A GGUF chat model and its slots. Everything but ``render`` runs on one thread (the engine's)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        path = Path(config.source)
        if not config.source or not path.is_file():
            raise LoadError(f"no GGUF file at {config.source or '(unset)'}")
        hardware = probe(with_torch=False)
        fit = estimate(config, hardware)
        if fit.memory_short:
            # Refused up front: llama.cpp would try anyway and exhaust the machine or be killed.
            raise LoadError(f"{path.name} will not fit: {fit.memory_short}")
        lib = _import_llama()
        self._lib = lib
        self.slots = default_slots(config, hardware)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = config.n_gpu_layers if config.n_gpu_layers >= 0 else 1_000_000
        self._model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise LoadError(_explain_load_failure(RuntimeError("llama.cpp could not load the model"), config))
        context = lib.llama_context_default_params()
        # Each slot has a region of the KV cache as long as one request's context.
        context.n_ctx = config.context_length * self.slots
        context.n_batch = context.n_ubatch = N_BATCH
        context.n_seq_max = self.slots
        context.kv_unified = False
        context.no_perf = True
        if config.threads:
            context.n_threads = context.n_threads_batch = config.threads
        self._ctx = lib.llama_init_from_model(self._model, context)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise LoadError(
                _explain_load_failure(RuntimeError("llama.cpp could not allocate the context"), config)
            )
        self._vocab = lib.llama_model_get_vocab(self._model)
        template = self._template_text(path)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: PLC0415

        try:
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(lib.llama_vocab_eos(self._vocab)),
                bos_token=self._token_text(lib.llama_vocab_bos(self._vocab)),
                add_generation_prompt=True,
            )
        except Exception as exc:  # a template Jinja cannot parse: the operator's to fix
            self.close()
            raise LoadError(f"the chat template of {config.name} does not parse: {exc}") from exc
        self._capabilities = self._probe_template()
        self._add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self._scheduler: Scheduler | None = Scheduler(
            lib, self._ctx, self._vocab, self.slots, N_BATCH, config.context_length
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = self._lib.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="ignore") if isinstance(text, bytes) else str(text or "")

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            tokens = (self._lib.llama_token * size)()
            count = self._lib.llama_tokenize(self._vocab, data, len(data), tokens, size, add_bos, True)
            if count >= 0:
                return list(tokens[:count])
            size = -count

    def _template_text(self, path: Path) -> str:
        """The chat template: the model table's file, else the GGUF's own."""
        if self.config.chat_template:
            try:
                return Path(self.config.chat_template).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self.close()
                raise LoadError(f"cannot read the chat template {self.config.chat_template}: {exc}") from exc
        template = self._lib.llama_model_chat_template(self._model, None)
        if not template:
            self.close()
            raise LoadError(f"{path.name} has no chat template in its metadata")
        return str(template.decode("utf-8"))

    def _probe_template(self) -> Capabilities:
        """What the template renders: tools it is given, and a switch for thinking."""
        probe = [Message(role="user", content="hello")]
        tool = {"type": "function", "function": {"name": "probe_tool_7f3a", "parameters": {"type": "object"}}}
        try:
            tools = "probe_tool_7f3a" in self._text(probe, Template(tools=(tool,)))
            switch = self._text(probe, Template(thinking=False)) != self._text(probe, Template(thinking=True))
        except Exception:  # a template that fails on these features has neither
            return Capabilities()
        return Capabilities(tools=tools, thinking_switch=switch)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def _text(self, messages: Sequence[Message], template: Template) -> str:
        extra: dict[str, Any] = {}
        if template.thinking is not None:
            extra["enable_thinking"] = template.thinking
        turns: Any = [_turn(m) for m in messages]
        tools: Any = list(template.tools) or None
        rendered = self._formatter(messages=turns, tools=tools, **extra)
        self._added_special = rendered.added_special
        return str(rendered.prompt)

    def render(self, messages: Sequence[Message], template: Template | None = None) -> Prompt:
        try:
            text = self._text(messages, template or Template())
        except Exception as exc:  # the template raised (raise_exception) or failed on these messages
            raise InvalidRequest(
                f"The model's chat template cannot render these messages: {exc}", param="messages"
            ) from exc
        tokens = self.tokenize(text, add_bos=self._add_bos and not self._added_special)
        return Prompt(tokens=tuple(tokens), text=text)

    def check_sampling(self, sampling: Sampling) -> None:
        """Refuse (InvalidRequest) what ``generate`` could not run: a JSON schema it cannot turn into a grammar."""
        self._grammar(sampling)

    def _grammar(self, sampling: Sampling) -> str | None:
        """The GBNF grammar (root rule ``root``) that constrains the output, if any, once llama.cpp has
        accepted it: a grammar it refuses (too many repetitions) would crash the engine in the sampler."""
        if sampling.grammar is None:
            return None
        trial = self._lib.llama_sampler_init_grammar(self._vocab, sampling.grammar.encode("utf-8"), b"root")
        if not trial:
            raise InvalidRequest("The output's constraints are too complex for this model's grammar engine.")
        self._lib.llama_sampler_free(trial)
        return sampling.grammar

    def _grammar_rules(self, sampling: Sampling) -> tuple[str, str] | None:
        grammar = self._grammar(sampling)
        return None if grammar is None else (grammar, "root")

    # -- generation, several requests together (the engine process's one thread) ---------------------
    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise EngineFailureError("the model was closed")
        return self._scheduler

    @property
    def busy(self) -> bool:
        return self.scheduler.busy

    def start(self, request_id: str, prompt: Prompt, sampling: Sampling) -> None:
        self.scheduler.start(request_id, prompt, sampling, self._grammar_rules(sampling))

    def cancel(self, request_id: str) -> None:
        self.scheduler.cancel(request_id)

    def step(self) -> list[Event]:
        return self.scheduler.step()

    def generate(self, prompt: Prompt, sampling: Sampling, should_stop: ShouldStop) -> Iterator[Piece]:
        """One request on its own (the doctor's check): start it and step until it ends."""
        self.start("one", prompt, sampling)
        while True:
            if should_stop():
                self.cancel("one")
            for _, event in self.step():
                if isinstance(event, EngineFailureError):
                    raise event
                yield event
                if event.finish_reason is not None:
                    return

    def close(self) -> None:
        if getattr(self, "_scheduler", None) is not None:
            self.scheduler.close()
            self._scheduler = None
        if getattr(self, "_ctx", None):
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None


N_BATCH = 512
"""Tokens per decode step: every generating request's next token, then prompt tokens up to this many."""


def _turn(message: Message) -> dict[str, Any]:
    """A message as chat templates expect it (OpenAI's shape, arguments parsed where they are JSON)."""
    turn: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        turn["name"] = message.name
    if message.tool_calls:
        turn["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        turn["tool_call_id"] = message.tool_call_id
    return turn


def _arguments(text: str) -> Any:
    """Templates render arguments given as an object with ``tojson``; as text they go in as written."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _explain_load_failure(exc: BaseException, config: ModelConfig) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "memory" in lowered or "alloc" in lowered or "oom" in lowered:
        return (
            f"out of memory loading {Path(config.source).name}: try fewer GPU layers "
            f"(now {config.n_gpu_layers}) or a smaller context (now {config.context_length}) — {text}"
        )
    return f"cannot load {Path(config.source).name}: {text}"
