"""One ledger row per request, whatever happens to it.

A completed request waits for its row to be durable (journaled, or committed) before its last bytes are
sent; a request cut short by a disconnect or a failure is queued for the ledger without waiting (nobody is
left to wait); a request refused before its bill was opened leaves a row that costs nothing
(:class:`Intake`).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from fastapi import Request

from server.access.keys import KeyRecord
from server.access.limits import Admission, Limiter
from server.config import ModelConfig
from server.errors import APIError
from server.generation.events import Meter
from server.metering.inflight import Flight, InFlight
from server.metering.ledger import Ledger, Status, UsageEntry, cost_of
from server.protocol.wire import BodyError
from server.redaction import redact
from server.services import Services


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

    def _entry(
        self, status: Status, http_status: int, disconnected: bool, error: str | None = None
    ) -> UsageEntry:
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
            error=error,
        )

    async def settle(self) -> None:
        """The request completed: record it and wait until the row is durable."""
        if not self.settled:
            self.settled = True
            try:
                await self.ledger.record(self._entry("completed", 200, False))
            finally:
                self.limiter.settle(self.admission, self.meter.input_tokens + self.meter.output_tokens)

    def abandon(self, *, disconnected: bool, http_status: int = 499) -> None:
        """The request ended early: record exactly what was used, without waiting. Called while an error
        is being handled, its message goes with the entry (for the window's log, never to disk)."""
        if not self.settled:
            self.settled = True
            self.ledger.submit(
                self._entry(
                    "disconnected" if disconnected else "failed",
                    http_status,
                    disconnected,
                    None if disconnected else error_text(sys.exc_info()[1]),
                )
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
    services: Services = request.app.state.services
    request_id: str = request.state.request_id
    admission = services.limiter.admit(
        key, model, input_tokens, max_output, request_id=request_id, endpoint=endpoint, stream=stream
    )
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


@dataclass
class Intake:
    """A request to a metered endpoint from a known key: how it gets its one ledger row.

    The handler opens the request's bill with :meth:`admit`; from then on the bill writes the row. An
    error that ends the request before that (bad input, an unknown model, a limit) is passed to
    :meth:`refused`, and leaves a row that costs nothing, so the operator sees who was refused and why.
    """

    request: Request
    key: KeyRecord
    endpoint: str
    model: str = ""
    """The requested model, once the body is parsed."""
    bill: Bill | None = None

    def admit(
        self, model: ModelConfig, *, stream: bool, meter: Meter, input_tokens: int, max_output: int
    ) -> Bill:
        """Check the key's limits for this request (reserving its worst-case budget) and open its bill."""
        self.model = model.name
        self.bill = admit(
            self.request,
            self.key,
            model,
            self.endpoint,
            stream=stream,
            meter=meter,
            input_tokens=input_tokens,
            max_output=max_output,
        )
        return self.bill

    def refused(self, error: APIError) -> None:
        """The request ends with ``error``: recorded as refused, unless its bill is open (and records it)."""
        if self.bill is not None:
            return
        model = self.model
        if not model and isinstance(error.__cause__, BodyError):
            model = error.__cause__.model or ""  # a body refused by its parser may still name its model
        services: Services = self.request.app.state.services
        services.ledger.submit(
            UsageEntry(
                request_id=self.request.state.request_id,
                key_id=self.key.id,
                model=configured_model(services, model),
                endpoint=self.endpoint,
                status="rejected",
                http_status=error.status,
                error=error_text(error),
            )
        )


def error_text(error: BaseException | None) -> str | None:
    """What a client was told went wrong, as the window's log shows it (keys redacted, bounded)."""
    if error is None or isinstance(error, asyncio.CancelledError):
        return None
    text = error.message if isinstance(error, APIError) else f"{type(error).__name__}: {error}"
    return redact(text)[:500]


def configured_model(services: Services, name: object) -> str:
    """``name`` if it names a model of the table, else "": what a client put in ``model`` is stored only
    once it is known to be a model's name (a rejected body's ``model`` can hold anything, a key too)."""
    if not isinstance(name, str) or not name:
        return ""
    return name if any(config.name == name for config in services.models.configs()) else ""
