"""Deterministic engines for tests and demonstrations, registered like any other engine.

The chat model answers with the words of the last user message (one token per word), or with a fixed
``reply``; its ``source`` tunes it: ``delay=0.01`` seconds per token, ``fail_at=5`` raises after five
tokens, ``load_delay=2`` takes that long to load, ``think=1`` wraps a thought in ``<think>…</think>`` first
(unless the request switched thinking off, which the prompt shows as ``<no_think>``), ``repeat=1`` repeats
until the token limit, ``process=1`` runs it in an engine process of its own (as llama.cpp runs), where
``crash_at=3`` kills that process with a segmentation fault after three tokens and ``abort_at=3`` aborts it;
``call=lookup`` answers with a call of the function ``lookup`` in the markup tool-calling models write
when the request offers that function, and in words once a tool has answered.
The embedder hashes character trigrams, so similar texts get similar vectors; it puts the model table's
``prompts`` before its inputs and cuts vectors to a requested size as the real embedder does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from collections.abc import Iterator, Sequence

from server.config import InputType, ModelConfig
from server.engines.base import (
    Capabilities,
    Embeddings,
    EngineFailureError,
    Message,
    Piece,
    Prompt,
    Sampling,
    ShouldStop,
    Template,
)
from server.engines.stops import StopScanner


def options(source: str) -> dict[str, str]:
    """The ``key=value`` pairs of a fake model's ``source``."""
    pairs = (part.split("=", 1) for part in source.split(",") if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs}


def _token_id(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % 50_000


class FakeChat:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        settings = options(config.source)
        self.delay = float(settings.get("delay", "0"))
        self.fail_at = int(settings.get("fail_at", "-1"))
        self.think = settings.get("think") == "1"
        self.repeat = settings.get("repeat") == "1"
        self.reply = settings.get("reply")
        self.call = settings.get("call")
        self.crash_at = int(settings.get("crash_at", "-1"))
        self.abort_at = int(settings.get("abort_at", "-1"))
        time.sleep(float(settings.get("load_delay", "0")))  # a model that takes its time to load
        self.slots = config.parallel or 1
        self.generated = 0
        """Tokens generated since loading, whoever received them: what exact billing must add up to."""

    @property
    def context_length(self) -> int:
        return self.config.context_length

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(tools=True, thinking_switch=True)

    def render(self, messages: Sequence[Message], template: Template | None = None) -> Prompt:
        words: list[str] = []
        for tool in (template or Template()).tools:
            words.append(f"<function:{tool['function']['name']}>")
        for message in messages:
            words += [f"<{message.role}>", *message.content.split()]
            words += [f"<call:{call.name}>" for call in message.tool_calls]
        words.append("<assistant>")
        if (template or Template()).thinking is False:
            words.append("<no_think>")  # as Qwen3's template writes an empty thought
        return Prompt(tokens=tuple(_token_id(w) for w in words), text=" ".join(words))

    def _words(self, prompt: Prompt) -> list[str]:
        # The last user message, and the results of any tools called since (a tool turn's words).
        turn = prompt.text.rsplit("<user>", 1)[-1].split()
        words = self.reply.split("_") if self.reply else [w for w in turn if not w.startswith("<")]
        offered = f"<function:{self.call}>" in prompt.text.split()
        if offered and "<tool>" not in turn:
            # A call of the function when it is offered and no tool has answered since the user spoke,
            # in the markup tool-calling models write (one token a piece).
            arguments = json.dumps({"words": len(words)})
            words = [
                "<tool_call>\n",
                f'{{"name": "{self.call}", "arguments": {arguments}}}',
                "\n</tool_call>",
            ]
        words = words or ["…"]
        if self.think and not prompt.text.endswith("<no_think>"):
            words = ["<think>", "Let", "me", "think.", "</think>", *words]
        return words

    def check_sampling(self, sampling: Sampling) -> None:
        pass  # the fake engine ignores grammars

    def generate(self, prompt: Prompt, sampling: Sampling, should_stop: ShouldStop) -> Iterator[Piece]:
        words = self._words(prompt)
        scanner = StopScanner(sampling.stop)
        produced = 0
        finish = "length"
        while produced < sampling.max_tokens and not should_stop():
            if produced == self.fail_at:
                raise EngineFailureError(f"the fake engine failed after {produced} tokens, as configured")
            if produced == self.crash_at:
                os.kill(os.getpid(), signal.SIGSEGV)  # as a native crash would end the engine process
            if produced == self.abort_at:
                os.abort()
            if produced >= len(words) and not self.repeat:
                finish = "stop"
                break
            word = words[produced % len(words)]
            produced += 1
            self.generated += 1
            if self.delay:
                time.sleep(self.delay)
            text = scanner.feed(word if produced == 1 else " " + word)
            if scanner.stopped:
                finish = "stop"
                yield Piece(text, 1)
                break
            yield Piece(text, 1)
        yield Piece(scanner.flush(), 0, finish_reason=finish)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


class FakeEmbedder:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._dims = int(options(config.source).get("dims", "64"))

    @property
    def dimensions(self) -> int:
        return self._dims

    @property
    def vocabulary_size(self) -> int:
        return 50_000

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self._dims
        padded = f"  {text.lower()}  "
        for i in range(len(padded) - 2):
            vector[_token_id(padded[i : i + 3]) % self._dims] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def prompt(self, input_type: InputType | None) -> str:
        prompts = self.config.prompts or {}
        kind = input_type or self.config.default_input_type
        return prompts.get(kind, "") if kind else ""

    def embed(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        input_type: InputType | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        prompt = self.prompt(input_type)
        texts = [prompt + (t if isinstance(t, str) else " ".join(map(str, t))) for t in inputs]
        vectors = [self._vector(t)[:dimensions] for t in texts]
        if dimensions is not None:
            vectors = [
                [v / (math.sqrt(sum(x * x for x in vector)) or 1.0) for v in vector] for vector in vectors
            ]
        return Embeddings(vectors=vectors, tokens=sum(max(1, len(t.split())) for t in texts))

    def close(self) -> None:
        pass
