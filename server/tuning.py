"""Process-wide tuning for serving, in one place: each setting with its reason, applied only by processes
that serve, and all of it left out with ``AISP_TUNING=0`` (``Settings.tuning``).

- :func:`apply_to_server`: ``ai-service-platform serve`` calls it before it starts. The window's process,
  which runs the server on a thread beside the GUI, does not: there the interpreter belongs to the
  window first, and keeps Python's defaults.
- :func:`apply_to_engine`: an engine's own process calls it before it imports its libraries.
- :func:`settle` and :func:`release`: the server's moments for the collector (the server is up, a model
  loaded or unloaded); they follow what :func:`apply_to_server` chose for the process.

Left out since it was measured not to pay: adapters for ``bool`` and ``None`` registered with sqlite3 for
the whole process, which saved the ledger's writer 0.65 µs per row (2.2 µs → 1.55 µs to bind a ledger
row's 17 parameters): 0.3% of a core at the benchmark's 5,000 rows a second, while they changed how every
SQLite connection of the process binds its parameters.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Mapping, MutableMapping

from server.config import ConfigError, load_settings

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.001
"""The longest a thread that wants the interpreter lock waits while another computes (Python's default is
5 ms). The event loop rarely gives the lock up of its own accord while it is busy, so under load every
other thread waits that long each time it comes back from a system call: the ledger's writer, between the
statements of a transaction that holds SQLite's write lock, during which the loop's own commits cannot
go through; a model's worker, between tokens. A shorter wait keeps those hand-overs short."""

OPENMP_ENVIRONMENT = {"GOMP_SPINCOUNT": "10000"}
"""How torch's OpenMP threads wait, set before torch loads unless the operator has set it. By default a
thread with nothing to do spins 300,000 times (milliseconds) before it sleeps: after every request it
burns a core the server needs to answer, and when other work (a chat model) holds a core, a thread that
finished its share spins while the other waits for that core, and an embedding takes several times
longer. 10,000 spins still bridge the gaps between a forward pass's kernels: on an idle machine it is
as fast as the default."""


def apply_to_server(enabled: bool) -> None:
    """Tune this process for serving, unless ``enabled`` (``Settings.tuning``) is false.

    Besides the switch interval, the collector's full passes are kept short: a full pass walks every
    container object the process holds (the web framework, the validation models, the engines' handles:
    about 80,000 objects and 44 ms on this machine with the embedded models loaded), during which the
    event loop stands still and every stream's next chunk waits. Objects that exist once the server is up,
    or once a model has loaded, live as long as the process; :func:`settle` moves them out of the
    collector's sight, so later passes walk only what requests have made since."""
    if not enabled:
        log.info("process tuning is off (AISP_TUNING=0): Python's defaults")
        return
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    gc.freeze()  # from here on, settle() and release() keep long-lived objects out of full passes
    log.info(
        "process tuned for serving: thread switch interval %g s, long-lived objects frozen", SWITCH_INTERVAL_S
    )


def settle() -> None:
    """In a process tuned for serving, exempt every object alive now from future collections.

    No collection first: that would hold the interpreter lock for a full pass while the server starts.
    What is already garbage at that moment (little: the collector has been running all along) is kept
    until the next :func:`release`."""
    if gc.get_freeze_count():
        gc.freeze()


def release() -> None:
    """Free what is garbage now, such as the reference cycles an unloaded engine left (one full pass, on
    the calling thread); in a process tuned for serving, what is set aside goes back to the collector for
    that pass and what still lives is set aside again."""
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether tuning is on for an engine's process, from the ``AISP_TUNING`` it inherited."""
    try:
        return load_settings(environ={"AISP_TUNING": environ.get("AISP_TUNING", "1")}, models=()).tuning
    except ConfigError:
        return True


def apply_to_engine(environ: MutableMapping[str, str]) -> None:
    """Tune an engine's process (``environ`` is its ``os.environ``) before it imports torch."""
    if enabled(environ):
        for name, value in OPENMP_ENVIRONMENT.items():
            environ.setdefault(name, value)
