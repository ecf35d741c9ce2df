"""``python -m bench``: run every section, print the table, write ``bench/results/latest.{json,md}``.

``--smoke`` is the few-second version the test suite runs: one round, tiny loads, no embedded models,
no LiteLLM, no 1M-row ledger. ``--only`` picks sections; ``--profile-gateway SECONDS`` records the
gateway under load with py-spy instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench import batching, embedded, gateway, ledger, window  # noqa: E402
from bench.context import Context  # noqa: E402
from bench.machine import machine_facts  # noqa: E402
from bench.procs import ROOT  # noqa: E402
from bench.report import render_markdown, render_text, targets  # noqa: E402

SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "embedded": embedded.run,
    "batching": batching.run,
    "gateway": gateway.run,
    "ledger": ledger.run,
    "usage_page": window.usage,
    "window": window.startup,
}
SMOKE_SECTIONS = ("gateway", "ledger", "usage_page")


def _pressure() -> float | None:
    """Total microseconds some task waited for a CPU (Linux PSI), or None where unavailable."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return float(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _clean(value: Any) -> Any:
    """JSON without NaN: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so that every started process is stopped by its section's finally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few seconds: tiny loads, one round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; 1 with --smoke)")
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="instead: print the table of a results file"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="where latest.json/.md go"
    )
    parser.add_argument(
        "--chat-threads",
        type=int,
        help="llama.cpp threads for every embedded-chat system (default: the model table's, 2)",
    )
    parser.add_argument("--chat-gguf", help="the batching section: this GGUF instead of the embedded SmolLM2")
    parser.add_argument(
        "--gpu-layers",
        type=int,
        default=0,
        help="the batching section: layers on the GPU (-1: all), both systems",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="add this to the niceness of the harness and everything it starts (negative: ahead of "
        "other work on a shared machine; needs root)",
    )
    parser.add_argument(
        "--profile-gateway",
        type=float,
        metavar="SECONDS",
        help="instead: py-spy record the gateway at c=16 for SECONDS, write the top frames",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.render:
        sys.stdout.write(render_text(json.loads(args.render.read_text())))
        return 0
    if args.nice:
        os.nice(args.nice)  # inherited by every process started from here on
    if args.profile_gateway:
        from bench.profile import profile_gateway  # noqa: PLC0415  (only for this mode)

        return profile_gateway(args.profile_gateway, args.out)
    rounds = args.rounds or (1 if args.smoke else 3)
    chosen = (
        [s.strip() for s in args.only.split(",")]
        if args.only
        else list(SMOKE_SECTIONS if args.smoke else SECTIONS)
    )
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="aisp-bench-"))
    logs = args.out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    ctx = Context(
        rounds=rounds,
        smoke=args.smoke,
        workdir=workdir,
        logs=logs,
        chat_threads=args.chat_threads,
        chat_gguf=args.chat_gguf,
        gpu_layers=args.gpu_layers,
    )
    mode = "smoke" if args.smoke else "full"
    results: dict[str, Any] = {
        "schema": 1,
        "mode": mode,
        "rounds": rounds,
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_facts(),
        "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        "sections": {},
    }
    began, pressure0 = time.monotonic(), _pressure()
    try:
        for name in chosen:
            ctx.say(f"section {name}")
            section_began = time.monotonic()
            try:
                results["sections"][name] = SECTIONS[name](ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one failed section is reported; the others still run
                ctx.say(f"section {name} failed: {exc}")
                results["sections"][name] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            results["sections"][name]["seconds"] = time.monotonic() - section_began
    except KeyboardInterrupt:
        ctx.say("interrupted")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - began
    pressure1 = _pressure()
    results["duration_s"] = elapsed
    results["cpu_pressure"] = {
        "some_share": (pressure1 - pressure0) / 1e6 / elapsed
        if pressure0 is not None and pressure1 is not None
        else None
    }
    results["load_average_at_end"] = list(os.getloadavg())
    results["targets"] = targets(results)
    results = _clean(results)
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)]).strip()
    results["command"] = command
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "latest.md").write_text(render_markdown(results, command))
    sys.stdout.write(render_text(results))
    sys.stdout.write(f"\nWritten: {args.out / 'latest.json'}, {args.out / 'latest.md'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
