"""A full disk or a read-only data directory: a clear error in the API (or from ``serve``), nothing already
recorded is lost, and the server recovers when space returns.

The data directory lives on a small tmpfs mounted for the test (this needs root, as on the project's
machines and CI; elsewhere the tests are skipped, saying why).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from server.access.keys import KeyLimits
from server.metering.ledger import Ledger, ledger_rows
from tests.conftest import Live
from tests.security.conftest import ROOT, SERVE, ServerProcess, assert_envelope
from tests.support.disk import fill

COMMIT_WAIT_S = 1.0


CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "count these words"}], "max_tokens": 5}


def _rows(live: Live) -> list[dict[str, Any]]:
    return list(ledger_rows(live.services.store))


def test_a_full_disk_is_a_clear_503_and_nothing_is_lost(
    make_live: Callable[..., Live], small_disk: Path
) -> None:
    live = make_live(data_dir=small_disk / "data")
    services = live.services
    services.ledger.close()
    services.ledger = Ledger(services.store, commit_wait_s=COMMIT_WAIT_S)  # fail fast, for the test's sake
    budgeted = live.new_key(
        "budgeted", limits=KeyLimits(budget_unit="tokens", budget_amount=1e6, budget_period="day")
    )
    unused = live.new_key("not used yet")  # its first use writes 'last used'
    headers = {"Authorization": f"Bearer {live.key}"}
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as client:
        for _ in range(5):
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        stored = client.post("/v1/responses", json={"model": "fake-chat", "input": "keep me"})
        assert stored.status_code == 200
        services.ledger.flush()
        before = _rows(live)
        assert len(before) == 6

        filler = fill(small_disk)
        # Reading keeps working: the model list, a stored response, a key used for the first time.
        assert client.get("/v1/models").status_code == 200
        assert client.get(f"/v1/responses/{stored.json()['id']}").status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {unused}"}).status_code == 200
        # Writing gets a clear 503, in time, naming the cause.
        failed = 0
        for method, path, body, key in (
            ("POST", "/v1/chat/completions", CHAT, live.key),
            ("POST", "/v1/embeddings", {"model": "fake-embed", "input": "x"}, live.key),
            (
                "POST",
                "/v1/responses",
                {"model": "fake-chat", "input": "x", "max_output_tokens": 16},
                live.key,
            ),
            ("POST", "/v1/chat/completions", CHAT, budgeted),
        ):
            started = time.monotonic()
            response = client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
            elapsed = time.monotonic() - started
            error = assert_envelope(response.status_code, response.content, low=503, high=503)
            assert error["code"] == "storage_unavailable", error
            assert "full" in error["message"] or "disk" in error["message"], error
            assert elapsed < COMMIT_WAIT_S + 3, elapsed
            failed += 1
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as streamed:
            assert streamed.status_code == 200
            text = streamed.read().decode()
        assert '"code":"storage_unavailable"' in text and text.endswith("data: [DONE]\n\n"), text[-400:]

        filler.unlink()  # space returns
        deadline = time.monotonic() + 15
        while services.ledger.last_error is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert services.ledger.last_error is None, services.ledger.last_error
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert (
            client.post(
                "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {budgeted}"}
            ).status_code
            == 200
        )
        services.ledger.flush()
    after = _rows(live)
    ids = [r["request_id"] for r in after]
    assert len(ids) == len(set(ids))
    assert {r["request_id"] for r in before} <= set(ids), "rows recorded before the disk filled are all there"
    # The requests that reached the ledger during the outage were kept and written once space returned
    # (chat, embeddings, responses and the stream: the budgeted one was refused before it was admitted).
    assert len(after) == len(before) + (failed - 1) + 1 + 2
    assert services.store.integrity_ok()
    connection = sqlite3.connect(small_disk / "data" / "aisp.sqlite3")
    try:
        assert connection.execute("SELECT COUNT(*) FROM budget_reservation").fetchone()[0] == 0
        hourly = connection.execute("SELECT SUM(requests), SUM(output_tokens) FROM usage_hourly").fetchone()
        assert hourly == (len(after), sum(r["output_tokens"] for r in after))
    finally:
        connection.close()


def _serve(data_dir: Path, work: Path) -> subprocess.CompletedProcess[str]:
    server = ServerProcess(data_dir, work_dir=work)
    return subprocess.run(
        [sys.executable, "-c", SERVE, "serve"],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_read_only_data_directory_is_a_clear_error_at_start(tmp_path: Path, small_disk: Path) -> None:
    """``serve`` on a read-only data directory says so and exits, whether or not it holds a database."""
    existing = small_disk / "existing"
    server = ServerProcess(existing, work_dir=tmp_path)
    server.create_key("k")  # a database and a secret from an earlier run
    (small_disk / "empty").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for data_dir in (small_disk / "empty", existing, small_disk / "missing"):
        result = _serve(data_dir, tmp_path)
        assert result.returncode == 1, (data_dir, result.returncode, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "read-only" in result.stderr.lower() or "cannot" in result.stderr.lower(), result.stderr
        assert str(data_dir) in result.stderr, result.stderr
