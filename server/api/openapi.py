"""The server's own OpenAPI document, served behind a key at ``GET /v1/openapi.json``.

Handlers read and bound their bodies themselves (``read_json``), so FastAPI sees no request models: the
document adds the request bodies from the protocol's pydantic models, documents OpenAI's error envelope
as every operation's non-2xx answer, and says that every operation needs a bearer key. Generated tests
(schemathesis) send requests built from this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.responses import Response

from server.api.auth import Key
from server.api.errors import JSON
from server.api.request import services
from server.protocol.chat import ChatCompletionRequest
from server.protocol.embeddings import EmbeddingRequest
from server.protocol.responses import ResponseRequest

REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/v1/chat/completions"): ChatCompletionRequest,
    ("post", "/v1/embeddings"): EmbeddingRequest,
    ("post", "/v1/responses"): ResponseRequest,
}
"""Every operation that takes a body, and the model its handler parses it with."""

QUERY_PARAMETERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("get", "/v1/responses/{response_id}/input_items"): [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
        {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "after", "in": "query", "schema": {"type": "string"}},
    ],
}
"""Query parameters that handlers read themselves."""

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"enum": ["text", "input_text", "output_text"]}, "text": {"type": "string"}},
}
_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "maxItems": 1024, "items": _TEXT_PART}]}
_TOKENS = {"type": "array", "minItems": 1, "maxItems": 8192, "items": {"type": "integer", "minimum": 0}}
REFINED: dict[tuple[str, str], dict[str, Any]] = {
    # What the handlers accept where the models say only "any JSON" (they check it themselves).
    ("ChatMessage", "content"): {"anyOf": [*_CONTENT["anyOf"], {"type": "null"}]},
    ("InputMessage", "content"): _CONTENT,
    ("EmbeddingRequest", "input"): {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "string"}},
            _TOKENS,
            {"type": "array", "minItems": 1, "maxItems": 2048, "items": _TOKENS},
        ]
    },
    # Parameters of OpenAI's API that this text-only server without tools accepts only when unused.
    ("ChatCompletionRequest", "logprobs"): {"enum": [False, None]},
    ("ChatCompletionRequest", "top_logprobs"): {"enum": [0, None]},
    ("ChatCompletionRequest", "tools"): {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]},
    ("ChatCompletionRequest", "functions"): {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]},
    ("ChatCompletionRequest", "modalities"): {
        "anyOf": [{"type": "array", "items": {"const": "text"}}, {"type": "null"}]
    },
    ("ChatCompletionRequest", "audio"): {"type": "null"},
    ("ChatCompletionRequest", "web_search_options"): {"type": "null"},
    ("ChatCompletionRequest", "logit_bias"): {
        "anyOf": [
            {
                "type": "object",
                "maxProperties": 1024,
                "propertyNames": {"pattern": "^[0-9]{1,9}$"},
                "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            },
            {"type": "null"},
        ]
    },
}

STREAMING = frozenset({("post", "/v1/chat/completions"), ("post", "/v1/responses")})

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string", "minLength": 1},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def openapi_document(app: FastAPI, models: dict[str, list[str]]) -> dict[str, Any]:
    """FastAPI's document of ``app``'s routes, completed with request bodies, errors and security.

    ``models`` names the served models of each kind (``chat``, ``embedding``): the ``model`` of a request.
    """
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = spec.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    schemas.clear()  # FastAPI's own validation-error schemas: this server never answers with them
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    spec["security"] = [{"bearer": []}]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            model = REQUEST_BODIES.get((method, path))
            if model is not None:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in schema.pop("$defs", {}).items():
                    if schemas.setdefault(name, definition) != definition:
                        raise ValueError(f"two request models define {name} differently")
                schemas[model.__name__] = schema
                kind = "embedding" if model is EmbeddingRequest else "chat"
                if models.get(kind):
                    schema["properties"]["model"] = {"type": "string", "enum": sorted(models[kind])}
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
                    },
                }
            operation.setdefault("parameters", []).extend(QUERY_PARAMETERS.get((method, path), []))
            success: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
            if (method, path) in STREAMING:
                success["text/event-stream"] = {}  # server-sent events: JSON in each data line
            operation["responses"] = {
                "200": {"description": "Success", "content": success},
                "default": {
                    "description": "An error, in OpenAI's error envelope",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            }
    for (component, name), refined in REFINED.items():
        schemas[component]["properties"][name] = refined
    return spec


async def serve_document(request: Request, key: Key) -> Response:
    """``GET /v1/openapi.json``: the document, naming the served models this key may use."""
    served: dict[str, list[str]] = {}
    for config, _created in services(request).models.served():
        if key.may_use(config.name):
            served.setdefault(config.kind, []).append(config.name)
    return JSON(openapi_document(request.app, served))
