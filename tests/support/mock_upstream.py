"""A scriptable OpenAI-compatible upstream on loopback, for tests and benchmarks.

It streams ``chunks`` words at ``interval`` seconds apart (word k leaves ``k * interval`` after the first,
as a model produces tokens at its own pace: a late word does not delay the next) and can be told to fail:
``reset`` (close the connection mid-stream), ``stall`` (stop sending), ``garbage`` (send a line that is not
an event), ``error500`` (answer 500 before streaming), ``refuse`` (answer 400 with an OpenAI error).

Hostile answers, for the limits on what an upstream may send: ``gzip`` (``body`` as a gzip-encoded answer:
see :func:`gzip_bomb`), ``huge`` (a body of ``size`` bytes with its length) and ``huge_chunked`` (the same,
chunked, without one), ``endless_header`` (a header line that never ends), ``many_headers`` (header lines
that never end), ``comments`` (an event stream of ``size`` bytes of comment lines, then the answer),
``long_line`` (an event stream whose first line is ``size`` bytes long).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Script:
    chunks: int = 5
    interval: float = 0.0
    fault: str | None = None
    fault_after: int = 2
    model: str = "upstream-model"
    size: int = 8 << 20
    """Bytes of a hostile answer (``huge``, ``huge_chunked``, ``comments``, ``long_line``)."""
    body: bytes = b""
    """The encoded body a ``gzip`` answer sends."""


def gzip_bomb(size: int) -> bytes:
    """``size`` bytes of JSON whitespace, gzip-compressed (512 MiB make 0.5 MB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join([*parts, compressor.flush()])


@dataclass
class MockUpstream:
    """Runs an aiohttp server on its own thread; ``url`` ends in ``/v1``."""

    script: Script = field(default_factory=Script)
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mock-upstream")
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> MockUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._stopping.set()  # ends any stalled stream
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.script.model, "object": "model", "created": 0, "owned_by": "mock"}],
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.6, 0.8]} for i in range(len(inputs))
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        script = self.script
        if script.fault == "error500":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        hostile = await self._hostile(request, script)
        if hostile is not None:
            return hostile
        if script.fault == "refuse":
            return web.json_response(
                {
                    "error": {
                        "message": "bad temperature",
                        "type": "invalid_request_error",
                        "param": "temperature",
                        "code": None,
                    }
                },
                status=400,
            )
        created = int(time.time())
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])) + 3
        n = body.get("n") or 1
        if not body.get("stream"):
            text = " ".join(f"w{i}" for i in range(script.chunks))
            return web.json_response(
                {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                        for i in range(n)
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": script.chunks * n,
                        "total_tokens": prompt_tokens + script.chunks * n,
                    },
                }
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
            value: dict[str, Any] = {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": choices,
            }
            if usage is not None:
                value["usage"] = usage
            return b"data: " + json.dumps(value).encode() + b"\n\n"

        started = asyncio.get_running_loop().time()
        try:
            for i in range(n):
                await response.write(
                    event(
                        [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
                    )
                )
            for k in range(script.chunks):
                if script.fault and k == script.fault_after:
                    if script.fault == "reset":
                        request.transport.close()  # type: ignore[union-attr]
                        return response
                    if script.fault == "stall":
                        await self._stopping.wait()
                        return response
                    if script.fault == "garbage":
                        await response.write(b"this is not an event\n\n")
                        return response
                for i in range(n):
                    await response.write(
                        event(
                            [
                                {
                                    "index": i,
                                    "delta": {"content": ("" if k == 0 else " ") + f"w{k}"},
                                    "finish_reason": None,
                                }
                            ]
                        )
                    )
                if script.interval:
                    await asyncio.sleep(
                        started + (k + 1) * script.interval - asyncio.get_running_loop().time()
                    )
            for i in range(n):
                await response.write(event([{"index": i, "delta": {}, "finish_reason": "stop"}]))
            if (body.get("stream_options") or {}).get("include_usage"):
                completion = script.chunks * n
                await response.write(
                    event(
                        [],
                        {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion,
                            "total_tokens": prompt_tokens + completion,
                        },
                    )
                )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    async def _hostile(self, request: web.Request, script: Script) -> web.StreamResponse | None:
        """The answer for a hostile ``fault``, or None for any other."""
        fault = script.fault
        if fault == "gzip":
            return web.Response(
                body=script.body, headers={"content-type": "application/json", "content-encoding": "gzip"}
            )
        if fault == "huge":
            return web.Response(body=b" " * script.size, content_type="application/json")
        if fault in ("huge_chunked", "comments", "long_line"):
            kind = "application/json" if fault == "huge_chunked" else "text/event-stream"
            response = web.StreamResponse(headers={"content-type": kind})
            response.enable_chunked_encoding()
            await response.prepare(request)
            line = b": keep-alive\n" if fault == "comments" else b" "
            block = line * (65536 // len(line))
            try:
                for _ in range(script.size // len(block)):
                    await response.write(block)
                if fault == "comments":
                    await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
            except (ConnectionResetError, asyncio.CancelledError):
                self.disconnects += 1
                raise
            return response
        if fault in ("endless_header", "many_headers"):
            # Raw bytes: no HTTP library would send this head.
            transport = request.transport
            assert transport is not None
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
            block = b"x-endless: " + b"a" * 65536 if fault == "endless_header" else b"x-more: a\r\n" * 4096
            for _ in range(1024):  # at most 64 MiB, until the client hangs up
                if transport.is_closing() or self._stopping.is_set():
                    break
                transport.write(block)
                while transport.get_write_buffer_size() > 1 << 20 and not transport.is_closing():
                    await asyncio.sleep(0.005)
            self.disconnects += 1
            transport.close()
            raise asyncio.CancelledError  # the connection is gone: nothing more to answer
        return None
