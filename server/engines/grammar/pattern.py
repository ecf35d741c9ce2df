"""A string schema's ``pattern`` (a regular expression, ECMA 262 as JSON Schema says) as grammar.

The grammar writes the JSON text of the string, so each character the expression matches is written as
JSON writes it: a quote, a backslash or a control character as its escape. What a grammar cannot express
(lookaround, back-references, word boundaries, inline flags) is refused with ``ValueError`` rather than
ignored, so that a client never gets output that breaks its own pattern.

Control characters other than the five with short escapes (``\\b \\f \\n \\r \\t``) are never generated.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.engines.grammar.gbnf import alternatives, char_class, literal, repeat

Ranges = list[tuple[int, int]]
"""A set of characters as sorted, disjoint, inclusive code-point ranges."""

TOP = 0x10FFFF
ANY: Ranges = [(0, TOP)]
_SPECIAL: Ranges = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]
_SHORT_ESCAPES = {0x22: '"', 0x5C: "\\", 0x08: "b", 0x0C: "f", 0x0A: "n", 0x0D: "r", 0x09: "t"}
"""The characters JSON writes as a backslash and one letter."""
_DIGIT: Ranges = [(0x30, 0x39)]
_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE: Ranges = [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x2028, 0x2029), (0xFEFF, 0xFEFF)]
_DOT: Ranges = [(0x00, 0x09), (0x0B, 0x0C), (0x0E, 0x2027), (0x202A, TOP)]
_CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "v": 0x0B, "f": 0x0C, "r": 0x0D, "0": 0x00}
_CLASS_ESCAPES = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
_QUANTIFIERS = "*+?{"


def pattern_expression(pattern: str) -> str:
    """The GBNF expression for the JSON string content (between the quotes) that ``pattern`` matches.

    It may use the shared rule ``char`` (an unanchored pattern lets anything come before or after it).
    """
    body, start, end = pattern, pattern.startswith("^"), _anchored_at_end(pattern)
    body = body[1 if start else 0 : len(body) - 1 if end else len(body)]
    parser = _Parser(body)
    options = parser.alternation()
    if parser.pos < len(body):
        raise ValueError(f"unbalanced ')' at {parser.pos}")
    if len(options) > 1 and (start or end):
        # "^a|b$" anchors each side of its alternatives separately: rare, and left out
        options = [alternatives(options)] if start and end else _refuse("an anchor beside a top-level '|'")
    parts = (["char*"] if not start else []) + [alternatives(options)] + (["char*"] if not end else [])
    return " ".join(p for p in parts if p)


def _anchored_at_end(pattern: str) -> bool:
    if not pattern.endswith("$"):
        return False
    backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
    return backslashes % 2 == 0


def _refuse(what: str) -> list[str]:
    raise ValueError(f"{what} has no grammar equivalent")


@dataclass
class _Item:
    expression: str
    text: str | None = None
    """The item's characters when it is one literal character (consecutive ones merge into one literal)."""


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.pos = 0

    def peek(self) -> str:
        return self.pattern[self.pos] if self.pos < len(self.pattern) else ""

    def take(self) -> str:
        c = self.peek()
        if not c:
            raise ValueError("the pattern ends too early")
        self.pos += 1
        return c

    def alternation(self) -> list[str]:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options

    def sequence(self) -> str:
        items: list[_Item] = []
        while self.peek() and self.peek() not in "|)":
            item = self.atom()
            if self.peek() and self.peek() in _QUANTIFIERS:
                low, high = self.quantifier()
                item = _Item(repeat(item.expression, low, high))
            items.append(item)
        return _join(items)

    def atom(self) -> _Item:
        c = self.take()
        if c == "(":
            if self.pattern.startswith("?:", self.pos):
                self.pos += 2
            elif self.peek() == "?":
                _refuse("a lookaround, named group or inline flag")
            inner = self.alternation()
            if self.take() != ")":
                raise ValueError("unbalanced '('")
            return _Item("(" + " | ".join(inner) + ")")
        if c == "[":
            return _Item(characters(self.char_class()))
        if c == ".":
            return _Item(characters(_DOT))
        if c == "\\":
            escaped = self.escape(in_class=False)
            return _single(escaped[0][0]) if escaped[0][0] == escaped[-1][1] else _Item(characters(escaped))
        if c in "^$":
            _refuse(f"'{c}' inside a pattern")
        if c in _QUANTIFIERS or c in "]}":
            raise ValueError(f"unexpected '{c}' at {self.pos - 1}")
        return _single(ord(c))

    def quantifier(self) -> tuple[int, int | None]:
        c = self.take()
        bounds: tuple[int, int | None] = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(c, (0, 0))
        if c == "{":
            end = self.pattern.find("}", self.pos)
            low, comma, high = self.pattern[self.pos : end].partition(",")
            if end < 0 or not low.strip().isdigit() or not (high.strip().isdigit() or not high.strip()):
                raise ValueError(f"a malformed repetition at {self.pos - 1}")
            self.pos = end + 1
            bounds = (int(low), int(high) if high.strip() else (None if comma else int(low)))
            if bounds[1] is not None and bounds[1] < bounds[0]:
                raise ValueError("a repetition whose maximum is below its minimum")
        if self.peek() == "?":  # lazy: the same strings
            self.pos += 1
        elif self.peek() == "+":
            _refuse("a possessive quantifier")
        return bounds

    def char_class(self) -> Ranges:
        negated = self.peek() == "^"
        self.pos += negated
        ranges: Ranges = []
        first = True
        while first or self.peek() != "]":
            first = False
            low = self.class_member()
            if self.peek() == "-" and self.pattern[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self.class_member()
                if len(low) != 1 or len(high) != 1 or low[0][0] != low[0][1] or high[0][0] != high[0][1]:
                    raise ValueError("a class escape at the end of a range")
                if high[0][0] < low[0][0]:
                    raise ValueError("a character range out of order")
                low = [(low[0][0], high[0][0])]
            ranges.extend(low)
        self.pos += 1
        merged = _normalise(ranges)
        return _complement(merged) if negated else merged

    def class_member(self) -> Ranges:
        c = self.take()
        if c == "\\":
            if self.peek() == "b":  # inside a class, \b is a backspace
                self.pos += 1
                return [(0x08, 0x08)]
            return self.escape(in_class=True)
        return [(ord(c), ord(c))]

    def escape(self, in_class: bool) -> Ranges:
        c = self.take()
        if c.lower() in _CLASS_ESCAPES:
            ranges = _CLASS_ESCAPES[c.lower()]
            return _complement(ranges) if c.isupper() else ranges
        if c in _CONTROL_ESCAPES:
            return [(_CONTROL_ESCAPES[c], _CONTROL_ESCAPES[c])]
        if c in "xu":
            digits = 2 if c == "x" else 4
            code = self.pattern[self.pos : self.pos + digits]
            if len(code) != digits or any(h not in "0123456789abcdefABCDEF" for h in code):
                raise ValueError(f"a malformed \\{c} escape")
            self.pos += digits
            return [(int(code, 16), int(code, 16))]
        if c.isalnum():
            _refuse(f"\\{c}")
        return [(ord(c), ord(c))]


def encode(code: int) -> str:
    """A character as it is written inside a JSON string."""
    if code in _SHORT_ESCAPES:
        return "\\" + _SHORT_ESCAPES[code]
    if code < 0x20:
        return f"\\u{code:04x}"
    return chr(code)


def characters(ranges: Ranges) -> str:
    """One character of ``ranges`` as JSON text: plain characters, and quotes, backslashes and the control
    characters with short escapes as their escapes (other control characters are left out)."""
    plain = _subtract(ranges, _SPECIAL)
    options = []
    if plain:
        if plain[-1][1] == TOP:  # most of Unicode: name what is left out instead
            options.append(char_class(_complement(plain), negated=True))
        else:
            options.append(char_class(plain))
    escapes = [letter for code, letter in _SHORT_ESCAPES.items() if any(a <= code <= b for a, b in ranges)]
    if len(escapes) == 1:
        options.append(literal("\\" + escapes[0]))
    elif escapes:
        options.append("[\\\\] " + char_class(_normalise([(ord(e), ord(e)) for e in escapes])))
    if not options:
        raise ValueError("a character class that matches no character JSON can carry")
    return alternatives(options)


def _single(code: int) -> _Item:
    text = encode(code)
    return _Item(literal(text), text)


def _join(items: list[_Item]) -> str:
    parts: list[str] = []
    text: list[str] = []
    for item in [*items, _Item("")]:
        if item.text is not None:
            text.append(item.text)
            continue
        if text:
            parts.append(literal("".join(text)))
            text = []
        if item.expression:
            parts.append(item.expression)
    return " ".join(parts)


def _normalise(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _complement(ranges: Ranges) -> Ranges:
    out: Ranges = []
    start = 0
    for a, b in _normalise(ranges):
        if a > start:
            out.append((start, a - 1))
        start = b + 1
    if start <= TOP:
        out.append((start, TOP))
    return out


def _subtract(ranges: Ranges, removed: Ranges) -> Ranges:
    return _complement(_normalise(_complement(ranges) + removed))
