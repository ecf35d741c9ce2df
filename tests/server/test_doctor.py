"""``ai-service-platform doctor`` as a support request would use it: the machine's facts, each model loaded
and run, exit status 0 only when everything worked, otherwise the reason on the last line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.config import default_models
from server.doctor import BRIEF_TOKENS

ROOT = Path(__file__).resolve().parents[2]


def doctor(
    tmp_path: Path, models: list[dict[str, Any]] | None, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {"AISP_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if models is not None:
        table = tmp_path / "models.json"
        table.write_text(json.dumps(models))
        env["AISP_MODELS"] = str(table)
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


FAKE = {"name": "fake-chat", "kind": "chat", "engine": "fake", "source": "process=1"}


def test_the_facts_and_a_working_model_exit_zero(tmp_path: Path) -> None:
    done = doctor(tmp_path, [FAKE], "--only", "chat")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "instruction sets" in lines[0]
    assert any(line.startswith("llama.cpp ") and "CPU backend" in line for line in lines)
    assert any(line.startswith("AMX: not used") for line in lines)
    assert any(line.startswith("GPU offload: ") for line in lines)
    assert any(line.startswith("Memory: ") for line in lines)
    assert f"Server log: {tmp_path / 'data' / 'logs' / 'server.log'} " in done.stdout
    # The fake engine answers with the words of the prompt ("Say hello."), one token each.
    assert any(
        re.match(r"chat fake-chat: loaded in [\d.]+ s; 2 tokens in [\d.]+ s", line) for line in lines
    ), lines
    assert lines[-1] == "doctor: everything worked"


def test_a_model_that_does_not_load_fails_with_its_reason_on_the_last_line(tmp_path: Path) -> None:
    missing = {"name": "gone", "kind": "chat", "engine": "llama.cpp", "source": str(tmp_path / "gone.gguf")}
    done = doctor(tmp_path, [FAKE, missing], "--only", "chat")
    assert done.returncode == 1
    assert (
        done.stdout.splitlines()[-1]
        == f"doctor: FAILED: chat gone: did not load: no GGUF file at {tmp_path / 'gone.gguf'}"
    )


def test_an_engine_that_crashes_is_reported_with_the_signal(tmp_path: Path) -> None:
    crashing = dict(FAKE, source="process=1,crash_at=2")
    done = doctor(tmp_path, [crashing], "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and "SIGSEGV" in report["reason"]
    assert report["models"][0]["ok"] is False and "crashed" in report["models"][0]["error"]


@pytest.mark.slow
def test_the_embedded_models_run_and_the_json_report_names_the_cpu_backend(tmp_path: Path) -> None:
    if not all(config.source for config in default_models()):
        pytest.skip("the embedded models' packages are not installed")
    done = doctor(tmp_path, None, "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["reason"] is None
    llama = report["hardware"]["llama"]
    assert llama["dynamic"] and llama["cpu_variant"] and not llama["amx_used"]
    assert report["hardware"]["torch_version"]
    chat, embedding = report["models"]
    assert (chat["kind"], chat["tokens"], embedding["kind"], embedding["dimensions"]) == (
        "chat",
        4,
        "embedding",
        384,
    )
    assert chat["tokens_per_second"] > 0 and embedding["embed_ms"] > 0


def test_brief_runs_the_chat_model_on_a_few_prompt_tokens_and_generates_two(tmp_path: Path) -> None:
    """What the emulated-CPU checks run: the template still renders, the model still evaluates a batch and
    then single tokens, in a fraction of the time."""
    chat = default_models()[0]
    if not chat.source:
        pytest.skip("the embedded chat model's package is not installed")
    done = doctor(tmp_path, None, "--only", "chat", "--in-process", "--brief", "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (model,) = json.loads(done.stdout)["models"]
    assert (model["name"], model["tokens"]) == (chat.name, BRIEF_TOKENS) and model["text"]


def test_an_unknown_model_name_is_refused(tmp_path: Path) -> None:
    done = doctor(tmp_path, [FAKE], "--model", "nope")
    assert (
        done.returncode == 1
        and done.stdout.strip() == "doctor: FAILED: no local model named 'nope' in the model table"
    )
