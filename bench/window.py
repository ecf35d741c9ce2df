"""The window: the Usage page over a million ledger rows (its queries, and the real widget redrawing after a
range switch), and the time from launching ``ai-service-platform`` to its first page on screen."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

from bench.context import Context
from bench.procs import PYTHON, ROOT, child_setup, run_json
from bench.stats import median
from server.metering.reports import HOUR, GroupBy, usage_series
from server.store import Store
from tests.ledger_fill import KEYS, MODELS, fill_ledger

DAY = 24 * HOUR
SPAN_DAYS = 35
MAX_GROUPS = 8


def _spans(now: float) -> dict[str, tuple[float, float, int]]:
    """The page's own presets (``app.pages.usage.preset_span``) when the page exists, else the same rule."""
    try:
        from app.pages.usage import preset_span  # noqa: PLC0415  (the window may not be installed)
    except ImportError:
        end = (now // HOUR + 1) * HOUR
        return {
            "day": (end - DAY, end, HOUR),
            "week": (end - 7 * DAY, end, 6 * HOUR),
            "month": (end - 30 * DAY, end, DAY),
        }
    return {
        p: (s.start, s.end, s.bucket_seconds) for p in ("day", "week", "month") for s in [preset_span(p, now)]
    }


def usage(ctx: Context) -> dict[str, Any]:
    rows = 20_000 if ctx.smoke else 1_000_000
    data = ctx.workdir / "usage" / "data"
    data.mkdir(parents=True, exist_ok=True)
    ctx.say(f"usage page: writing {rows:,} ledger rows")
    store = Store(data / "aisp.sqlite3")
    try:
        now = time.time()
        began = time.perf_counter()
        fill_ledger(store, rows, now - SPAN_DAYS * DAY, now)
        fill_s = time.perf_counter() - began
        hourly = store.db.execute_sql("SELECT COUNT(*) FROM usage_hourly").fetchone()[0]
        queries: dict[str, dict[str, float]] = {}
        groups: tuple[GroupBy, ...] = ("model", "key", "none")
        for preset, (start, end, bucket) in _spans(now).items():
            for group in groups:
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    usage_series(store, start, end, bucket_seconds=bucket, group_by=group).limited(MAX_GROUPS)
                    times.append((time.perf_counter() - t0) * 1000)
                queries.setdefault(preset, {})[group] = median(times)
    finally:
        store.close()
    result: dict[str, Any] = {
        "rows": rows,
        "hourly_rows": int(hourly),
        "shape": f"{rows:,} requests over {SPAN_DAYS} days, {KEYS} keys, {MODELS} models",
        "fill_s": fill_s,
        "query_ms": queries,
    }
    if not (ROOT / "app" / "pages" / "usage.py").exists():
        result["widget"] = {
            "todo": "app/pages/usage.py does not exist yet: only server/metering/reports.py's queries were timed"
        }
        return result
    ctx.say("usage page: timing the real widget offscreen")
    try:
        probe = run_json(
            [PYTHON, "-m", "bench.usage_probe", str(ctx.rounds)],
            env={
                "AISP_DATA_DIR": str(data),
                "QT_QPA_PLATFORM": "offscreen",
                "AISP_LOAD_MODELS": "0",
                "AISP_PORT": "0",
                "AISP_LOG_LEVEL": "warning",
            },
            timeout=600,
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        result["widget"] = {"error": str(exc)[-1500:]}
        return result
    widget: dict[str, Any] = {"first_show_ms": probe["first_show_ms"], "ranges": {}, "breakdowns": {}}
    for kind in ("ranges", "breakdowns"):
        for name, samples in probe[kind].items():
            widget[kind][name] = {
                "redrawn_ms": median(s["redrawn_ms"] for s in samples),
                "redrawn_ms_max": max(s["redrawn_ms"] for s in samples),
                "loaded_ms": median(s["loaded_ms"] for s in samples),
            }
    widget["worst_range_redraw_ms"] = max(v["redrawn_ms"] for v in widget["ranges"].values())
    widget["samples"] = {k: probe[k] for k in ("ranges", "breakdowns")}
    result["widget"] = widget
    return result


def startup(ctx: Context) -> dict[str, Any]:
    """Launch the window offscreen on a fresh data directory (models loading in the background) and time
    from spawning the process to its first page painted."""
    if not (ROOT / "app" / "main.py").exists():
        return {"todo": "app/main.py does not exist: the window cannot be launched"}
    times: list[float] = []
    errors: list[str] = []
    for round_number in range(ctx.rounds):
        ctx.say(f"window: launch {round_number + 1}/{ctx.rounds}")
        home = ctx.workdir / f"window-{round_number}"
        marker = home / "first-page"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AISP_DATA_DIR": str(home / "data"),
            "AISP_PORT": "0",
            "AISP_LOG_LEVEL": "warning",
            "QT_QPA_PLATFORM": "offscreen",
            "HF_HUB_OFFLINE": "1",
            "BENCH_STARTUP_FILE": str(marker),
        }
        log = open(ctx.logs / f"window-{round_number}.log", "wb")  # noqa: SIM115  (closed below)
        spawned = time.monotonic()
        process = subprocess.Popen(
            [PYTHON, "-m", "bench.startup_probe"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=lambda: child_setup(None),
        )
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if marker.exists() and marker.read_text().strip():
            times.append((float(marker.read_text()) - spawned) * 1000)
        else:
            errors.append(f"launch {round_number + 1}: no first page within 60 s (exit {process.returncode})")
        shutil.rmtree(home, ignore_errors=True)
    return {
        "first_page_ms": median(times) if times else None,
        "samples_ms": times,
        "errors": errors,
        "method": "bench/startup_probe.py: an event filter on the app's QApplication notes the first paint of the "
        "window's current page (the app has no start-up hook)",
    }
