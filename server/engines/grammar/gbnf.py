"""GBNF, the grammar language of llama.cpp: how to write its literals, character classes and repetitions,
and a set of named rules that grows as schemas are converted.

The shared rules (whitespace, JSON string characters, numbers) have the shapes llama.cpp's own server
gives them (``common/json-schema-to-grammar.cpp`` in llama.cpp, MIT): in particular whitespace is
``| " " | "\\n"{1,2} [ \\t]{0,20}``, so a model may lay JSON out the way it saw it in training (a newline
and an indent after ``{``) but can never run on with spaces or blank lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

SPACE = '| " " | "\\n"{1,2} [ \\t]{0,20}'
"""Between JSON tokens: nothing, one space, or one or two newlines and an indent of up to 20 blanks."""

PLAIN_CHARS = r'"\\\x7F\x00-\x1F'
"""What a JSON string never holds as itself (inside ``[^...]``): a quote, a backslash, a control character."""
ESCAPE = r'[\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})'
"""An escape inside a JSON string."""
CHAR = f"[^{PLAIN_CHARS}] | {ESCAPE}"
"""One character inside a JSON string: anything but a quote, a backslash or a control character (JSON has no
raw control characters in strings), or an escape."""

MAX_DIGITS = 16
"""Integers without an upper bound have at most this many digits, as in llama.cpp's server: a model that
starts a number cannot write digits for ever."""

PRIMITIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (body, the rules it uses)
    "space": (SPACE, ()),
    "char": (CHAR, ()),
    "string": ('"\\"" char* "\\""', ("char",)),
    "integral-part": (f"[0] | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}}", ()),
    "decimal-part": (f"[0-9]{{1,{MAX_DIGITS}}}", ()),
    "integer": ('("-"? integral-part)', ("integral-part",)),
    "number": (
        '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?',
        ("integral-part", "decimal-part"),
    ),
    "boolean": ('("true" | "false")', ()),
    "null": ('"null"', ()),
    "value": (
        "object | array | string | number | boolean | null",
        ("object", "array", "string", "number", "boolean", "null"),
    ),
    "object": (
        '"{" space ( string ":" space value ("," space string ":" space value)* )? space "}"',
        ("space", "string", "value"),
    ),
    "array": ('"[" space ( value ("," space value)* )? space "]"', ("space", "value")),
    # string formats (JSON Schema's "format"), the digits as RFC 3339 and RFC 4122 write them
    "date": ('[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )', ()),
    "time": (
        '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? '
        '( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
        (),
    ),
    "date-time": ('date "T" time', ("date", "time")),
    "date-string": ('"\\"" date "\\""', ("date",)),
    "time-string": ('"\\"" time "\\""', ("time",)),
    "date-time-string": ('"\\"" date-time "\\""', ("date-time",)),
    "uuid": (
        '"\\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\\""',
        (),
    ),
}

RESERVED = frozenset({"root", *PRIMITIVES})
"""Names a rule made from a schema never takes: the shared rules refer to one another by these names."""

_NOT_A_NAME = re.compile(r"[^A-Za-z0-9-]+")
_LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CLASS_ESCAPES = {"\\": "\\\\", "]": "\\]", "[": "\\[", "-": "\\-", '"': '\\"', "^": "\\x5E"}


def rule_name(text: str) -> str:
    """``text`` as a rule name: llama.cpp allows only letters, digits and hyphens."""
    return _NOT_A_NAME.sub("-", text)


def literal(text: str) -> str:
    """A quoted GBNF literal that matches exactly ``text``."""
    out = []
    for c in text:
        if c in _LITERAL_ESCAPES:
            out.append(_LITERAL_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02X}")
        elif 0xD800 <= ord(c) <= 0xDFFF:  # a lone surrogate (JSON can hold one) has no UTF-8 form
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def class_char(code: int) -> str:
    """One character as written inside ``[...]``."""
    c = chr(code)
    if c in _CLASS_ESCAPES:
        return _CLASS_ESCAPES[c]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02X}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04X}"
    return c


def char_class(ranges: Iterable[tuple[int, int]], negated: bool = False) -> str:
    """``[...]`` (or ``[^...]``) over inclusive code-point ranges."""
    parts = [class_char(a) if a == b else f"{class_char(a)}-{class_char(b)}" for a, b in ranges]
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


def repeat(item: str, low: int, high: int | None) -> str:
    """``item`` repeated ``low`` to ``high`` times (``None``: no limit); ``""`` when it may not appear."""
    if high == 0:
        return ""
    if (low, high) == (0, 1):
        return f"{item}?"
    if high is None:
        return {0: f"{item}*", 1: f"{item}+"}.get(low, f"{item}{{{low},}}")
    if low == high:
        return item if low == 1 else f"{item}{{{low}}}"
    return f"{item}{{{low},{high}}}"


def separated(item: str, separator: str, low: int, high: int | None) -> str:
    """``low`` to ``high`` ``item``s with ``separator`` between them (``""`` when none may appear)."""
    if high == 0:
        return ""
    more = repeat(f"( {separator} {item} )", max(low - 1, 0), None if high is None else high - 1)
    items = f"{item} {more}".strip()
    return items if low > 0 else f"( {items} )?"


def alternatives(options: Sequence[str]) -> str:
    """One expression for any of ``options``, in parentheses when there are several."""
    return options[0] if len(options) == 1 else "(" + " | ".join(options) + ")"


class Rules:
    """A set of named GBNF rules; each name is defined once, and a rule asked for again under the same name
    with the same body is shared."""

    def __init__(self) -> None:
        self._bodies: dict[str, str | None] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._bodies

    def add(self, name: str, body: str) -> str:
        """Define a rule named after ``name``; returns the name it got (another if that one is taken)."""
        name = rule_name(name) or "rule"
        if name not in RESERVED and self._bodies.get(name) == body:
            return name
        name = self.reserve(name)
        self._bodies[name] = body
        return name

    def reserve(self, name: str) -> str:
        """A fresh name for a rule defined later with ``define`` (a rule that may refer to itself)."""
        base = rule_name(name) or "rule"
        if base in RESERVED:
            base += "-"
        name, n = base, 0
        while name in self._bodies:
            name, n = f"{base}{n}", n + 1
        self._bodies[name] = None
        return name

    def define(self, name: str, body: str) -> None:
        """Give a reserved name its body."""
        if self._bodies.get(name, "") is not None:
            raise ValueError(f"the rule {name} was not reserved")
        self._bodies[name] = body

    def root(self, body: str) -> None:
        """Define ``root``, where the grammar starts."""
        if "root" in self._bodies:
            raise ValueError("root is already defined")
        self._bodies["root"] = body

    def primitive(self, name: str) -> str:
        """One of the shared ``PRIMITIVES`` (and the rules it uses); returns its name."""
        if name not in self._bodies:
            body, uses = PRIMITIVES[name]
            self._bodies[name] = body
            for used in uses:
                self.primitive(used)
        return name

    def text(self) -> str:
        """Every rule, one a line, sorted by name."""
        missing = [name for name, body in self._bodies.items() if body is None]
        if missing:
            raise ValueError(f"rules reserved but never defined: {', '.join(missing)}")
        return "".join(f"{name} ::= {body}\n" for name, body in sorted(self._bodies.items()))
