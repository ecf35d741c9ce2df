"""The usage ledger: rows per second through ``server.usage.Ledger`` (submit, then flush), and whether a
ledger kept busy at 5,000 rows a second slows the gateway's requests.

The second part runs the gateway through :mod:`bench.gateway_hook`, which submits the extra rows (built
beforehand) to the gateway's own ledger from a thread in the gateway process, so that they cost what
real requests' rows cost: ``submit``, the writer thread, SQLite, and the GIL and core the requests need.
It compares the gateway at concurrency 16 against the fast mock with and without that load, interleaved
round by round.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.gateway import Mocks, Target, upstream_models
from bench.loadgen import drive
from bench.procs import PYTHON, split_cores
from bench.stats import median, median_of_rounds
from bench.systems import Running, start_gateway
from server.store import Store
from server.usage import Ledger, UsageEntry

LEDGER_RATE = 5000
PASSES = 3
"""Pairs of windows (without and with the load, the order alternating) per round: the verdict is the
median over every pair of the run."""
SLOWDOWN_LIMIT = 1.10
"""Requests count as not slowed while their p50 latency under ledger load stays within 10 % of without."""


def burst(rows: int, directory: Path) -> dict[str, Any]:
    """Submit ``rows`` rows as fast as one thread can and wait for their commit: the writer's ceiling."""
    store = Store(directory / "aisp.sqlite3")
    ledger = Ledger(store)
    try:
        now = time.time()
        entries = [
            UsageEntry(
                request_id=f"bench_{i}",
                key_id=f"key_{i % 50}",
                model=f"model-{i % 5}",
                endpoint="chat.completions",
                input_tokens=10 + i % 90,
                output_tokens=i % 37,
                cost=1e-6 * (i % 100),
                latency_ms=5.0,
                ttft_ms=1.0,
                created_at=now - (rows - i) * 0.01,
            )
            for i in range(rows)
        ]
        started = time.perf_counter()
        for entry in entries:
            ledger.submit(entry)
        submitted = time.perf_counter()
        ledger.flush(120)
        ended = time.perf_counter()
        count = store.db.execute_sql("SELECT COUNT(*) FROM usage_record").fetchone()[0]
    finally:
        ledger.close()
        store.close()
    return {
        "rows": rows,
        "committed": int(count),
        "seconds": ended - started,
        "submit_s": submitted - started,
        "rows_per_s": rows / (ended - started),
    }


def _wait_stats(path: Path, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            stats: dict[str, Any] = json.loads(path.read_text())
            path.unlink()
            return stats
        time.sleep(0.1)
    return {"error": "the ledger load did not report"}


def run(ctx: Context) -> dict[str, Any]:
    rows = 5_000 if ctx.smoke else 100_000
    ctx.say(f"ledger: {rows} rows through Ledger, {ctx.rounds} rounds")
    bursts = []
    for _ in range(ctx.rounds):
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as directory:
            bursts.append(burst(rows, Path(directory)))
    if ctx.smoke:
        return {
            "burst": median_of_rounds(bursts),
            "burst_rounds": bursts,
            "interplay": "skipped in smoke mode (the gateway under ledger load)",
        }
    client_cpus, sut_cpus = split_cores()
    warmup, duration = 1.0, 5.0
    stats_path = ctx.workdir / "ledger-load.json"
    started: list[Running | Mocks] = []
    try:
        mocks = Mocks(ctx, client_cpus)
        started.append(mocks)
        gateway = start_gateway(
            "gateway-ledger",
            ctx.workdir,
            ctx.logs,
            sut_cpus,
            models=upstream_models(mocks),
            expect={"fast"},
            command=[PYTHON, "-m", "bench.gateway_hook"],
            env={"BENCH_LEDGER_RATE": str(LEDGER_RATE), "BENCH_LEDGER_STATS": str(stats_path)},
        )
        started.append(gateway)
        target = Target("gateway", gateway, gateway, "fast", "paced")
        drive(target.closed(16, 0.0, 0.5), {}, client_cpus)
        quiet_rounds: list[dict[str, Any]] = []
        busy_rounds: list[dict[str, Any]] = []
        load_rounds: list[dict[str, Any]] = []
        for round_number in range(ctx.rounds):
            ctx.say(
                f"ledger: round {round_number + 1}/{ctx.rounds}: gateway at c=16 without and with {LEDGER_RATE} rows/s"
            )
            for window in range(PASSES):
                quiet: dict[str, Any] = {}
                busy: dict[str, Any] = {}
                # Alternate which goes first, so that a drift of the machine's load does not favour either.
                for loaded in (False, True) if (round_number * PASSES + window) % 2 == 0 else (True, False):
                    if loaded:
                        os.kill(gateway.pid, signal.SIGUSR1)
                        time.sleep(1.5)  # the hook builds its rows first
                        busy = drive(target.closed(16, warmup, duration), {"gateway": gateway.pid}, client_cpus)
                        os.kill(gateway.pid, signal.SIGUSR2)
                        load_rounds.append(_wait_stats(stats_path))
                    else:
                        quiet = drive(target.closed(16, warmup, duration), {"gateway": gateway.pid}, client_cpus)
                for result, bucket in ((quiet, quiet_rounds), (busy, busy_rounds)):
                    bucket.append(
                        {
                            "rps": result["rps"],
                            "p50_ms": result["latency_ms"]["p50"],
                            "p99_ms": result["latency_ms"]["p99"],
                            "errors": result["errors"],
                            "cpu_ms_per_req": result["cpu_s"]["gateway"] * 1000 / max(result["requests"], 1),
                        }
                    )
    finally:
        for system in reversed(started):
            system.stop()
    quiet_m, busy_m = median_of_rounds(quiet_rounds), median_of_rounds(busy_rounds)
    ratios = list(zip(quiet_rounds, busy_rounds, strict=True))
    return {
        "burst": median_of_rounds(bursts),
        "burst_rounds": bursts,
        "requests_without_load": quiet_m,
        "requests_with_load": busy_m,
        "p50_ratio": median(b["p50_ms"] / q["p50_ms"] for q, b in ratios),
        "rps_ratio": median(b["rps"] / q["rps"] for q, b in ratios),
        "pairs": len(ratios),
        "load": median_of_rounds([r for r in load_rounds if "error" not in r]),
        "load_rounds": load_rounds,
        "rows_per_s_target": LEDGER_RATE,
        "slowdown_limit": SLOWDOWN_LIMIT,
        "pinning": {
            "load_generator_and_mock": sorted(client_cpus),
            "gateway_and_ledger_load": sorted(sut_cpus),
        },
    }
