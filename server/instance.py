"""One running appliance per data folder: the window or ``serve`` holds an exclusive lock on a file in it.

Two processes serving one data folder would each load every model and both write the same keys and
ledger. The lock is the operating system's (``flock`` on POSIX, a byte-range lock on Windows), so it
ends with the process that holds it, however that process ends: no stale lock survives a crash. The
file also holds the holder's process id, for the message the second one shows.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import BinaryIO

from server.store import StoreUnavailable

LOCK_NAME = "instance.lock"
_LOCKED_AT = 4096
"""Where the locked byte is (Windows locks a byte range: the process id before it stays readable)."""


class DataDirInUse(StoreUnavailable):
    """Another process already runs the appliance on this data folder."""

    def __init__(self, data_dir: Path, holder: int | None) -> None:
        who = f"process {holder}" if holder else "another process"
        super().__init__(
            f"The data folder {data_dir} is already in use by another AI Service Platform ({who}). "
            "Only one window or server runs per data folder: use that one, or stop it first."
        )
        self.data_dir = data_dir
        self.holder = holder


def _try_lock(handle: BinaryIO) -> bool:
    if sys.platform == "win32":
        import msvcrt  # noqa: PLC0415  (Windows only)

        handle.seek(_LOCKED_AT)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl  # noqa: PLC0415  (POSIX only)

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _holder(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_bytes()[:32].split(b"\n", 1)[0].strip() or b"0") or None
    return None


class InstanceLock:
    """Held while this process runs the appliance on ``data_dir``; :meth:`release` lets the next one in."""

    def __init__(self, data_dir: Path) -> None:
        """Take the lock, or raise :class:`DataDirInUse` naming the process that holds it."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOCK_NAME
        # Kept open: the lock lives as long as the file. Readable by its owner only, like the rest.
        handle = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
        if not _try_lock(handle):
            handle.close()
            raise DataDirInUse(data_dir, _holder(self.path))
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        self._handle: BinaryIO | None = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing the file releases the lock
