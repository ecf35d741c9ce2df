"""Validate API bodies against OpenAI's published OpenAPI schemas.

    from tests.spec import validate
    validate("CreateChatCompletionResponse", resp.json())   # AssertionError on mismatch

The schemas come from tests/data/openapi/schemas.json, a verbatim subset of OpenAI's
openapi.yaml (see extract.py and SOURCE.md there); nothing outside the repository is
read. ``schema_names()`` lists what can be validated.

The spec is OpenAPI 3.1 (JSON Schema 2020-12) with a few OpenAPI-isms, adapted at load:
- ``nullable: true`` (OpenAPI 3.0 style, still used in places) becomes
  ``anyOf: [<schema>, {type: null}]``, so ``null`` passes even where an ``enum`` is set;
- ``$recursiveRef: "#"`` (used once, by CompoundFilter) becomes a ``$ref`` to its own
  component, and ``$recursiveAnchor`` is dropped;
- a ``oneOf`` that carries a ``discriminator`` becomes ``anyOf``: the variant is chosen by
  the discriminator property rather than by exactly-one matching, and some variants in
  the spec overlap (e.g. EasyInputMessage and InputMessage);
- ``format`` is an annotation only (as in 2020-12 by default): the spec uses custom
  formats such as ``unixtime``. ``x-*``, ``example`` and ``discriminator`` are ignored.
Everything else (types, ``required``, ``enum``, ``additionalProperties``...) is enforced
as written; extra properties are allowed wherever the spec allows them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance

SCHEMAS_FILE = Path(__file__).resolve().parent / "data" / "openapi" / "schemas.json"
REF_PREFIX = "#/components/schemas/"
MAX_REPORTED = 8


DATA_KEYWORDS = {"enum", "const", "default", "example", "examples"}  # values are data, not schemas
NAME_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}  # name -> schema


def _adapt(node: Any, component: str) -> Any:
    """Rewrite one OpenAPI schema into plain JSON Schema 2020-12 (see module doc)."""
    if isinstance(node, list):
        return [_adapt(item, component) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$recursiveAnchor":
            continue
        if key == "$recursiveRef":
            out["$ref"] = REF_PREFIX + component
        elif key in DATA_KEYWORDS or key.startswith("x-"):
            out[key] = value
        elif key in NAME_MAPS and isinstance(value, dict):
            out[key] = {name: _adapt(sub, component) for name, sub in value.items()}
        else:
            out[key] = _adapt(value, component)
    if "discriminator" in out and "oneOf" in out:
        out["anyOf"] = out.pop("oneOf")
    if out.pop("nullable", False) is True:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _document() -> dict[str, Any]:
    raw = json.loads(SCHEMAS_FILE.read_text(encoding="utf-8"))
    schemas = raw["components"]["schemas"]
    return {"components": {"schemas": {name: _adapt(s, name) for name, s in schemas.items()}}}


def schema_names() -> list[str]:
    """Every component schema available for validation."""
    return sorted(_document()["components"]["schemas"])


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in _document()["components"]["schemas"]:
        raise KeyError(f"unknown schema {schema_name!r}; see tests.spec.schema_names()")
    # The root document holds all components, so '#/components/schemas/X' refs resolve.
    return Draft202012Validator({**_document(), "$ref": REF_PREFIX + schema_name})


def _explain(error: ValidationError) -> tuple[str, str]:
    """Where and why ``error`` happened, descending into anyOf/oneOf failures.

    Variants the instance evidently did not mean are set aside: those it fails on the
    discriminator property ('type' unless the schema names another), and those whose
    root ``type`` it does not have (e.g. the ``null`` branch of a nullable field). So for
    ``{"type": "response.output_text.delta", ...}`` the reason comes from
    ResponseTextDeltaEvent, not from whichever variant best_match happens to pick.
    """
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return error.json_path, error.message
    schema = error.schema if isinstance(error.schema, dict) else {}
    prop = (schema.get("discriminator") or {}).get("propertyName", "type")
    variants: dict[str | int, list[ValidationError]] = {}
    for sub in error.context:
        variants.setdefault(sub.relative_schema_path[0], []).append(sub)

    def not_meant(errors: list[ValidationError]) -> bool:
        return any(
            list(e.relative_path) == [prop]
            or (e.validator == "required" and not e.relative_path and e.message.startswith(f"{prop!r} "))
            or (e.validator == "type" and not e.relative_path)
            for e in errors
        )

    meant = [errors for errors in variants.values() if not not_meant(errors)]
    if len(meant) == 1:
        return _explain(max(meant[0], key=relevance))
    if not meant and isinstance(error.instance, dict) and prop in error.instance:
        return error.json_path, f"no variant has {prop}={error.instance[prop]!r}"
    return _explain(best_match(error.context))


def validate(schema_name: str, instance: object) -> None:
    """Raise AssertionError listing how ``instance`` violates the named schema."""
    errors = sorted(_validator(schema_name).iter_errors(instance), key=lambda e: e.json_path)
    if not errors:
        return
    lines = [f"{schema_name}: {len(errors)} schema violation(s)"]
    for error in errors[:MAX_REPORTED]:
        where, why = _explain(error)
        lines.append(f"  at {where}: {why if len(why) <= 300 else why[:297] + '...'}")
    if len(errors) > MAX_REPORTED:
        lines.append(f"  ... and {len(errors) - MAX_REPORTED} more")
    raise AssertionError("\n".join(lines))
