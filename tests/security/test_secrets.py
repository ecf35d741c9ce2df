"""A canary key, used in valid, invalid and failing requests against a server logging at debug level, shows
up in no log line, no database file, no response and no exported file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from tests.security.conftest import ROOT, SERVE, ServerProcess, fake_model_table, raw


def _fragments(secret: str) -> list[str]:
    """The key and every 12-character piece of its random part: a partial leak is a leak too."""
    body = secret.removeprefix("aisp-")
    return [secret] + [body[i : i + 12] for i in range(len(body) - 11)]


def _assert_absent(secret: str, where: str, texts: Iterable[str | bytes]) -> None:
    pieces = _fragments(secret)
    for text in texts:
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
        for piece in pieces:
            assert piece.encode() not in data, f"the key (or {piece!r}) appears in {where}"


def _exchange(server: ServerProcess, canary: str) -> list[bytes]:
    """Every kind of request with the canary, valid, invalid and failing; returns every response, raw."""
    seen: list[bytes] = []

    def keep(response: httpx.Response) -> httpx.Response:
        seen.append(str(response.headers).encode() + b"\n" + response.read())
        return response

    bearer = {"Authorization": f"Bearer {canary}"}
    with httpx.Client(base_url=server.url, timeout=30, event_hooks={"response": [keep]}) as client:
        # Valid.
        assert client.get("/v1/models", headers=bearer).status_code == 200
        assert client.post("/v1/chat/completions", headers=bearer, json=_chat("fake-chat")).status_code == 200
        with client.stream(
            "POST", "/v1/chat/completions", headers=bearer, json=_chat("fake-chat", stream=True)
        ) as s:
            seen.append(s.read())
        assert (
            client.post(
                "/v1/embeddings", headers=bearer, json={"model": "fake-embed", "input": "x"}
            ).status_code
            == 200
        )
        stored = client.post(
            "/v1/responses", headers=bearer, json={"model": "fake-chat", "input": "remember"}
        )
        assert stored.status_code == 200
        assert client.get(f"/v1/responses/{stored.json()['id']}", headers=bearer).status_code == 200
        assert (
            client.get(f"/v1/responses/{stored.json()['id']}/input_items", headers=bearer).status_code == 200
        )
        # Failing: the engine breaks, the model is unknown, the body is wrong, too big, or not JSON.
        assert (
            client.post("/v1/chat/completions", headers=bearer, json=_chat("fake-broken")).status_code == 500
        )
        with client.stream(
            "POST", "/v1/chat/completions", headers=bearer, json=_chat("fake-broken", stream=True)
        ) as s:
            seen.append(s.read())
            assert b"engine_error" in seen[-1]
        with client.stream(
            "POST",
            "/v1/responses",
            headers=bearer,
            json={"model": "fake-broken", "input": "x", "stream": True},
        ) as s:
            seen.append(s.read())
        assert client.post("/v1/chat/completions", headers=bearer, json=_chat("gpt-4o")).status_code == 404
        assert (
            client.post(
                "/v1/chat/completions", headers=bearer, json={"model": "fake-chat", "n": "x"}
            ).status_code
            == 400
        )
        assert (
            client.post("/v1/chat/completions", headers=bearer, content=b"x" * (9 * 2**20)).status_code == 413
        )
        assert (
            client.post(
                "/v1/embeddings", headers={**bearer, "content-type": "text/plain"}, content=b"x"
            ).status_code
            == 415
        )
        assert client.get("/v1/responses/resp_missing", headers=bearer).status_code == 404
        # Invalid: near misses, the wrong scheme, twice, in the URL.
        near = canary[:-3] + ("aaa" if canary[-3:] != "aaa" else "bbb")
        for headers in (
            {"Authorization": f"Bearer {near}"},
            {"Authorization": f"Bearer {canary.lower()}"},
            {"Authorization": f"Basic {canary}"},
            {"Authorization": f"Bearer {canary}x"},
            {"Authorization": canary},
        ):
            assert client.get("/v1/models", headers=headers).status_code == 401
        assert (
            client.get(
                "/v1/models", headers=httpx.Headers([("authorization", f"Bearer {canary}")] * 2)
            ).status_code
            == 401
        )
        assert client.get("/v1/models", params={"api_key": canary}).status_code == 401
        assert client.get("/v1/models", params={"api_key": canary}, headers=bearer).status_code == 401
    # Malformed HTTP carrying the key, which the protocol layer refuses before any handler sees it.
    for request in (
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {canary}\r\nBad Header\r\n\r\n",
        f"GET /v1/models?api_key={canary} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 70_000}\r\n\r\n",
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {canary}\r\nContent-Length: zz\r\n\r\n",
    ):
        response = raw(server.port, request.encode())
        seen.append(response.body)
    return seen


def _keys_in_every_field(server: ServerProcess, canary: str) -> list[str]:
    """The key sent in every field a client controls, valid bodies and invalid ones; the answers may echo
    it to the client who sent it (a model's reply, "model … does not exist"), and are not kept.
    Returns the request ids of the bodies refused for their contents."""
    bearer = {"Authorization": f"Bearer {canary}", "User-Agent": canary, "OpenAI-Organization": canary}
    refused: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30, headers=bearer) as client:
        for path, body in (
            # The attack: an invalid body whose model is a key (this row used to keep the whole field).
            ("/v1/chat/completions", {"model": canary, "messages": "not a list"}),
            ("/v1/chat/completions", {"model": f"x {canary} y", "messages": [], "n": "x"}),
            ("/v1/embeddings", {"model": canary, "input": 5}),
            ("/v1/responses", {"model": canary, "input": 5}),
            # Valid bodies: the key as the model, and in every free-text field.
            ("/v1/chat/completions", _chat(canary)),
            (
                "/v1/chat/completions",
                _chat("fake-chat", user=canary, metadata={canary: canary}, stop=[canary]),
            ),
            (
                "/v1/chat/completions",
                {**_chat("fake-chat"), "messages": [{"role": "user", "content": canary}]},
            ),
            ("/v1/embeddings", {"model": "fake-embed", "input": [canary], "user": canary}),
            ("/v1/responses", {"model": "fake-chat", "input": f"remember {canary}", "instructions": canary}),
            ("/v1/responses", {"model": "fake-chat", "input": "x", "previous_response_id": canary}),
            (
                "/v1/responses",
                {"model": "fake-chat", "input": "x", "metadata": {"k": canary}, "user": canary},
            ),
        ):
            response = client.post(path, json=body, params={"q": canary})
            if response.status_code == 400:
                refused.append(response.headers["x-request-id"])
        client.get(f"/v1/models/{canary}")
        client.get(f"/v1/responses/{canary}")
        client.get(f"/{canary}")
    assert len(refused) >= 4
    return refused


def _chat(model: str, **fields: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, **fields}


def test_a_canary_key_leaks_nowhere(server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    models = fake_model_table()
    models.append({**models[0], "name": "fake-broken", "source": "fail_at=2,repeat=1"})
    server = server_process(models=models, AISP_LOG_LEVEL="debug")
    canary, record = server.create_key("canary")
    server.start()
    responses = _exchange(server, canary)
    refused = _keys_in_every_field(server, canary)
    assert server.stop() == 0
    # Responses.
    _assert_absent(canary, "a response", responses)
    # Logs: debug level, and they really are debug logs (SQL statements are logged).
    log = server.log()
    assert "DEBUG" in log and "SELECT" in log, log[-2000:]
    _assert_absent(canary, "the server's log", [log])
    # Every file in the data directory: the database, its WAL, the server secret.
    files = [path for path in server.data_dir.rglob("*") if path.is_file()]
    assert any(path.name == "aisp.sqlite3" for path in files)
    _assert_absent(canary, "the data directory", [path.read_bytes() for path in files])
    # The database, table by table, as the window and the CLI read it.
    connection = sqlite3.connect(server.data_dir / "aisp.sqlite3")
    try:
        dump = "\n".join(connection.iterdump())
    finally:
        connection.close()
    assert record.id in dump and "usage_record" in dump
    _assert_absent(canary, "a database table", [dump])
    # Each refused body still has its row, naming no model (its "model" named none of ours).
    connection = sqlite3.connect(server.data_dir / "aisp.sqlite3")
    try:
        rows = connection.execute(
            f"SELECT model, status, http_status FROM usage_record WHERE request_id IN ({','.join('?' * len(refused))})",
            refused,
        ).fetchall()
    finally:
        connection.close()
    assert sorted(rows) == [("", "rejected", 400)] * len(refused)
    # Exports: the ledger as CSV and JSON, the key list as JSON.
    exported: list[str] = []
    for args in (
        ["usage", "export", "--format", "csv"],
        ["usage", "export", "--format", "json"],
        ["keys", "list", "--json"],
    ):
        result = subprocess.run(
            [sys.executable, "-c", SERVE, *args],
            cwd=ROOT,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        exported += [result.stdout, result.stderr]
    out = tmp_path / "ledger.csv"
    subprocess.run(
        [sys.executable, "-c", SERVE, "usage", "export", "-o", str(out)],
        cwd=ROOT,
        env=server.env,
        check=True,
        timeout=60,
    )
    exported.append(out.read_text())
    assert record.id in exported[0] and json.loads(exported[2])
    _assert_absent(canary, "an export", exported)


def test_a_key_inside_an_exception_is_redacted_from_the_log(tmp_path: Path) -> None:
    """Whatever carries a key into a log record (a message, its arguments, a traceback) is redacted."""
    canary = "aisp-" + "Q" * 49
    program = f"""
import logging
from server.logs import configure_logging
configure_logging("debug")
log = logging.getLogger("server.test")
log.debug("header %s", "Bearer {canary}")
log.info("key {canary} in the message")
try:
    raise ValueError("bad token {canary}")
except ValueError:
    log.exception("request failed")
try:
    raise KeyError({{"authorization": "Bearer {canary}"}})
except KeyError:
    log.error("with a stack", exc_info=True, stack_info=True)
"""
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "request failed" in result.stderr and "Traceback" in result.stderr
    _assert_absent(canary, "a log line", [result.stderr, result.stdout])
