"""The load generator: its own process, an asyncio aiohttp client.

``python -m bench.loadgen '<json config>'`` prints ``START`` when its measured window opens and ``END``
when it closes (the caller reads the server's CPU time at those two moments), then one JSON line with
what it measured.

Modes:
- ``closed``: ``concurrency`` clients each send the same request again as soon as the last one ended,
  for ``warmup`` seconds unmeasured and then ``duration`` seconds measured. With ``phases``
  (``{"epoch", "phase_s", "count", "settle_s"}``, ``epoch`` on ``time.monotonic``'s clock), the measured
  window is instead ``count`` phases of ``phase_s`` seconds from ``epoch``, and the requests that end in
  each phase (after its first ``settle_s`` seconds) are also counted phase by phase.
- ``streams``: ``streams`` streamed requests at once (after one unmeasured pass that opens the
  connections), each read event by event: time to the first content, chunks and duration per stream.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

import aiohttp

from bench.procs import PYTHON, ROOT, child_setup, cpu_seconds, runqueue_wait_seconds
from bench.stats import percentile, summary


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _mark(word: str) -> None:
    sys.stdout.write(f"{word} {time.monotonic():.6f}\n")
    sys.stdout.flush()


def _by_phase(phases: dict[str, Any], per_phase: list[list[float]], now: float, latency_ms: float) -> None:
    into = (now - float(phases["epoch"])) / float(phases["phase_s"])
    index = int(into)
    if 0 <= index < len(per_phase) and (into - index) * float(phases["phase_s"]) >= float(phases["settle_s"]):
        per_phase[index].append(latency_ms)


async def closed(config: dict[str, Any]) -> dict[str, Any]:
    url, headers = config["url"], config.get("headers", {})
    body = json.dumps(config["body"]).encode() if config.get("body") is not None else None
    method = "POST" if body is not None else "GET"
    concurrency, warmup, duration = (
        int(config["concurrency"]),
        float(config["warmup"]),
        float(config["duration"]),
    )
    phases = config.get("phases")
    if phases is not None:
        warmup = max(0.0, float(phases["epoch"]) - time.monotonic())
        duration = float(phases["phase_s"]) * int(phases["count"])
    per_phase: list[list[float]] = [[] for _ in range(int(phases["count"]) if phases else 0)]
    latencies: list[float] = []
    errors: list[str] = []
    window: dict[str, float] = {}
    stopping = False
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            while not stopping:
                started = time.perf_counter()
                try:
                    async with session.request(method, url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                        status = response.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    ok, status = False, -1
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}")
                ended = time.perf_counter()
                if (
                    "start" in window
                    and ended >= window["start"]
                    and ("end" not in window or ended <= window["end"])
                ):
                    if ok:
                        latencies.append((ended - started) * 1000)
                        if phases is not None:
                            _by_phase(phases, per_phase, time.monotonic(), (ended - started) * 1000)
                    else:
                        window["errors"] = window.get("errors", 0) + 1
                        if len(errors) < 5 and status != -1:
                            errors.append(f"HTTP {status}")

        tasks = [asyncio.ensure_future(client()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        cpu0 = _cpu()
        window["start"] = time.perf_counter()
        _mark("START")
        await asyncio.sleep(duration)
        window["end"] = time.perf_counter()
        _mark("END")
        cpu1 = _cpu()
        stopping = True
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = window["end"] - window["start"]
    result: dict[str, Any] = {}
    if phases is not None:
        counted = float(phases["phase_s"]) - float(phases["settle_s"])
        result["phases"] = [
            {
                "requests": len(phase),
                "rps": len(phase) / counted,
                "p50_ms": percentile(phase, 50),
                "p99_ms": percentile(phase, 99),
            }
            for phase in per_phase
        ]
    return result | {
        "requests": len(latencies),
        "errors": int(window.get("errors", 0)),
        "error_samples": errors,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed,
        "latency_ms": summary(latencies),
        "client_cpu_util": (cpu1 - cpu0) / elapsed,
    }


async def _one_stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    started = time.perf_counter()
    first: float | None = None
    last = started
    gaps: list[float] = []
    chunks = 0
    usage_tokens: int | None = None
    status = 0
    async with session.post(url, data=body, headers=headers) as response:
        status = response.status
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            usage = event.get("usage")
            if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                usage_tokens = int(usage["completion_tokens"])
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        gaps.append((now - last) * 1000)
                    last = now
                    chunks += 1
    ended = time.perf_counter()
    return {
        "status": status,
        "started": started,
        "ended": ended,
        "ttft_ms": None if first is None else (first - started) * 1000,
        "duration_ms": (ended - started) * 1000,
        "chunks": chunks,
        "usage_tokens": usage_tokens,
        "gaps_ms": gaps,
    }


async def streams(config: dict[str, Any]) -> dict[str, Any]:
    url, headers = config["url"], config.get("headers", {})
    body = json.dumps(config["body"]).encode()
    count = int(config["streams"])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        if config.get("warm", True):
            await asyncio.gather(*(_one_stream(session, url, headers, body) for _ in range(count)))
        cpu0 = _cpu()
        _mark("START")
        results = await asyncio.gather(
            *(_one_stream(session, url, headers, body) for _ in range(count)), return_exceptions=True
        )
        _mark("END")
        cpu1 = _cpu()
    good = [r for r in results if isinstance(r, dict) and r["status"] == 200]
    failures = [repr(r)[:200] for r in results if not (isinstance(r, dict) and r["status"] == 200)]
    if not good:
        return {"streams": 0, "errors": len(failures), "error_samples": failures[:5]}
    begin = min(r["started"] for r in good)
    end = max(r["ended"] for r in good)
    gaps = [g for r in good for g in r["gaps_ms"]]
    total_chunks = sum(r["chunks"] for r in good)
    return {
        "streams": len(good),
        "errors": len(failures),
        "error_samples": failures[:5],
        "wall_s": end - begin,
        "chunks_per_s": total_chunks / (end - begin),
        "chunks_min": min(r["chunks"] for r in good),
        "duration_ms": summary([r["duration_ms"] for r in good]),
        "ttft_ms": summary([r["ttft_ms"] for r in good if r["ttft_ms"] is not None]),
        "gap_ms": {"p50": percentile(gaps, 50), "p99": percentile(gaps, 99), "max": max(gaps, default=0.0)},
        "client_cpu_util": (cpu1 - cpu0) / (end - begin),
    }


def drive(config: dict[str, Any], measured: dict[str, int], cpus: Iterable[int] | None) -> dict[str, Any]:
    """Run the load generator (pinned to ``cpus``) and add the CPU seconds each process in ``measured``
    (name → pid) spent inside the measured window, as ``cpu_s``."""
    cpu_set = set(cpus) if cpus is not None else None

    def pin() -> None:
        child_setup(cpu_set)

    process = subprocess.Popen(
        [PYTHON, "-m", "bench.loadgen", json.dumps(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=pin,
    )
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    waited0: dict[str, float] = {}
    waited1: dict[str, float] = {}
    result: dict[str, Any] | None = None
    assert process.stdout is not None and process.stderr is not None
    for raw in process.stdout:
        line = raw.decode().strip()
        if line.startswith("START"):
            before = {name: cpu_seconds(pid) for name, pid in measured.items()}
            waited0 = {name: runqueue_wait_seconds(pid) for name, pid in measured.items()}
        elif line.startswith("END"):
            after = {name: cpu_seconds(pid) for name, pid in measured.items()}
            waited1 = {name: runqueue_wait_seconds(pid) for name, pid in measured.items()}
        elif line.startswith("{"):
            result = json.loads(line)
    errors = process.stderr.read().decode(errors="replace")
    process.wait()
    process.stdout.close()
    process.stderr.close()
    if result is None:
        raise RuntimeError(f"the load generator failed ({process.returncode}): {errors[-2000:]}")
    result["cpu_s"] = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in measured}
    result["runqueue_wait_s"] = {name: waited1.get(name, 0.0) - waited0.get(name, 0.0) for name in measured}
    return result


def main() -> None:
    config = json.loads(sys.argv[1])
    run = closed if config["mode"] == "closed" else streams
    try:
        import uvloop  # noqa: PLC0415  (a cheaper client loop where installed)
    except ImportError:
        result = asyncio.run(run(config))
    else:
        result = uvloop.run(run(config))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
