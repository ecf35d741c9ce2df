"""Where the gateway's CPU goes.

1. py-spy records ``ai-service-platform serve`` (upstream models, pinned to its own core) while the load
   generator keeps it busy at concurrency 16 with non-streamed requests to the fast mock. Only samples of
   the thread holding the GIL are kept (``--gil``): Python actually running, not threads waiting in
   ``epoll`` or on a lock. The stacks are summarised by frame (self and inclusive) and by layer.
2. The CPU each of the gateway's threads used meanwhile, from ``/proc/<pid>/task``.
3. The cost in layers, by endpoint: CPU per request of ``GET /health`` (uvicorn + FastAPI + middleware),
   ``GET /v1/models`` (+ key check), and chat non-streamed and streamed (+ limits, upstream relay, ledger).

``python -m bench --profile-gateway 20`` writes ``gateway-profile.raw.txt`` (py-spy's collapsed stacks,
for any flame-graph tool) and ``gateway-profile.txt`` (the summary) to ``bench/results/``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.gateway import Mocks, Target, upstream_models
from bench.loadgen import drive
from bench.procs import PYTHON, TICKS, split_cores
from bench.systems import start_gateway

LAYERS: tuple[tuple[str, str], ...] = (
    ("server/api/", "server: HTTP handlers (server/api)"),
    ("server/engines/upstream", "server: upstream client (engines/upstream.py)"),
    ("server/generation/remote", "server: upstream chat relay (generation/remote.py)"),
    ("server/protocol/", "server: wire models (protocol/)"),
    ("server/keys", "server: keys"),
    ("server/limits", "server: limits"),
    ("server/usage", "server: ledger writer (usage.py)"),
    ("server/connections", "server: connection guard"),
    ("server/", "server: other"),
    ("uvicorn/protocols/http/h11", "uvicorn h11 protocol"),
    ("/h11/", "h11 (pure-Python HTTP parser)"),
    ("uvicorn/", "uvicorn other"),
    ("fastapi/", "FastAPI (routing, dependencies)"),
    ("starlette/", "Starlette (routing, middleware, responses)"),
    ("pydantic", "pydantic"),
    ("aiohttp/", "aiohttp client"),
    ("peewee", "peewee / sqlite"),
    ("sqlite3", "peewee / sqlite"),
    ("asyncio/", "asyncio event loop"),
    ("json/", "json"),
    ("concurrent/futures", "futures / threads"),
    ("threading", "futures / threads"),
    ("queue.py", "futures / threads"),
)
_LINE = re.compile(r":\d+\)$")
_PLUMBING = ("threading.py", "asyncio/base_events.py", "asyncio/events.py", "server/runner.py", "<module>")


_THREAD = re.compile(r"^thread \((\d+)\): (.+)$")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread (by its OS thread id) of a process."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def thread_names(raw: str) -> dict[int, str]:
    """OS thread id → Python thread name, from py-spy's ``--threads`` labels."""
    names: dict[int, str] = {}
    for line in raw.splitlines():
        match = _THREAD.match(line.split(";", 1)[0])
        if match:
            names[int(match.group(1))] = match.group(2)
    return names


def layer(frame: str) -> str:
    for marker, name in LAYERS:
        if marker in frame:
            return name
    return "other"


def summarise(raw: str, top: int = 30) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers_self: Counter[str] = Counter()
    layers_inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        if frames and frames[0].startswith("thread"):
            threads[frames[0]] += count
            frames = frames[1:]
        if frames and frames[0].startswith("process"):
            frames = frames[1:]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        layers_self[layer(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
        for name in {layer(f) for f in frames if not any(p in f for p in _PLUMBING)}:
            layers_inclusive[name] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, count / total) for name, count in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "threads": share(threads),
        "self": share(self_time),
        "inclusive": share(inclusive),
        "layers_self": share(layers_self),
        "layers_inclusive": share(layers_inclusive),
    }


def _text(summary: dict[str, Any], load: dict[str, Any], seconds: float, layers: list[dict[str, Any]]) -> str:
    requests = max(load.get("requests", 0), 1)
    lines = [
        f"py-spy record --gil of the gateway, {seconds:.0f} s at concurrency 16 (non-streamed, fast mock): "
        f"{summary['samples']} samples holding the GIL; during it {load.get('rps', 0):.0f} req/s, "
        f"{load.get('cpu_ms_per_req', 0):.3f} ms CPU per request.",
        "",
        "CPU by thread (from /proc, during the recording), ms per request",
    ]
    names = load.get("names", {})
    lines += [
        f"  {cpu * 1000 / requests:7.3f}  {names.get(tid, f'thread {tid} (never held the GIL while sampled)')}"
        for tid, cpu in sorted(load.get("threads", {}).items(), key=lambda kv: -kv[1])
        if cpu > 0
    ]
    lines += ["", "Cost by endpoint at c=16 (each adds layers to the one before), CPU ms per request"]
    lines += [f"  {row['cpu_ms_per_req']:7.3f}  {row['rps']:6.0f} req/s  {row['what']}" for row in layers]
    lines.append("")
    for key, title in (
        ("threads", "Samples by thread"),
        ("layers_self", "By layer, self time (where the CPU was when sampled)"),
        ("layers_inclusive", "By layer, inclusive (the layer was anywhere on the stack)"),
        ("self", "Top frames, self time"),
        ("inclusive", "Top frames, inclusive"),
    ):
        lines.append(title)
        lines += [f"  {share * 100:5.1f}%  {name}" for name, share in summary[key]]
        lines.append("")
    return "\n".join(lines)


def _by_endpoint(target: Target, pid: int, cpus: Any) -> list[dict[str, Any]]:
    base = target.fast.base_url
    stream = target.closed(16, 1.0, 5.0)
    stream["body"] = {**stream["body"], "stream": True, "stream_options": {"include_usage": True}}
    health = {**target.closed(16, 1.0, 5.0), "url": base.removesuffix("/v1") + "/health", "body": None}
    models = {**target.closed(16, 1.0, 5.0), "url": base + "/models", "body": None}
    rows = []
    for what, config in (
        ("GET /health: uvicorn + FastAPI + middleware", health),
        ("GET /v1/models: + key check (HMAC digest, SQLite lookup)", models),
        (
            "POST /v1/chat/completions, non-streamed: + body parse, limits, the upstream call, the ledger row",
            target.closed(16, 1.0, 5.0),
        ),
        ("POST /v1/chat/completions, streamed (16 chunks): + SSE framing of each chunk", stream),
    ):
        result = drive(config, {"gateway": pid}, cpus)
        rows.append(
            {
                "what": what,
                "rps": result["rps"],
                "cpu_ms_per_req": result["cpu_s"]["gateway"] * 1000 / max(result["requests"], 1),
                "errors": result["errors"],
            }
        )
    return rows


def profile_gateway(seconds: float, out: Path) -> int:
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(spy).exists():
        sys.stderr.write("py-spy is not installed: .venv/bin/pip install py-spy\n")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="aisp-profile-"))
    logs = out / "logs-profile"
    logs.mkdir(parents=True, exist_ok=True)
    ctx = Context(rounds=1, smoke=False, workdir=workdir, logs=logs)
    client_cpus, sut_cpus = split_cores()
    mocks = Mocks(ctx, client_cpus)
    gateway = None
    try:
        gateway = start_gateway(
            "gateway-profiled", workdir, logs, sut_cpus, models=upstream_models(mocks), expect={"fast"}
        )
        target = Target("gateway", gateway, gateway, "fast", "paced")
        drive(target.closed(16, 0.0, 1.0), {}, client_cpus)
        load: dict[str, Any] = {}

        def generate() -> None:
            result = drive(target.closed(16, 1.0, seconds + 1.0), {"gateway": gateway.pid}, client_cpus)
            load.update(
                rps=result["rps"],
                requests=result["requests"],
                cpu_ms_per_req=result["cpu_s"]["gateway"] * 1000 / max(result["requests"], 1),
            )

        def generate_and_watch() -> None:
            before = thread_cpu(gateway.pid)
            generate()
            after = thread_cpu(gateway.pid)
            load["threads"] = {tid: after[tid] - before.get(tid, 0.0) for tid in after}

        thread = threading.Thread(target=generate_and_watch)
        thread.start()
        raw_path = out / "gateway-profile.raw.txt"
        threading.Event().wait(1.5)
        ctx.say(f"profile: py-spy record for {seconds:.0f} s")
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(gateway.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--threads",
                "--gil",
                "--format",
                "raw",
                "--output",
                str(raw_path),
            ],
            check=True,
            capture_output=True,
        )
        thread.join()
        ctx.say("profile: cost by endpoint")
        layers = _by_endpoint(target, gateway.pid, client_cpus)
        raw = raw_path.read_text()
        load["names"] = thread_names(raw)
        summary = summarise(raw)
        text = _text(summary, load, seconds, layers)
        (out / "gateway-profile.txt").write_text(text)
        sys.stdout.write(text)
        return 0
    finally:
        if gateway is not None:
            gateway.stop()
        mocks.stop()
        shutil.rmtree(workdir, ignore_errors=True)
