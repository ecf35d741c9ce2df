"""How the Playground talks to the server: through its own OpenAI-compatible API, as any client does, with
the official ``openai`` library and a key the window makes for itself.

The key is a real key, named as the window's own: what the Playground spends shows in Usage and the Logs
under it, and revoking it stops the Playground (the next use makes a new one). Its secret is kept in the
data folder, readable by its owner only, like the server's own secret.

Every function here blocks (network, files, the store): the Playground calls them through
:class:`app.tasks.Tasks`. ``openai`` is imported when first used, on that worker thread: importing it
takes about a second, which the window's start need not wait for.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.access.keys import KeyRecord, KeyService
from server.errors import Unauthenticated

KEY_FILE = "playground-key"
KEY_NAME = "Playground (this window's own key)"
KEY_NOTE = (
    "Made by the window for its Playground, whose requests it pays for. Revoke it to stop the Playground; "
    "a new one is made when it is next used."
)
TIMEOUT_S = 600.0


def playground_key(keys: KeyService, data_dir: Path) -> tuple[str, KeyRecord]:
    """The window's own key: the one kept in the data folder while it still works, else a new one."""
    path = data_dir / KEY_FILE
    try:
        secret = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        secret = ""
    if secret:
        try:
            return secret, keys.authenticate(secret)
        except Unauthenticated:
            pass  # revoked, expired or deleted: make another
    secret, record = keys.create(KEY_NAME, owner_note=KEY_NOTE)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secret + "\n")
    return secret, record


@dataclass(frozen=True)
class ChatOutcome:
    """How a streamed reply ended."""

    finish_reason: str | None
    """``stop``, ``length``, or ``None`` when it was stopped or failed."""
    input_tokens: int | None
    output_tokens: int | None
    stopped: bool
    error: str | None


def _message(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    status = getattr(error, "status_code", None)
    return f"{text} (HTTP {status})" if status else str(text)


def stream_chat(
    base_url: str,
    key: str,
    model: str,
    messages: Sequence[dict[str, str]],
    max_tokens: int,
    stop: threading.Event,
    on_delta: Callable[[str, str], None],
) -> ChatOutcome:
    """Stream a reply, handing each piece (its text, its reasoning) to ``on_delta`` as it comes; ``stop``
    set ends it early (the server stops generating and bills what it generated)."""
    import openai  # noqa: PLC0415  (a second to import: on first use, on a worker thread)

    finish: str | None = None
    usage: Any = None
    try:
        with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=TIMEOUT_S) as client:
            # The messages are plain role and content pairs, which the library's typed dictionaries are too.
            stream = client.chat.completions.create(  # type: ignore[call-overload]
                model=model,
                messages=list(messages),
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            try:
                for chunk in stream:
                    if stop.is_set():
                        break
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        extra = choice.delta.model_extra or {}
                        text, reasoning = choice.delta.content or "", extra.get("reasoning_content") or ""
                        if text or reasoning:
                            on_delta(text, reasoning)
                        if choice.finish_reason:
                            finish = choice.finish_reason
            finally:
                stream.close()
    except openai.OpenAIError as exc:
        return ChatOutcome(None, None, None, stop.is_set(), _message(exc))
    return ChatOutcome(
        finish,
        usage.prompt_tokens if usage is not None else None,
        usage.completion_tokens if usage is not None else None,
        stop.is_set(),
        None,
    )


@dataclass(frozen=True)
class Similarity:
    cosine: float | None
    tokens: int
    dimensions: int
    error: str | None


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def similarity(base_url: str, key: str, model: str, first: str, second: str) -> Similarity:
    """How alike two texts are by their embeddings (cosine: 1 the same, 0 unrelated)."""
    import openai  # noqa: PLC0415  (a second to import: on first use, on a worker thread)

    try:
        with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=TIMEOUT_S) as client:
            result = client.embeddings.create(model=model, input=[first, second], encoding_format="float")
    except openai.OpenAIError as exc:
        return Similarity(None, 0, 0, _message(exc))
    vectors = [item.embedding for item in sorted(result.data, key=lambda item: item.index)]
    return Similarity(cosine(vectors[0], vectors[1]), result.usage.total_tokens, len(vectors[0]), None)
