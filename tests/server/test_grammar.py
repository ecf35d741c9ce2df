"""The JSON-schema grammar, rule by rule: the text of each rule, that llama.cpp takes the grammar, and what
llama.cpp's own grammar engine then lets a model write (``GrammarCheck`` feeds it the text token by token).

Where a schema's grammar here is written exactly as llama.cpp's server writes it, the expected text is the
one in llama.cpp's tests (``tests/test-json-schema-to-grammar.cpp``); elsewhere the language is the same
and the test says what it accepts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import combinations
from typing import Any

import pytest

from server.engines.grammar import JSON_OBJECT_GRAMMAR, GrammarBuilder, SchemaError, json_schema_grammar
from server.engines.grammar.gbnf import SPACE
from tests.support.grammar_check import GrammarCheck

CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})'
SPACE_RULE = 'space ::= | " " | "\\n"{1,2} [ \\t]{0,20}'
STRING_RULES = [CHAR_RULE, SPACE_RULE, 'string ::= "\\"" char* "\\""']


@pytest.fixture(scope="module")
def check() -> Iterator[GrammarCheck]:
    checker = GrammarCheck()
    yield checker
    checker.close()


def grammar(check: GrammarCheck, schema: Any) -> str:
    """The schema's grammar, which llama.cpp must take."""
    text = json_schema_grammar(schema)
    assert check.parses(text), text
    return text


def rules(text: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in text.splitlines())


def accepted(check: GrammarCheck, schema: Any, *texts: str) -> None:
    text = grammar(check, schema)
    for value in texts:
        assert check.accepts(text, value), f"refused {value!r} under\n{text}"


def refused(check: GrammarCheck, schema: Any, *texts: str) -> None:
    text = grammar(check, schema)
    for value in texts:
        assert not check.accepts(text, value), f"accepted {value!r} under\n{text}"


OBJECT = {
    "type": "object",
    "properties": {"a": {"type": "string"}},
    "required": ["a"],
    "additionalProperties": False,
}


# -- whitespace ---------------------------------------------------------------------------------------


def test_whitespace_is_llama_cpps_bounded_rule(check: GrammarCheck) -> None:
    assert SPACE == '| " " | "\\n"{1,2} [ \\t]{0,20}'
    assert json_schema_grammar(OBJECT).splitlines() == [
        'a-kv ::= "\\"a\\"" space ":" space string',
        CHAR_RULE,
        'root ::= "{" space a-kv space "}"',
        SPACE_RULE,
        'string ::= "\\"" char* "\\""',
    ]
    accepted(
        check,
        OBJECT,
        '{"a":"x"}',
        '{ "a" : "x" }',
        '{\n  "a": "x"\n}',  # as models lay JSON out
        '{\n\n\t"a": "x"\n}',
        "{\n" + " " * 20 + '"a": "x"}',
    )
    refused(
        check,
        OBJECT,
        '{  "a": "x"}',  # two spaces
        '{\n\n\n"a": "x"}',  # three newlines
        "{\n" + " " * 21 + '"a": "x"}',  # an indent past 20
        '{"a": "x"} ',  # nothing after the value
        ' {"a": "x"}',  # nor before it
    )


# -- strings ------------------------------------------------------------------------------------------


def test_string_characters_exclude_raw_control_characters(check: GrammarCheck) -> None:
    schema = {"type": "string"}
    assert rules(grammar(check, schema))["char"] == CHAR_RULE.split(" ::= ")[1]
    accepted(
        check, schema, '""', '"plain"', '"a\\nb"', '"\\"q\\" \\\\ \\t"', '"\\u00e9"', '"café 🐱"', '"\x7e"'
    )
    refused(
        check, schema, '"a\nb"', '"tab\there"', '"\x01"', '"\x7f"', '"bad \\x escape"', '"\\u12"', '"open'
    )


@pytest.mark.parametrize(
    ("bounds", "repetition", "good", "bad"),
    [
        ({"minLength": 1}, "char+", ["a"], [""]),
        ({"minLength": 3}, "char{3,}", ["abc", "abcdefgh"], ["ab"]),
        ({"maxLength": 3}, "char{0,3}", ["", "abc"], ["abcd"]),
        ({"minLength": 2, "maxLength": 4}, "char{2,4}", ["ab", "a\\nb", "abcd"], ["a", "abcde"]),
        ({"minLength": 3, "maxLength": 3}, "char{3}", ["abc", "\\u00e9bc"], ["ab", "abcd"]),
        ({"maxLength": 1}, "char?", ["", "a"], ["ab"]),
    ],
)
def test_string_lengths_are_repetition_counts(
    check: GrammarCheck, bounds: dict[str, int], repetition: str, good: list[str], bad: list[str]
) -> None:
    schema = {"type": "string", **bounds}
    assert rules(grammar(check, schema))["root"] == f'"\\"" {repetition} "\\""'
    accepted(check, schema, *(json.dumps(v) if "\\" not in v else f'"{v}"' for v in good))
    refused(check, schema, *(json.dumps(v) for v in bad))


def test_an_empty_string_only(check: GrammarCheck) -> None:
    schema = {"type": "string", "maxLength": 0}
    assert rules(grammar(check, schema))["root"] == '"\\"\\""'
    accepted(check, schema, '""')
    refused(check, schema, '"a"')


def test_string_formats(check: GrammarCheck) -> None:
    accepted(check, {"type": "string", "format": "date"}, '"2024-02-29"')
    refused(check, {"type": "string", "format": "date"}, '"2024-13-01"', '"24-01-01"')
    accepted(check, {"type": "string", "format": "uuid"}, '"123e4567-e89b-12d3-a456-426614174000"')
    refused(check, {"type": "string", "format": "uuid"}, '"123e4567"')
    accepted(check, {"type": "string", "format": "date-time"}, '"2024-02-29T13:45:00Z"')
    accepted(check, {"type": "string", "format": "email"}, '"anything"')  # not a grammar: any string


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        ("^[A-Z]{2}-\\d{3}$", ["AB-123"], ["AB-12", "ab-123", "AB-1234"]),
        ("^(?:cat|dog)s?$", ["cat", "dogs"], ["cow", "cats!"]),
        ("^a.c$", ["abc", "a c", 'a\\"c'], ["ac", "a\\nc"]),
        ("^[^a-z]+$", ["ABC", "1 2", '\\"'], ["aB", ""]),
        ("^\\w+@\\w+\\.com$", ["me@x.com"], ["me@x.org", "@x.com"]),
        ("x\\d", ["x1", "abx2yz"], ["x", "abc"]),  # unanchored: anything around it
        ('^say "hi"\\\\$', ['say \\"hi\\"\\\\'], ['say "hi"\\\\']),
    ],
)
def test_patterns(check: GrammarCheck, pattern: str, good: list[str], bad: list[str]) -> None:
    schema = {"type": "string", "pattern": pattern}
    accepted(check, schema, *(f'"{v}"' for v in good))
    refused(check, schema, *(f'"{v}"' for v in bad))


def test_a_pattern_rule_is_written_as_the_regex_reads() -> None:
    assert (
        rules(json_schema_grammar({"pattern": "^[A-Z]{2}-\\d{3}$"}))["root"]
        == '"\\"" [A-Z]{2} "-" [0-9]{3} "\\""'
    )


# -- integers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (0, None),
        (1, None),
        (3, None),
        (25, None),
        (-5, None),
        (-123, None),
        (None, 30),
        (None, -5),
        (None, 0),
        (0, 23),
        (15, 300),
        (-123, 42),
        (-10, 10),
        (-1000, -3),
        (7, 7),
        (99, 1001),
        (1, 100),
    ],
)
def test_integer_ranges_are_grammar_rules(check: GrammarCheck, low: int | None, high: int | None) -> None:
    schema: dict[str, Any] = {"type": "integer"}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    text = grammar(check, schema)
    window = range((low if low is not None else -1200) - 20, (high if high is not None else 1200) + 21)
    wrong = [
        n
        for n in window
        if check.accepts(text, str(n)) != ((low is None or n >= low) and (high is None or n <= high))
    ]
    assert not wrong, f"{wrong[:10]} under\n{text}"
    for written in ("-0", "007", "+1", "1.0", "1e2", ""):
        assert not check.accepts(text, written), written


def test_integer_range_rules_read_digit_by_digit() -> None:
    def root(schema: dict[str, Any]) -> str:
        return rules(json_schema_grammar({"type": "integer", **schema}))["root"]

    assert root({"minimum": 0}) == "([0] | [1-9] [0-9]{0,15})"  # as llama.cpp writes it
    assert root({"minimum": 1}) == "[1-9] [0-9]{0,15}"
    assert root({"minimum": 15, "maximum": 300}) == '([1] [5-9] | [2-9] [0-9] | [1-2] [0-9]{2} | [3] "00")'
    assert root({"minimum": -10, "maximum": 10}) == '("-" ("10" | [1-9]) | [0] | "10" | [1-9])'
    assert root({"maximum": -5}) == '"-" ([5-9] | [1-9] [0-9]{1,15})'
    assert root({}) == "integer"


def test_open_ended_integers_have_at_most_16_digits(check: GrammarCheck) -> None:
    for schema in ({"type": "integer"}, {"type": "integer", "minimum": 5}):
        accepted(check, schema, "9" * 16)
        refused(check, schema, "9" * 17)
    for schema in (
        {"type": "integer"},
        {"type": "integer", "maximum": 5},
        {"type": "integer", "maximum": -5},
    ):
        accepted(check, schema, "-" + "9" * 16)
        refused(check, schema, "-" + "9" * 17)


def test_exclusive_and_fractional_integer_bounds(check: GrammarCheck) -> None:
    cases: list[tuple[dict[str, Any], int, int]] = [
        ({"exclusiveMinimum": 0, "exclusiveMaximum": 5}, 1, 4),
        ({"minimum": 0.5, "maximum": 4.5}, 1, 4),
        ({"exclusiveMinimum": 0.5, "exclusiveMaximum": 4.5}, 1, 4),
        ({"minimum": 0, "exclusiveMinimum": True, "maximum": 5, "exclusiveMaximum": True}, 1, 4),  # draft 4
        ({"minimum": 2, "exclusiveMinimum": 0}, 2, 5000),
    ]
    for bounds, low, high in cases:
        text = grammar(check, {"type": "integer", **bounds})
        assert [n for n in range(-3, 8) if check.accepts(text, str(n))] == list(
            range(low, min(high, 7) + 1)
        ), bounds


# -- enum, const, anyOf -------------------------------------------------------------------------------


def test_enum_and_const_are_their_compact_json(check: GrammarCheck) -> None:
    schema = {"enum": ["red", 1, None, True, {"x": [1, 2]}, "naïve"]}
    assert (
        rules(grammar(check, schema))["root"]
        == '("\\"red\\"" | "1" | "null" | "true" | "{\\"x\\":[1,2]}" | "\\"naïve\\"")'
    )
    accepted(check, schema, '"red"', "1", "null", "true", '{"x":[1,2]}', '"naïve"')
    refused(check, schema, '"blue"', "2", '"1"', '{"x": [1, 2]}', '"RED"')
    assert rules(grammar(check, {"const": "yes"}))["root"] == '"\\"yes\\""'
    refused(check, {"const": "yes"}, '"no"')
    accepted(check, {"type": "string", "enum": ["a"]}, '"a"')  # the enum decides


def test_any_of_and_one_of(check: GrammarCheck) -> None:
    schema = {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0, "maximum": 9}]}
    assert rules(grammar(check, schema)) == rules(grammar(check, {"oneOf": schema["anyOf"]}))
    assert rules(grammar(check, schema))["root"] == "string | alternative-1"
    accepted(check, schema, '"x"', "7")
    refused(check, schema, "10", "true", "null")
    nullable = {"type": ["string", "null"]}
    accepted(check, nullable, '"x"', "null")
    refused(check, nullable, "0")


# -- objects ------------------------------------------------------------------------------------------


def test_required_properties_in_the_schemas_order_and_optional_ones_after(check: GrammarCheck) -> None:
    """llama.cpp's "required + optional props each in original order"."""
    schema = {
        "type": "object",
        "properties": {p: {"type": "string"} for p in "badc"},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    assert json_schema_grammar(schema).splitlines() == [
        'a-kv ::= "\\"a\\"" space ":" space string',
        'b-kv ::= "\\"b\\"" space ":" space string',
        'c-kv ::= "\\"c\\"" space ":" space string',
        CHAR_RULE,
        'd-kv ::= "\\"d\\"" space ":" space string',
        'd-rest ::= ( "," space c-kv )?',
        'root ::= "{" space b-kv "," space a-kv ( "," space ( d-kv d-rest | c-kv ) )? space "}"',
        SPACE_RULE,
        'string ::= "\\"" char* "\\""',
    ]
    text = grammar(check, schema)
    for optional in ([], ["d"], ["c"], ["d", "c"]):
        value = "{" + ",".join(f'"{p}":""' for p in ["b", "a", *optional]) + "}"
        assert check.accepts(text, value), value
    for wrong in ('{"a":"","b":""}', '{"b":""}', '{"b":"","a":"","c":"","d":""}', '{"b":"","a":"","e":""}'):
        assert not check.accepts(text, wrong), wrong


def test_any_subset_of_optional_properties_in_order(check: GrammarCheck) -> None:
    """llama.cpp's "N optional props"."""
    schema = {"properties": {p: {"type": "integer"} for p in "abc"}, "additionalProperties": False}
    assert (
        rules(grammar(check, schema))["root"] == '"{" space ( a-kv a-rest | b-kv b-rest | c-kv )? space "}"'
    )
    assert rules(grammar(check, schema))["a-rest"] == '( "," space b-kv )? b-rest'
    text = grammar(check, schema)
    for size in range(4):
        for chosen in combinations("abc", size):
            assert check.accepts(text, "{" + ",".join(f'"{p}":1' for p in chosen) + "}"), chosen
    assert not check.accepts(text, '{"b":1,"a":1}')
    assert not check.accepts(text, '{"a":1,"a":1}')


def test_additional_properties(check: GrammarCheck) -> None:
    closed = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    implicit = {"type": "object", "properties": {"a": {"type": "integer"}}}  # closed, as llama.cpp has it
    assert json_schema_grammar(closed) == json_schema_grammar(implicit)
    refused(check, closed, '{"a":1,"b":2}', '{"b":2}')
    accepted(check, closed, "{}", '{"a":1}')

    typed = {
        "type": "object",
        "properties": {"and": {"type": "number"}, "also": {"type": "number"}},
        "required": ["and"],
        "additionalProperties": {"type": "number"},
    }
    accepted(check, typed, '{"and":1}', '{"and":1,"also":2,"x":3,"al":4,"alsoo":5,"an":6}', '{"and":1,"":2}')
    refused(
        check,
        typed,
        '{"and":1,"x":"s"}',
        '{"and":1,"and":2}',
        '{"and":1,"also":2,"also":3}',
        '{"and":1,"x":1,"also":2}',
    )
    assert rules(grammar(check, typed))["root"] == (
        '"{" space and-kv ( "," space ( also-kv also-rest | additional-kv ( "," space additional-kv )* ) )? space "}"'
    )

    anything = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True}
    accepted(check, anything, '{"a":1,"b":[true,{"c":null}]}', '{"b":"x"}')
    refused(check, anything, '{"a":"x"}', '{"a":1,"a":1}')

    for free in ({"type": "object"}, {"type": "object", "additionalProperties": True}):
        assert rules(json_schema_grammar(free))["root"] == "object"
        accepted(check, free, "{}", '{"k": [1, {"x": "y"}], "n": null}')
        refused(check, free, "[]", '"x"')
    assert (
        rules(json_schema_grammar({"type": "object", "additionalProperties": False}))["root"]
        == '"{" space "}"'
    )


def test_nested_objects_and_arrays_of_objects(check: GrammarCheck) -> None:
    point = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    schema = {
        "type": "object",
        "properties": {"at": point, "path": {"type": "array", "items": point}},
        "required": ["at", "path"],
    }
    text = grammar(check, schema)
    assert rules(text)["at"] == '"{" space at-x-kv space "}"'
    assert rules(text)["path"] == '"[" space ( path-item ( "," space path-item )* )? space "]"'
    accepted(
        check,
        schema,
        '{"at":{"x":1},"path":[]}',
        '{\n  "at": {\n    "x": 1\n  },\n  "path": [\n    {"x": 2},\n    {"x": 3}\n  ]\n}',
    )
    refused(check, schema, '{"at":{},"path":[]}', '{"at":{"x":1},"path":[{"y":1}]}')


def test_property_names_that_are_not_rule_names(check: GrammarCheck) -> None:
    schema = {
        "type": "object",
        "properties": {
            "first_name": {"type": "string"},
            "string": {"type": "integer"},
            "": {"type": "boolean"},
            'say "hi"': {"type": "null"},
        },
        "required": ["first_name", "string", "", 'say "hi"'],
    }
    text = grammar(check, schema)
    named = rules(text)
    assert {"first-name-kv", "string-kv", "property-kv", "say-hi-kv"} <= set(named)
    assert named["string"] == '"\\"" char* "\\""'  # the shared rule keeps its name
    accepted(check, schema, '{"first_name":"a","string":1,"":true,"say \\"hi\\"":null}')


# -- arrays -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "body", "counts"),
    [
        ({}, '( item ( "," space item )* )?', range(0, 7)),
        ({"minItems": 2}, 'item ( "," space item )+', range(2, 7)),
        ({"maxItems": 2}, '( item ( "," space item )? )?', range(0, 3)),
        ({"minItems": 1, "maxItems": 3}, 'item ( "," space item ){0,2}', range(1, 4)),
        ({"minItems": 3, "maxItems": 3}, 'item ( "," space item ){2}', range(3, 4)),
    ],
)
def test_array_lengths(check: GrammarCheck, bounds: dict[str, int], body: str, counts: range) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, **bounds}
    text = grammar(check, schema)
    assert rules(text)["root"] == f'"[" space {body.replace("item", "integer")} space "]"'
    for n in range(7):
        assert check.accepts(text, json.dumps(list(range(n)))) == (n in counts), n


def test_arrays_of_nothing_tuples_and_anything(check: GrammarCheck) -> None:
    assert rules(grammar(check, {"type": "array", "maxItems": 0}))["root"] == '"[" space "]"'
    tuple_ = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False}
    assert rules(grammar(check, tuple_))["root"] == '"[" space string "," space integer space "]"'
    accepted(check, tuple_, '["a", 1]')
    refused(check, tuple_, '["a"]', '[1, "a"]', '["a", 1, 2]')
    accepted(check, {"type": "array"}, "[]", '[1, "x", [null]]')


# -- $ref ---------------------------------------------------------------------------------------------


def test_refs_into_defs_and_definitions(check: GrammarCheck) -> None:
    """llama.cpp's "top-level $ref"."""
    schema = {
        "$ref": "#/definitions/foo",
        "definitions": {
            "foo": {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "required": ["a"],
                "additionalProperties": False,
            }
        },
    }
    assert json_schema_grammar(schema).splitlines() == [
        CHAR_RULE,
        'ref-definitions-foo ::= "{" space ref-definitions-foo-a-kv space "}"',
        'ref-definitions-foo-a-kv ::= "\\"a\\"" space ":" space string',
        "root ::= ref-definitions-foo",
        SPACE_RULE,
        'string ::= "\\"" char* "\\""',
    ]
    pydantic_style = {
        "$defs": {
            "Pet": {"properties": {"name": {"type": "string"}}, "required": ["name"], "type": "object"}
        },
        "properties": {
            "pets": {"items": {"$ref": "#/$defs/Pet"}, "type": "array"},
            "owner~/x": {
                "$ref": "#/properties/owner~0~1x/$defs/Age",
                "$defs": {"Age": {"type": "integer", "minimum": 0, "maximum": 150}},
            },
        },
        "required": ["pets", "owner~/x"],
        "type": "object",
    }
    accepted(check, pydantic_style, '{"pets":[{"name":"Tom"}],"owner~/x":40}')
    refused(check, pydantic_style, '{"pets":[{"nom":"Tom"}],"owner~/x":40}', '{"pets":[],"owner~/x":151}')


def test_recursive_refs(check: GrammarCheck) -> None:
    node = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer"},
                    "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
                "required": ["v", "next"],
            }
        },
        "$ref": "#/$defs/Node",
    }
    accepted(check, node, '{"v":1,"next":null}', '{"v":1,"next":{"v":2,"next":{"v":3,"next":null}}}')
    refused(check, node, '{"v":1,"next":{"v":2}}')
    tree = {
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["kids"],
    }
    accepted(check, tree, '{"kids":[{"kids":[]},{"kids":[{"kids":[]}]}]}')


# -- what cannot be a grammar -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": 5}, "unknown type"),
        ({"type": "kaboom"}, "unknown type"),
        ({"type": []}, "empty"),
        ({"properties": {"a": {"$ref": "#/nowhere"}}}, "points at nothing"),
        ({"$ref": "https://example.com/schema.json"}, "same schema"),
        ({"$ref": "other.json#/a"}, "same schema"),
        ({"enum": []}, "enum"),
        ({"anyOf": {}}, "anyOf"),
        ({"type": "string", "minLength": -1}, "minLength"),
        ({"type": "string", "maxLength": "3"}, "maxLength"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "below"),
        ({"type": "array", "minItems": 3, "maxItems": 2}, "below"),
        ({"type": "integer", "minimum": 5, "maximum": 2}, "no integer"),
        ({"type": "integer", "minimum": "0"}, "number"),
        ({"type": "string", "pattern": "^(?=a)a$"}, "pattern"),
        ({"type": "string", "pattern": "^(a$"}, "pattern"),
        ({"type": "string", "pattern": "\\bword"}, "pattern"),
        ({"properties": []}, "properties"),
        ({"type": "object", "required": "a"}, "required"),
        ({"type": "object", "additionalProperties": 3}, "additionalProperties"),
        ({"allOf": [{"type": "string"}, {"minLength": 2}]}, "allOf"),
        ({"items": [1]}, "schema must be an object"),
    ],
)
def test_schemas_without_a_grammar_raise(schema: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        json_schema_grammar(schema)


def test_a_chain_of_refs_too_long_to_follow_raises() -> None:
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(3000)}
    defs["d3000"] = {"type": "string"}
    with pytest.raises(SchemaError, match="nests too deeply"):
        json_schema_grammar({"$defs": defs, "$ref": "#/$defs/d0"})


def test_a_grammar_llama_cpp_refuses_is_detected(check: GrammarCheck) -> None:
    # a schema that is its own first item: the grammar is left-recursive, which llama.cpp refuses
    text = json_schema_grammar({"anyOf": [{"$ref": "#"}, {"type": "null"}]})
    assert not check.parses(text)


# -- all of the above in one grammar ------------------------------------------------------------------


def test_json_object_mode_is_the_plain_object_schema(check: GrammarCheck) -> None:
    assert json_schema_grammar({"type": "object"}) == JSON_OBJECT_GRAMMAR
    assert check.parses(JSON_OBJECT_GRAMMAR)
    for value in ("{}", '{\n  "a": [1, 2.5e-3, "x", null, true, {"b": {}}]\n}'):
        assert check.accepts(JSON_OBJECT_GRAMMAR, value)
    for value in ("[]", "1", '"x"', '{"a": }', '{"a": 01}'):
        assert not check.accepts(JSON_OBJECT_GRAMMAR, value)


def test_several_schemas_compose_under_their_own_names(check: GrammarCheck) -> None:
    builder = GrammarBuilder()
    weather = builder.add_schema(
        "get-weather", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    )
    alarm = builder.add_schema(
        "set-alarm",
        {
            "type": "object",
            "properties": {"city": {"type": "integer", "minimum": 0, "maximum": 23}},
            "required": ["city"],
        },
    )
    call = builder.add_rule(
        "call",
        f'"{{" space "\\"name\\":" space ("\\"weather\\"," space {weather} | "\\"alarm\\"," space {alarm}) space "}}"',
    )
    text = builder.grammar(call)
    assert check.parses(text), text
    named = rules(text)
    assert (weather, alarm, named["root"]) == ("get-weather", "set-alarm", "call")
    assert named["get-weather-city-kv"] == '"\\"city\\"" space ":" space string'
    assert named["set-alarm-city-kv"] == '"\\"city\\"" space ":" space set-alarm-city'
    assert sum(line.startswith("space ::=") for line in text.splitlines()) == 1
    assert check.accepts(text, '{"name": "weather", {"city": "Oslo"}}')
    assert check.accepts(text, '{"name": "alarm", {"city": 7}}')
    assert not check.accepts(text, '{"name": "alarm", {"city": "Oslo"}}')
