"""Faults inside the appliance: an engine that raises mid-generation ends each response with a terminal error
(no crash, no leaked threads or connections); a missing or corrupt model file is reported with its reason
and is absent from ``/v1/models``; a port already in use is a clear error."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from server.config import ModelConfig
from tests.conftest import FAKE_CHAT, FAKE_EMBED, Live
from tests.security.conftest import ROOT, SERVE, ServerProcess, assert_envelope, canary, fake_model_table


def _census(pid: int) -> tuple[int, int]:
    """Threads and open sockets of a process."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed while we looked
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return threads, sockets


def _failing_request(client: httpx.Client, rng: random.Random) -> None:
    kind = rng.choice(["chat", "chat-stream", "responses", "responses-stream", "hang-up"])
    chat = {"model": "fake-broken", "messages": [{"role": "user", "content": "go"}], "max_tokens": 50}
    if kind == "chat":
        response = client.post("/v1/chat/completions", json=chat)
        error = assert_envelope(response.status_code, response.content, low=500, high=500)
        assert error["code"] == "engine_error" and "failed" in error["message"]
    elif kind == "responses":
        response = client.post("/v1/responses", json={"model": "fake-broken", "input": "go"})
        assert (
            assert_envelope(response.status_code, response.content, low=500, high=500)["code"]
            == "engine_error"
        )
    elif kind == "chat-stream":
        with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as response:
            assert response.status_code == 200
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])
        assert assert_envelope(500, error, low=500, high=500)["code"] == "engine_error"
        texts = [c["delta"].get("content") for e in events[:-2] for c in json.loads(e)["choices"]]
        assert "".join(t for t in texts if t) == "go go go", "the tokens before the failure were delivered"
    elif kind == "responses-stream":
        with client.stream(
            "POST", "/v1/responses", json={"model": "fake-broken", "input": "go", "stream": True}
        ) as response:
            typed = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        assert [e["type"] for e in typed[-2:]] == ["error", "response.failed"], typed[-3:]
        assert typed[-1]["response"]["status"] == "failed"
        assert [e["sequence_number"] for e in typed] == list(range(len(typed)))
    else:  # the client gives up while the failing request runs
        with contextlib.suppress(httpx.TimeoutException):
            client.post("/v1/chat/completions", json={**chat, "stream": rng.random() < 0.5}, timeout=0.01)


def test_an_engine_failing_mid_generation_ends_each_response_cleanly(
    server_process: Callable[..., ServerProcess],
) -> None:
    models = fake_model_table()
    models.append({**models[0], "name": "fake-broken", "source": "fail_at=3,repeat=1,delay=0.002"})
    server = server_process(models=models)
    key, _ = server.create_key("client")
    canary_key, _ = server.create_key("canary")
    server.start()
    assert server.proc is not None
    errors: list[BaseException] = []

    def worker(seed: int, requests: int) -> None:
        rng = random.Random(seed)
        try:
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as client:
                for _ in range(requests):
                    _failing_request(client, rng)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    def crowd(requests: int, first_seed: int) -> None:
        threads = [
            threading.Thread(target=worker, args=(seed, requests))
            for seed in range(first_seed, first_seed + 4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    crowd(requests=10, first_seed=100)  # warm up: thread pools grow to their working size here
    baseline = _census(server.proc.pid)
    with canary(server.url, canary_key) as bird:
        crowd(requests=25, first_seed=1)
    assert not errors, errors[0]
    bird.assert_served(max_latency=2.0)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        ok = client.post(
            "/v1/chat/completions",
            json={"model": "fake-chat", "messages": [{"role": "user", "content": "fine"}]},
        )
        assert ok.json()["choices"][0]["message"]["content"] == "fine"
    # Nothing leaked: threads do not grow with the number of failed requests (a hundred of them here; the
    # event loop's default executor may still be growing towards its fixed size), and no socket is left
    # open beyond the listening one.
    pool = min(32, (os.cpu_count() or 1) + 4)
    wait = threading.Event()
    for _ in range(50):
        threads_now, sockets_now = _census(server.proc.pid)
        if threads_now <= baseline[0] + pool and sockets_now <= 1:
            break
        wait.wait(0.1)
    assert threads_now <= baseline[0] + pool, (threads_now, baseline)
    assert sockets_now <= 1, (sockets_now, baseline)
    assert server.stop() == 0
    # Every failed request is billed for what it generated: three tokens, or nothing if it failed at once.
    connection = sqlite3.connect(server.data_dir / "aisp.sqlite3")
    try:
        rows = connection.execute(
            "SELECT status, output_tokens, cost FROM usage_record WHERE model = 'fake-broken'"
        ).fetchall()
    finally:
        connection.close()
    assert rows and all(status in ("failed", "disconnected") for status, _, _ in rows), rows
    assert all(tokens <= 3 for _, tokens, _ in rows)
    assert all(cost > 0 for status, tokens, cost in rows if status == "failed" and tokens)
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_missing_and_corrupt_model_files_are_reported_and_not_served(
    make_live: Callable[..., Live], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("this is not a model")
    empty_dir = tmp_path / "empty-embedder"
    empty_dir.mkdir()
    broken = [
        ModelConfig(
            name="missing-gguf", kind="chat", engine="llama.cpp", source=str(tmp_path / "nowhere.gguf")
        ),
        ModelConfig(name="corrupt-gguf", kind="chat", engine="llama.cpp", source=str(corrupt)),
        ModelConfig(name="text-gguf", kind="chat", engine="llama.cpp", source=str(not_gguf)),
        ModelConfig(name="unset-gguf", kind="chat", engine="llama.cpp", source=""),
        ModelConfig(
            name="missing-embedder", kind="embedding", engine="sentence-transformers", source=str(empty_dir)
        ),
    ]
    live = make_live(models=(FAKE_CHAT, FAKE_EMBED, *broken))
    statuses = {s.name: s for s in live.services.models.statuses()}
    for model in broken:
        status = statuses[model.name]
        assert status.state == "failed", status
        assert status.error, f"{model.name} failed without a reason"
        if model.source:
            assert Path(model.source).name in status.error, status.error
    assert "no GGUF file" in statuses["missing-gguf"].error  # type: ignore[operator]
    with httpx.Client(
        base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}, timeout=30
    ) as client:
        served = {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert served == {"fake-chat", "fake-embed"}
        for model in broken:
            assert client.get(f"/v1/models/{model.name}").status_code == 404
            path, body = (
                (
                    "/v1/chat/completions",
                    {"model": model.name, "messages": [{"role": "user", "content": "x"}]},
                )
                if model.kind == "chat"
                else ("/v1/embeddings", {"model": model.name, "input": "x"})
            )
            response = client.post(path, json=body)
            error = assert_envelope(response.status_code, response.content, low=404, high=404)
            assert error["code"] == "model_not_found"
        assert (
            client.post(
                "/v1/chat/completions",
                json={"model": "fake-chat", "messages": [{"role": "user", "content": "x"}]},
            ).status_code
            == 200
        )


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        server = ServerProcess(tmp_path / "data", AISP_PORT=str(port))
        result = subprocess.run(
            [sys.executable, "-c", SERVE, "serve"],
            cwd=ROOT,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert result.returncode == 1, result
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
