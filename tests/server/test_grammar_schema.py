from __future__ import annotations

from server.engines.llama import MAX_ENUMERATED_RANGE, bounded_integers


def test_small_closed_integer_ranges_become_enums() -> None:
    schema = {
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
