"""llama.cpp as built here runs on other CPUs than this one: under Debian's qemu-user emulating a Haswell
(AVX2, no AVX-512) and a Nehalem (SSE4.2, no AVX), the doctor loads the CPU backend made for that CPU and
the embedded SmolLM2 generates. The AMX backend, which crashes llama.cpp, is never chosen."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from server.doctor import BRIEF_TOKENS
from server.engines import llama_backends
from server.engines.llama_backends import EXCLUDED_VARIANTS, choose
from tests.support.emulation import EMULATED, emulated_doctor


@pytest.mark.slow
@pytest.mark.parametrize("cpu", list(EMULATED))
def test_the_embedded_model_generates_on_an_older_cpu_with_the_backend_made_for_it(
    cpu: str, tmp_path: Path
) -> None:
    report = emulated_doctor([sys.executable, "-m", "server.cli"], cpu, tmp_path / "data")
    assert report["ok"] is True, report["reason"]
    hardware = report["hardware"]
    assert isinstance(hardware, dict) and hardware["llama"]["cpu_variant"] == EMULATED[cpu]
    models = report["models"]
    assert isinstance(models, list) and len(models) == 1
    model = models[0]
    assert model["name"] == "smollm2-135m-instruct" and model["tokens"] == BRIEF_TOKENS and model["text"]


def test_this_machine_loads_the_best_backend_that_runs_on_it_and_never_the_amx_one() -> None:
    report = llama_backends.load()
    assert report.dynamic, "llama.cpp was built for one CPU: run `make install` to build it portably"
    assert report.cpu_variant is not None and report.scores[report.cpu_variant] > 0
    assert report.cpu_variant not in EXCLUDED_VARIANTS
    best = max(score for name, score in report.scores.items() if name not in EXCLUDED_VARIANTS)
    assert report.scores[report.cpu_variant] == best
    assert {"x64", "sse42", "haswell", "skylakex", "zen4"} <= set(report.scores)


def test_the_amx_backend_is_not_chosen_even_where_it_would_score_best() -> None:
    # As on a Sapphire Rapids Xeon: every backend runs, and the AMX one scores highest.
    scores = {"x64": 1, "haswell": 64, "skylakex": 192, "icelake": 1472, "zen4": 1984, "sapphirerapids": 4032}
    assert choose(scores) == "zen4"
    assert choose({"sapphirerapids": 4032}) is None
    assert choose({"x64": 1, "haswell": 0}) == "x64"
    assert choose({"haswell": 0}) is None
