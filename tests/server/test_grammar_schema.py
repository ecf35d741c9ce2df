from __future__ import annotations

import json
from typing import Any

from server.engines.llama import MAX_ENUMERATED_RANGE, bounded_integers, schema_grammar


def test_small_closed_integer_ranges_become_enums() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 0, "maximum": 3},
            "open": {"type": "integer", "minimum": 0},
            "exclusive": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
            "wide": {"type": "integer", "minimum": 0, "maximum": MAX_ENUMERATED_RANGE * 10},
            "items": {"type": "array", "items": {"type": "integer", "minimum": -1, "maximum": 1}},
        },
    }
    out = bounded_integers(schema)["properties"]
    assert out["score"] == {"enum": [0, 1, 2, 3]}
    assert out["open"] == {"type": "integer", "minimum": 0}
    assert out["exclusive"] == {"enum": [1, 2]}
    assert out["wide"]["type"] == "integer"
    assert out["items"]["items"] == {"enum": [-1, 0, 1]}
    assert schema["properties"]["score"]["type"] == "integer"  # the request's own schema is not changed


def test_strings_in_a_schema_grammar_admit_no_raw_control_characters() -> None:
    """JSON strings cannot hold a raw newline or tab: a grammar that let the model write one produced
    output that does not parse."""
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city"],
    }
    rules = [line for line in schema_grammar(json.dumps(schema)).split("\n") if line.startswith("char ::=")]
    assert len(rules) == 1
    allowed = rules[0].split("|")[0]
    assert allowed.strip() == r'char ::= [^"\\\x7F\x00-\x1F]'
    assert '"\\\\" (["\\\\/bfnrt]' in rules[0]  # escapes, \n among them, are still allowed
