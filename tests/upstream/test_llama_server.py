"""A real, separately running engine as the upstream: llama-cpp-python's own server with the SmolLM2 GGUF."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from server.config import ModelConfig, default_models
from server.engines.llama_backends import best_cpu_library
from server.metering.ledger import ledger_rows
from tests.conftest import Live


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    port = _free_port()
    gguf = default_models()[0].source
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",
            "--verbose",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "GGML_BACKEND_PATH": str(best_cpu_library())},
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise RuntimeError("llama_cpp.server did not start in time")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_chat_through_llama_cpp_server(make_live: Callable[..., Live], llama_server: str) -> None:
    model = ModelConfig(
        name="remote-smollm2",
        kind="chat",
        engine="upstream",
        source=llama_server,
        upstream_model="smollm2",
        context_length=2048,
        price_input_per_million=1.0,
        price_output_per_million=1.0,
    )
    live = make_live(models=(model,))
    with openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0) as client:
        reply = client.chat.completions.create(
            model="remote-smollm2",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=12,
            temperature=0,
        )
        assert reply.choices[0].message.content
        assert reply.model == "remote-smollm2"
        chunks = list(
            client.chat.completions.create(
                model="remote-smollm2",
                messages=[{"role": "user", "content": "Say hello."}],
                max_tokens=12,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    live.services.ledger.flush()
    rows = [r for r in ledger_rows(live.services.store) if r["model"] == "remote-smollm2"]
    assert len(rows) == 2 and all(r["status"] == "completed" and r["output_tokens"] >= 1 for r in rows)
    # Not streamed, the upstream reports its usage: exact. llama-cpp-python's server sends no usage in
    # streams: that row is an estimate and says so, output counted one token per chunk received.
    assert [r["exact"] for r in rows] == [True, False]
    assert reply.usage is not None and rows[0]["output_tokens"] == reply.usage.completion_tokens
    content_chunks = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert rows[1]["output_tokens"] == content_chunks == chunks[-1].usage.completion_tokens
    assert 1 <= rows[0]["output_tokens"] <= 12
