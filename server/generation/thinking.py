"""Separate a reasoning model's ``<think>…</think>`` text from its answer, as text streams in.

The whitespace that templates put around the tags (Qwen3 writes ``<think>\\n…\\n</think>\\n\\n``) belongs
to neither channel: the reasoning is trimmed at both ends and the answer at its start, even when that
whitespace arrives in separate pieces.
"""

from __future__ import annotations

from typing import Literal

Channel = Literal["reasoning", "content"]
OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Feed generated text; get ``(channel, text)`` pairs. Only a leading think block counts as reasoning."""

    def __init__(self) -> None:
        self._mode: Literal["start", "reasoning", "content"] = "start"
        self._held = ""
        self._trim = False  # drop leading whitespace: just after a tag

    @property
    def mode(self) -> Literal["start", "reasoning", "content"]:
        return self._mode

    def feed(self, text: str) -> list[tuple[Channel, str]]:
        out: list[tuple[Channel, str]] = []
        self._held += text
        while self._held:
            if self._mode == "start":
                stripped = self._held.lstrip()
                if stripped.startswith(OPEN):
                    self._mode, self._trim = "reasoning", True
                    self._held = stripped[len(OPEN) :]
                    continue
                if OPEN.startswith(stripped):
                    break  # could still become "<think>"
                self._mode = "content"
                continue
            if self._trim:
                self._held = self._held.lstrip()
                if not self._held:
                    break
                self._trim = False
            if self._mode == "reasoning":
                at = self._held.find(CLOSE)
                if at >= 0:
                    thought = self._held[:at].rstrip()
                    if thought:
                        out.append(("reasoning", thought))
                    self._held = self._held[at + len(CLOSE) :]
                    self._mode, self._trim = "content", True
                    continue
                # Hold back what may be the start of "</think>", and trailing whitespace that may precede it.
                keep = _partial_suffix(self._held, CLOSE)
                body = self._held[: len(self._held) - keep]
                emit = body.rstrip()
                if emit:
                    out.append(("reasoning", emit))
                self._held = self._held[len(emit) :]
                break
            out.append(("content", self._held))
            self._held = ""
        return out

    def flush(self) -> list[tuple[Channel, str]]:
        held, self._held = self._held, ""
        if self._mode == "reasoning":
            held = held.rstrip()
            return [("reasoning", held)] if held else []
        if self._trim:
            held = held.lstrip()
        return [("content", held)] if held else []


def _partial_suffix(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
