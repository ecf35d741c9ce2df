"""The tool-calling examples of the help page (General Information) and the README run as written against a
model that can call tools: the embedded SmolLM2 rendered by Qwen3's template (``templated_live``) in place
of ``qwen3-30b-a3b``. tests/app/test_info.py runs the help's examples against the window's fake models."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.conftest import TOOL_CHAT
from tests.conftest import Live

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HELP = ROOT / "resources" / "help" / "openai-compatibility.md"
README = ROOT / "README.md"
NODE_MODULES = ROOT / "tests" / "clients" / "node_modules"


def help_examples(live: Live) -> dict[str, str]:
    """The Tool calling section's examples by title (curl, Python, JavaScript), placeholders filled in."""
    section = HELP.read_text(encoding="utf-8").split("### Tool calling", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```\w+ (\w+)\n(.*?)```", section, re.S)
    return {
        title: text.replace("{{base_url}}", live.base_url).replace("{{chat_model}}", TOOL_CHAT)
        for title, text in blocks
    }


def run(command: list[str], live: Live, cwd: Path) -> str:
    env = {**os.environ, "OPENAI_API_KEY": live.key}
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_help_examples_call_the_function_and_answer(templated_live: Live, tmp_path: Path) -> None:
    examples = help_examples(templated_live)
    assert set(examples) == {"curl", "Python", "JavaScript"}
    curl = "set -euo pipefail\n" + examples["curl"].replace("curl ", "curl -sS --fail-with-body ")
    out = run(["bash", "-c", curl], templated_live, tmp_path)
    first, end = json.JSONDecoder().raw_decode(out)  # curl prints each answer without a newline after it
    second, _ = json.JSONDecoder().raw_decode(out[end:].lstrip())
    (call,) = first["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and "city" in json.loads(call["function"]["arguments"])
    assert second["choices"][0]["message"]["content"]
    out = run([sys.executable, "-c", examples["Python"]], templated_live, tmp_path)
    assert out.startswith("called get_weather {") and len(out.splitlines()) >= 2, out
    if shutil.which("node") is None or not NODE_MODULES.is_dir():
        pytest.skip("the JavaScript example needs node and tests/clients/node_modules (make test-clients)")
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)
    script = tmp_path / "tools.mjs"
    script.write_text(examples["JavaScript"], encoding="utf-8")
    out = run(["node", str(script)], templated_live, tmp_path)
    assert out.startswith("called get_weather {") and len(out.splitlines()) >= 2, out


def test_the_readme_example_runs(templated_live: Live, tmp_path: Path) -> None:
    (block,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
        if "tools" in b
    ]
    code = (
        block.replace("http://127.0.0.1:8090/v1", templated_live.base_url)
        .replace("aisp-...", templated_live.key)
        .replace("qwen3-30b-a3b", TOOL_CHAT)
    )
    assert run([sys.executable, "-c", code], templated_live, tmp_path).strip()
