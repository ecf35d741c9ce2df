"""One ledger row per request, whatever happens to it.

A completed request waits for its row to be committed before its last bytes are sent; a request cut
short by a disconnect or a failure is queued for the ledger without waiting (nobody is left to wait).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from fastapi import Request

from server.config import ModelConfig
from server.errors import APIError
from server.events import Meter
from server.keys import KeyRecord
from server.limits import Admission, Limiter
from server.logs import redact
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
    settled: bool = False

    def _entry(
        self, status: Status, http_status: int, disconnected: bool, error: str | None = None
    ) -> UsageEntry:
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
            error=error,
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
    services: Services = request.scope["app"].services
    request.state.model = model.name
    admission = services.limiter.admit(key, model, input_tokens, max_output)
    request.state.billed = True  # from here on the bill writes the request's one ledger row
    return Bill(
        services.ledger,
        services.limiter,
        admission,
        request.state.request_id,
        key,
        model,
        endpoint,
        stream,
        meter,
    )


ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}


def error_text(error: BaseException | None) -> str | None:
    """What a client was told went wrong, as the window's log shows it (keys redacted, bounded)."""
    if error is None or isinstance(error, asyncio.CancelledError):
        return None
    text = error.message if isinstance(error, APIError) else f"{type(error).__name__}: {error}"
    return redact(text)[:500]


def record_rejection(request: Request, status: int, error: APIError | None = None) -> None:
    """A request refused after its key was known (bad input, limits, unknown model): a ledger row that
    costs nothing, so the operator sees who was refused and why."""
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
            model=str(getattr(request.state, "model", "") or "")[:128],
            endpoint=endpoint,
            status="rejected",
            http_status=status,
            error=error_text(error),
        )
    )
