"""Items a model's worker thread hands to the event loop arrive all, in order, and a burst of them
costs one wake-up of the loop."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator

from server.engines.worker import ModelWorker


def test_every_item_arrives_in_order_whatever_the_timing() -> None:
    worker = ModelWorker("handover", max_queue=8)
    rng = random.Random(7)
    pauses = [rng.choice((0.0, 0.0, 0.0, 0.00005, 0.0005)) for _ in range(3000)]

    def work(_stop: Callable[[], bool]) -> Iterator[int]:
        for number, pause in enumerate(pauses):
            if pause:
                time.sleep(pause)
            yield number

    async def consume() -> list[int]:
        received = []
        async for item in worker.run("key", work):
            received.append(item)
            if rng.random() < 0.01:
                await asyncio.sleep(0.0005)  # the loop busy elsewhere while the thread keeps putting
        return received

    try:
        assert asyncio.run(consume()) == list(range(len(pauses)))
    finally:
        worker.close()


def release_and_stay_busy(gate: threading.Event) -> None:
    """Let the job finish while the loop is busy: both hand-overs happen before it looks again."""
    gate.set()
    time.sleep(0.05)


def test_a_result_and_its_end_wake_the_loop_once() -> None:
    worker = ModelWorker("handover", max_queue=8)
    gate = threading.Event()

    def work(_stop: Callable[[], bool]) -> Iterator[str]:
        gate.wait(5)
        yield "result"

    async def one() -> tuple[list[str], int]:
        loop = asyncio.get_running_loop()
        wakes = 0
        original = loop.call_soon_threadsafe

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal wakes
            wakes += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
        received = []
        runner = worker.run("key", work)
        first = asyncio.ensure_future(runner.__anext__())
        await asyncio.sleep(0.05)  # the job is waiting on the gate; the loop idles
        loop.call_soon(release_and_stay_busy, gate)
        received.append(await first)
        async for item in runner:
            received.append(item)
        return received, wakes

    try:
        received, wakes = asyncio.run(one())
        assert received == ["result"]
        assert wakes == 1
    finally:
        worker.close()
