"""``GET /v1/models`` and ``GET /v1/models/{model}``."""

from __future__ import annotations

from typing import Any


def model_object(name: str, created: int, owned_by: str, status: str | None = None) -> dict[str, Any]:
    """A model as OpenAI shapes it; ``status`` (not OpenAI's) says that a model is not ready yet."""
    value: dict[str, Any] = {"id": name, "object": "model", "created": created, "owned_by": owned_by}
    if status is not None:
        value["status"] = status
    return value


def model_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": models}
