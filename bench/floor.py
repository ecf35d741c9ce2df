"""The floor: a minimal aiohttp pass-through proxy, the least any gateway must cost.

It forwards ``POST /v1/chat/completions`` to one upstream over one session and streams the answer back
byte for byte: no key, no validation, no metering. ``python -m bench.floor --port P --upstream URL``.
It runs on uvloop, as the gateway's server thread does (``--loop asyncio`` for the standard loop).
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web


def build(upstream: str) -> web.Application:
    app = web.Application()

    async def session_context(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["session"].close()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(
            upstream + "/chat/completions", data=body, headers={"content-type": "application/json"}
        ) as answer:
            response = web.StreamResponse(
                status=answer.status,
                headers={"content-type": answer.headers.get("content-type", "application/json")},
            )
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    app.cleanup_ctx.append(session_context)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL ending in /v1")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the event loop (default: uvloop, as the gateway)",
    )
    args = parser.parse_args()
    loop = None
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: PLC0415  (the gateway's loop where installed, so that both run on the same)
        except ImportError:
            pass
        else:
            loop = uvloop.new_event_loop()
    web.run_app(
        build(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
