"""The seam between the server and whatever runs a model.

Backends are synchronous and run on their model's own worker thread (``worker.ModelWorker``), never on
an event loop. A chat backend turns plain messages into prompt tokens and yields generated text with
exact token counts; an embedding backend turns inputs into vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from server.config import InputType, ModelConfig

if TYPE_CHECKING:  # numpy is imported only where an embedding model runs
    import numpy as np
    from numpy.typing import NDArray

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ToolCall:
    """A call of one of the client's functions, as a model made it (or as the client replays it)."""

    id: str
    name: str
    arguments: str
    """The arguments as JSON text, as the model wrote them."""


@dataclass(frozen=True)
class Message:
    """One text-only conversation turn, as the chat template sees it."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    """For an assistant turn: the functions it called."""
    tool_call_id: str | None = None
    """For a tool turn: the call it answers."""


@dataclass(frozen=True)
class Template:
    """What the chat template is given besides the messages."""

    tools: tuple[dict[str, Any], ...] = ()
    """The functions the model may call, as OpenAI's tool objects (``{"type": "function", "function": …}``)."""
    thinking: bool | None = None
    """``enable_thinking`` for templates with that switch (Qwen3); None leaves the template's default."""


@dataclass(frozen=True)
class Capabilities:
    """What a chat model's template can render."""

    tools: bool = False
    """It renders the ``tools`` it is given (a template that ignores them cannot be asked to call any)."""
    thinking_switch: bool = False
    """It renders differently with ``enable_thinking`` off."""


@dataclass(frozen=True)
class Sampling:
    """How to generate, already validated and bounded by the protocol layer."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """Sample from the ``top_k`` likeliest tokens only (0: all)."""
    min_p: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None
    """A GBNF grammar (root rule ``root``) the output must follow: a JSON schema's, tool calls'."""
    logprobs: int | None = None
    """Report each generated token's log probability and this many alternatives (None: none)."""


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: its tokens, and how many of them the engine already has cached."""

    tokens: tuple[int, ...]
    text: str = ""

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log probability, and its likeliest alternatives at that position."""

    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[tuple[str, tuple[int, ...], float], ...] = ()


@dataclass(frozen=True)
class Piece:
    """Generated text and the exact number of tokens it took; the last piece carries the finish reason."""

    text: str
    tokens: int
    finish_reason: FinishReason | None = None
    cached_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    """One entry per token the piece took, when the request asked for them."""


ShouldStop = Callable[[], bool]


class ChatBackend(Protocol):
    """A loaded chat model. Not thread-safe: only its worker thread calls ``generate``."""

    config: ModelConfig

    @property
    def context_length(self) -> int: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def render(self, messages: Sequence[Message], template: Template | None = None) -> Prompt:
        """Apply the model's chat template and tokenize; safe to call from any thread."""
        ...

    def check_sampling(self, sampling: Sampling) -> None:
        """Raise ``InvalidRequest`` for settings this engine cannot run (called before any response starts)."""
        ...

    def generate(self, prompt: Prompt, sampling: Sampling, should_stop: ShouldStop) -> Iterator[Piece]:
        """Yield pieces until a stop sequence, the end of text, ``max_tokens`` or ``should_stop()``."""
        ...

    def close(self) -> None: ...


Event = tuple[str, "Piece | EngineFailureError"]
"""What one step of a batched engine produced for one request (by its id)."""


class BatchedChat(Protocol):
    """A chat engine that generates several requests together, one decode step at a time (in the engine
    process, on one thread). A request joins at the next step and leaves when its last piece (the one with
    a ``finish_reason``) or an error is returned; ``cancel`` ends it at the next step."""

    @property
    def busy(self) -> bool: ...

    def start(self, request_id: str, prompt: Prompt, sampling: Sampling) -> None: ...

    def cancel(self, request_id: str) -> None: ...

    def step(self) -> list[Event]: ...


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]] | NDArray[np.float32]
    """One vector per input, in order: a float32 matrix (one row each) or lists of floats."""
    tokens: int


class EmbeddingBackend(Protocol):
    """A loaded embedding model."""

    config: ModelConfig

    @property
    def dimensions(self) -> int: ...

    @property
    def vocabulary_size(self) -> int: ...

    def prompt(self, input_type: InputType | None) -> str:
        """The text put before each input of this type (None: of a request that names none); "" if none."""
        ...

    def embed(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        input_type: InputType | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        """Normalised vectors for strings or for token-id arrays (in the model's own vocabulary), each
        input read after the prompt of its ``input_type``; cut to ``dimensions`` (one of the model's
        Matryoshka sizes, None for its own) before they are normalised. ``tokens`` counts every token the
        model read, the prompts' included."""
        ...

    def close(self) -> None: ...


class LoadError(RuntimeError):
    """A model could not be loaded; the message is shown to the operator as the reason."""


class EngineFailureError(RuntimeError):
    """An engine failed while running a request; the message is safe to show the client."""


class EngineCrashedError(EngineFailureError):
    """The engine's process died while running (or before it could run) a request."""

    def __init__(self, model: str, reason: str, *, down: bool = False) -> None:
        super().__init__(
            f"the engine of model '{model}' " + ("is down" if down else "crashed") + f" ({reason})"
        )
        self.model = model
        self.reason = reason
        self.down = down
        """The engine crashed too often and stays down until the model is loaded again."""
