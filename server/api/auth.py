"""Where a request is authenticated: the key in ``Authorization: Bearer``, checked before any handler runs
(``Key``), failures throttled per address."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.access.keys import KeyRecord
from server.api.request import services
from server.errors import Unauthenticated
from server.services import Services

KEY_PARAMS = frozenset({"api_key", "api-key", "apikey", "key", "token", "access_token"})


async def require_key(request: Request) -> KeyRecord:
    """The key behind ``Authorization: Bearer …``, or :class:`Unauthenticated` (throttled per address)."""
    svc = services(request)
    try:
        return _authenticate(request, svc)
    except Unauthenticated:
        client = request.scope.get("client")
        svc.auth_throttle.failed(client[0] if client else "unknown")  # raises once it has failed too often
        raise


def _authenticate(request: Request, svc: Services) -> KeyRecord:
    if request.scope.get("query_string") and KEY_PARAMS.intersection(k.lower() for k in request.query_params):
        raise Unauthenticated("API keys are accepted only in the Authorization header, never in the URL.")
    values = [value.decode("latin-1") for name, value in request.scope["headers"] if name == b"authorization"]
    if len(values) != 1:
        raise Unauthenticated(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            if not values
            else "Send exactly one Authorization header."
        )
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Use Bearer auth: Authorization: Bearer YOUR_KEY.")
    return svc.keys.authenticate(token.strip())


Key = Annotated[KeyRecord, Depends(require_key)]
"""A handler parameter of this type is the caller's key: FastAPI calls :func:`require_key` before the
handler, which runs only for a valid key. Every route but those on ``PUBLIC_ROUTES`` takes one."""
