"""``ServerThread``: uvicorn on a background thread with its own event loop, started and stopped at will.

The window keeps the GUI thread for painting; the server never blocks it and is stopped by setting
``should_exit`` (no signal handlers are installed off the main thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass

import uvicorn

from server.api import create_app
from server.connections import GuardedConfig
from server.engines.manager import ModelStatus
from server.services import Services
from server.tuning import settle

log = logging.getLogger(__name__)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is available (not on Windows): the server's loop does most of its work."""
    try:
        import uvloop  # noqa: PLC0415  (optional: absent on Windows)
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot for the window: where the server listens and what it serves."""

    running: bool
    host: str
    port: int
    lan: bool
    url: str
    requests: int
    models: tuple[ModelStatus, ...]
    error: str | None
    storage_error: str | None = None
    """Why the usage ledger cannot be written right now (a full disk…); rows wait in memory meanwhile."""


STOP_WAIT_S = 10.0
"""How long stopping waits, once the requests still running were ended, for their rows and the thread."""


class ServerStartError(RuntimeError):
    """The server could not start listening (the port is taken, the address is not ours…)."""


class ServerThread:
    """Runs the HTTP server for one :class:`Services` on a background thread."""

    def __init__(self, services: Services, *, host: str | None = None, port: int | None = None) -> None:
        self.services = services
        settings = services.settings
        self.host = host or settings.bind_host
        self.port = settings.port if port is None else port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socket: socket.socket | None = None
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and self._server is not None
            and self._server.started
        )

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            reason = (
                "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            )
            raise ServerStartError(f"Port {self.port} on {self.host} {reason}.") from exc
        sock.listen(2048)
        sock.setblocking(False)
        return sock

    def start(self, timeout: float = 30.0) -> None:
        """Bind the port (so a clash is reported here, at once) and serve until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.error = None
        self._socket = self._bind()
        self.port = self._socket.getsockname()[1]
        settings = self.services.settings
        config = GuardedConfig(
            create_app(services=self.services),
            header_timeout_s=settings.header_timeout_s,
            max_connections=settings.max_connections,
            max_connections_per_address=settings.max_connections_per_address,
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # no proxy stands in front: X-Forwarded-For must not move the auth throttle
            lifespan="on",
            timeout_keep_alive=15,
            # Past the grace, :meth:`stop` ends the requests still running itself (billing each): uvicorn's
            # own cancelling comes only if that does not end them, still well before stop stops waiting.
            timeout_graceful_shutdown=settings.shutdown_grace_s + STOP_WAIT_S / 2,
            h11_max_incomplete_event_size=64 * 1024,
        )
        server = uvicorn.Server(config)
        self._server = server
        settle()  # what exists now lives as long as the process (see server/tuning.py)
        started = threading.Event()

        def run() -> None:
            loop = new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(server.serve(sockets=[self._socket] if self._socket else None))
            except BaseException as exc:  # reported to the window, which shows it
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("the server stopped with an error")
            finally:
                started.set()
                loop.close()

        self._thread = threading.Thread(target=run, name="http-server", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not server.started and self._thread.is_alive() and waited < timeout:
            deadline.wait(0.01)
            waited += 0.01
        if not server.started:
            self.stop()
            raise ServerStartError(self.error or f"the server did not start within {timeout:.0f} s")
        log.info("serving on %s", self.url)

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop accepting, let requests end within the grace period (``shutdown_grace_s``), then end those
        still running, each with its ledger row (``server_stopped``, exact), and join the thread."""
        server, thread, loop = self._server, self._thread, self._loop
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(self.services.settings.shutdown_grace_s)
            if thread.is_alive() and loop is not None and server is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing is left to end
                    loop.call_soon_threadsafe(self._end_requests, server)
            thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None
        self._thread = None
        self._loop = None

    def _end_requests(self, server: uvicorn.Server) -> None:
        """On the server's loop, past the grace: the requests admitted are ended and billed (their handlers
        stop the engines and write their rows); the others (a body still arriving, a model still loading)
        are cancelled."""
        ended = self.services.inflight.stop_all()
        for task in list(server.server_state.tasks):
            if task not in ended:
                task.cancel()

    def status(self) -> ServerStatus:
        return ServerStatus(
            running=self.running,
            host=self.host,
            port=self.port,
            lan=not ipaddress.ip_address(self.host).is_loopback,
            url=self.url,
            requests=self.services.ledger.requests_recorded,
            models=tuple(self.services.models.statuses()),
            error=self.error,
            storage_error=self.services.ledger.last_error,
        )
