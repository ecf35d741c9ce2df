"""A small blocking HTTP client for timing single requests: time to first content and to the last byte.

``http.client`` keeps the client's own cost out of the numbers (no event loop, one connection per
caller); streamed answers are read line by line as server-sent events.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit


class Client:
    """One keep-alive connection to one server."""

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 300.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = {"content-type": "application/json"}
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, path: str, payload: bytes) -> tuple[http.client.HTTPResponse, float]:
        """Send a request and read the response's head; a kept-alive connection the server closed meanwhile
        is reopened once. Returns the response and the moment the request began."""
        for attempt in (1, 2):
            fresh = self._conn is None
            conn = self._connection()
            started = time.perf_counter()
            try:
                conn.request("POST", self.prefix + path, payload, self.headers)
                return conn.getresponse(), started
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                self.close()
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST ``body`` and return the JSON answer and the milliseconds to its last byte."""
        payload = json.dumps(body).encode()
        try:
            response, started = self._send(path, payload)
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data), elapsed

    def stream(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a streamed request and time it: first content, last byte, content chunks, usage tokens."""
        payload = json.dumps(body).encode()
        first: float | None = None
        chunks = 0
        parts: list[str] = []
        usage_tokens: int | None = None
        try:
            response, started = self._send(path, payload)
            if response.status != 200:
                raise RuntimeError(f"POST {path}: HTTP {response.status}: {response.read()[:300]!r}")
            while True:
                line = response.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    response.read()  # the chunked body's end, so the connection can be reused
                    break
                event = json.loads(data)
                usage = event.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    usage_tokens = int(usage["completion_tokens"])
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if first is None:
                            first = time.perf_counter()
                        chunks += 1
                        parts.append(content)
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        ended = time.perf_counter()
        return {
            "ttft_ms": (first - started) * 1000 if first is not None else None,
            "total_ms": (ended - started) * 1000,
            "tokens": usage_tokens if usage_tokens is not None else chunks,
            "tokens_from": "usage" if usage_tokens is not None else "chunks",
            "chunks": chunks,
            "started": started,
            "text": "".join(parts),
        }
