"""The window's handle on the HTTP server: start, stop, restart on a new address, and a live status.

Starting binds a socket and waits for uvicorn, stopping joins its thread: both run through
:class:`app.tasks.Tasks`, never on the GUI thread. A timer polls the server's status twice a second and
announces what changed.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, replace
from typing import Literal

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtNetwork import QAbstractSocket, QNetworkInterface

from app.preferences import Network, network_of
from app.tasks import Tasks
from server.config import load_settings
from server.engines.manager import ModelStatus
from server.metering.reports import totals
from server.runner import ServerStartError, ServerThread
from server.services import Services

POLL_MS = 500
Transition = Literal["starting", "stopping"] | None


@dataclass(frozen=True)
class ServerView:
    """What the window shows of the server."""

    running: bool
    transition: Transition
    """``starting`` or ``stopping`` while that is under way, else ``None``."""
    url: str
    """The address clients use: the LAN address when LAN serving is on, else the loopback one."""
    lan: bool
    lan_address: str | None
    requests: int
    models: tuple[ModelStatus, ...]
    error: str | None
    storage_error: str | None = None
    """Why usage cannot be recorded right now (shown in the status strip until the store recovers)."""
    recorded: int | None = None
    """Requests in the ledger, from every run (``None`` until read); ``requests`` counts this run's."""
    lan_addresses: tuple[str, ...] = ()
    """Every address of this machine other computers may reach it at (``lan_address`` first)."""

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def port(self) -> str:
        return self.url.rsplit(":", 1)[-1]

    def urls(self) -> list[str]:
        """The base URLs clients may use: the main one first, then the machine's other LAN addresses,
        then this computer's own."""
        found = [self.base_url]
        for address in self.lan_addresses:
            url = f"http://{address}:{self.port}/v1"
            if url not in found:
                found.append(url)
        local = f"http://127.0.0.1:{self.port}/v1"
        if self.lan and local not in found:
            found.append(local)
        return found

    def loaded(self, kind: str) -> list[str]:
        """Names of the loaded models of one kind (``chat`` or ``embedding``)."""
        return [m.name for m in self.models if m.kind == kind and m.state == "loaded"]


def bind_host(network: Network) -> str:
    """The address to bind, by the server's own rule (every interface when LAN serving is on)."""
    return load_settings(
        environ={}, host=network.host, port=network.port, lan=network.lan, models=()
    ).bind_host


def lan_addresses(network: Network) -> tuple[str, ...]:
    """Every IPv4 address of this machine's interfaces that are up, not loopback (blocking): the one that
    routes outwards first. Empty when LAN serving is off."""
    main = lan_address(network)
    if main is None:
        return ()
    found = [main]
    for interface in QNetworkInterface.allInterfaces():
        flags = interface.flags()
        if not (
            flags & QNetworkInterface.InterfaceFlag.IsUp and flags & QNetworkInterface.InterfaceFlag.IsRunning
        ):
            continue
        if flags & QNetworkInterface.InterfaceFlag.IsLoopBack:
            continue
        for entry in interface.addressEntries():
            address = entry.ip()
            if address.protocol() == QAbstractSocket.NetworkLayerProtocol.IPv4Protocol:
                text = address.toString()
                if text not in found and not ipaddress.ip_address(text).is_loopback:
                    found.append(text)
    return tuple(found)


def lan_address(network: Network) -> str | None:
    """This machine's address on the LAN: the bound one, or the interface that routes outwards."""
    if not network.lan:
        return None
    host = ipaddress.ip_address(network.host)
    if not host.is_loopback and not host.is_unspecified:
        return network.host
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Connecting a UDP socket sends nothing; it only asks the kernel which interface would be used.
        probe.connect(("10.255.255.255", 1))
        found: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if ipaddress.ip_address(found).is_loopback else found


class ServerController(QObject):
    """Owns the :class:`ServerThread` for the window's services."""

    status_changed = Signal(object)
    """A new :class:`ServerView`."""
    server_started = Signal(str)
    """The server is listening; the argument is the address clients use."""
    server_stopped = Signal()
    start_failed = Signal(str)
    """The server could not start; the text says why (e.g. the port is in use)."""
    requests_changed = Signal(int)
    """The ledger recorded more requests; the argument is the count since the window opened."""

    def __init__(self, services: Services, tasks: Tasks, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._services = services
        self._tasks = tasks
        self._network = network_of(services.settings)
        self._thread = ServerThread(services, host=bind_host(self._network), port=self._network.port)
        self._lan_addresses: tuple[str, ...] = ()  # found when the server starts, off the GUI thread
        self._transition: Transition = None
        self._polling = False
        self._error: str | None = None
        self._recorded: int | None = None
        self._view = ServerView(False, None, self._thread.url, self._network.lan, None, 0, (), None)
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()

    @property
    def view(self) -> ServerView:
        return self._view

    @property
    def network(self) -> Network:
        return self._network

    @property
    def busy(self) -> bool:
        """Starting or stopping right now."""
        return self._transition is not None

    async def start(self) -> bool:
        """Start serving; on failure the reason is announced on :attr:`start_failed`."""
        if self.busy or self._thread.running:
            return self._thread.running
        self._transition, self._error = "starting", None
        self._publish()
        try:
            self._lan_addresses = await self._tasks.call(lan_addresses, self._network)
            await self._tasks.call(self._thread.start)
        except ServerStartError as exc:
            self._error = str(exc)
        finally:
            self._transition = None
            await self.refresh()  # listeners of the signals below see the new state already
        if self._error is not None:
            self.start_failed.emit(self._error)
            return False
        self.server_started.emit(self._view.url)
        return True

    async def stop(self) -> None:
        """Stop serving: open streams get the server's grace period, then the thread is joined."""
        if self.busy:
            return
        self._transition = "stopping"
        self._publish()
        try:
            await self._tasks.call(self._thread.stop)
        finally:
            self._transition = None
            await self.refresh()
        self.server_stopped.emit()

    async def restart(self, network: Network) -> bool:
        """Serve on a new address: stop, rebind with ``network``, start."""
        await self.stop()
        self._network = network
        self._thread = ServerThread(self._services, host=bind_host(network), port=network.port)
        return await self.start()

    def shut_down(self) -> None:
        """Stop polling (the server itself is stopped with :meth:`stop`)."""
        self._timer.stop()

    def _poll(self) -> None:
        if not self._polling:
            self._polling = True
            self._tasks.spawn(self.refresh(), "reading the server's status")

    async def refresh(self) -> None:
        """Read the server's status off the GUI thread and announce it if anything changed."""
        try:
            status = await self._tasks.call(self._thread.status)
            if self._recorded is None or status.requests != self._view.requests:
                self._recorded = (await self._tasks.call(totals, self._services.store)).requests
        finally:
            self._polling = False
        url = self._thread.url
        main = self._lan_addresses[0] if self._lan_addresses else None
        if main is not None:
            url = f"http://{main}:{status.port}"
        view = ServerView(
            running=status.running,
            transition=self._transition,
            url=url,
            lan=self._network.lan,
            lan_address=main,
            requests=status.requests,
            models=status.models,
            error=self._error or status.error,
            storage_error=status.storage_error,
            recorded=self._recorded,
            lan_addresses=self._lan_addresses,
        )
        previous, self._view = self._view, view
        if view != previous:
            self.status_changed.emit(view)
        if view.requests != previous.requests:
            self.requests_changed.emit(view.requests)

    def _publish(self) -> None:
        self._view = replace(self._view, transition=self._transition)
        self.status_changed.emit(self._view)
