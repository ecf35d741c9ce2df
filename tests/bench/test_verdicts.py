"""How the benchmark report turns measurements into verdicts: ratios taken sample by sample on the same work
(blocks of inputs, windows of load) and then the median, rather than a ratio of two medians that one
disturbed sample on either side can move; and LiteLLM compared per core."""

from __future__ import annotations

from typing import Any

from bench.embedded import _chat_paired, _embed_paired, _ttft_summary
from bench.gateway import _paired
from bench.ledger import verdicts
from bench.loadgen import _by_phase
from bench.report import targets


def _verdict(results: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in targets(results) if t["target"].startswith(name))


def _window(cpu: float, rps: float) -> dict[str, Any]:
    return {"cpu_ms_per_req": cpu, "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0}


def test_embedding_ratios_are_paired_block_by_block() -> None:
    # Three rounds of two blocks. Direct has one disturbed block (the machine busy while it ran): its sum
    # over the round would make the API look faster than it is, and a busy block on the API's side in
    # another round would make it look slower. Block by block, the API takes 2 % longer.
    rounds: dict[str, list[dict[str, Any]]] = {}
    direct = [[1.0, 1.0], [1.0, 1.6], [1.0, 1.0]]
    api = [[1.02, 1.02], [1.02, 1.02], [1.02, 1.5]]
    for shape in ("single", "batch32"):
        rounds[f"direct_{shape}"] = [{"block_seconds": b} for b in direct]
        rounds[f"engine_{shape}"] = [{"block_seconds": b} for b in direct]
        rounds[f"api_{shape}"] = [{"block_seconds": b} for b in api]
        rounds[f"api_float_{shape}"] = [{"block_seconds": b} for b in api]
    paired = _embed_paired(rounds)
    assert paired["batch32"]["api_vs_direct"]["blocks"] == 6
    assert abs(paired["batch32"]["api_vs_direct"]["median"] - 1 / 1.02) < 1e-9
    assert paired["single"]["engine_vs_direct"]["median"] == 1.0


def _results(
    embeddings_paired: dict[str, Any], closed: dict[str, Any], paired: dict[str, Any]
) -> dict[str, Any]:
    chat = {s: {"tok_s": 60.0, "ttft_ms": 180.0} for s in ("api_stream", "direct_stream", "api", "direct")}
    per_s = {
        f"{s}_{shape}": {"per_s": 100.0}
        for s in ("direct", "engine", "api", "api_float")
        for shape in ("single", "batch32")
    }
    return {
        "rounds": 3,
        "sections": {
            "embedded": {"chat": chat, "embeddings": per_s, "embeddings_paired": embeddings_paired},
            "gateway": {
                "closed": closed,
                "closed_paired": paired,
                "request": {"windows_per_round": 2, "duration_s": 3.0},
            },
        },
    }


def test_verdicts_follow_the_paired_medians() -> None:
    # Ratios of medians (the table) would say: CPU 2.2× the floor, embeddings at 90 %. Paired: 1.8×, 97 %.
    closed = {
        "gateway": {"16": _window(0.44, 2500.0)},
        "floor": {"16": _window(0.20, 4000.0)},
    }
    paired_gateway = {"cpu_vs_floor": {"16": {"median": 1.8, "windows": 6}}}
    shapes = {
        shape: {
            label: {"median": 0.97, "blocks": 24}
            for label in ("api_vs_direct", "api_float_vs_direct", "api_vs_engine")
        }
        for shape in ("single", "batch32")
    }
    results = _results(shapes, closed, paired_gateway)
    cpu = _verdict(results, "gateway CPU per relayed request")
    assert cpu["status"] == "PASS" and "c=16: 0.44 ms" in cpu["value"] and "1.80×" in cpu["value"]
    assert _verdict(results, "embeddings through the API")["status"] == "PASS"

    shapes["batch32"]["api_vs_direct"]["median"] = 0.94
    closed["gateway"]["16"] = _window(1.2, 2500.0)
    results = _results(shapes, closed, paired_gateway)
    assert _verdict(results, "embeddings through the API")["status"] == "FAIL"
    assert _verdict(results, "gateway CPU per relayed request")["status"] == "FAIL"


def test_litellm_is_compared_on_what_a_core_gives() -> None:
    # At c=1 the client waits for each answer: the gateway's measured req/s is bounded by the round trip
    # (14×), and so is the minimal aiohttp proxy's; per core of CPU the gateway gives 24× LiteLLM's.
    windows = {
        "gateway": {"1": [_window(0.68, 830.0)] * 2, "16": [_window(0.35, 2600.0)] * 2},
        "floor": {"1": [_window(0.41, 1160.0)] * 2, "16": [_window(0.20, 3800.0)] * 2},
        "litellm": {"1": [_window(16.3, 60.0)] * 2, "16": [_window(13.0, 77.0)] * 2},
    }
    closed = {name: {c: ws[0] for c, ws in by_c.items()} for name, by_c in windows.items()}
    paired = _paired(windows)  # type: ignore[arg-type]
    results = _results({}, closed, paired)
    verdict = _verdict(results, "gateway ≥ 10× LiteLLM")
    assert verdict["status"] == "PASS"
    assert "c=1: 24.0×" in verdict["value"] and "req/s as measured c=1: 13.8×" in verdict["value"]
    assert "the aiohttp floor at c=1: 19.3×" in verdict["value"]

    slow = {**windows, "gateway": {"1": [_window(1.8, 830.0)] * 2, "16": [_window(0.35, 2600.0)] * 2}}
    results = _results({}, {n: {c: ws[0] for c, ws in b.items()} for n, b in slow.items()}, _paired(slow))  # type: ignore[arg-type]
    assert _verdict(results, "gateway ≥ 10× LiteLLM")["status"] == "FAIL"  # 16.3 / 1.8 = 9.1× at c=1


def test_chat_is_compared_request_by_request() -> None:
    # One API request in nine ran while the machine was busy (40 tokens/s instead of 60): the ratio of the
    # rounds' medians would move with it; the median of the requests' ratios does not.
    direct = [{"tok_s_each": [60.0, 60.0, 60.0]}] * 3
    api = [{"tok_s_each": [61.0, 40.0, 61.0]}, {"tok_s_each": [61.0] * 3}, {"tok_s_each": [61.0] * 3}]
    rounds = {"direct_stream": direct, "direct": direct, "api_stream": api, "api": api}
    paired = _chat_paired(rounds)
    assert paired["api"]["requests"] == 9
    assert abs(paired["api"]["vs_direct"] - 61 / 60) < 1e-9
    results = _results({}, {}, {})
    results["sections"]["embedded"]["chat_paired"] = paired
    verdict = _verdict(results, "chat through the API")
    assert verdict["status"] == "PASS" and "median over 9 requests" in verdict["value"]
    paired["api"]["vs_direct"] = 0.9
    assert _verdict(results, "chat through the API")["status"] == "FAIL"


def test_time_to_first_token_is_the_median_difference_over_every_prompt() -> None:
    # Three rounds of four prompts; in two rounds the machine delayed two of the API's first tokens. Each
    # of those rounds' medians is then over 10 ms; over every prompt the API is 2 ms behind.
    direct = [{"ttft_ms": 170.0, "ttft_ms_each": [170.0] * 4, "requests": 4}] * 3
    api = [
        {"ttft_ms": 172.0, "ttft_ms_each": [172.0] * 4, "requests": 4},
        {"ttft_ms": 190.0, "ttft_ms_each": [172.0, 220.0, 200.0, 172.0], "requests": 4},
        {"ttft_ms": 190.0, "ttft_ms_each": [230.0, 172.0, 172.0, 190.0], "requests": 4},
    ]
    summary = _ttft_summary({"direct_stream": direct, "api_stream": api})["api_stream"]
    assert summary["vs_direct_ms"] == 2.0
    assert summary["vs_direct_ms_of_rounds"] == 11.0
    assert summary["requests"] == 12


def _phases(rps: list[float]) -> dict[str, Any]:
    return {"phases": [{"rps": r, "p50_ms": 1000 / r, "cpu_ms_per_req": 900 / r} for r in rps]}


def test_ledger_load_is_judged_second_by_second_against_the_seconds_either_side() -> None:
    # The machine speeds up through each round (a drift of 40 req/s a second) and one unloaded second is
    # disturbed; loaded (odd) seconds run 5 % below the unloaded trend. Each loaded second against the
    # mean of its two neighbours cancels the drift, and the median leaves the disturbed second out.
    rounds = []
    for start in (1000.0, 1500.0, 2000.0):
        trend = [start + 40 * second for second in range(9)]
        rps = [r * (0.95 if second % 2 else 1.0) for second, r in enumerate(trend)]
        if start == 1000.0:
            rps[4] *= 0.5
        rounds.append(_phases(rps))
    judged = verdicts(rounds)
    assert judged["windows"] == 12
    assert abs(judged["rps_ratio"] - 0.95) < 1e-9
    assert abs(judged["p50_ratio"] - 1 / 0.95) < 1e-3
    ledger = {
        "burst": {"rows_per_s": 100_000.0, "rows": 1000},
        **judged,
        "load": {"rows_per_s": 5000.0},
        "rows_per_s_target": 5000,
        "slowdown_limit": 1.10,
    }
    passed = _verdict({"sections": {"ledger": ledger}}, "ledger")
    assert passed["status"] == "PASS" and "medians over 12 one-second windows under load" in passed["value"]
    slowed = verdicts([_phases([1000.0, 880.0] * 4 + [1000.0])])
    assert slowed["rps_ratio"] == 0.88
    assert _verdict({"sections": {"ledger": {**ledger, **slowed}}}, "ledger")["status"] == "FAIL"


def test_the_load_generator_counts_a_request_in_the_phase_it_ended_in_after_the_settling() -> None:
    phases = {"epoch": 100.0, "phase_s": 1.0, "count": 3, "settle_s": 0.1}
    per_phase: list[list[float]] = [[], [], []]
    for ended in (99.9, 100.05, 100.5, 101.09, 101.11, 102.99, 103.0):
        _by_phase(phases, per_phase, ended, ended)
    assert per_phase == [[100.5], [101.11], [102.99]]
