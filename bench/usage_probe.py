"""Time the window's real Usage page, offscreen: switch its range (and its breakdown) and wait until the
numbers are read and the visible graph has been repainted with them.

``python -m bench.usage_probe ROUNDS`` with ``AISP_DATA_DIR`` holding the ledger and
``QT_QPA_PLATFORM=offscreen``; prints one JSON line. The window is built as ``ai-service-platform``
builds it (``app.main.prepare`` and ``build_window``), without models and without starting the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("AISP_LOAD_MODELS", "0")
os.environ.setdefault("AISP_PORT", "0")

import qasync  # noqa: E402
from PySide6.QtCore import QEvent, QObject, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.main import build_window, prepare  # noqa: E402
from server.services import settings_from_store  # noqa: E402

TIMEOUT_S = 30.0


class PaintWatch(QObject):
    """Notes when each paint of the watched widgets began and when it had been handled."""

    def __init__(self) -> None:
        super().__init__()
        self.paints: list[tuple[float, float]] = []

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802  (Qt's name)
        if event.type() == QEvent.Type.Paint:
            began = time.perf_counter()
            # Runs once the paint event (the drawing) has been handled.
            QTimer.singleShot(0, lambda: self.paints.append((began, time.perf_counter())))
        return False

    async def first_after(self, moment: float, timeout: float) -> float:
        """When the first paint that began at or after ``moment`` had been handled (NaN if none came)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for began, ended in self.paints:
                if began >= moment:
                    return ended
            await asyncio.sleep(0.001)
        return float("nan")


async def _signal(signal: Any) -> float:
    """Wait for ``signal``; the moment it was emitted."""
    future: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def fire(*_args: object) -> None:
        if not future.done():
            future.set_result(time.perf_counter())

    signal.connect(fire)
    try:
        return await asyncio.wait_for(future, TIMEOUT_S)
    finally:
        signal.disconnect(fire)


async def probe(rounds: int) -> dict[str, Any]:
    app = QApplication.instance()
    assert app is not None
    window = build_window(app, prepare(settings_from_store()))  # type: ignore[arg-type]
    window.resize(1280, 860)
    window.show()
    page = window.usage_page
    loaded = asyncio.ensure_future(_signal(page.usage_loaded))
    await asyncio.sleep(0)
    first_started = time.perf_counter()
    window.show_page(2)
    first = (await loaded - first_started) * 1000
    await asyncio.sleep(0.2)
    watch = PaintWatch()
    for view in page.views.values():
        view.chart_view.viewport().installEventFilter(watch)

    async def switch(combo: Any, data: str) -> dict[str, float]:
        done = asyncio.ensure_future(_signal(page.usage_loaded))
        await asyncio.sleep(0)  # connected before the switch
        began = time.perf_counter()
        combo.setCurrentIndex(combo.findData(data))
        shown = await done  # the new numbers are in the graphs and tables
        # A paint that began before the numbers were shown draws the old graph: take the next one.
        drawn = await watch.first_after(shown, 5.0)
        await asyncio.sleep(0.05)  # let the page settle before the next switch
        return {"loaded_ms": (shown - began) * 1000, "redrawn_ms": (drawn - began) * 1000}

    ranges: dict[str, list[dict[str, float]]] = {"week": [], "month": [], "day": []}
    breakdowns: dict[str, list[dict[str, float]]] = {"key": [], "none": [], "model": []}
    for _ in range(rounds):
        for preset in ranges:
            ranges[preset].append(await switch(page.range, preset))
        for group in breakdowns:
            breakdowns[group].append(await switch(page.breakdown, group))
    series = page.series
    result = {
        "first_show_ms": first,
        "ranges": ranges,
        "breakdowns": breakdowns,
        "buckets_last": len(series.buckets) if series else 0,
        "groups_last": len(series.groups) if series else 0,
        "requests_in_month": page.series.total().requests if page.series else 0,
    }
    window.close()
    deadline = time.monotonic() + 20
    while not window.is_closed and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return result


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    app = QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        result = loop.run_until_complete(probe(rounds))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
