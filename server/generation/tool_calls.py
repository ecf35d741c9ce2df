"""Tool calls in a model's output: found in the text as it streams, and enforced by a grammar when asked.

Models trained on the Hermes convention (Qwen2.5, Qwen3, Hermes and others; the chat template tells them)
write each call as ``<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>``. The splitter takes those
blocks out of the text as they complete, so their markup never reaches ``content``; a block whose JSON
does not parse is left in the text as written. Arguments are returned as the model wrote them, valid for
their schema or not (as OpenAI does under ``tool_choice: auto``); with ``required`` or a named function,
the grammar makes the model write a call whose arguments match the function's schema.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from server.engines.base import ToolCall
from server.engines.grammar import GrammarBuilder, SchemaError
from server.engines.grammar.gbnf import literal

OPEN, CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Tool:
    """A function the client offers the model."""

    name: str
    description: str
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        """As OpenAI's tool object, which chat templates render."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


Choice = Literal["auto", "none", "required"] | str
"""``auto``, ``none``, ``required``, or the name of the one function the model must call."""


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


Part = tuple[Literal["content"], str] | tuple[Literal["call"], ToolCall]


class ToolCallSplitter:
    """Feed an answer's text as it is generated; get its text and its completed tool calls, in order."""

    def __init__(self) -> None:
        self._held = ""
        self._inside = False
        self.calls = 0

    def feed(self, text: str) -> list[Part]:
        out: list[Part] = []
        self._held += text
        while self._held:
            if not self._inside:
                at = self._held.find(OPEN)
                if at < 0:
                    # Whitespace waits for what follows it: between or after calls it is no answer.
                    keep = _partial_suffix(self._held, OPEN)
                    emit = self._held[: len(self._held) - keep].rstrip()
                    if emit:
                        out.append(("content", emit))
                    self._held = self._held[len(emit) :]
                    break
                before = self._held[:at].rstrip()
                if before:
                    out.append(("content", before))
                self._held = self._held[at + len(OPEN) :]
                self._inside = True
                continue
            end = self._held.find(CLOSE)
            if end < 0:
                break
            block, self._held = self._held[:end], self._held[end + len(CLOSE) :]
            self._inside = False
            call = parse_call(block)
            if call is None:
                out.append(("content", OPEN + block + CLOSE))
            else:
                self.calls += 1
                out.append(("call", call))
            self._held = self._held.lstrip("\n")
        return out

    def flush(self, *, cut: bool = False) -> list[Part]:
        """What was held back once the answer has ended.

        A block left open is a call the token limit ``cut`` short: returned with its arguments as far as
        they came, as OpenAI returns a call cut by ``max_tokens`` (nothing, if not even its name came).
        Otherwise (the model stopped inside it) it is text as written, as a block that does not parse is.
        """
        held, self._held = self._held, ""
        if self._inside:
            self._inside = False
            if not cut:
                return [("content", OPEN + held)]
            call = parse_call(held) or _partial_call(held)
            if call is None:
                return []
            self.calls += 1
            return [("call", call)]
        return [("content", held)] if held.strip() or (held and not self.calls) else []


def parse_call(block: str) -> ToolCall | None:
    """A call from the JSON between the tags, or None if it is not one."""
    try:
        value = json.loads(block)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=new_call_id(), name=value["name"], arguments=text)


_STARTED_CALL = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(.*)', re.S)


def _partial_call(block: str) -> ToolCall | None:
    """A call cut short: its name, and its arguments' text as far as it came."""
    match = _STARTED_CALL.fullmatch(block)
    if match is None:
        return None
    try:
        name = json.loads(match.group(1))
    except ValueError:
        return None
    return ToolCall(id=new_call_id(), name=name, arguments=match.group(2))


def _partial_suffix(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def think_rule(builder: GrammarBuilder) -> str:
    """An optional leading ``<think>…</think>`` block, so a reasoning model still thinks before it writes
    what the rest of the grammar asks for (its thought may not contain ``</``)."""
    builder.add_rule("think-char", '[^<] | "<" [^/]')
    return builder.add_rule("think", f"{literal(THINK_OPEN)} think-char* {literal(THINK_CLOSE)} [ \\t\\n]*")


def _call_rules(builder: GrammarBuilder, tools: Sequence[Tool]) -> str:
    """The rule for one call block of any of ``tools``, with arguments matching the function's schema."""
    alternatives = []
    for index, tool in enumerate(tools):
        arguments = builder.add_schema(f"tool{index}-args", tool.parameters or {"type": "object"})
        alternatives.append(
            builder.add_rule(
                f"tool{index}",
                f'"{{" space {literal(json.dumps("name"))} space ":" space {literal(json.dumps(tool.name))} space '
                f'"," space {literal(json.dumps("arguments"))} space ":" space {arguments} space "}}"',
            )
        )
    call = builder.add_rule("call", " | ".join(alternatives))
    return builder.add_rule("call-block", f"{literal(OPEN + chr(10))} {call} {literal(chr(10) + CLOSE)}")


def output_grammar(
    *,
    schema: dict[str, Any] | None | Literal[False],
    tools: Sequence[Tool],
    require_call: bool,
    parallel: bool,
    thinking: bool,
) -> str | None:
    """The grammar an answer must follow, or None when it is free.

    ``schema``: the answer is a JSON value matching it (None: any JSON object; False: free text).
    ``tools`` with ``require_call``: the answer is one tool call of these functions (several if
    ``parallel``); without, a call is one option beside the schema's value. ``thinking``: a reasoning
    model's thought may come first. Raises ``SchemaError`` for a schema a grammar cannot express.
    """
    if schema is False and not require_call:
        return None  # free text, with calls if the model chooses to make them
    builder = GrammarBuilder()
    options = []
    if tools and (require_call or schema is not False):
        block = _call_rules(builder, tools)
        options.append(f"{block} ({literal(chr(10))} {block})*" if parallel else block)
    if schema is not False and not require_call:
        options.append(builder.add_schema("answer", schema if schema is not None else {"type": "object"}))
    body = options[0] if len(options) == 1 else "(" + " | ".join(options) + ")"
    return builder.grammar(f"{think_rule(builder)}? {body}" if thinking else body)


__all__ = ["Choice", "SchemaError", "Tool", "ToolCallSplitter", "new_call_id", "output_grammar", "parse_call"]
