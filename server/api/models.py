"""``GET /v1/models`` and ``GET /v1/models/{model}``: the models this key may use, loaded or loading; and
waiting for a model that is still loading."""

from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.responses import Response

from server.access.keys import KeyRecord
from server.api.auth import Key
from server.api.errors import JSON
from server.api.request import services
from server.errors import ModelNotFound
from server.protocol import models as wire

LISTED = ("loaded", "restarting", "loading")
"""The states in which a model is listed: served, or about to be (a request for it waits)."""
POLL_S = 0.05


def _listed(request: Request, key: KeyRecord) -> list[dict[str, object]]:
    return [
        wire.model_object(c.name, created, c.owned_by, "loading" if state == "loading" else None)
        for c, created, state in services(request).models.states()
        if state in LISTED and key.may_use(c.name)
    ]


async def list_models(request: Request, key: Key) -> Response:
    """``GET /v1/models``."""
    return JSON(wire.model_list(_listed(request, key)))


async def retrieve_model(request: Request, key: Key, model: str) -> Response:
    """``GET /v1/models/{model}``."""
    for listed in _listed(request, key):
        if listed["id"] == model:
            return JSON(listed)
    raise ModelNotFound(model)


async def model_loaded(request: Request, name: str) -> None:
    """Wait while the model ``name`` is loading, for up to ``model_wait_s``: a request made while the server
    starts is served once its model is ready rather than refused. Whatever state the model is in then,
    finding it (and the error a client sees if it is not served) is left to the caller."""
    svc = services(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + svc.settings.model_wait_s
    while loop.time() < deadline and any(
        config.name == name and state == "loading" for config, _, state in svc.models.states()
    ):
        await asyncio.sleep(POLL_S)
