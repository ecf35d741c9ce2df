"""Gateway overhead with a fast mock upstream: the gateway against a minimal aiohttp pass-through (the floor)
and LiteLLM's proxy, all routed to the same mock; and 64 streams of 100 chunks paced at 100 a second.

Pinning: the systems under test run one at a time on the second core; the load generator and the mocks
share the first. ``direct`` is the load generator talking to the mock itself: the latency every system
adds is its latency minus direct's at the same concurrency, in the same round.

The load is non-streamed chat completions (``max_tokens`` 16; the mock answers 16 words, or 16 chunks
when asked for a stream); each system asks the mock in its own way (the floor passes the request on as it
came).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.context import Context
from bench.loadgen import drive
from bench.procs import split_cores
from bench.stats import median, median_of_rounds
from bench.systems import (
    MOCK_MODEL,
    Running,
    litellm_available,
    start_floor,
    start_gateway,
    start_litellm,
    start_mock,
)

CONCURRENCY = (1, 16, 64)
STREAMS = 64
STREAM_CHUNKS = 100
STREAM_INTERVAL_S = 0.01
FAST_CHUNKS = 16
PASSES = 2
"""Closed-loop windows per system, concurrency and round, the systems taken there and back: each window
is a sample paired with the other systems' windows of the same pass."""
WINDOW_S = 3.0


def fast_body(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
    }


def paced_body(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Count to one hundred."}],
        "max_tokens": STREAM_CHUNKS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


class Mocks:
    """The two mock upstreams: fast (16 words, no pause) and paced (100 chunks at 100 a second)."""

    def __init__(self, ctx: Context, cpus: Iterable[int]) -> None:
        self.fast = start_mock("mock-fast", ctx.logs, cpus, chunks=FAST_CHUNKS, interval=0.0)
        self.chunks = 20 if ctx.smoke else STREAM_CHUNKS
        self.paced = start_mock("mock-paced", ctx.logs, cpus, chunks=self.chunks, interval=STREAM_INTERVAL_S)

    def stop(self) -> None:
        self.fast.stop()
        self.paced.stop()


def upstream_models(mocks: Mocks) -> list[dict[str, Any]]:
    return [
        {
            "name": "fast",
            "kind": "chat",
            "engine": "upstream",
            "source": mocks.fast.base_url,
            "upstream_model": MOCK_MODEL,
        },
        {
            "name": "paced",
            "kind": "chat",
            "engine": "upstream",
            "source": mocks.paced.base_url,
            "upstream_model": MOCK_MODEL,
        },
    ]


class Target:
    """How the load generator reaches one system: URLs, headers, model names, and the pids to measure."""

    def __init__(self, name: str, fast: Running, paced: Running, model_fast: str, model_paced: str) -> None:
        self.name = name
        self.fast, self.paced = fast, paced
        self.model_fast, self.model_paced = model_fast, model_paced

    def closed(self, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
        return {
            "mode": "closed",
            "url": self.fast.base_url + "/chat/completions",
            "headers": self.fast.headers,
            "body": fast_body(self.model_fast),
            "concurrency": concurrency,
            "warmup": warmup,
            "duration": duration,
        }

    def streams(self, count: int, warm: bool = True) -> dict[str, Any]:
        return {
            "mode": "streams",
            "url": self.paced.base_url + "/chat/completions",
            "headers": self.paced.headers,
            "body": paced_body(self.model_paced),
            "streams": count,
            "warm": warm,
        }


def _closed_numbers(result: dict[str, Any], pid_name: str | None) -> dict[str, Any]:
    requests = max(result["requests"], 1)
    numbers: dict[str, Any] = {
        "rps": result["rps"],
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "requests": result["requests"],
        "errors": result["errors"],
        "client_cpu_util": result["client_cpu_util"],
        "mock_cpu_ms_per_req": result["cpu_s"].get("mock", 0.0) * 1000 / requests,
    }
    if pid_name is not None:
        cpu = result["cpu_s"][pid_name]
        numbers["cpu_ms_per_req"] = cpu * 1000 / requests
        numbers["capacity_rps"] = 1000 / numbers["cpu_ms_per_req"] if numbers["cpu_ms_per_req"] else None
        numbers["cpu_util"] = cpu / result["elapsed_s"]
        numbers["runqueue_wait"] = result.get("runqueue_wait_s", {}).get(pid_name, 0.0) / result["elapsed_s"]
    if result.get("error_samples"):
        numbers["error_samples"] = result["error_samples"]
    return numbers


def run(ctx: Context) -> dict[str, Any]:
    client_cpus, sut_cpus = split_cores()
    concurrency = (1,) if ctx.smoke else CONCURRENCY
    warmup, duration = (0.1, 0.4) if ctx.smoke else (1.0, WINDOW_S)
    passes = 1 if ctx.smoke else PASSES
    streams = 4 if ctx.smoke else STREAMS
    started: list[Running | Mocks] = []
    notes: list[str] = ["floor: bench/floor.py (aiohttp) on uvloop, the gateway's server loop."]
    try:
        ctx.say("gateway: starting the mocks, the floor, the gateway" + ("" if ctx.smoke else " and LiteLLM"))
        mocks = Mocks(ctx, client_cpus)
        started.append(mocks)
        floor_fast = start_floor("floor-fast", ctx.logs, sut_cpus, mocks.fast.base_url)
        started.append(floor_fast)
        floor_paced = start_floor("floor-paced", ctx.logs, sut_cpus, mocks.paced.base_url)
        started.append(floor_paced)
        gateway = start_gateway(
            "gateway-upstream",
            ctx.workdir,
            ctx.logs,
            sut_cpus,
            models=upstream_models(mocks),
            expect={"fast", "paced"},
        )
        started.append(gateway)
        targets = [
            Target("direct", mocks.fast, mocks.paced, MOCK_MODEL, MOCK_MODEL),
            Target("floor", floor_fast, floor_paced, MOCK_MODEL, MOCK_MODEL),
            Target("gateway", gateway, gateway, "fast", "paced"),
        ]
        pids: dict[str, dict[str, int]] = {
            "direct": {"mock": mocks.fast.pid},
            "floor": {"floor": floor_fast.pid, "mock": mocks.fast.pid},
            "gateway": {"gateway": gateway.pid, "mock": mocks.fast.pid},
        }
        stream_pids: dict[str, dict[str, int]] = {
            "direct": {"mock": mocks.paced.pid},
            "floor": {"floor": floor_paced.pid, "mock": mocks.paced.pid},
            "gateway": {"gateway": gateway.pid, "mock": mocks.paced.pid},
        }
        reason = "skipped in smoke mode" if ctx.smoke else litellm_available()
        if reason is None:
            litellm = start_litellm(
                "litellm",
                ctx.workdir,
                ctx.logs,
                sut_cpus,
                {"fast": mocks.fast.base_url, "paced": mocks.paced.base_url},
            )
            started.append(litellm)
            notes += litellm.notes
            targets.append(Target("litellm", litellm, litellm, "fast", "paced"))
            pids["litellm"] = {"litellm": litellm.pid, "mock": mocks.fast.pid}
            stream_pids["litellm"] = {"litellm": litellm.pid, "mock": mocks.paced.pid}
        else:
            notes.append(f"LiteLLM not measured: {reason}")
        if not ctx.smoke:
            for target in targets[1:]:  # a first request through each, unmeasured (connection pools, imports)
                drive(target.closed(1, 0.0, 0.3), {}, client_cpus)
        closed_rounds: dict[str, dict[int, list[dict[str, Any]]]] = {
            t.name: {c: [] for c in concurrency} for t in targets
        }
        stream_rounds: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        for round_number in range(ctx.rounds):
            # Each round starts with a different system, so that none always runs first or last.
            shift = round_number % len(targets)
            ordered = targets[shift:] + targets[:shift]
            for c in concurrency:
                ctx.say(f"gateway: round {round_number + 1}/{ctx.rounds}: concurrency {c}")
                for window in range(passes):  # there and back: A B C D, D C B A
                    for target in ordered if window % 2 == 0 else ordered[::-1]:
                        result = drive(target.closed(c, warmup, duration), pids[target.name], client_cpus)
                        measured = None if target.name == "direct" else target.name
                        closed_rounds[target.name][c].append(_closed_numbers(result, measured))
            ctx.say(f"gateway: round {round_number + 1}/{ctx.rounds}: {streams} paced streams")
            for target in ordered:
                result = drive(
                    target.streams(streams, warm=not ctx.smoke), stream_pids[target.name], client_cpus
                )
                name = None if target.name == "direct" else target.name
                if name is not None and result.get("streams"):
                    result["cpu_util"] = result["cpu_s"][name] / result["wall_s"]
                stream_rounds[target.name].append(result)
        return {
            "pinning": {
                "load_generator_and_mocks": sorted(client_cpus),
                "system_under_test": sorted(sut_cpus),
            },
            "request": {
                "non_streamed": fast_body("<model>"),
                "mock_chunks": FAST_CHUNKS,
                "warmup_s": warmup,
                "duration_s": duration,
                "windows_per_round": passes,
            },
            "streams_setup": {"streams": streams, "chunks": mocks.chunks, "interval_s": STREAM_INTERVAL_S},
            "closed": _summarise_closed(closed_rounds),
            "closed_paired": _paired(closed_rounds),
            "closed_rounds": {n: {str(c): r for c, r in by_c.items()} for n, by_c in closed_rounds.items()},
            "streams": {n: _stream_summary(r) for n, r in stream_rounds.items()},
            "streams_rounds": stream_rounds,
            "notes": notes,
        }
    finally:
        for system in reversed(started):
            system.stop()


def _summarise_closed(rounds: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Medians over rounds per system and concurrency, with the added latency against direct computed in
    each round before taking the median."""
    direct = rounds.get("direct", {})
    out: dict[str, dict[str, Any]] = {}
    for name, by_c in rounds.items():
        out[name] = {}
        for c, per_round in by_c.items():
            merged = median_of_rounds(per_round)
            merged.pop("error_samples", None)
            samples = [r.get("error_samples") for r in per_round if r.get("error_samples")]
            if samples:
                merged["error_samples"] = samples[-1]
            if name != "direct" and c in direct:
                pairs = list(zip(per_round, direct[c], strict=False))
                merged["added_p50_ms"] = median(r["p50_ms"] - d["p50_ms"] for r, d in pairs)
                merged["added_p99_ms"] = median(r["p99_ms"] - d["p99_ms"] for r, d in pairs)
            out[name][str(c)] = merged
    return out


PAIRED = {
    "cpu_vs_floor": ("gateway", "floor", "cpu_ms_per_req"),
    "litellm_cpu_vs_gateway": ("litellm", "gateway", "cpu_ms_per_req"),
    "rps_vs_litellm": ("gateway", "litellm", "rps"),
    "floor_rps_vs_litellm": ("floor", "litellm", "rps"),
}
"""Ratios taken window by window (the same pass of the same round) before the median over windows:
the machine's drift over a run moves both sides of a pair alike."""


def _paired(rounds: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for label, (mine, base, field) in PAIRED.items():
        if mine not in rounds or base not in rounds:
            continue
        for c, windows in rounds[mine].items():
            ratios = [
                a[field] / b[field]
                for a, b in zip(windows, rounds[base].get(c, []), strict=False)
                if a.get(field) and b.get(field)
            ]
            out.setdefault(label, {})[str(c)] = {"median": median(ratios), "windows": len(ratios)}
    return out


def _stream_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in rounds if r.get("streams")]
    if not good:
        return {"errors": rounds[-1].get("error_samples") if rounds else "no rounds"}
    merged = median_of_rounds(
        [{k: v for k, v in r.items() if k not in ("cpu_s", "error_samples")} for r in good]
    )
    return merged
