"""Separate a reasoning model's ``<think>…</think>`` text from its answer, as text streams in."""

from __future__ import annotations

from typing import Literal

Channel = Literal["reasoning", "content"]
OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Feed generated text; get ``(channel, text)`` pairs. Only a leading think block counts as reasoning."""

    def __init__(self) -> None:
        self._mode: Literal["start", "reasoning", "content"] = "start"
        self._held = ""

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
                    self._mode = "reasoning"
                    self._held = stripped[len(OPEN) :].lstrip("\n")
                    continue
                if OPEN.startswith(stripped):
                    break  # could still become "<think>"
                self._mode = "content"
                continue
            if self._mode == "reasoning":
                at = self._held.find(CLOSE)
                if at >= 0:
                    if at:
                        out.append(("reasoning", self._held[:at]))
                    self._held = self._held[at + len(CLOSE) :].lstrip("\n")
                    self._mode = "content"
                    continue
                keep = _partial_suffix(self._held, CLOSE)
                emit = self._held[: len(self._held) - keep]
                if emit:
                    out.append(("reasoning", emit))
                self._held = self._held[len(self._held) - keep :]
                break
            out.append(("content", self._held))
            self._held = ""
        return out

    def flush(self) -> list[tuple[Channel, str]]:
        held, self._held = self._held, ""
        if not held:
            return []
        return [("reasoning" if self._mode == "reasoning" else "content", held)]


def _partial_suffix(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
