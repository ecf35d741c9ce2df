"""A chat model whose engine runs in a supervised process of its own (``chat_child``, ``supervisor``).

To the server it is a ``ChatBackend`` like any other: its worker thread calls ``generate`` and receives the
pieces the engine process streams back. When that process dies, the requests it was running end with an
``engine_crashed`` error carrying what they had already received, and the ones still waiting are served
by the restarted engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from server.config import ModelConfig
from server.engines import chat_child
from server.engines.base import (
    Capabilities,
    EngineFailureError,
    Message,
    Piece,
    Prompt,
    Sampling,
    ShouldStop,
    Template,
)
from server.engines.supervisor import Supervisor
from server.errors import InvalidRequest


class ProcessChat:
    """A ``ChatBackend`` in a child process. Only the model's worker thread calls ``generate``."""

    def __init__(self, config: ModelConfig, engine: str = "llama.cpp") -> None:
        self.config = config
        self.supervisor = Supervisor(config.name, chat_child.serve, (config.model_dump(), engine))

    @property
    def context_length(self) -> int:
        return int(self.supervisor.info["context_length"])

    @property
    def slots(self) -> int:
        """Requests the engine generates together."""
        return int(self.supervisor.info.get("slots", 1))

    @property
    def info(self) -> dict[str, Any]:
        """What the engine process reported when it started (the llama.cpp backend it chose, …)."""
        return self.supervisor.info

    def _value(self, reply: tuple[Any, ...]) -> Any:
        kind = reply[0]
        if kind == "done":
            return reply[2]
        if kind == "invalid":
            raise InvalidRequest(reply[2], param=reply[3], code=reply[4])
        raise EngineFailureError(str(reply[2]))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(**self.supervisor.info.get("capabilities", {}))

    def render(self, messages: Sequence[Message], template: Template | None = None) -> Prompt:
        return self._value(self.supervisor.call("render", list(messages), template or Template()))  # type: ignore[no-any-return]

    def check_sampling(self, sampling: Sampling) -> None:
        self._value(self.supervisor.call("check", sampling))

    def generate(self, prompt: Prompt, sampling: Sampling, should_stop: ShouldStop) -> Iterator[Piece]:
        for reply in self.supervisor.stream(
            "generate", prompt, sampling, should_stop=should_stop, cancel="cancel"
        ):
            kind = reply[0]
            if kind == "piece":
                yield reply[2]
            elif kind == "failed":
                raise EngineFailureError(str(reply[2]))

    def close(self) -> None:
        self.supervisor.close()
