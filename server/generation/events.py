"""What a generation produces, whichever engine runs it: metered deltas and choice endings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from server.engines.base import TokenLogprob, ToolCall


@dataclass
class Meter:
    """What a request has used so far: what is billed, whatever happens to the connection."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    exact: bool = True
    """False while counts are estimates (an upstream that has not reported its usage yet)."""

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - self.started) * 1000

    @property
    def latency_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000


@dataclass(frozen=True)
class Delta:
    index: int
    content: str = ""
    reasoning: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens generated since the last delta, with their log probabilities (when asked for)."""


@dataclass(frozen=True)
class ToolCallDelta:
    """A complete tool call of one choice, the ``call_index``-th it made."""

    index: int
    call_index: int
    call: ToolCall


@dataclass(frozen=True)
class ChoiceEnd:
    index: int
    finish_reason: Literal["stop", "length", "tool_calls"]


Event = Delta | ToolCallDelta | ChoiceEnd
