"""Bad input, thrown at a server in its own process: every request gets a fast 4xx in the error envelope
(never a 5xx, never a hang), the server's memory stays bounded, and a canary keeps being served.

The server runs as a separate process so that its memory can be read from ``/proc`` and so that the
canary's latency measures the server, not this test's own work building 50 MB bodies.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import ServerProcess, assert_envelope, canary, raw

MB = 1024 * 1024
LIMIT = 8 * MB  # the default max_body_bytes
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], **fields}


def embed(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-embed", "input": "hi", **fields}


def respond(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-chat", "input": "hi", **fields}


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes | Callable[[], Iterator[bytes]]
    content_type: str = "application/json"
    statuses: tuple[int, ...] = (400,)
    seconds: float = 2.0
    """How long the answer may take (upload included), on a busy two-core machine."""


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def _field_cases() -> list[Case]:
    """Sampling and limit parameters out of range or of the wrong type."""
    bad: dict[str, list[Any]] = {
        "n": [0, -1, 17, 10**30, "2", 2.5, True, [1], {"n": 1}],
        "max_tokens": [0, -1, 10**12, 2**64, "10", 1.5, False, [5]],
        "max_completion_tokens": [0, -5, 10**40, "7", 3.25],
        "top_logprobs": [-1, 21, 10**9, "5", 2.0, 5],  # 5 is in range but needs logprobs, which are not asked
        "logit_bias": [
            {"-1": 1},
            {"x": 1},
            {"1": 101},
            {"1": -101},
            {"1": "a"},
            {"1": None},
            [],
            "x",
            7,
            {str(i): 1 for i in range(1025)},
            {"9" * 30: 1},
            {"1.5": 1},
            {"": 0},
        ],  # fmt: skip
        "stop": [5, ["a"] * 5, "x" * 257, [1], [None], {"a": 1}, ["ok", ["nested"]], True],
        "temperature": [-0.1, 2.01, 1e308, -1e308, "1", [1], {"t": 1}, True],
        "top_p": [-0.01, 1.01, "0.5"],
        "presence_penalty": [2.5, -3, "0"],
        "seed": [2**64, -(2**63) - 1, "1", 1.5],
        "logprobs": ["yes", 1],
    }
    cases = []
    for name, values in bad.items():
        for i, value in enumerate(values):
            cases.append(Case(f"chat.{name}[{i}]", CHAT, js(chat(**{name: value}))))
    responses_bad: dict[str, list[Any]] = {
        "max_output_tokens": [0, 15, -1, "20", 10**20, 2.5],
        "temperature": [3, -1, "1"],
        "top_p": [2, "x"],
        "top_logprobs": [1, -1],
    }
    for name, values in responses_bad.items():
        for i, value in enumerate(values):
            cases.append(Case(f"responses.{name}[{i}]", RESPONSES, js(respond(**{name: value}))))
    return cases


def _embedding_cases() -> list[Case]:
    return [
        Case(
            "embed.batch-over-model-limit", EMBEDDINGS, js(embed(input=["x"] * 257))
        ),  # fake-embed takes 256
        Case("embed.batch-over-protocol-limit", EMBEDDINGS, js(embed(input=["x"] * 2049))),
        Case("embed.batch-of-100k", EMBEDDINGS, js(embed(input=["x"] * 100_000))),
        Case("embed.negative-token", EMBEDDINGS, js(embed(input=[1, 2, -3]))),
        Case("embed.negative-token-array", EMBEDDINGS, js(embed(input=[[1], [5, -1]]))),
        Case("embed.token-too-large", EMBEDDINGS, js(embed(input=[[2**31]]))),
        Case("embed.token-beyond-vocabulary", EMBEDDINGS, js(embed(input=[[50_000]]))),
        Case("embed.token-float", EMBEDDINGS, js(embed(input=[[1.5]]))),
        Case("embed.token-bool", EMBEDDINGS, js(embed(input=[[True]]))),
        Case("embed.too-many-tokens", EMBEDDINGS, js(embed(input=[[1] * 8193]))),
        Case("embed.empty-array", EMBEDDINGS, js(embed(input=[[]]))),
        Case("embed.empty-input", EMBEDDINGS, js(embed(input=[]))),
        Case("embed.mixed", EMBEDDINGS, js(embed(input=["a", [1]]))),
        Case("embed.dimensions", EMBEDDINGS, js(embed(dimensions=0))),
        Case("embed.encoding", EMBEDDINGS, js(embed(encoding_format="int8"))),
        Case("embed.long-text", EMBEDDINGS, js(embed(input=["y" * 100_001]))),
        Case("embed.million-token-ids", EMBEDDINGS, js(embed(input=[[7] * 1_000_000])), seconds=5),
    ]


def _nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"format": {"type": "json_schema", "name": "x", "schema": schema}}


def _message_with(extra: dict[str, Any]) -> dict[str, Any]:
    """An input message carrying an extra field (message items allow them): the body, input, the list, the
    message and ``extra`` make ``extra``'s depth + 3 levels."""
    return {"role": "user", "content": "hi", "extra": extra}


def _deep(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


def _chunks(
    total: int, piece: bytes = b"x" * 65536, head: bytes = b'{"model": "fake-chat", "messages": ['
) -> Callable[[], Iterator[bytes]]:
    def produce() -> Iterator[bytes]:
        yield head
        sent = len(head)
        while sent < total:
            yield piece
            sent += len(piece)

    return produce


def _body_cases() -> list[Case]:
    message = b'{"role":"user","content":"x"},'
    million = b'{"model":"fake-chat","messages":[' + message * 999_999 + message[:-1] + b"]}"
    nearly = LIMIT - 64
    return [
        # Size: 50 MB declared, 50 MB streamed without a length, a million messages.
        Case("50MB-declared", CHAT, b"x" * (50 * MB), statuses=(413,), seconds=10),
        Case("50MB-chunked", CHAT, _chunks(50 * MB), statuses=(413,), seconds=10),
        Case("million-messages", CHAT, million, statuses=(413,), seconds=10),
        Case(
            "million-messages-chunked",
            CHAT,
            _chunks(len(million), message * 2000),
            statuses=(413,),
            seconds=10,
        ),
        # Nesting: 100,000 deep, as arrays, objects, and inside a real field.
        Case("nested-100k-arrays", CHAT, _deep(100_000)),
        Case("nested-100k-objects", CHAT, b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        Case("nested-100k-in-metadata", CHAT, js(chat())[:-1] + b', "metadata": ' + _deep(100_000) + b"}"),
        Case("nested-100k-unclosed", CHAT, b"[" * 100_000),
        Case(
            "nested-129-padded-past-1MB",
            RESPONSES,
            b" " * MB + js(respond(input=[_message_with(_nested(126))])),
        ),
        # Just under the size limit, built to be expensive to parse and to validate.
        Case(
            "8MB-of-empty-arrays",
            CHAT,
            b'{"model":"fake-chat","messages":[' + b"[]," * (nearly // 3) + b"[]]}",
            seconds=5,
        ),
        Case(
            "8MB-of-empty-objects",
            CHAT,
            b'{"model":"fake-chat","messages":[' + b"{}," * (nearly // 3) + b"{}]}",
            seconds=5,
        ),
        Case(
            "8MB-of-nested-pairs",
            CHAT,
            b'{"model":"fake-chat","messages":[' + b"[[]]," * (nearly // 5) + b"[]]}",
            seconds=5,
        ),
        Case(
            "8MB-of-floats",
            EMBEDDINGS,
            b'{"model":"fake-embed","input":[' + b"1.5," * (nearly // 4) + b"1]}",
            seconds=5,
        ),
        Case(
            "8MB-of-ints",
            EMBEDDINGS,
            b'{"model":"fake-embed","input":[' + b"1," * (nearly // 2) + b"1]}",
            seconds=5,
        ),
        Case(
            "8MB-of-strings",
            EMBEDDINGS,
            b'{"model":"fake-embed","input":[' + b'"ab",' * (nearly // 5) + b'"a"]}',
            seconds=5,
        ),
        Case(
            "8MB-logit-bias",
            CHAT,
            js(chat())[:-1] + b', "logit_bias": {' + b",".join(b'"%d":1' % i for i in range(650_000)) + b"}}",
            seconds=5,
        ),
        Case(
            "8MB-surrogate-pairs",
            CHAT,
            b'{"model":"fake-chat","messages":[' + b'["\\ud83d\\ude00"],' * (nearly // 18) + b"[]]}",
            seconds=5,
        ),
        # Encoding and syntax.
        Case("empty", CHAT, b""),
        Case("whitespace", CHAT, b"   \n\t "),
        Case("invalid-json", CHAT, b'{"model": "fake-chat", "messages": [}'),
        Case("single-quotes", CHAT, b"{'model': 'fake-chat'}"),
        Case("trailing-garbage", CHAT, js(chat()) + b" garbage"),
        Case("two-documents", CHAT, js(chat()) + js(chat())),
        Case("trailing-comma", CHAT, b'{"model": "fake-chat", "messages": [],}'),
        Case("invalid-utf8", CHAT, b'{"model": "fake-chat\xff\xfe", "messages": []}'),
        Case("overlong-utf8", CHAT, b'{"model": "\xc0\xaf", "messages": []}'),
        Case(
            "raw-surrogate-bytes",
            CHAT,
            b'{"model": "fake-chat", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
        ),
        Case("escaped-lone-surrogate", CHAT, js(chat())[:-1].replace(b'"hi"', b'"\\udfff"') + b"}"),
        Case("lone-surrogate-in-key", CHAT, js(chat())[:-1] + b', "metadata": {"\\ud800": "x"}}'),
        Case(
            "lone-surrogate-in-echoed-key", RESPONSES, js(respond())[:-1] + b', "metadata": {"\\udbff": "x"}}'
        ),
        Case("lone-surrogate-top-level-key", EMBEDDINGS, js(embed())[:-1] + b', "\\ud800": 1}'),
        Case("utf16-body", CHAT, json.dumps(chat()).encode("utf-16")),
        Case("utf8-bom", CHAT, b"\xef\xbb\xbf" + js(chat())),
        Case("nul-bytes", CHAT, b"\x00" * 1000),
        Case("nan", CHAT, js(chat())[:-1] + b', "temperature": NaN}'),
        Case("infinity", CHAT, js(chat())[:-1] + b', "temperature": Infinity}'),
        Case("minus-infinity", CHAT, js(chat())[:-1] + b', "temperature": -Infinity}'),
        Case("1e400", CHAT, js(chat())[:-1] + b', "temperature": 1e400}'),
        Case("5000-digit-int", CHAT, js(chat())[:-1] + b', "n": ' + b"9" * 5000 + b"}"),
        Case("not-an-object", CHAT, b"[1, 2, 3]"),
        Case("null", CHAT, b"null"),
        Case("string", EMBEDDINGS, b'"input"'),
        # Content types.
        Case("text/plain", CHAT, js(chat()), content_type="text/plain", statuses=(415,)),
        Case(
            "form",
            CHAT,
            b"model=fake-chat",
            content_type="application/x-www-form-urlencoded",
            statuses=(415,),
        ),
        Case("xml", CHAT, b"<model/>", content_type="application/xml", statuses=(415,)),
        Case(
            "multipart-pathological-boundary",
            CHAT,
            b"--" + b"-" * 60_000 + b"\r\n" * 1000,
            content_type="multipart/form-data; boundary=" + "-" * 60_000,
            statuses=(415,),
        ),  # fmt: skip
        Case(
            "multipart-empty-boundary",
            EMBEDDINGS,
            b"--\r\n\r\n--",
            content_type="multipart/form-data; boundary=",
            statuses=(415,),
        ),
        Case(
            "json-in-utf16",
            CHAT,
            json.dumps(chat()).encode("utf-16-le"),
            content_type="application/json; charset=utf-16",
        ),
        Case(
            "content-type-params",
            CHAT,
            js(chat(n=0)),
            content_type="application/json; " + "; ".join(f"p{i}=v" for i in range(2000)),
        ),
    ]


CASES = _field_cases() + _embedding_cases() + _body_cases()


@dataclass
class Target:
    """The server under attack, the attacker's key, and the canary's."""

    process: ServerProcess
    key: str
    canary_key: str

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def port(self) -> int:
        return self.process.port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("bad-input") / "data"
    process = ServerProcess(data, AISP_HEADER_TIMEOUT_S="2", AISP_BODY_TIMEOUT_S="2")
    key, _ = process.create_key("attacker")
    canary_key, _ = process.create_key("canary")
    process.start()
    yield Target(process, key, canary_key)
    process.kill()


def _send(client: httpx.Client, case: Case) -> tuple[int, bytes, float]:
    content = case.body() if callable(case.body) else case.body
    started = time.monotonic()
    response = client.post(case.path, content=content, headers={"content-type": case.content_type})
    return response.status_code, response.content, time.monotonic() - started


def test_bad_input_gets_a_fast_4xx_while_the_server_keeps_serving(server: Target) -> None:
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for _ in range(3):  # warm up, so that the memory baseline includes what any request loads
            assert client.post(CHAT, json=chat()).status_code == 200
            assert client.post(EMBEDDINGS, json=embed()).status_code == 200
        baseline = server.process.rss_mb()
        problems: list[str] = []
        timings: list[tuple[float, str]] = []
        with canary(server.url, server.canary_key) as bird:
            for case in CASES:
                try:
                    status, body, elapsed = _send(client, case)
                except httpx.HTTPError as exc:
                    problems.append(f"{case.name}: {type(exc).__name__}: {exc}")
                    continue
                timings.append((elapsed, case.name))
                if status not in case.statuses:
                    problems.append(f"{case.name}: {status} {body[:200]!r}")
                    continue
                try:
                    assert_envelope(status, body)
                except (AssertionError, ValueError) as exc:
                    problems.append(f"{case.name}: not the error envelope: {exc}")
                if elapsed > case.seconds:
                    problems.append(f"{case.name}: answered in {elapsed:.2f} s (limit {case.seconds} s)")
        peak = _peak_rss_mb(server)
        slowest = sorted(timings, reverse=True)[:5]
        assert not problems, "\n".join(problems) + f"\nslowest: {slowest}"
        # Still serving, correctly, after all of it.
        assert client.post(CHAT, json=chat()).json()["choices"][0]["message"]["content"] == "hi"
    # Bodies are read no further than 8 MB and parsed one at a time on the event loop: the server grows
    # by a bounded multiple of the body limit, whatever the body holds.
    assert peak - baseline < 30 * LIMIT / MB, f"peak {peak:.0f} MB from {baseline:.0f} MB; slowest {slowest}"
    # JSON is parsed by C code that holds the interpreter lock: 8 MB built to be slow to parse can delay
    # other requests by a second or so (bodies past 256 KB are parsed off the event loop).
    bird.assert_served(max_latency=3.0)


def test_memory_does_not_grow_with_repeated_bad_bodies(server: Target) -> None:
    """Refused bodies are freed when refused, not whenever the garbage collector next runs."""
    heavy = [
        case for case in CASES if case.name in ("8MB-of-floats", "8MB-of-strings", "embed.million-token-ids")
    ]
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for case in heavy:
            _send(client, case)
        settled = server.process.rss_mb()
        for _ in range(4):
            for case in heavy:
                status, _, _ = _send(client, case)
                assert status == 400
    grown = server.process.rss_mb() - settled
    assert grown < 40, f"the server grew by {grown:.0f} MB over twelve refused bodies"


def _peak_rss_mb(server: Target) -> float:
    assert server.process.proc is not None
    status = Path(f"/proc/{server.process.proc.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_a_50mb_declared_body_is_refused_before_it_is_read(server: Target) -> None:
    """Announce 50 MB, send 1 MB: the 413 arrives without waiting for the rest."""
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {50 * MB}\r\n\r\n"
    ).encode()
    response = raw(server.port, head + b"[" * MB, timeout=5)
    assert response.status == 413
    assert assert_envelope(response.status, response.body)["code"] == "request_too_large"
    assert response.elapsed < 2


@pytest.mark.parametrize("length", ["-1", "1e3", "0x10", "99999999999999999999999", "1,1", " "])
def test_a_malformed_content_length_is_a_4xx(server: Target, length: str) -> None:
    request = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{}}"
    ).encode()
    response = raw(server.port, request, timeout=5)
    assert_envelope(response.status, response.body)


def _trickle(port: int, payload: bytes, interval: float, results: list[tuple[bytes, float]]) -> None:
    """Send ``payload`` one byte every ``interval`` seconds, and note what came back and when."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for byte in payload:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(interval)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            received += chunk
            if not chunk or b"\r\n\r\n" in received:
                break
        sock.settimeout(5)
        try:
            while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
                received += chunk
        except OSError:
            pass
    results.append((received, time.monotonic() - started))


def test_slow_headers_at_one_byte_a_second_are_cut_off(server: Target) -> None:
    """Twenty clients trickle their headers at a byte a second: each gets 408 at the 2 s deadline."""
    request = (
        f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.key}\r\n\r\n".encode()
    )
    results: list[tuple[bytes, float]] = []
    with canary(server.url, server.canary_key) as bird:
        threads = [
            threading.Thread(target=_trickle, args=(server.port, request, 1.0, results)) for _ in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    bird.assert_served(max_latency=1.0)
    assert len(results) == 20
    for received, elapsed in results:
        assert received.startswith(b"HTTP/1.1 408"), received[:100]
        assert 1.5 < elapsed < 4.5, elapsed


def test_a_slow_body_at_one_byte_a_second_is_cut_off(server: Target) -> None:
    body = json.dumps(chat()).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    results: list[tuple[bytes, float]] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        received = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(1.0)
            try:
                received += sock.recv(65536)
            except TimeoutError:
                continue
            if b"\r\n\r\n" in received:
                break
        results.append((received, time.monotonic() - started))
    received, elapsed = results[0]
    assert received.startswith(b"HTTP/1.1 408"), received[:100]
    assert elapsed < 4.5


def test_large_and_deep_but_valid_bodies_are_served(server: Target) -> None:
    """The bounds refuse attacks, not requests: 128 levels, 2 MB of padding and a million token ids are served."""
    deep = respond(input=[_message_with(_nested(125))], max_output_tokens=16)
    schema = respond(text=_schema_format(_nested(20)), max_output_tokens=16)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
    ) as client:
        for body in (js(deep), b" " * (2 * MB) + js(deep), b" " * (2 * MB) + js(schema)):
            response = client.post(RESPONSES, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text[:300]
            items = client.get(f"{RESPONSES}/{response.json()['id']}/input_items")
            assert items.status_code == 200, items.text[:300]
        many = embed(input=[[7] * 8000 for _ in range(128)])  # 1 M token ids: 2 MB, parsed off the event loop
        response = client.post(EMBEDDINGS, json=many)
        assert response.status_code == 200, response.text[:300]
        assert len(response.json()["data"]) == 128


def test_a_malformed_chunked_body_is_a_clean_400_with_its_ledger_row(
    server_process: Callable[..., ServerProcess],
) -> None:
    """A chunk one byte longer than what is sent, a chunk size that is not a number, and a client that leaves
    in the middle of its body: a 400, no error in the log, and a ledger row each, as for any bad request."""
    process = server_process("chunked")
    key, record = process.create_key("chunked")
    process.start()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    for body in (b"6\r\n{}{}{\r\n0\r\n\r\n", b"zz\r\n{}\r\n0\r\n\r\n"):
        response = raw(process.port, head + body, timeout=5)
        assert response.status == 400
        assert_envelope(response.status, response.body)
    with socket.create_connection(("127.0.0.1", process.port), timeout=5) as sock:
        sock.sendall(head + b'40\r\n{"model": ')  # and leaves
    time.sleep(1.5)  # the protocol lingers half a second before it closes a refused connection
    assert process.stop() == 0
    log = process.log()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
    with sqlite3.connect(process.data_dir / "aisp.sqlite3") as db:
        rows = db.execute(
            "SELECT endpoint, status, http_status FROM usage_record WHERE key_id = ?", (record.id,)
        ).fetchall()
    db.close()
    assert rows == [("chat.completions", "rejected", 400)] * 3
