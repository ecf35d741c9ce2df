"""A chat engine process that dies: killed with SIGKILL mid-stream, or segfaulting by itself. The streams it
was running end with ``engine_crashed`` and are billed for exactly what they received; a request waiting in
the queue is served by the restarted engine; the server keeps serving throughout; and after the restarts
the crash window allows, the next crash leaves the model down (absent from ``/v1/models``) until it is
loaded again."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from server.config import default_models
from server.engines.chat_process import ProcessChat
from server.engines.embedder_process import ProcessEmbedder
from server.engines.supervisor import CRASH_LIMIT
from tests.api.conftest import ledger_row, wait_for
from tests.conftest import Live, fake_models

CHAT = "fake-chat"
Client = Callable[[Live], openai.OpenAI]


def engine(live: Live) -> ProcessChat:
    backend = live.services.models.get(CHAT, "chat")[0]
    assert isinstance(backend, ProcessChat)
    return backend


@pytest.fixture
def client() -> Iterator[Client]:
    """An SDK client for a live server, closed at the end of the test (before the collector finds it)."""
    made: list[openai.OpenAI] = []

    def build(live: Live) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0, timeout=60))
        return made[-1]

    yield build
    for sdk in made:
        sdk.close()


def stream_until_error(
    client: Client, live: Live, max_tokens: int, on_piece: Callable[[int], None] = lambda n: None
) -> tuple[str, int, openai.APIError]:
    """Stream a chat completion until the server reports an error; the request id, the content pieces
    received, and the error."""
    raw = client(live).chat.completions.with_raw_response.create(
        model=CHAT,
        messages=[{"role": "user", "content": "one two three four"}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    received = 0
    with pytest.raises(openai.APIError) as caught:
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
                on_piece(received)
    return raw.headers["x-request-id"], received, caught.value


def test_a_killed_engine_ends_its_stream_with_engine_crashed_billed_for_what_was_streamed(
    make_live: Callable[..., Live],
    client: Client,
) -> None:
    live = make_live(models=fake_models(process="1", delay="0.02", repeat="1"))
    pid = engine(live).supervisor.pid
    assert pid is not None and pid != os.getpid()

    def kill_at_five(received: int) -> None:
        if received == 5:
            os.kill(pid, signal.SIGKILL)

    request_id, received, error = stream_until_error(client, live, 400, kill_at_five)
    assert error.code == "engine_crashed", error
    assert "SIGKILL" in error.message and CHAT in error.message
    assert 5 <= received < 400
    row = ledger_row(live, request_id)
    assert (row["status"], row["http_status"], row["output_tokens"]) == ("failed", 503, received)
    assert row["cost"] > 0  # what was streamed is billed
    # The engine comes back by itself and serves again.
    wait_for(lambda: live.services.models.status(CHAT).state == "loaded", 30, "the restart")
    assert engine(live).supervisor.pid not in (None, pid)
    reply = client(live).chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "back again"}], max_tokens=5
    )
    assert (reply.choices[0].message.content or "").startswith("back again")
    status = live.services.models.status(CHAT)
    assert status.restarts == 1 and "SIGKILL" in status.crashes[0].reason


def test_a_segfault_mid_stream_fails_the_running_request_and_the_queued_one_is_served_after_the_restart(
    make_live: Callable[..., Live],
    client: Client,
) -> None:
    # The fake engine kills itself with SIGSEGV before its sixth token: a request for at most five is safe.
    live = make_live(models=fake_models(process="1", delay="0.05", repeat="1", crash_at="5"))
    queued: dict[str, Any] = {}

    def ask_while_the_first_runs(received: int) -> None:
        if received == 1:
            thread = threading.Thread(target=lambda: queued.update(reply=ask(client, live, 3)))
            thread.start()
            queued["thread"] = thread
            wait_for(lambda: waiting(live) == 1, 5, "the second request to queue")

    request_id, received, error = stream_until_error(client, live, 50, ask_while_the_first_runs)
    assert error.code == "engine_crashed" and "SIGSEGV" in error.message
    assert received == 5
    assert ledger_row(live, request_id)["output_tokens"] == 5
    queued["thread"].join(30)
    reply = queued["reply"]
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3
    assert live.services.models.status(CHAT).restarts == 1


def waiting(live: Live) -> int:
    queue = live.services.models.status(CHAT).queue
    return queue.waiting if queue is not None else 0


def ask(client: Client, live: Live, max_tokens: int) -> Any:
    return client(live).chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "one two three four five six"}],
        max_tokens=max_tokens,
    )


def test_embeddings_keep_serving_while_the_chat_engine_is_down_and_restarting(
    make_live: Callable[..., Live],
    client: Client,
) -> None:
    live = make_live(models=fake_models(process="1", delay="0.05", repeat="1", crash_at="2"))
    _, _, error = stream_until_error(client, live, 10)
    assert error.code == "engine_crashed"
    vectors = client(live).embeddings.create(model="fake-embed", input=["still here"])
    assert len(vectors.data[0].embedding) == 64


def test_after_the_restarts_the_window_allows_the_next_crash_leaves_the_model_down_until_it_is_loaded(
    make_live: Callable[..., Live],
    client: Client,
) -> None:
    live = make_live(models=fake_models(process="1", repeat="1", crash_at="1"))
    for crash in range(CRASH_LIMIT + 1):
        wait_for(lambda: live.services.models.status(CHAT).state != "restarting", 30, "a restart")
        with pytest.raises(openai.APIStatusError) as caught:
            ask(client, live, 10)
        assert caught.value.status_code == 503 and caught.value.code == "engine_crashed", crash
    status = live.services.models.status(CHAT)
    assert (
        status.state == "failed" and status.restarts == CRASH_LIMIT and len(status.crashes) == CRASH_LIMIT + 1
    )
    assert status.error is not None and "stays down" in status.error and "SIGSEGV" in status.error
    assert CHAT not in {model.id for model in client(live).models.list()}
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as refused:
        ask(client, live, 1)
    assert refused.value.status_code == 503 and "down" in refused.value.message
    assert time.monotonic() - started < 2, "a request for a model that is down is refused at once"
    # The operator loads it again: it serves (requests under the crash point).
    assert live.services.models.load(CHAT).state == "loaded"
    assert ask(client, live, 1).choices[0].message.content == "one"


@pytest.mark.slow
def test_a_killed_embedding_engine_restarts_and_serves_the_next_request(
    make_live: Callable[..., Live],
    client: Client,
) -> None:
    config = default_models()[1]
    if not config.source:
        pytest.skip("the embedding model's package is not installed")
    live = make_live(models=(fake_models()[0], config))
    backend = live.services.models.get(config.name, "embedding")[0]
    assert isinstance(backend, ProcessEmbedder)
    first = client(live).embeddings.create(model=config.name, input=["before"]).data[0].embedding
    os.kill(backend.supervisor.pid or 0, signal.SIGKILL)
    wait_for(lambda: bool(live.services.models.status(config.name).crashes), 10, "the crash to be noticed")
    # While it restarts, a request waits for it rather than failing.
    again = client(live).embeddings.create(model=config.name, input=["before"]).data[0].embedding
    assert again == first
    status = live.services.models.status(config.name)
    assert status.state == "loaded" and status.restarts == 1 and "SIGKILL" in status.crashes[0].reason
