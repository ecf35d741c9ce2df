"""Extract the OpenAI response schemas our tests validate against.

One-off tool, not run by the test suite. It produced ``schemas.json`` beside it from
OpenAI's OpenAPI spec (openai/openai-openapi, see SOURCE.md and LICENSE here) with:

    python3 tests/data/openapi/extract.py /work/shared/openai-openapi/openapi.yaml

Re-run it the same way (needs PyYAML) to refresh the subset from a newer spec.

The output is a JSON document shaped like the spec itself, ``{"components": {"schemas":
{...}}}``, so every ``$ref: '#/components/schemas/X'`` in it resolves with the file as
the root document. It holds the root schemas in ROOTS plus everything they reference,
transitively, copied verbatim: no OpenAPI-to-JSON-Schema rewriting happens here
(tests/spec.py does that at load time).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REF_PREFIX = "#/components/schemas/"

# Response bodies of the endpoints the server implements (the schema each operation's
# 200 / error response points at in the spec), plus the SSE event unions.
ROOTS = [
    "ListModelsResponse",  # GET /models
    "Model",  # GET /models/{model}
    "DeleteModelResponse",  # DELETE /models/{model}
    "CreateChatCompletionResponse",  # POST /chat/completions
    "CreateChatCompletionStreamResponse",  # POST /chat/completions, text/event-stream
    "CreateEmbeddingResponse",  # POST /embeddings
    "Response",  # POST /responses, GET /responses/{response_id}
    "ResponseStreamEvent",  # POST /responses, text/event-stream
    "ResponseItemList",  # GET /responses/{response_id}/input_items
    "ErrorResponse",  # 4xx/5xx bodies ({"error": {...}})
    "Error",  # DELETE /responses/{response_id} 404 body
]
OPTIONAL_ROOTS = {"DeleteModelResponse"}


def refs(node: Any) -> Iterator[str]:
    """Yield every ``$ref`` string inside a schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def closure(schemas: dict[str, Any], roots: list[str]) -> list[str]:
    """Names of ``roots`` and every component schema they reference, sorted."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for ref in refs(schemas[name]):
            if not ref.startswith(REF_PREFIX) or "/" in ref[len(REF_PREFIX) :]:
                raise SystemExit(f"{name}: unsupported $ref {ref!r}")
            todo.append(ref[len(REF_PREFIX) :])
    return sorted(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="path to OpenAI's openapi.yaml")
    parser.add_argument("-o", "--output", type=Path, default=HERE / "schemas.json")
    args = parser.parse_args(argv)

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with args.spec.open(encoding="utf-8") as fh:
        spec = yaml.load(fh, Loader=loader)
    schemas = spec["components"]["schemas"]

    missing = [n for n in ROOTS if n not in schemas]
    if set(missing) - OPTIONAL_ROOTS:
        raise SystemExit(f"schemas missing from the spec: {missing}")
    names = closure(schemas, [n for n in ROOTS if n in schemas])

    document = {
        "x-source": {
            "file": "openapi.yaml of openai/openai-openapi (see SOURCE.md)",
            "openapi": spec.get("openapi"),
            "info.version": spec.get("info", {}).get("version"),
            "roots": [n for n in ROOTS if n in schemas],
            "generated_by": "tests/data/openapi/extract.py",
        },
        "components": {"schemas": {name: schemas[name] for name in names}},
    }
    args.output.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    sys.stderr.write(f"wrote {len(names)} schemas to {args.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
