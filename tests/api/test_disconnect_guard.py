"""A request's work is cancelled when its client leaves, however the server says so: through the
connection's disconnect signal (this server) or through ``receive`` (any other ASGI server); its clean-up
has run when the guard returns, and a cancellation from elsewhere is never swallowed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.api.streaming import DisconnectGuard
from server.connections import DISCONNECT_EXTENSION, DisconnectSignal


class Client:
    """The two ways a server can tell that the client left."""

    def __init__(self, with_signal: bool) -> None:
        self.signal = DisconnectSignal() if with_signal else None
        self.scope: dict[str, Any] = (
            {"extensions": {DISCONNECT_EXTENSION: self.signal}} if with_signal else {}
        )
        self._gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    def leave(self) -> None:
        if self.signal is not None:
            self.signal.fire()
        self._gone.set()


async def _work(cleaned: list[str]) -> str:
    try:
        await asyncio.sleep(30)
        return "finished"
    finally:
        await asyncio.sleep(0)  # clean-up that itself awaits
        cleaned.append("cleaned")


@pytest.mark.parametrize("with_signal", [True, False], ids=["signal", "receive"])
def test_a_client_leaving_cancels_the_work_after_its_clean_up(with_signal: bool) -> None:
    async def main() -> tuple[bool, list[str], str | None]:
        client = Client(with_signal)
        cleaned: list[str] = []
        result = None
        asyncio.get_running_loop().call_later(0.02, client.leave)
        async with DisconnectGuard(client.scope, client.receive) as guard:
            result = await _work(cleaned)
        return guard.disconnected, cleaned, result

    disconnected, cleaned, result = asyncio.run(asyncio.wait_for(main(), 5))
    assert disconnected and cleaned == ["cleaned"] and result is None


@pytest.mark.parametrize("with_signal", [True, False], ids=["signal", "receive"])
def test_work_that_ends_first_is_returned_and_nothing_lingers(with_signal: bool) -> None:
    async def main() -> tuple[bool, int]:
        client = Client(with_signal)
        async with DisconnectGuard(client.scope, client.receive) as guard:
            await asyncio.sleep(0.01)
        client.leave()  # after the block: must not cancel anything
        await asyncio.sleep(0.02)
        return guard.disconnected, len(asyncio.all_tasks())

    disconnected, tasks = asyncio.run(main())
    assert not disconnected and tasks == 1


def test_a_client_that_left_before_the_work_began_stops_it_at_once() -> None:
    async def main() -> bool:
        client = Client(with_signal=True)
        client.leave()
        cleaned: list[str] = []
        async with DisconnectGuard(client.scope, client.receive) as guard:
            await _work(cleaned)
        return guard.disconnected

    assert asyncio.run(asyncio.wait_for(main(), 5))


@pytest.mark.parametrize("with_signal", [True, False], ids=["signal", "receive"])
def test_a_cancellation_from_elsewhere_is_not_swallowed(with_signal: bool) -> None:
    """The server shutting down cancels the request's task too: that cancellation must go on."""

    async def request(client: Client) -> None:
        async with DisconnectGuard(client.scope, client.receive):
            await asyncio.sleep(30)

    async def main() -> None:
        client = Client(with_signal)
        task = asyncio.ensure_future(request(client))
        await asyncio.sleep(0.01)
        task.cancel()  # from elsewhere ...
        client.leave()  # ... and the client leaves at the same moment
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
