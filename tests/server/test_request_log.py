"""What the window's Logs page reads: every request as it happens, with what the client was told went
wrong, and the server's own log, in a rotating file in the data folder; never a prompt or a reply."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from server.logs import RecentRecords
from server.metering.reports import latest_rows
from tests.conftest import Live, fake_models

ROOT = Path(__file__).resolve().parents[2]
SECRET_WORDS = "the-prompt-words-nobody-may-keep"


def test_every_request_is_in_the_recent_log_with_its_error_and_never_its_text(
    make_live: Callable[..., Live],
) -> None:
    live = make_live(models=fake_models(fail_at="2"))
    with openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0) as client:
        client.embeddings.create(model="fake-embed", input=SECRET_WORDS)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": SECRET_WORDS}]
            )
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="fake-chat", messages=[{"role": "user", "content": f"{SECRET_WORDS} a b c"}]
            )
    recent = [entry for _, entry in live.services.ledger.recent]
    numbers = [number for number, _ in live.services.ledger.recent]
    assert numbers == sorted(numbers) and len(recent) == 3
    done, refused, failed = recent
    assert (done.model, done.status, done.error) == ("fake-embed", "completed", None)
    assert refused.status == "rejected" and refused.http_status == 404
    assert refused.error is not None and "does not exist" in refused.error
    assert failed.status == "failed" and failed.error is not None and "failed" in failed.error
    assert failed.output_tokens == 2  # what it generated before it failed, billed
    everything = repr(recent) + json.dumps(latest_rows(live.services.store, 10))
    assert SECRET_WORDS not in everything
    live.services.ledger.flush()
    rows = latest_rows(live.services.store, 2)
    assert [row["request_id"] for row in rows] == [failed.request_id, refused.request_id]  # newest first


def test_recent_records_keep_the_latest_lines_with_keys_redacted() -> None:
    records = RecentRecords(size=3)
    logger = logging.getLogger("tests.recent")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        for n in range(5):
            logger.info("line %d", n)
        logger.warning("a key aisp-%s leaked", "A" * 49)
    finally:
        logger.removeHandler(records)
    lines = records.since(0)
    assert [line.number for line in lines] == [4, 5, 6]
    assert (
        lines[-1].level == "WARNING" and "aisp-[redacted]" in lines[-1].text and "AAAA" not in lines[-1].text
    )
    assert [line.number for line in records.since(5)] == [6]


def test_serve_writes_its_own_log_to_a_private_rotating_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    table = tmp_path / "models.json"
    table.write_text(json.dumps([{"name": "fake-chat", "kind": "chat", "engine": "fake"}]))
    env = {**os.environ, "AISP_DATA_DIR": str(data), "AISP_MODELS": str(table), "AISP_PORT": "0"}
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from server.cli import main; sys.exit(main(['serve']))"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = data / "logs" / "server.log"
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and "serving on" in log.read_text(encoding="utf-8")):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        url = log.read_text(encoding="utf-8").split("serving on ", 1)[1].split()[0]
        response = httpx.post(
            url + "/v1/chat/completions",
            headers={"Authorization": "Bearer aisp-" + "B" * 49},
            json={"model": "fake-chat", "messages": [{"role": "user", "content": SECRET_WORDS}]},
        )
        assert response.status_code == 401
    finally:
        server.terminate()
        server.wait(30)
    text = log.read_text(encoding="utf-8")
    assert "model fake-chat loaded" in text
    assert SECRET_WORDS not in text and "BBBB" not in text
    assert log.stat().st_mode & 0o077 == 0
