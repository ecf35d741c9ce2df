"""The download process: every call to the Hugging Face Hub runs in a child process of its own.

``huggingface_hub`` reads its endpoint and its offline switch from the environment once, when it is
imported; the appliance's own process may have been started offline (the embedding engine loads its
models with ``HF_HUB_OFFLINE=1``), and the endpoint is a setting. A child sets its environment from the
settings before it imports the library, so each call goes where the settings say, whatever the parent
was started with. A child is also the simplest thing to stop: pausing or cancelling a download ends its
process, and what it had written stays on disk for the next attempt.

The token travels to the child with its arguments (never in its environment or command line).
Messages from the child: ``("listing", dict)``, or ``("progress"|"verifying", index, bytes)``,
``("verified", index)`` … ``("done",)``; on failure ``("error", kind, message)``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from server.hub.errors import HubError
from server.hub.listing import RepoListing
from server.logs import configure_logging

log = logging.getLogger(__name__)

ENVIRONMENT = {
    "HF_HUB_OFFLINE": "0",  # the download process exists to go online; the settings decide where
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",  # only the token the appliance keeps, never another one
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_XET": "1",  # plain HTTP with byte ranges: resumable by this appliance
}
INSPECT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0


def _child(
    connection: Connection, task: str, endpoint: str, token: str | None, args: dict[str, Any], log_level: str
) -> None:
    # Ctrl+C in a terminal reaches the whole process group: the parent decides what it means (a pause).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(ENVIRONMENT)
    os.environ["HF_ENDPOINT"] = endpoint
    configure_logging(log_level)
    if log_level != "debug":
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request is for debugging
    # Imported only now: huggingface_hub reads the environment above when it is imported.
    from server.hub import client  # noqa: PLC0415

    repo_id = str(args.get("repo_id") or args.get("listing", {}).get("repo_id", ""))
    try:
        if task == "inspect":
            listing = client.inspect(endpoint, token, repo_id, args.get("revision"))
            connection.send(("listing", listing.as_dict()))
        else:
            listing = RepoListing.from_dict(args["listing"])
            client.fetch(endpoint, token, listing, Path(args["staging"]), connection.send)
            connection.send(("done",))
    except Exception as exc:
        error = client.classify(exc, endpoint, repo_id, token is not None)
        if error.kind == "failed":
            logging.getLogger(__name__).warning("download process: %s", error.message, exc_info=exc)
        connection.send(("error", error.kind, error.message))


class Transfer:
    """One run of the download process: its messages, and a way to end it."""

    def __init__(self, process: Any, connection: Connection) -> None:
        self._process = process
        self._connection = connection

    def messages(self) -> Iterator[tuple[Any, ...]]:
        """What the child says, until it ends."""
        while True:
            try:
                yield self._connection.recv()
            except (EOFError, OSError):
                break
        self._process.join(STOP_TIMEOUT_S)
        self._connection.close()

    def wait(self, timeout: float) -> bool:
        """Whether the child says something (or ends) within ``timeout`` seconds."""
        try:
            return self._connection.poll(timeout)
        except (EOFError, OSError):
            return True

    @property
    def exitcode(self) -> int | None:
        code: int | None = self._process.exitcode
        return code

    def stop(self) -> None:
        """End the child now; what it wrote stays."""
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self._process.kill()
            self._process.join(STOP_TIMEOUT_S)


class Hub:
    """Starts download processes for one endpoint, with the access token as it is at each start."""

    def __init__(self, endpoint: str, token: Callable[[], str | None], log_level: str = "warning") -> None:
        self.endpoint = endpoint
        self._token = token
        self._log_level = log_level

    def _start(self, task: str, args: dict[str, Any]) -> Transfer:
        context = multiprocessing.get_context("spawn")
        connection, child_end = context.Pipe(duplex=False)
        process = context.Process(
            target=_child,
            args=(child_end, task, self.endpoint, self._token(), args, self._log_level),
            name=f"hub:{task}",
            daemon=True,
        )
        process.start()
        child_end.close()
        return Transfer(process, connection)

    def inspect(self, repo_id: str, revision: str | None = None) -> RepoListing:
        """List the repository's files (blocking; seconds)."""
        transfer = self._start("inspect", {"repo_id": repo_id, "revision": revision})
        try:
            if not transfer.wait(INSPECT_TIMEOUT_S):
                raise HubError("network", f"{self.endpoint} did not answer within {INSPECT_TIMEOUT_S:.0f} s")
            for message in transfer.messages():
                if message[0] == "listing":
                    return RepoListing.from_dict(message[1])
                if message[0] == "error":
                    raise HubError(message[1], message[2])
        finally:
            transfer.stop()
        raise HubError(
            "failed", f"the download process ended without an answer (exit code {transfer.exitcode})"
        )

    def fetch(self, listing: RepoListing, staging: Path) -> Transfer:
        """Start fetching ``listing``'s files into ``staging``; read the transfer's messages to follow it."""
        return self._start("fetch", {"listing": listing.as_dict(), "staging": str(staging)})
