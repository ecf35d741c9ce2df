"""``ai-service-platform serve`` with a switch that loads its own usage ledger, for the ledger benchmark.

(``BENCH_LEDGER_NO_WAIT=1`` is a diagnosis: requests no longer await their row's commit.)

The same entry point as the console script (``app.main:main`` / ``server.cli.main``); the only addition
is that ``Services.open`` hands its result to this module, and that SIGUSR1 starts a thread that loads
that very ledger (the writer thread and the GIL the requests use) on the schedule in the JSON file
``BENCH_LEDGER_PHASES``: ``count`` phases of ``phase_s`` seconds from ``epoch`` (``time.monotonic``),
``BENCH_LEDGER_RATE`` rows a second in every odd phase and none in the even ones. At the end of the
schedule, or at SIGUSR2, it waits for every row's commit and writes what happened, with the CPU seconds the
process used per second in each phase (after its first ``settle_s`` seconds), to ``BENCH_LEDGER_STATS``.
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

from server.api.request import new_id
from server.metering.ledger import UsageEntry
from server.services import Services

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
    from server.metering.ledger import Ledger  # noqa: E402

    async def _record_without_waiting(self: Ledger, entry: UsageEntry) -> None:
        self.submit(entry)

    Ledger.record = _record_without_waiting  # type: ignore[method-assign]


class LedgerLoad:
    def __init__(self, rate: int, schedule: Path, stats: Path) -> None:
        self.rate = rate
        self.schedule = schedule
        self.stats = stats
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and _opened:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="bench-ledger-load", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        ledger = _opened[-1].ledger
        plan = json.loads(self.schedule.read_text())
        epoch, phase_s, count, settle_s = plan["epoch"], plan["phase_s"], plan["count"], plan["settle_s"]
        # The rows are built before the schedule starts, so that what the load costs the process is what
        # the ledger costs (submit, the writer thread, SQLite), not the making of test rows. Their ids are
        # made as the server makes a request's.
        loaded = count // 2
        moment = time.time()
        entries = [_entry(i, moment) for i in range(int(self.rate * phase_s * loaded) + self.rate)]
        late = max(0.0, time.monotonic() - epoch)
        per_tick = max(1, round(self.rate * TICK_S))
        futures: list[Future[None]] = []
        cpu_per_s: list[float] = []
        submitted = 0
        loaded_s = 0.0
        behind = 0.0
        since: tuple[float, float] | None
        for phase in range(count):
            begins = epoch + phase * phase_s
            ends = begins + phase_s
            if self._stop.is_set():
                break
            if phase % 2 == 0:
                _sleep_until(begins + settle_s)
                since = _process_cpu()
                _sleep_until(ends)
                cpu_per_s.append(_rate_since(since))
                continue
            _sleep_until(begins)
            due = max(begins, time.monotonic())
            loaded_s += ends - due
            since = None
            while due < ends - 1e-9:
                if since is None and time.monotonic() >= begins + settle_s:
                    since = _process_cpu()
                for _ in range(per_tick):
                    entry = entries[submitted] if submitted < len(entries) else _entry(submitted, moment)
                    futures.append(ledger.submit(entry))
                    submitted += 1
                due += TICK_S
                behind = max(behind, time.monotonic() - due)
                _sleep_until(due)
            cpu_per_s.append(_rate_since(since) if since is not None else float("nan"))
        finished = time.monotonic()
        for future in futures:
            future.result(60)
        self.stats.write_text(
            json.dumps(
                {
                    "rows": submitted,
                    "seconds": loaded_s,
                    "rows_per_s": submitted / loaded_s if loaded_s else 0.0,
                    "drain_s": time.monotonic() - finished,
                    "max_behind_s": behind,
                    "late_start_s": late,
                    "cpu_per_s_by_phase": cpu_per_s,
                }
            )
        )
        self._thread = None


TICK_S = 0.01
"""The load submits its rows in bursts this far apart."""


def _entry(serial: int, moment: float) -> UsageEntry:
    return UsageEntry(
        request_id=new_id("req_"),
        key_id="bench-background",
        model=f"bg-model-{serial % 5}",
        endpoint="chat.completions",
        input_tokens=12,
        output_tokens=34,
        latency_ms=5.0,
        created_at=moment,
    )


def _process_cpu() -> tuple[float, float]:
    return time.monotonic(), time.process_time()


def _rate_since(since: tuple[float, float]) -> float:
    """The process's CPU seconds per second since ``since``."""
    now, cpu = _process_cpu()
    return (cpu - since[1]) / (now - since[0])


def _sleep_until(moment: float) -> None:
    wait = moment - time.monotonic()
    if wait > 0:
        time.sleep(wait)


def main() -> int:
    load = LedgerLoad(
        int(os.environ.get("BENCH_LEDGER_RATE", "5000")),
        Path(os.environ["BENCH_LEDGER_PHASES"]),
        Path(os.environ["BENCH_LEDGER_STATS"]),
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
