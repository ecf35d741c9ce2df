"""What an upstream sends back is bounded: a gzip bomb, an oversized body, an endless head, a megabyte of
event-stream comments or an endless line each fail their request with a clear upstream error within a
second, the server's memory does not grow with the attack, and the server keeps serving. A client that
leaves mid-stream closes the upstream's connection, which is how the upstream learns to stop."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Live
from tests.support.mock_upstream import MockUpstream, Script, gzip_bomb
from tests.upstream.conftest import upstream_models, upstream_rows

MESSAGES = [{"role": "user", "content": "hello there upstream"}]
MAX_BODY = 1 << 20
"""The server's limit on a whole upstream answer in these tests; the hostile answers are 8 MiB or more."""
GROWTH = 64 << 20
"""How much the process's peak memory may grow during one attack (a 512 MiB bomb inflated would be seen)."""


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(512 << 20)


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@dataclass
class Served:
    """A live server relaying to the mock upstream, and a client of it."""

    live: Live
    http: httpx.Client

    def chat(self, stream: bool = False) -> httpx.Response:
        body = {"model": "up-chat", "messages": MESSAGES, "stream": stream}
        return self.http.post("/chat/completions", json=body)


@pytest.fixture
def served(make_live: Callable[..., Live], mock: MockUpstream) -> Iterator[Served]:
    live = make_live(models=upstream_models(mock.url), upstream_max_body_bytes=MAX_BODY)
    with httpx.Client(
        base_url=live.base_url, headers={"authorization": f"Bearer {live.key}"}, timeout=30
    ) as http:
        yield Served(live, http)


def _still_serving(served: Served, mock: MockUpstream) -> None:
    mock.script = Script()
    answer = served.chat()
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
    assert served.http.get("/models").status_code == 200


WHOLE = {
    "gzip": "gzip-encoded answer, though asked for none",
    "huge": f"answer of {8 << 20} bytes is larger than the {MAX_BODY} accepted",
    "huge_chunked": f"answer is larger than the {MAX_BODY} bytes accepted",
    "endless_header": "malformed answer: Got more than 8190 bytes",
    "many_headers": "malformed answer: Too many headers",
}


@pytest.mark.parametrize("fault", sorted(WHOLE))
def test_a_hostile_answer_fails_the_request_with_a_clear_502(
    served: Served, mock: MockUpstream, bomb: bytes, fault: str
) -> None:
    mock.script = Script(fault=fault, body=bomb)
    before = _peak_bytes()
    started = time.monotonic()
    answer = served.chat()
    elapsed = time.monotonic() - started
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_error"
    assert WHOLE[fault] in error["message"], error["message"]
    assert elapsed < 1.0, f"{fault} took {elapsed:.2f} s"
    assert _peak_bytes() - before < GROWTH
    (row,) = upstream_rows(served.live)
    assert (row["status"], row["http_status"], row["cost"]) == ("failed", 502, 0)
    _still_serving(served, mock)


STREAMED = {
    "comments": "more than 65536 bytes without an event",
    "long_line": "event line longer than 1048576 bytes",
    "gzip": "gzip-encoded answer, though asked for none",
}


@pytest.mark.parametrize("fault", sorted(STREAMED))
def test_a_hostile_stream_ends_with_a_clear_error_event(
    served: Served, mock: MockUpstream, bomb: bytes, fault: str
) -> None:
    mock.script = Script(fault=fault, body=bomb, size=(1 << 20) if fault == "comments" else (2 << 20))
    before = _peak_bytes()
    started = time.monotonic()
    answer = served.chat(stream=True)
    elapsed = time.monotonic() - started
    events = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error: dict[str, Any] = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_error" and STREAMED[fault] in error["message"], error
    assert elapsed < 1.0, f"{fault} took {elapsed:.2f} s"
    assert _peak_bytes() - before < GROWTH
    (row,) = upstream_rows(served.live)
    assert (row["status"], row["http_status"]) == ("failed", 502)
    _still_serving(served, mock)


def test_a_client_leaving_mid_stream_closes_the_upstream_connection(
    served: Served, mock: MockUpstream
) -> None:
    mock.script = Script(chunks=200, interval=0.02)
    body = {"model": "up-chat", "messages": MESSAGES, "stream": True}
    with served.http.stream("POST", "/chat/completions", json=body) as answer:
        lines = answer.iter_lines()
        while "w1" not in next(lines):
            pass
    deadline = time.monotonic() + 2
    while mock.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mock.disconnects == 1
    (row,) = upstream_rows(served.live)
    assert row["status"] == "disconnected" and row["client_disconnected"] is True
