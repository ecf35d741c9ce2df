"""Tools for attacking the appliance on loopback and watching it hold.

- ``Canary``: a thread that keeps asking ``GET /v1/models`` while an attack runs; "keeps serving" means
  every one of its requests is answered 200, none of them slowly.
- ``assert_envelope``: every 4xx/5xx is OpenAI's error envelope with all four keys.
- ``raw``: bytes over a socket, for requests no well-behaved client would send.
- ``ServerProcess``: ``ai-service-platform serve`` as a separate process (for ``kill -9``, its memory, and
  its log output), on fake engines.
- ``traced_live``: a live server whose every SQL statement, from any thread, is recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.access.keys import KeyRecord, KeyService, load_or_create_secret
from server.runner import ServerThread
from server.services import Services
from server.store import Store
from tests.conftest import Live

ROOT = Path(__file__).resolve().parents[2]


ERROR_KEYS = {"message", "type", "param", "code"}


# -- the error envelope -------------------------------------------------------------------------------


def assert_envelope(
    status: int, body: bytes | str | dict[str, Any], *, low: int = 400, high: int = 499
) -> dict[str, Any]:
    """``body`` is OpenAI's error envelope and ``status`` lies in [low, high]; returns ``error``."""
    assert low <= status <= high, (status, body)
    value = body if isinstance(body, dict) else json.loads(body)
    assert set(value) == {"error"}, value
    error = value["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    return error  # type: ignore[no-any-return]


# -- raw sockets ---------------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float


def parse_raw(data: bytes, elapsed: float = 0.0) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(status, headers, body, elapsed)


def raw(port: int, payload: bytes, *, timeout: float = 10.0, source: str = "127.0.0.1") -> RawResponse:
    """Send ``payload`` as is and read the first response (the server closes or answers in full)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)  # it may answer and close before we finish sending: read what it said
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                response = parse_raw(data)
                length = response.headers.get("content-length")
                if length is not None and len(response.body) >= int(length):
                    break
    assert data, "the server closed the connection without answering"
    return parse_raw(data, time.monotonic() - started)


# -- the canary ----------------------------------------------------------------------------------------


@dataclass
class Canary:
    """Asks ``GET /v1/models`` every ``interval`` seconds on its own connection until stopped."""

    url: str
    key: str
    interval: float = 0.05
    timeout: float = 10.0
    results: list[tuple[int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary", daemon=True)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = client.get("/v1/models").status_code
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    status = 0
                self.results.append((status, time.monotonic() - started))
                self._stop.wait(self.interval)

    def start(self) -> Canary:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    @property
    def slowest(self) -> float:
        return max((t for _, t in self.results), default=0.0)

    def assert_served(self, max_latency: float) -> None:
        """Every canary request was answered 200 within ``max_latency`` seconds, and there were some."""
        assert len(self.results) >= 3, f"the canary asked only {len(self.results)} times"
        failed = [r for r in self.results if r[0] != 200]
        assert not failed and not self.errors, f"the canary was refused: {failed[:5]} {self.errors[:5]}"
        assert self.slowest < max_latency, f"the canary waited {self.slowest:.2f} s (limit {max_latency} s)"


@contextmanager
def canary(url: str, key: str) -> Iterator[Canary]:
    """Run a canary around the block; assert on it (``assert_served``) after the block."""
    bird = Canary(url, key).start()
    try:
        yield bird
    finally:
        bird.stop()


# -- a server in its own process -----------------------------------------------------------------------

SERVE = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"


def fake_model_table(chat_source: str = "") -> list[dict[str, Any]]:
    """The model table (``AISP_MODELS``) of a server on the fake engines; ``chat_source`` tunes the chat model."""
    return [
        {
            "name": "fake-chat",
            "kind": "chat",
            "engine": "fake",
            "source": chat_source,
            "context_length": 4096,
            "price_input_per_million": 1,
            "price_output_per_million": 2,
        },
        {"name": "fake-embed", "kind": "embedding", "engine": "fake", "source": "dims=64"},
    ]


class ServerProcess:
    """``ai-service-platform serve`` (through :mod:`server.cli`) in a child process, logging to a file."""

    def __init__(
        self,
        data_dir: Path,
        *,
        models: list[dict[str, Any]] | None = None,
        work_dir: Path | None = None,
        **env: str,
    ) -> None:
        self.data_dir = data_dir
        work = work_dir or data_dir.parent  # the model table and the log, kept apart from the data
        self.models_file = work / f"{data_dir.name}-models.json"
        self.models_file.write_text(json.dumps(models or fake_model_table()), encoding="utf-8")
        self.log_path = work / f"{data_dir.name}-server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AISP_")},
            "AISP_DATA_DIR": str(data_dir),
            "AISP_MODELS": str(self.models_file),
            "AISP_PORT": "0",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_key(self, name: str, **options: Any) -> tuple[str, KeyRecord]:
        """A key for this data directory, made from the test process as the window would."""
        store = Store(self.data_dir / "aisp.sqlite3")
        try:
            return KeyService(store, load_or_create_secret(self.data_dir / "server-secret")).create(
                name, **options
            )
        finally:
            store.close()

    def start(self, timeout: float = 60.0, *args: str, loaded: bool = True) -> ServerProcess:
        """Start serving; with ``loaded``, return once every model has loaded (or failed to)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it; closed when the child ends
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", *args], cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
            found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", text)
            if found:
                self.port = int(found.group(1))
                if loaded:
                    self._wait_loaded(deadline)
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.05)
        self.kill()
        raise AssertionError("the server did not start in time")

    def _wait_loaded(self, deadline: float) -> None:
        # Models load in the background; the server answers /health at once, "loading" until they have.
        while time.monotonic() < deadline:
            try:
                health = httpx.get(self.url + "/health", timeout=2)
                if health.status_code == 200 and health.json()["status"] == "ok":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    def rss_mb(self) -> float:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def kill(self) -> None:
        """``kill -9``: no clean-up of any kind runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    made: list[ServerProcess] = []

    def build(name: str = "data", **kwargs: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / name, **kwargs)
        made.append(server)
        return server

    yield build
    for server in made:
        server.kill()


# -- every SQL statement, from every thread ----------------------------------------------------------


class _Trace:
    def __init__(self) -> None:
        self.statements: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def record(self, sql: str) -> None:
        with self.lock:
            self.statements.append((threading.current_thread().name, sql))

    def clear(self) -> None:
        with self.lock:
            self.statements.clear()


def _traced_factory(trace: _Trace) -> type[sqlite3.Connection]:
    class TracedConnection(sqlite3.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.set_trace_callback(trace.record)

    return TracedConnection


@dataclass
class TracedLive:
    live: Live
    trace: _Trace


@pytest.fixture
def traced_live(make_services: Callable[..., Services]) -> Iterator[TracedLive]:
    """A live server whose database connections (peewee keeps one per thread) all report their SQL.

    The connection factory is swapped before the server thread and the ledger thread open theirs, and
    the test thread's own connection is reopened, so no connection escapes the trace.
    """
    services = make_services()
    trace = _Trace()
    services.store.db.connect_params["factory"] = _traced_factory(trace)
    services.store.db.close()
    thread = ServerThread(services)
    thread.start()
    key, _ = services.keys.create("fixture")
    try:
        yield TracedLive(Live(thread, services, key), trace)
    finally:
        thread.stop()
