"""One ledger row per request, whatever happens to it.

A completed request waits for its row to be committed before its last bytes are sent; a request cut
short by a disconnect or a failure is queued for the ledger without waiting (nobody is left to wait).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import Request

from server.config import ModelConfig
from server.events import Meter
from server.inflight import Flight, InFlight
from server.keys import KeyRecord
from server.limits import Admission, Limiter
from server.services import Services
from server.usage import Ledger, Status, UsageEntry, cost_of


@dataclass
class Bill:
    """The billing of one request; ``settle`` or ``abandon`` exactly once."""

    ledger: Ledger
    limiter: Limiter
    admission: Admission
    request_id: str
    key: KeyRecord
    model: ModelConfig
    endpoint: str
    stream: bool
    meter: Meter
    inflight: InFlight
    flight: Flight
    settled: bool = False

    def _entry(self, status: Status, http_status: int, disconnected: bool) -> UsageEntry:
        checkpointed = self.inflight.end(self.flight)
        if self.flight.stopped and status != "completed":
            status, http_status, disconnected = "server_stopped", 503, False
        m = self.meter
        free = status == "failed" and m.output_tokens == 0  # failures before the first token cost nothing
        return UsageEntry(
            request_id=self.request_id,
            key_id=self.key.id,
            model=self.model.name,
            endpoint=self.endpoint,
            input_tokens=m.input_tokens,
            output_tokens=m.output_tokens,
            cached_tokens=m.cached_tokens,
            reasoning_tokens=m.reasoning_tokens,
            cost=0.0 if free else cost_of(self.model, m.input_tokens, m.output_tokens),
            latency_ms=m.latency_ms,
            ttft_ms=m.ttft_ms,
            status=status,
            http_status=http_status,
            stream=self.stream,
            client_disconnected=disconnected,
            reservation_id=self.admission.reservation_id,
            exact=m.exact,
            checkpointed=checkpointed,
        )

    async def settle(self) -> None:
        """The request completed: record it and wait until the row is committed."""
        if not self.settled:
            self.settled = True
            try:
                await self.ledger.record(self._entry("completed", 200, False))
            finally:
                self.limiter.settle(self.admission, self.meter.input_tokens + self.meter.output_tokens)

    def abandon(self, *, disconnected: bool, http_status: int = 499) -> None:
        """The request ended early: record exactly what was used, without waiting."""
        if not self.settled:
            self.settled = True
            self.ledger.submit(
                self._entry("disconnected" if disconnected else "failed", http_status, disconnected)
            )
            self.limiter.settle(self.admission, self.meter.input_tokens + self.meter.output_tokens)


def admit(
    request: Request,
    key: KeyRecord,
    model: ModelConfig,
    endpoint: str,
    *,
    stream: bool,
    meter: Meter,
    input_tokens: int,
    max_output: int,
) -> Bill:
    """Check the key's limits for this request (reserving its worst-case budget) and open its bill."""
    services: Services = request.scope["app"].services
    request.state.model = model.name
    request_id: str = request.state.request_id
    admission = services.limiter.admit(
        key, model, input_tokens, max_output, request_id=request_id, endpoint=endpoint, stream=stream
    )
    request.state.billed = True  # from here on the bill writes the request's one ledger row
    flight = Flight(request_id, key.id, model.name, endpoint, stream, meter, asyncio.current_task())
    services.inflight.admit(flight)
    request.state.flight = flight  # the request's guard ends it cleanly if the server stops it
    return Bill(
        services.ledger,
        services.limiter,
        admission,
        request_id,
        key,
        model,
        endpoint,
        stream,
        meter,
        services.inflight,
        flight,
    )


ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}


def record_rejection(request: Request, status: int) -> None:
    """A request refused after its key was known (bad input, limits, unknown model): a ledger row that
    costs nothing, so the operator sees who was refused and why not."""
    endpoint = ENDPOINTS.get(request.url.path)
    key: KeyRecord | None = getattr(request.state, "key", None)
    if endpoint is None or key is None or getattr(request.state, "billed", False):
        return
    request.state.billed = True
    services: Services = request.scope["app"].services
    services.ledger.submit(
        UsageEntry(
            request_id=request.state.request_id,
            key_id=key.id,
            model=configured_model(services, getattr(request.state, "model", None)),
            endpoint=endpoint,
            status="rejected",
            http_status=status,
        )
    )


def configured_model(services: Services, name: object) -> str:
    """``name`` if it names a model of the table, else "": what a client put in ``model`` is stored only
    once it is known to be a model's name (a rejected body's ``model`` can hold anything, a key too)."""
    if not isinstance(name, str) or not name:
        return ""
    return name if any(config.name == name for config in services.models.configs()) else ""
