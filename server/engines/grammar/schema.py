"""JSON schemas as GBNF rules: a JSON value the grammar lets a model write is one the schema accepts.

The rule shapes follow llama.cpp's own server (``common/json-schema-to-grammar.cpp`` in llama.cpp, MIT),
so that a model is steered here as it is there:

- whitespace between tokens is the bounded ``space`` rule, never after the value;
- an object writes its required properties in the schema's order, then any of its optional ones, still
  in order (``a-kv a-rest | b-kv b-rest | ...``, each ``-rest`` rule the optional ones after it); properties
  not in ``properties`` are allowed only when ``additionalProperties`` says so (it is false by default
  once there are ``properties``, as there), with names that differ from the declared ones;
- ``minLength``/``maxLength`` and ``minItems``/``maxItems`` are repetition counts; integer ``minimum`` and
  ``maximum`` are digit rules (``integers``); ``enum`` and ``const`` are the values' compact JSON text;
- ``$ref`` points into the same document (``#``, ``#/$defs/Name``, any JSON pointer), and may recurse.

What no grammar here can express (a remote ``$ref``, an unknown ``type``, a malformed keyword) raises
``SchemaError``. Keywords that constrain without shaping the text are left to the client, as llama.cpp's
server leaves them: bounds on non-integer numbers, ``uniqueItems``, ``minProperties``, ``not``, ``if``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from server.engines.grammar.gbnf import (
    ESCAPE,
    MAX_DIGITS,
    PLAIN_CHARS,
    Rules,
    alternatives,
    class_char,
    literal,
    repeat,
    rule_name,
    separated,
)
from server.engines.grammar.integers import integer_range
from server.engines.grammar.pattern import pattern_expression

_FORMATS = {"date": "date-string", "time": "time-string", "date-time": "date-time-string", "uuid": "uuid"}
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


class SchemaError(ValueError):
    """A JSON schema that cannot become a grammar."""


class GrammarBuilder:
    """One grammar made of JSON schemas' rules and rules of its own.

    Each schema's rules are named under the name it is added with, so several schemas (the arguments of
    several tools, say) live side by side in one grammar; the shared rules (``space``, ``string``...) are
    written once.
    """

    def __init__(self) -> None:
        self._rules = Rules()
        self._rules.primitive("space")

    def add_schema(self, name: str, schema: Any) -> str:
        """Add the rules for a JSON value that ``schema`` accepts; returns the name of the rule to use.

        ``schema`` is its own document: its ``$ref``s resolve within it. Raises ``SchemaError``.
        """
        converter = _Converter(self._rules, schema, f"{rule_name(name)}-")
        return self._rules.add(name, converter.convert())

    def add_rule(self, name: str, body: str) -> str:
        """Add a rule of the caller's own (it may use ``space`` and the rules ``shared`` names)."""
        return self._rules.add(name, body)

    def shared(self, name: str) -> str:
        """Add one of the shared rules (``string``, ``value``, ``object``, ``integer``...); returns its name."""
        return self._rules.primitive(name)

    def grammar(self, root: str) -> str:
        """The grammar text, starting with the GBNF expression ``root``."""
        self._rules.root(root)
        return self._rules.text()


def json_schema_grammar(schema: Any) -> str:
    """The GBNF grammar for a JSON value that ``schema`` accepts (raises ``SchemaError``)."""
    rules = Rules()
    rules.primitive("space")
    rules.root(_Converter(rules, schema, "").convert())
    return rules.text()


def _sub(path: str, part: str) -> str:
    return f"{path}-{part}" if path else part


class _Converter:
    """Turns one schema document into rules, named ``prefix`` + the path of the part they stand for."""

    def __init__(self, rules: Rules, document: Any, prefix: str) -> None:
        self._rules = rules
        self._document = document
        self._prefix = prefix
        self._refs: dict[str, str] = {}

    def convert(self) -> str:
        """The expression for the whole document."""
        try:
            return self.visit(self._document, "")
        except RecursionError as exc:  # a chain of $refs, each leading to the next
            raise SchemaError("the schema nests too deeply") from exc

    def rule(self, schema: Any, path: str) -> str:
        """A rule name for ``schema`` (a shared rule when it is a plain type)."""
        expression = self.visit(schema, path)
        if expression in self._rules:
            return expression
        return self._rules.add(self._prefix + path, expression)

    def visit(self, schema: Any, path: str) -> str:
        """A GBNF expression for the JSON values ``schema`` accepts; its parts are rules named after ``path``."""
        if schema is True:
            return self._rules.primitive("value")
        if not isinstance(schema, Mapping):
            raise SchemaError(f"a schema must be an object, not {json.dumps(schema)[:60]}")
        if "$ref" in schema:
            return self._ref(schema["$ref"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = _schemas(schema[key], key)
                return " | ".join(
                    self.rule(s, _sub(path or "alternative", str(i))) for i, s in enumerate(options)
                )
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                raise SchemaError("type must not be an empty list")
            return " | ".join(self.rule({**schema, "type": t}, _sub(path or "type", str(t))) for t in kind)
        if "const" in schema:
            return _constant(schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError("enum must be a non-empty list")
            return alternatives([_constant(v) for v in values])
        if "allOf" in schema and kind in (None, "object") and "properties" not in schema:
            return self._all_of(_schemas(schema["allOf"], "allOf"), path)
        if kind is None:
            kind = _implied_type(schema)
            if kind is None:
                return self._rules.primitive("value")
        if not isinstance(kind, str) or kind not in _TYPES:
            raise SchemaError(f"unknown type {json.dumps(kind)[:60]}")
        if kind == "object":
            return self._object(schema, path)
        if kind == "array":
            return self._array(schema, path)
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return self._integer(schema)
        return self._rules.primitive(kind)

    def _ref(self, ref: Any) -> str:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise SchemaError(f"$ref {json.dumps(ref)[:80]} is not a reference into the same schema")
        if ref not in self._refs:
            target = _resolve(self._document, ref)
            path = "ref" + rule_name(ref[1:])
            # named before its target is converted, so that a schema that refers to itself can
            self._refs[ref] = self._rules.reserve(self._prefix + path)
            self._rules.define(self._refs[ref], self.visit(target, path))
        return self._refs[ref]

    def _all_of(self, parts: Sequence[Any], path: str) -> str:
        if len(parts) == 1:
            return self.visit(parts[0], path)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for part in parts:
            while isinstance(part, Mapping) and isinstance(part.get("$ref"), str):
                part = _resolve(self._document, part["$ref"])
            if not isinstance(part, Mapping) or not (part.get("type") == "object" or "properties" in part):
                raise SchemaError("allOf can only combine objects")
            properties.update(_mapping(part.get("properties", {}), "properties"))
            required.extend(_names(part.get("required", []), "required"))
        merged = {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        return self._object(merged, path)

    def _object(self, schema: Mapping[str, Any], path: str) -> str:
        properties = _mapping(schema.get("properties", {}), "properties")
        required = set(_names(schema.get("required", []), "required"))
        extra = schema.get("additionalProperties", "properties" not in schema)
        if not isinstance(extra, bool | Mapping):
            raise SchemaError("additionalProperties must be a boolean or a schema")
        if not properties and extra is True:
            return self._rules.primitive("object")
        pairs: dict[str, str] = {}  # property -> the rule for its name and value
        for key, value in properties.items():
            part = _sub(path, rule_name(key).strip("-") or "property")
            name = literal(json.dumps(key, ensure_ascii=False))
            pairs[key] = self._rules.add(
                f"{self._prefix}{part}-kv", f'{name} space ":" space {self.rule(value, part)}'
            )
        optional = [pairs[key] for key in properties if key not in required]
        repeated = None
        if extra is not False:
            repeated = self._additional(list(properties), extra, _sub(path, "additional"))
            optional.append(repeated)
        body = ' "," space '.join(pairs[key] for key in properties if key in required)
        if optional:
            choice = " | ".join(self._optional(optional, i, repeated) for i in range(len(optional)))
            body = f'{body} ( "," space ( {choice} ) )?' if body else f"( {choice} )?"
        return f'"{{" space {body} space "}}"' if body else '"{" space "}"'

    def _optional(self, pairs: list[str], first: int, repeated: str | None) -> str:
        """``pairs[first]`` then, optionally, any of the pairs after it in order (``repeated`` any number of times)."""
        written = pairs[first]
        if written == repeated:
            written += f' ( "," space {repeated} )*'
        if first + 1 < len(pairs):
            written += " " + self._rest(pairs, first, repeated)
        return written

    def _rest(self, pairs: list[str], after: int, repeated: str | None) -> str:
        """A rule for what may follow ``pairs[after]``: each of the later pairs, or none, in order."""
        following = pairs[after + 1]
        body = f'( "," space {following} )' + ("*" if following == repeated else "?")
        if after + 2 < len(pairs):
            body += " " + self._rest(pairs, after + 1, repeated)
        return self._rules.add(pairs[after].removesuffix("-kv") + "-rest", body)

    def _additional(self, declared: list[str], value: Any, path: str) -> str:
        value_rule = self._rules.primitive("value") if value is True else self.rule(value, f"{path}-value")
        key = self._rules.primitive("string")
        if declared:
            key = self._rules.add(
                f"{self._prefix}{path}-k", _other_strings(declared, self._rules.primitive("char"))
            )
        return self._rules.add(f"{self._prefix}{path}-kv", f'{key} ":" space {value_rule}')

    def _array(self, schema: Mapping[str, Any], path: str) -> str:
        items = schema.get("prefixItems", schema.get("items"))
        if isinstance(items, list):  # a tuple: one schema per position
            parts = [self.rule(item, _sub(path, f"tuple-{i}")) for i, item in enumerate(items)]
            return (
                '"[" space '
                + "".join(f'{p} "," space ' for p in parts[:-1])
                + (f'{parts[-1]} space "]"' if parts else '"]"')
            )
        low = _count(schema, "minItems", 0) or 0
        high = _count(schema, "maxItems", None)
        if high is not None and high < low:
            raise SchemaError(f"maxItems {high} is below minItems {low}")
        if items in (None, True, {}) and low == 0 and high is None:
            return self._rules.primitive("array")
        item = self.rule(True if items is None else items, _sub(path, "item"))
        listed = separated(item, '"," space', low, high)
        return f'"[" space {listed} space "]"' if listed else '"[" space "]"'

    def _string(self, schema: Mapping[str, Any]) -> str:
        if "pattern" in schema:
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise SchemaError("pattern must be a string")
            try:
                expression = pattern_expression(pattern)
            except ValueError as exc:
                raise SchemaError(f"pattern {pattern[:80]!r}: {exc}") from exc
            if "char*" in expression.split():
                self._rules.primitive("char")
            return f'"\\"" {expression} "\\""' if expression else '"\\"\\""'
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return self._rules.primitive(_FORMATS[fmt])
        low = _count(schema, "minLength", 0) or 0
        high = _count(schema, "maxLength", None)
        if high is not None and high < low:
            raise SchemaError(f"maxLength {high} is below minLength {low}")
        if (low, high) == (0, None):
            return self._rules.primitive("string")
        chars = repeat(self._rules.primitive("char"), low, high)
        return f'"\\"" {chars} "\\""' if chars else '"\\"\\""'

    def _integer(self, schema: Mapping[str, Any]) -> str:
        low, high = _integer_bounds(schema)
        if low is None and high is None:
            return self._rules.primitive("integer")
        try:
            return integer_range(low, high)
        except ValueError as exc:
            raise SchemaError(str(exc)) from exc


def _implied_type(schema: Mapping[str, Any]) -> str | None:
    """The type a schema without ``type`` describes, from the keywords it uses (``None``: any value)."""
    if "properties" in schema or schema.get("additionalProperties", True) is not True:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if (
        any(key in schema for key in ("pattern", "minLength", "maxLength"))
        or schema.get("format") in _FORMATS
    ):
        return "string"
    return None


def _constant(value: Any) -> str:
    """The literal JSON text of ``value``, written compactly."""
    return literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _schemas(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise SchemaError(f"{key} must be a non-empty list of schemas")
    return value


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SchemaError(f"{key} must be an object")
    return value


def _names(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaError(f"{key} must be a list of property names")
    return value


def _count(schema: Mapping[str, Any], key: str, default: int | None) -> int | None:
    if key not in schema:
        return default
    value = schema[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SchemaError(f"{key} must be a non-negative integer")
    return value


def _integer_bounds(schema: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The least and greatest integers the schema allows, from ``minimum``, ``exclusiveMinimum`` (a number,
    or true as in draft 4) and their maximum counterparts, fractional bounds rounded inwards."""
    bounds: dict[str, float | None] = {}
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        value = schema.get(key)
        if value is None or isinstance(value, bool):
            bounds[key] = None
        elif isinstance(value, int | float) and math.isfinite(value):
            bounds[key] = value
        else:
            raise SchemaError(f"{key} must be a number")
    for side in ("Minimum", "Maximum"):
        if schema.get(f"exclusive{side}") is True:  # draft 4: the bound itself is left out
            bounds[f"exclusive{side}"], bounds[side.lower()] = bounds[side.lower()], None
    lows = [math.ceil(v) for v in (bounds["minimum"],) if v is not None]
    lows += [math.floor(v) + 1 for v in (bounds["exclusiveMinimum"],) if v is not None]
    highs = [math.floor(v) for v in (bounds["maximum"],) if v is not None]
    highs += [math.ceil(v) - 1 for v in (bounds["exclusiveMaximum"],) if v is not None]
    low, high = max(lows, default=None), min(highs, default=None)
    # beyond what an unbounded integer may have in digits anyway, a bound changes nothing
    limit = 10**MAX_DIGITS
    return (None if low is not None and low <= -limit else low), (
        None if high is not None and high >= limit else high
    )


def _resolve(document: Any, ref: str) -> Any:
    """The part of ``document`` that the JSON pointer in ``ref`` (``#/a/b``) names."""
    target = document
    for raw in ref[2:].split("/") if ref != "#" else []:
        token = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            raise SchemaError(f"$ref {ref[:80]} points at nothing in the schema")
    return target


def _other_strings(names: list[str], char: str) -> str:
    """A JSON string that is none of ``names``: the name of a property beyond the declared ones.

    Walks the names as a tree of characters: at each step the string either follows a branch towards a
    declared name (and must differ from it further on), or leaves the tree with any other character, or
    stops, unless a declared name ends there.
    """
    tree: dict[str, Any] = {}
    for name in names:
        node = tree
        for c in name:
            node = node.setdefault(c, {})
        node[""] = {}  # a declared name ends here

    def branch(node: dict[str, Any]) -> str:
        children = {c: child for c, child in node.items() if c}
        if not children:
            return f"{char}+"
        options = [f"{_json_char(c)} {branch(child)}" for c, child in sorted(children.items())]
        excluded = "".join(class_char(ord(c)) for c in sorted(children) if ord(c) >= 0x20 and c not in '"\\')
        options.append(f"([^{PLAIN_CHARS}{excluded}] | {ESCAPE}) {char}*")
        return "(" + " | ".join(options) + (")" if "" in node else ")?")

    return f'"\\"" {branch(tree)} "\\""'


def _json_char(c: str) -> str:
    return literal(json.dumps(c, ensure_ascii=False)[1:-1])
