"""``GET /v1/models`` and ``GET /v1/models/{model}``: the loaded models this key may use."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api.http import JSON, services
from server.errors import ModelNotFound
from server.keys import KeyRecord
from server.protocol import models as wire

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    key: KeyRecord = request.state.key
    served = services(request).models.served()
    return JSON(
        wire.model_list(
            [wire.model_object(c.name, created, c.owned_by) for c, created in served if key.may_use(c.name)]
        )
    )


@router.get("/v1/models/{model:path}")
async def retrieve_model(request: Request, model: str) -> Response:
    key: KeyRecord = request.state.key
    for config, created in services(request).models.served():
        if config.name == model and key.may_use(model):
            return JSON(wire.model_object(config.name, created, config.owned_by))
    raise ModelNotFound(model)
