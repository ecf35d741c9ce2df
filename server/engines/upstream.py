"""Serving a model from other OpenAI-compatible servers (vLLM, llama.cpp's server, a cluster behind a
load balancer): keys, limits and metering stay here; generation happens there.

All upstream traffic goes through one HTTP client (``http_client.py``: keep-alive pools, nothing more)
owned by the server's event loop. Each served name has one or more replicas; a request goes to the
healthy replica with the fewest requests in flight, and fails over to another only before the first byte
has reached the client. A replica that answers a redirect counts as failing: its base URL is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.config import ModelConfig
from server.engines.base import LoadError
from server.engines.http_client import Endpoint, HTTPClient, HTTPClientError, Response

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 10.0
CONNECT_TIMEOUT_S = 5.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class UpstreamFailure(Exception):
    """The upstream failed; ``status`` and ``body`` are what to tell the client when nothing was sent yet."""

    def __init__(self, message: str, status: int = 502, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


@dataclass
class Replica:
    base_url: str
    endpoint: Endpoint = field(repr=False, compare=False)
    """The base URL parsed, with the model's headers: what every request to the replica starts with."""
    outstanding: int = 0
    healthy: bool = True
    last_error: str | None = None
    checked_at: float | None = None
    latency_ms: float | None = None
    served: int = 0
    failures: int = 0


@dataclass(frozen=True)
class ReplicaStatus:
    base_url: str
    healthy: bool
    outstanding: int
    last_error: str | None
    checked_at: float | None
    latency_ms: float | None
    served: int
    failures: int


@dataclass
class UpstreamModel:
    """A served name backed by one or more upstream replicas."""

    config: ModelConfig
    replicas: list[Replica] = field(default_factory=list)
    credential: str | None = None

    @classmethod
    def from_config(cls, config: ModelConfig) -> UpstreamModel:
        urls = [u.strip().rstrip("/") for u in config.source.split(",") if u.strip()]
        if not urls:
            raise LoadError("an upstream model needs at least one base URL in its source")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise LoadError(f"not an http(s) base URL: {url}")
        credential = None
        if config.credential_env:
            credential = os.environ.get(config.credential_env)
            if not credential:
                raise LoadError(
                    f"the environment variable {config.credential_env} holding the credential is unset"
                )
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if credential:
            headers["authorization"] = f"Bearer {credential}"
        replicas = []
        for url in urls:
            try:
                replicas.append(Replica(url, Endpoint(url, headers)))
            except ValueError as exc:
                raise LoadError(f"cannot use the upstream {url}: {exc}") from exc
        return cls(config, replicas, credential)

    @property
    def remote_name(self) -> str:
        return self.config.upstream_model or self.config.name

    def order(self) -> list[Replica]:
        """Replicas to try: healthy ones first, fewest requests in flight first."""
        return sorted(self.replicas, key=lambda r: (not r.healthy, r.outstanding, r.failures))

    def statuses(self) -> list[ReplicaStatus]:
        return [
            ReplicaStatus(
                r.base_url,
                r.healthy,
                r.outstanding,
                r.last_error,
                r.checked_at,
                r.latency_ms,
                r.served,
                r.failures,
            )
            for r in self.replicas
        ]

    def close(self) -> None:
        pass


class UpstreamClient:
    """The one HTTP client to every upstream, and the health checks."""

    def __init__(self, models: Callable[[], list[UpstreamModel]], *, read_timeout_s: float = 120.0) -> None:
        self.read_timeout_s = read_timeout_s
        """How long an upstream may stay silent (before its first byte, or between two) before it is dropped."""
        self._http: HTTPClient | None = None
        self._health: asyncio.Task[None] | None = None
        self._models = models

    async def start(self) -> None:
        """Make the HTTP client on the running loop and start checking replicas' health."""
        self._http = HTTPClient(connect_timeout_s=CONNECT_TIMEOUT_S)
        self._health = asyncio.ensure_future(self._check_forever())

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        if self._http is not None:
            await self._http.close()
        self._http = None

    @property
    def http(self) -> HTTPClient:
        if self._http is None:
            raise UpstreamFailure("the upstream client is not running", 503)
        return self._http

    async def _check_forever(self) -> None:
        # Every second, check the models that are due: a newly loaded one at once, the others every
        # HEALTH_INTERVAL_S.
        while True:
            now = time.time()
            due = [
                m
                for m in self._models()
                if any(r.checked_at is None or now - r.checked_at >= HEALTH_INTERVAL_S for r in m.replicas)
            ]
            if due:
                await asyncio.gather(*(self.check(m) for m in due), return_exceptions=True)
            await asyncio.sleep(1.0)

    async def check(self, model: UpstreamModel) -> None:
        """Ask each replica for its model list; a replica that fails or lacks the model is unhealthy."""
        for replica in model.replicas:
            started = time.monotonic()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    response = await self.http.request(
                        replica.endpoint, "GET", "/models", read_timeout_s=CONNECT_TIMEOUT_S
                    )
                    try:
                        raw = await response.read()
                    finally:
                        response.close()
                if response.status != 200:
                    raise UpstreamFailure(f"HTTP {response.status}")
                body = orjson.loads(raw)
                if not isinstance(body, dict):
                    raise UpstreamFailure("the model list is not a JSON object")
                names = {m.get("id") for m in body.get("data", []) if isinstance(m, dict)}
                if names and model.remote_name not in names:
                    raise UpstreamFailure(f"does not serve {model.remote_name}")
                replica.healthy, replica.last_error = True, None
                replica.latency_ms = (time.monotonic() - started) * 1000
            except Exception as exc:  # any failure marks the replica down until the next check
                replica.healthy = False
                replica.last_error = str(exc) or type(exc).__name__
            replica.checked_at = time.time()

    async def post_json(self, model: UpstreamModel, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed call with failover; returns the parsed JSON body."""
        async with self.open(model, path, body) as (_, response):
            try:
                data = orjson.loads(await response.read())
            except orjson.JSONDecodeError as exc:
                raise UpstreamFailure(f"the upstream sent a body that is not JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise UpstreamFailure("the upstream sent a body that is not a JSON object")
            return data

    def open(self, model: UpstreamModel, path: str, body: dict[str, Any]) -> _Opened:
        return _Opened(self, model, path, body)


class _Opened:
    """``async with client.open(...) as (replica, response)``: the first replica that answers 200."""

    def __init__(self, client: UpstreamClient, model: UpstreamModel, path: str, body: dict[str, Any]) -> None:
        self._client, self._model, self._path, self._body = client, model, path, body
        self._replica: Replica | None = None
        self._response: Response | None = None

    async def __aenter__(self) -> tuple[Replica, Response]:
        client = self._client.http
        payload = orjson.dumps(self._body)
        last: UpstreamFailure | None = None
        for replica in self._model.order():
            replica.outstanding += 1
            try:
                response = await client.request(
                    replica.endpoint, "POST", self._path, payload, read_timeout_s=self._client.read_timeout_s
                )
                if response.status != 200:
                    try:
                        raw = await response.read()
                    finally:
                        response.close()
            except (HTTPClientError, OSError) as exc:
                replica.outstanding -= 1
                replica.failures += 1
                replica.healthy = False
                replica.last_error = str(exc) or type(exc).__name__
                last = UpstreamFailure(
                    f"upstream {replica.base_url} is unreachable: {replica.last_error}", 502
                )
                continue
            except BaseException:  # cancelled (the client left): the replica is not busy with it any more
                replica.outstanding -= 1
                raise
            if response.status == 200:
                self._replica, self._response = replica, response
                replica.served += 1
                return replica, response
            replica.outstanding -= 1
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            if response.status in RETRY_STATUSES or 300 <= response.status < 400:
                replica.failures += 1
                redirect = " (a redirect, not followed: check its base URL)" if response.status < 400 else ""
                last = UpstreamFailure(
                    f"upstream {replica.base_url} answered {response.status}{redirect}", 502, None
                )
                continue
            # A 4xx is about the request, not the replica: the client should see it as it is.
            raise UpstreamFailure(
                f"upstream refused the request ({response.status})",
                response.status,
                body if isinstance(body, dict) and "error" in body else None,
            )
        raise last or UpstreamFailure("no upstream replica is configured", 503)

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            self._response.close()  # closing mid-stream tells the upstream to stop generating
        if self._replica is not None:
            self._replica.outstanding -= 1


async def sse_json(response: Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of an upstream event stream, ending at ``[DONE]``; garbage or a cut is an error."""
    try:
        async for event in _events(response):
            yield event
    except (HTTPClientError, OSError) as exc:
        raise UpstreamFailure(
            f"the upstream connection failed mid-stream: {exc or type(exc).__name__}"
        ) from exc


async def _events(response: Response) -> AsyncIterator[dict[str, Any]]:
    buffer = b""
    async for chunk in response.iter_chunks():
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            line = line.strip()
            if not line or line.startswith(b":") or line.startswith(b"event:"):
                continue
            if not line.startswith(b"data:"):
                raise UpstreamFailure(f"the upstream sent something that is not an event: {line[:80]!r}")
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            try:
                value = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise UpstreamFailure("the upstream sent an event that is not JSON") from exc
            if not isinstance(value, dict):
                raise UpstreamFailure("the upstream sent an event that is not a JSON object")
            if "error" in value and "choices" not in value:
                error = (
                    value["error"] if isinstance(value["error"], dict) else {"message": str(value["error"])}
                )
                raise UpstreamFailure(f"the upstream failed: {error.get('message', 'unknown error')}")
            yield value
        if len(buffer) > 1 << 20:
            raise UpstreamFailure("the upstream sent an event larger than 1 MiB")
    raise UpstreamFailure("the upstream closed the stream before it was done")
