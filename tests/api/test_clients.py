"""Other clients against a live server on loopback: the legacy ``openai==0.28.1`` SDK in its own
environment and the official Node SDK, each run as its own process (tests/clients/), which prints a
JSON summary of what it got back.

Their environments come from ``make test-clients`` (``make test`` runs it first); without them these
tests fail, saying so, rather than skip.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import CHAT, EMBED, REAL_CHAT, REAL_EMBED, http, ledger
from tests.conftest import Live

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
LEGACY_PYTHON = CLIENTS.parent / ".envs" / "openai028" / "bin" / "python"
NODE_SDK = CLIENTS / "node_modules" / "openai" / "package.json"
SETUP_HINT = "the client test environments are missing: run `make test-clients` (bash tests/clients/setup.sh)"
PROMPT = "Say hello in three words."
TEXTS = ["The quick brown fox.", "Jumped over the lazy dog."]


def legacy_command() -> list[str]:
    assert LEGACY_PYTHON.exists(), f"{SETUP_HINT}: no {LEGACY_PYTHON}"
    return [str(LEGACY_PYTHON), str(CLIENTS / "legacy_openai028.py")]


def node_command() -> list[str]:
    node = shutil.which("node")
    assert node is not None, "node (Node.js >= 20) is not installed; it runs the Node SDK client tests"
    assert NODE_SDK.exists(), f"{SETUP_HINT}: no {NODE_SDK}"
    return [node, str(CLIENTS / "node_sdk.mjs")]


def run_client(command: list[str], live: Live, chat_model: str, embed_model: str) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AISP_BASE_URL": live.base_url,
        "AISP_API_KEY": live.key,
        "AISP_CHAT_MODEL": chat_model,
        "AISP_EMBED_MODEL": embed_model,
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"{command[-1]} failed:\n{done.stderr[-4000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{command[-1]} printed nothing; stderr:\n{done.stderr[-2000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def float_embeddings(live: Live, model: str) -> list[list[float]]:
    with http(live) as api:
        body = api.post(
            "/v1/embeddings", json={"model": model, "input": TEXTS, "encoding_format": "float"}
        ).json()
    return [d["embedding"] for d in body["data"]]


def float32(values: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def assert_common(summary: dict[str, Any], chat_model: str, embed_model: str, dims: int) -> None:
    assert chat_model in summary["models"] and embed_model in summary["models"]
    usage = summary["chat_usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 16
    assert summary["stream_chunks"] >= 2
    assert summary["embedding_count"] == 2
    assert summary["embedding_dims"] == dims
    assert summary["error_status"] == 401


# -- the fake models: exact answers ----------------------------------------------------------------------


def assert_fake_answers(summary: dict[str, Any], live: Live) -> None:
    assert_common(summary, CHAT, EMBED, 64)
    assert summary["chat_text"] == summary["stream_text"] == PROMPT
    assert summary["chat_finish_reason"] == summary.get("stream_finish_reason", "stop") == "stop"
    assert summary["chat_usage"]["prompt_tokens"] == 7 and summary["chat_usage"]["completion_tokens"] == 5
    # The SDK asked for base64 and decoded it: the very floats the server computed, as float32.
    expected = float32(float_embeddings(live, EMBED)[0][:3])
    assert summary["embedding_head"] == pytest.approx(expected, abs=1e-7)


def test_legacy_openai_028_against_fake_models(live: Live) -> None:
    summary = run_client(legacy_command(), live, CHAT, EMBED)
    assert summary["sdk"] == "openai-python 0.28.1"
    assert_fake_answers(summary, live)


def test_node_sdk_against_fake_models(live: Live) -> None:
    summary = run_client(node_command(), live, CHAT, EMBED)
    assert summary["sdk"].startswith("openai-node ")
    assert_fake_answers(summary, live)
    assert summary["stream_usage"]["completion_tokens"] == 5
    assert summary["responses_status"] == "completed"
    assert summary["responses_text"] == PROMPT
    assert summary["responses_usage"]["output_tokens"] == 5


def test_clients_are_billed_like_anyone(live: Live) -> None:
    run_client(legacy_command(), live, CHAT, EMBED)
    rows = ledger(live)
    assert [(r["endpoint"], r["stream"], r["status"]) for r in rows] == [
        ("chat.completions", False, "completed"),
        ("chat.completions", True, "completed"),
        ("embeddings", False, "completed"),
    ]
    assert {r["key_id"] for r in rows} == {live.services.keys.authenticate(live.key).id}


# -- the real models ------------------------------------------------------------------------------------


def test_legacy_openai_028_against_real_models(real_live: Live) -> None:
    summary = run_client(legacy_command(), real_live, REAL_CHAT, REAL_EMBED)
    assert_common(summary, REAL_CHAT, REAL_EMBED, 384)
    assert summary["chat_text"].strip() and summary["stream_text"].strip()
    assert summary["chat_finish_reason"] in ("stop", "length")
    expected = float32(float_embeddings(real_live, REAL_EMBED)[0][:3])
    assert summary["embedding_head"] == pytest.approx(expected, abs=1e-5)


def test_node_sdk_against_real_models(real_live: Live) -> None:
    summary = run_client(node_command(), real_live, REAL_CHAT, REAL_EMBED)
    assert_common(summary, REAL_CHAT, REAL_EMBED, 384)
    assert summary["chat_text"].strip() and summary["stream_text"].strip()
    assert 1 <= summary["stream_usage"]["completion_tokens"] <= 16
    assert summary["responses_status"] in ("completed", "incomplete")
    assert summary["responses_text"].strip()
    expected = float32(float_embeddings(real_live, REAL_EMBED)[0][:3])
    assert summary["embedding_head"] == pytest.approx(expected, abs=1e-5)


def test_a_client_that_cannot_connect_fails_loudly(live: Live) -> None:
    """The scripts report failures (so the tests above could fail): a server that is gone is an error."""
    with httpx.Client() as probe:
        assert probe.get(live.url + "/health").status_code == 200
    live.thread.stop()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AISP_BASE_URL": live.base_url,
        "AISP_API_KEY": live.key,
        "AISP_CHAT_MODEL": CHAT,
        "AISP_EMBED_MODEL": EMBED,
    }
    for command in (legacy_command(), node_command()):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode != 0
        assert not done.stdout.strip()
