"""``ai-service-platform serve`` with a switch that loads its own usage ledger, for the ledger benchmark.

(``BENCH_LEDGER_NO_WAIT=1`` is a diagnosis: requests no longer await their row's commit.)

The same entry point as the console script (``app.main:main`` / ``server.cli.main``); the only addition
is that ``Services.open`` hands its result to this module, and that SIGUSR1 starts a thread submitting
``BENCH_LEDGER_RATE`` rows a second to that very ledger (the writer thread and the GIL the requests
use), SIGUSR2 stops it, waits for every row's commit and writes what happened to ``BENCH_LEDGER_STATS``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from server.services import Services
from server.usage import UsageEntry

PREBUILT_S = 15.0
"""Seconds of rows built before the load starts (a measured window is 6 s)."""

_opened: list[Services] = []
_original_open = Services.open.__func__  # type: ignore[attr-defined]


def _open_and_keep(cls: type[Services], *args: Any, **kwargs: Any) -> Services:
    services: Services = _original_open(cls, *args, **kwargs)
    _opened.append(services)
    return services


Services.open = classmethod(_open_and_keep)  # type: ignore[assignment,method-assign]

if os.environ.get("BENCH_LEDGER_NO_WAIT") == "1":
    # A diagnosis, not a configuration: requests queue their row and go on without awaiting its commit,
    # to measure what waiting for the commit costs them.
    from server.usage import Ledger  # noqa: E402

    async def _record_without_waiting(self: Ledger, entry: UsageEntry) -> None:
        self.submit(entry)

    Ledger.record = _record_without_waiting  # type: ignore[method-assign]


class LedgerLoad:
    def __init__(self, rate: int, stats: Path) -> None:
        self.rate = rate
        self.stats = stats
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and _opened:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="bench-ledger-load", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _entry(self, serial: int, moment: float) -> UsageEntry:
        return UsageEntry(
            request_id=f"bench_bg_{os.getpid()}_{moment:.0f}_{serial}",
            key_id="bench-background",
            model=f"bg-model-{serial % 5}",
            endpoint="chat.completions",
            input_tokens=12,
            output_tokens=34,
            latency_ms=5.0,
            created_at=moment,
        )

    def _run(self) -> None:
        ledger = _opened[-1].ledger
        # The rows are built before the clock starts, so that what the load costs the process is what the
        # ledger costs (submit, the writer thread, SQLite), not the making of test rows.
        moment = time.time()
        entries = [self._entry(i, moment) for i in range(int(self.rate * PREBUILT_S))]
        self.ready.set()
        tick = 0.01
        per_tick = max(1, round(self.rate * tick))
        futures: list[Future[None]] = []
        begun = time.monotonic()
        due = begun
        count = 0
        behind = 0.0
        while not self._stop.is_set():
            for _ in range(per_tick):
                entry = entries[count] if count < len(entries) else self._entry(count, moment)
                futures.append(ledger.submit(entry))
                count += 1
            due += tick
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                behind = max(behind, -wait)
        submitted_for = time.monotonic() - begun
        for future in futures:
            future.result(60)
        drained = time.monotonic() - begun - submitted_for
        self.stats.write_text(
            json.dumps(
                {
                    "rows": count,
                    "seconds": submitted_for,
                    "rows_per_s": count / submitted_for if submitted_for else 0.0,
                    "drain_s": drained,
                    "max_behind_s": behind,
                }
            )
        )
        self._thread = None


def main() -> int:
    load = LedgerLoad(
        int(os.environ.get("BENCH_LEDGER_RATE", "5000")), Path(os.environ["BENCH_LEDGER_STATS"])
    )
    signal.signal(signal.SIGUSR1, lambda *_: load.start())
    signal.signal(signal.SIGUSR2, lambda *_: load.stop())
    try:
        from app.main import main as entry  # noqa: PLC0415  (after the patch above, as the console script would)
    except ImportError:
        from server.cli import main as entry  # noqa: PLC0415
    return entry(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
