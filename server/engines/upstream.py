"""Serving a model from other OpenAI-compatible servers (vLLM, llama.cpp's server, a cluster behind a
load balancer): keys, limits and metering stay here; generation happens there.

All upstream traffic goes through one aiohttp session owned by the server's event loop, with a limit on
everything an upstream sends back: the head (line length, header count), a whole answer's size, each
line of an event stream, and what a stream may send between two events. Bodies are asked for and read
uncompressed only, so nothing an upstream sends is ever inflated here.

Each served name has one or more replicas; a request goes to the healthy replica with the fewest
requests in flight, and fails over to another only before the first byte has reached the client. A
replica that answers a redirect, or a compressed body it was not asked for, counts as failing: it is
misconfigured.
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
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from server.config import ModelConfig
from server.engines.base import LoadError

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 10.0
CONNECT_TIMEOUT_S = 5.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

MAX_HEAD_LINE = 8190
"""Bytes in the status line and in each header line of an answer (aiohttp's default, set here on purpose)."""
MAX_HEADERS = 128
"""Header lines in an answer."""
MAX_EVENT_LINE = 1 << 20
"""Bytes in one line of an event stream: a single event of a chat stream is a few hundred."""
MAX_BYTES_BETWEEN_EVENTS = 64 * 1024
"""Bytes of comments, blank lines and other fields an event stream may send between two ``data`` lines.
A keep-alive comment is a few bytes every few seconds; a stream sending more carries nothing, and
would otherwise hold its request open without a byte reaching the client."""
MAX_ERROR_BODY = 64 * 1024
"""Bytes of a refusal's body read to relay its OpenAI error; a longer one is not relayed."""
MAX_MODEL_LIST = 1 << 20
"""Bytes of a replica's model list, read by the health checks."""
READ_BUFFER = 64 * 1024
"""Bytes of an answer buffered unread before the connection stops reading from the upstream."""
KEEP_ALIVE_S = 4.0
"""How long an idle connection is kept for the next request. Shorter than the idle timeouts of the usual
upstream servers (uvicorn's, under vLLM, and llama.cpp's are 5 s), so that a request is not sent on a
connection the upstream is closing at that moment: a POST is never sent twice, so that would fail it."""

TRANSPORT_ERRORS = (aiohttp.ClientError, HttpProcessingError, OSError, TimeoutError)
"""What a connection that fails, times out or carries a malformed answer raises."""


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
    outstanding: int = 0
    healthy: bool = True
    last_error: str | None = None
    checked_at: float | None = None
    latency_ms: float | None = None
    served: int = 0
    failures: int = 0

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.healthy = False
        self.last_error = reason


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


def _check_base_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(f"not an http(s) base URL: {url}")
    if parts.username is not None or parts.query or parts.fragment:
        raise LoadError(f"cannot use the upstream {url}: a base URL has no credentials, query or fragment")
    try:
        parts.port  # noqa: B018  (parsing it raises for a port out of range)
    except ValueError as exc:
        raise LoadError(f"cannot use the upstream {url}: {exc}") from exc


@dataclass
class UpstreamModel:
    """A served name backed by one or more upstream replicas."""

    config: ModelConfig
    replicas: list[Replica] = field(default_factory=list)
    credential: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """Sent with every request to its replicas."""

    @classmethod
    def from_config(cls, config: ModelConfig) -> UpstreamModel:
        urls = [u.strip().rstrip("/") for u in config.source.split(",") if u.strip()]
        if not urls:
            raise LoadError("an upstream model needs at least one base URL in its source")
        for url in urls:
            _check_base_url(url)
        credential = None
        if config.credential_env:
            credential = os.environ.get(config.credential_env)
            if not credential:
                raise LoadError(
                    f"the environment variable {config.credential_env} holding the credential is unset"
                )
            if any(c in credential for c in "\r\n\0"):
                raise LoadError(f"the credential in {config.credential_env} cannot be sent in a header")
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if credential:
            headers["authorization"] = f"Bearer {credential}"
        return cls(config, [Replica(url) for url in urls], credential, headers)

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


def _reason(exc: BaseException) -> str:
    """What went wrong, in a line for the operator's status table and the client's error message."""
    if isinstance(exc, UpstreamFailure):
        return exc.message
    if isinstance(exc, aiohttp.ClientResponseError):
        reason = f"it sent a malformed answer: {exc.message}"
    elif isinstance(exc, TimeoutError):
        reason = str(exc) or "it did not answer in time"
    else:
        reason = str(exc) or type(exc).__name__
    return reason if len(reason) <= 200 else reason[:199] + "…"


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of ``response``, or :class:`UpstreamFailure` as soon as it is longer than ``limit``."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise UpstreamFailure(
            f"the upstream's answer of {declared} bytes is larger than the {limit} accepted"
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise UpstreamFailure(f"the upstream's answer is larger than the {limit} bytes accepted")
        parts.append(chunk)
    return b"".join(parts)


class UpstreamClient:
    """The one HTTP session to every upstream, and the health checks."""

    def __init__(
        self,
        models: Callable[[], list[UpstreamModel]],
        *,
        read_timeout_s: float = 120.0,
        max_body_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.read_timeout_s = read_timeout_s
        """How long an upstream may stay silent (before its first byte, or between two) before it is
        dropped; also how long it has to send the whole head of its answer, and a whole answer's body."""
        self.max_body_bytes = max_body_bytes
        """The largest answer accepted whole (a non-streamed completion or embeddings)."""
        self._session: aiohttp.ClientSession | None = None
        self._health: asyncio.Task[None] | None = None
        self._models = models

    async def start(self) -> None:
        """Open the session on the running loop and start checking replicas' health."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEP_ALIVE_S),
            # Connections are not limited here: the server's own connection cap and the keys' limits
            # bound how many requests can be relayed at once.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=self.read_timeout_s
            ),
            headers={"user-agent": "ai-service-platform", "accept-encoding": "identity"},
            auto_decompress=False,
            read_bufsize=READ_BUFFER,
            max_line_size=MAX_HEAD_LINE,
            max_field_size=MAX_HEAD_LINE,
            max_headers=MAX_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # no proxy from the environment: the operator names each upstream
        )
        self._health = asyncio.ensure_future(self._check_forever())

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        if self._session is not None:
            await self._session.close()
        self._session = None

    async def send(
        self,
        model: UpstreamModel,
        replica: Replica,
        method: str,
        path: str,
        payload: bytes | None,
        within: float,
    ) -> aiohttp.ClientResponse:
        """Send a request and wait (at most ``within`` seconds) for the head of its answer, of any status;
        the caller reads the body, then releases the response."""
        if self._session is None:
            raise UpstreamFailure("the upstream client is not running", 503)
        async with asyncio.timeout(within):
            response = await self._session.request(
                method, replica.base_url + path, data=payload, headers=model.headers, allow_redirects=False
            )
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("identity", ""):
            response.close()
            raise UpstreamFailure(f"the upstream sent a {coding[:40]}-encoded answer, though asked for none")
        return response

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
                    response = await self.send(model, replica, "GET", "/models", None, CONNECT_TIMEOUT_S)
                    try:
                        raw = await read_body(response, MAX_MODEL_LIST)
                    finally:
                        response.release()
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
                replica.last_error = _reason(exc)
            replica.checked_at = time.time()

    async def post_json(self, model: UpstreamModel, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed call with failover; returns the parsed JSON body."""
        async with self.open(model, path, body) as (_, response):
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    raw = await read_body(response, self.max_body_bytes)
            except TRANSPORT_ERRORS as exc:
                raise UpstreamFailure(f"the upstream's answer did not arrive whole: {_reason(exc)}") from exc
            try:
                data = orjson.loads(raw)
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
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> tuple[Replica, aiohttp.ClientResponse]:
        client = self._client
        payload = orjson.dumps(self._body)
        last: UpstreamFailure | None = None
        for replica in self._model.order():
            replica.outstanding += 1
            try:
                response = await client.send(
                    self._model, replica, "POST", self._path, payload, client.read_timeout_s
                )
                if response.status != 200:
                    try:
                        raw = await read_body(response, MAX_ERROR_BODY)
                    except UpstreamFailure:
                        raw = b""  # too long to be an error worth relaying
                    finally:
                        response.release()
            except (UpstreamFailure, *TRANSPORT_ERRORS) as exc:
                replica.outstanding -= 1
                replica.failed(_reason(exc))
                last = UpstreamFailure(f"upstream {replica.base_url} failed: {replica.last_error}", 502)
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
            # Back to the pool if the answer arrived whole; closed otherwise, which tells an upstream
            # still generating it that nobody is listening.
            self._response.release()
        if self._replica is not None:
            self._replica.outstanding -= 1


async def sse_json(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of an upstream event stream, ending at ``[DONE]``; garbage, a cut, a line longer
    than ``MAX_EVENT_LINE`` or more than ``MAX_BYTES_BETWEEN_EVENTS`` without an event is an error.

    Lines come from the client's own reader, one at a time, so the work is linear in what arrives."""
    content = response.content
    between = 0
    try:
        while True:
            line = await content.readline(max_line_length=MAX_EVENT_LINE)
            if not line:
                raise UpstreamFailure("the upstream closed the stream before it was done")
            if not line.startswith(b"data:"):
                stripped = line.strip()
                if stripped and not stripped.startswith((b":", b"event:", b"id:", b"retry:")):
                    raise UpstreamFailure(
                        f"the upstream sent something that is not an event: {stripped[:80]!r}"
                    )
                between += len(line)
                if between > MAX_BYTES_BETWEEN_EVENTS:
                    raise UpstreamFailure(
                        f"the upstream sent more than {MAX_BYTES_BETWEEN_EVENTS} bytes without an event"
                    )
                continue
            between = 0
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
    except LineTooLong as exc:
        raise UpstreamFailure(f"the upstream sent an event line longer than {MAX_EVENT_LINE} bytes") from exc
    except TRANSPORT_ERRORS as exc:
        raise UpstreamFailure(f"the upstream connection failed mid-stream: {_reason(exc)}") from exc
