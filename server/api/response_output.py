"""The output of one response as it is generated: its items (a thought, then message text and function
calls in the order the model wrote them) and the typed stream events that announce each one.

Every item is announced by ``response.output_item.added`` and ended by ``response.output_item.done`` at
its ``output_index``; a message's text comes as ``response.output_text.delta`` events inside its content
part, a call's arguments as ``response.function_call_arguments.delta`` then ``.done``. A streamed and a
whole response are built by the same code, so they hold the same items.
"""

from __future__ import annotations

from typing import Any

from server.engines.base import ToolCall
from server.protocol import responses as wire

Event = tuple[str, dict[str, Any]]
"""A stream event's type and fields (its ``sequence_number`` is added when it is sent)."""


class Output:
    """Feed a generation's text, thought and calls in order; read the events to send, and ``items``."""

    def __init__(self, response_id: str) -> None:
        self._base = response_id.removeprefix("resp_")
        self.items: list[dict[str, Any]] = []
        """The items finished so far, in order: the response's ``output`` once ``finish`` has run."""
        self._reasoning: list[str] | None = None
        self._text: list[str] | None = None
        self._message_id = ""
        self._messages = 0
        self._call: ToolCall | None = None
        """A call is announced once the next event shows whether the token limit cut it."""
        self._calls = 0

    @property
    def _index(self) -> int:
        """The output index of the item being written."""
        return len(self.items)

    @property
    def _reasoning_id(self) -> str:
        return "rs_" + self._base

    def reasoning(self, text: str) -> list[Event]:
        events = self._announce_call()
        if self._reasoning is None:
            self._reasoning = []
            item = {**wire.reasoning_item(self._reasoning_id, ""), "content": []}
            events.append(("response.output_item.added", {"output_index": self._index, "item": item}))
        self._reasoning.append(text)
        return [
            *events,
            (
                "response.reasoning_text.delta",
                {
                    "item_id": self._reasoning_id,
                    "output_index": self._index,
                    "content_index": 0,
                    "delta": text,
                },
            ),
        ]

    def text(self, text: str) -> list[Event]:
        events = self._announce_call() + self._close_reasoning()
        if self._text is None:
            events += self._open_message()
        assert self._text is not None
        self._text.append(text)
        fields = {"item_id": self._message_id, "output_index": self._index, "content_index": 0}
        return [*events, ("response.output_text.delta", {**fields, "delta": text, "logprobs": []})]

    def call(self, call: ToolCall) -> list[Event]:
        events = self._announce_call() + self._close_reasoning() + self._close_message()
        self._call = call
        return events

    def finish(self, finish_reason: str) -> list[Event]:
        """Close what is still open. A response that neither called a function nor wrote any text still
        has its message, empty."""
        events = self._announce_call(cut=finish_reason == "length") + self._close_reasoning()
        if self._text is None and not any(item["type"] == "function_call" for item in self.items):
            events += self._open_message()
        return events + self._close_message()

    def _announce_call(self, *, cut: bool = False) -> list[Event]:
        call, self._call = self._call, None
        if call is None:
            return []
        item_id = f"fc_{self._base}_{self._calls}"
        self._calls += 1
        index = self._index
        item = wire.function_call_item(
            item_id, call.id, call.name, call.arguments, "incomplete" if cut else "completed"
        )
        self.items.append(item)
        added = {**item, "arguments": "", "status": "in_progress"}
        return [
            ("response.output_item.added", {"output_index": index, "item": added}),
            (
                "response.function_call_arguments.delta",
                {"item_id": item_id, "output_index": index, "delta": call.arguments},
            ),
            (
                "response.function_call_arguments.done",
                {"item_id": item_id, "output_index": index, "name": call.name, "arguments": call.arguments},
            ),
            ("response.output_item.done", {"output_index": index, "item": item}),
        ]

    def _close_reasoning(self) -> list[Event]:
        if self._reasoning is None:
            return []
        full = "".join(self._reasoning)
        self._reasoning = None
        index = self._index
        item = wire.reasoning_item(self._reasoning_id, full)
        self.items.append(item)
        return [
            (
                "response.reasoning_text.done",
                {"item_id": self._reasoning_id, "output_index": index, "content_index": 0, "text": full},
            ),
            ("response.output_item.done", {"output_index": index, "item": item}),
        ]

    def _open_message(self) -> list[Event]:
        self._text = []
        self._message_id = "msg_" + self._base + (f"_{self._messages}" if self._messages else "")
        self._messages += 1
        item = {**wire.output_message(self._message_id, "", status="in_progress"), "content": []}
        return [
            ("response.output_item.added", {"output_index": self._index, "item": item}),
            (
                "response.content_part.added",
                {
                    "item_id": self._message_id,
                    "output_index": self._index,
                    "content_index": 0,
                    "part": wire.output_text_part(""),
                },
            ),
        ]

    def _close_message(self) -> list[Event]:
        if self._text is None:
            return []
        full = "".join(self._text)
        self._text = None
        index = self._index
        item = wire.output_message(self._message_id, full)
        self.items.append(item)
        fields = {"item_id": self._message_id, "output_index": index, "content_index": 0}
        return [
            ("response.output_text.done", {**fields, "text": full, "logprobs": []}),
            ("response.content_part.done", {**fields, "part": wire.output_text_part(full)}),
            ("response.output_item.done", {"output_index": index, "item": item}),
        ]
