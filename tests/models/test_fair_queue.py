"""Requests for one model are served fairly across keys, and a full queue answers 429 at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from tests.conftest import Live, fake_models

BODY = {"model": "fake-chat", "messages": [{"role": "user", "content": "a b c d e"}], "max_tokens": 5}


async def _timed(http: httpx.AsyncClient, key: str, tag: str, finished: list[tuple[str, float]]) -> int:
    response = await http.post("/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"})
    finished.append((tag, time.monotonic()))
    return response.status_code


async def _until_queue(live: Live, waiting: int, running: int) -> None:
    """Waits until at least so many requests wait and so many run (a snapshot may catch one between the two)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = live.services.models.status("fake-chat").queue
        if stats is not None and stats.waiting >= waiting and stats.running >= running:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never {waiting} waiting and {running} running")


def test_a_flooding_key_does_not_make_another_wait_behind_it(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(delay="0.02"))
    flooder, polite = live.new_key("flooder"), live.new_key("polite")
    finished: list[tuple[str, float]] = []

    done_before_polite: list[int] = []

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as http:
            flood = [asyncio.ensure_future(_timed(http, flooder, f"f{i}", finished)) for i in range(8)]
            await _until_queue(live, waiting=4, running=1)  # the flood is queued and one of it is running
            done_before_polite.append(len(finished))
            polite_one = asyncio.ensure_future(_timed(http, polite, "polite", finished))
            return list(await asyncio.gather(*flood, polite_one))

    statuses = asyncio.run(scenario())
    assert set(statuses) == {200}
    order = [tag for tag, _ in sorted(finished, key=lambda item: item[1])]
    # With one line per key served in turn, the polite request runs right after the flooder's current one
    # (one more may finish while the polite request is on its way in).
    assert order.index("polite") <= done_before_polite[0] + 2, (order, done_before_polite)


def test_a_full_queue_answers_429_with_retry_after(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(delay="0.05"), max_queue=2)
    key = live.key

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as http:
            headers = {"authorization": f"Bearer {key}"}
            return list(
                await asyncio.gather(
                    *(http.post("/chat/completions", json=BODY, headers=headers) for _ in range(8))
                )
            )

    responses = asyncio.run(scenario())
    codes = [r.status_code for r in responses]
    assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
    for response in responses:
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(response.headers["retry-after"]) >= 1
    stats = live.services.models.status("fake-chat").queue
    assert stats is not None and stats.waiting == 0 and stats.served == codes.count(200)


def test_queue_statistics_show_waiting_requests(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(delay="0.05"))
    seen: list[int] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as http:
            headers = {"authorization": f"Bearer {live.key}"}
            tasks = [
                asyncio.ensure_future(http.post("/chat/completions", json=BODY, headers=headers))
                for _ in range(4)
            ]
            await _until_queue(live, waiting=2, running=1)
            stats = live.services.models.status("fake-chat").queue
            assert stats is not None
            seen.append(stats.waiting)
            assert stats.running == 1 and stats.longest_wait_s > 0
            await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert seen[0] >= 2


def test_a_model_with_slots_runs_that_many_requests_at_once_admitted_fairly(
    make_live: Callable[..., Live],
) -> None:
    chat, embed = fake_models(delay="0.05")
    live = make_live(models=(chat.model_copy(update={"parallel": 3}), embed))
    flooder, polite = live.new_key("flooder"), live.new_key("polite")
    finished: list[tuple[str, float]] = []
    running: list[int] = []

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as http:
            flood = [asyncio.ensure_future(_timed(http, flooder, f"f{i}", finished)) for i in range(9)]
            await _until_queue(live, waiting=3, running=3)
            stats = live.services.models.status("fake-chat").queue
            assert stats is not None
            running.append(stats.running)
            polite_one = asyncio.ensure_future(_timed(http, polite, "polite", finished))
            return list(await asyncio.gather(*flood, polite_one))

    started = time.monotonic()
    statuses = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert set(statuses) == {200}
    assert running == [3]
    # Ten requests of five 50 ms tokens, three at a time: four rounds of about 0.25 s, not ten.
    assert elapsed < 2.0, elapsed
    order = [tag for tag, _ in sorted(finished, key=lambda item: item[1])]
    assert order.index("polite") <= 5, order  # it takes the next free slot, ahead of the flood's rest
