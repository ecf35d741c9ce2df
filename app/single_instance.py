"""A second launch on the same data folder brings the first window forward instead of opening another.

The running window listens on a local socket (a Unix socket, or a named pipe on Windows) named after its
data folder and readable by this user only. A second ``ai-service-platform`` finds the folder in use
(:class:`server.instance.DataDirInUse`), says "show" on that socket, and ends.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

SHOW = b"show\n"
SHOWN = b"shown\n"
WAIT_MS = 3000


def server_name(data_dir: Path) -> str:
    """The socket's name: one per data folder and user (the path is hashed, so any path will do)."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode("utf-8")).hexdigest()[:16]
    return f"ai-service-platform-{digest}"


class ActivationServer(QObject):
    """Listens for later launches on this data folder while the window runs."""

    activation_requested = Signal()
    """Another launch asked for this window to be shown."""

    def __init__(self, data_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._name = server_name(data_dir)
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._connected)
        self._sockets: set[QLocalSocket] = set()  # each until it disconnects

    def listen(self) -> bool:
        """Start listening. This process holds the data folder, so a socket left by one that crashed is
        stale and goes first."""
        QLocalServer.removeServer(self._name)
        return self._server.listen(self._name)

    def close(self) -> None:
        self._server.close()

    def _connected(self) -> None:
        while (socket := self._server.nextPendingConnection()) is not None:
            self._sockets.add(socket)
            socket.readyRead.connect(lambda socket=socket: self._read(socket))
            socket.disconnected.connect(lambda socket=socket: self._gone(socket))
            self._read(socket)  # what arrived with the connection raises no readyRead of its own

    def _gone(self, socket: QLocalSocket) -> None:
        if socket in self._sockets:
            self._sockets.discard(socket)
            socket.deleteLater()

    def _read(self, socket: QLocalSocket) -> None:
        if not socket.canReadLine():
            return  # the rest of the line is on its way
        if bytes(socket.readLine().data()) == SHOW:
            socket.write(SHOWN)
            socket.flush()
            self.activation_requested.emit()
        socket.disconnectFromServer()


def activate_running(data_dir: Path, wait_ms: int = WAIT_MS) -> bool:
    """Ask the window running on ``data_dir`` to come forward (blocking); whether one answered."""
    socket = QLocalSocket()
    socket.connectToServer(server_name(data_dir))
    try:
        if not socket.waitForConnected(wait_ms):
            return False
        socket.write(SHOW)
        if not socket.waitForBytesWritten(wait_ms):
            return False
        while not socket.canReadLine():
            if not socket.waitForReadyRead(wait_ms):
                return False
        return bytes(socket.readLine().data()) == SHOWN
    finally:
        socket.abort()
