"""The benchmark harness runs end to end in smoke mode (a few seconds, tiny loads) and writes its table and
its JSON with every section and target it promises; the numbers themselves are ``make bench``'s business."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {
    "chat through the API ≥ 95% of direct llama-cpp-python tok/s",
    "chat TTFT through the API within 10 ms of direct",
    "embeddings through the API ≥ 95% of direct sentence-transformers",
    "gateway CPU per relayed request ≤ 1 ms",
    "gateway ≥ 10× LiteLLM's requests per second on the same core",
    "ledger sustains ≥ 5,000 rows/s without slowing requests",
    "Usage range switch over 1M rows redraws in ≤ 200 ms",
    "first page ≤ 2 s after launch",
    "aggregate tok/s ≥ 90% of llama-server's at 4, 8 and 16 clients",
    "TTFT p95 ≤ 1.5× llama-server's at 8 clients",
    "fastest/slowest client ≤ 1.3× at 8 clients",
    "second-turn TTFT of interleaved conversations ≤ 1.2× llama-server's",
}


def test_smoke_run_writes_the_table_and_the_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["mode"] == "smoke" and results["rounds"] == 1
    assert {"cpu", "logical_cpus", "memory_gb", "python", "packages", "git_commit"} <= set(results["machine"])
    sections = results["sections"]
    assert {"gateway", "ledger", "usage_page"} <= set(sections)
    for name, section in sections.items():
        assert "error" not in section, (name, section.get("traceback", section["error"]))

    gateway = sections["gateway"]
    for system in ("direct", "floor", "gateway"):
        numbers = gateway["closed"][system]["1"]
        assert numbers["requests"] > 0 and numbers["errors"] == 0, (system, numbers)
        assert gateway["streams"][system]["chunks_min"] == gateway["streams_setup"]["chunks"], system
    assert gateway["closed"]["gateway"]["1"]["cpu_ms_per_req"] > 0
    assert sections["ledger"]["burst"]["committed"] == sections["ledger"]["burst"]["rows"]
    usage = sections["usage_page"]
    assert set(usage["query_ms"]) == {"day", "week", "month"}
    assert usage["widget"]["worst_range_redraw_ms"] > 0

    assert {t["target"] for t in results["targets"]} == TARGETS
    assert all(t["status"] in {"PASS", "FAIL", "N/A"} for t in results["targets"])
    assert "Gateway overhead" in done.stdout and "Targets" in done.stdout
    markdown = (tmp_path / "latest.md").read_text()
    assert markdown.startswith("`python -m bench --smoke") and "| status | target | measured |" in markdown
