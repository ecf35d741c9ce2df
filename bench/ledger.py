"""The usage ledger: rows per second through ``server.metering.ledger.Ledger`` (submit, then flush), and whether a
ledger kept busy at 5,000 rows a second slows the gateway's requests.

The second part runs the gateway through :mod:`bench.gateway_hook`, which submits the extra rows (built
beforehand) to the gateway's own ledger from a thread in the gateway process, so that they cost what
real requests' rows cost: ``submit``, the writer thread, SQLite, and the GIL and core the requests need.
It runs the gateway at concurrency 16 against the fast mock with that load switched on and off every
second, and compares each loaded second with the unloaded seconds either side of it.
"""

from __future__ import annotations

import json
import math
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
from server.api.request import new_id
from server.metering.ledger import Ledger, UsageEntry
from server.store import Store

LEDGER_RATE = 5000
PHASE_S = 1.0
PHASES = 37
"""A round is one run of the gateway at concurrency 16, cut into phases of ``PHASE_S``: the load is on in
every odd phase and off in the even ones, so that each loaded phase has an unloaded one on either side
(the machine's own drift, over seconds, then weighs on both alike)."""
SETTLE_S = 0.1
"""The start of each phase that is not counted: the writer commits rows it gathered up to 0.05 s after
they were queued, so a phase that follows a loaded one still carries some of its load that long."""
LEAD_S = 3.0
"""From sending the schedule to its first phase: the gateway builds the load's rows and the clients
connect."""
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
                request_id=new_id("req_"),
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
    stats_path = ctx.workdir / "ledger-load.json"
    schedule_path = ctx.workdir / "ledger-phases.json"
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
            env={
                "BENCH_LEDGER_RATE": str(LEDGER_RATE),
                "BENCH_LEDGER_PHASES": str(schedule_path),
                "BENCH_LEDGER_STATS": str(stats_path),
            },
        )
        started.append(gateway)
        target = Target("gateway", gateway, gateway, "fast", "paced")
        drive(target.closed(16, 0.0, 0.5), {}, client_cpus)
        rounds: list[dict[str, Any]] = []
        for round_number in range(ctx.rounds):
            ctx.say(
                f"ledger: round {round_number + 1}/{ctx.rounds}: gateway at c=16 for {PHASES} s, "
                f"{LEDGER_RATE} rows/s into its ledger every other second"
            )
            plan = {
                "epoch": time.monotonic() + LEAD_S,
                "phase_s": PHASE_S,
                "count": PHASES,
                "settle_s": SETTLE_S,
            }
            schedule_path.write_text(json.dumps(plan))
            os.kill(gateway.pid, signal.SIGUSR1)
            try:
                result = drive(target.closed(16, 0.0, 0.0) | {"phases": plan}, {}, client_cpus)
            finally:
                os.kill(gateway.pid, signal.SIGUSR2)  # the schedule is over: this only cuts short a failure
            load = _wait_stats(stats_path)
            cpu = load.pop("cpu_per_s_by_phase", [])
            phases = [
                phase | {"cpu_ms_per_req": used / phase["rps"] * 1000 if phase["rps"] else math.nan}
                for phase, used in zip(result["phases"], cpu, strict=False)
            ]
            rounds.append({"phases": phases, "load": load, "errors": result["errors"]})
    finally:
        for system in reversed(started):
            system.stop()
    return {
        "burst": median_of_rounds(bursts),
        "burst_rounds": bursts,
        **verdicts(rounds),
        "load": median_of_rounds([r["load"] for r in rounds if "error" not in r["load"]]),
        "rounds": rounds,
        "rows_per_s_target": LEDGER_RATE,
        "slowdown_limit": SLOWDOWN_LIMIT,
        "schedule": {"phase_s": PHASE_S, "phases": PHASES, "settle_s": SETTLE_S},
        "pinning": {
            "load_generator_and_mock": sorted(client_cpus),
            "gateway_and_ledger_load": sorted(sut_cpus),
        },
    }


def verdicts(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each loaded (odd) phase against the mean of the two unloaded phases either side of it, over every
    round: the medians of those ratios judge the load, and of the phases themselves fill the table."""
    ratios: dict[str, list[float]] = {"rps": [], "p50_ms": [], "cpu_ms_per_req": []}
    quiet: list[dict[str, Any]] = []
    busy: list[dict[str, Any]] = []
    for one in rounds:
        phases = one["phases"]
        quiet += phases[0::2]
        busy += phases[1::2]
        for i in range(1, len(phases) - 1, 2):
            for key, found in ratios.items():
                found.append(phases[i][key] / ((phases[i - 1][key] + phases[i + 1][key]) / 2))
    return {
        "requests_without_load": median_of_rounds(quiet),
        "requests_with_load": median_of_rounds(busy),
        "rps_ratio": median(ratios["rps"]),
        "p50_ratio": median(ratios["p50_ms"]),
        "cpu_ratio": median(ratios["cpu_ms_per_req"]),
        "windows": len(ratios["rps"]),
    }
