"""``GET /v1/models`` and ``GET /v1/models/{model}``: the loaded models this key may use."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from server.api.http import JSON, Key, services
from server.errors import ModelNotFound
from server.protocol import models as wire


async def list_models(request: Request, key: Key) -> Response:
    """``GET /v1/models``."""
    served = services(request).models.served()
    return JSON(
        wire.model_list(
            [wire.model_object(c.name, created, c.owned_by) for c, created in served if key.may_use(c.name)]
        )
    )


async def retrieve_model(request: Request, key: Key, model: str) -> Response:
    """``GET /v1/models/{model}``."""
    for config, created in services(request).models.served():
        if config.name == model and key.may_use(model):
            return JSON(wire.model_object(config.name, created, config.owned_by))
    raise ModelNotFound(model)
