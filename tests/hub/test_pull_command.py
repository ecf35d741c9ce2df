"""``ai-service-platform models …`` as an operator runs it on a headless machine, against the fake endpoint:
list a repository, pull a quantisation with progress, be told what a gated repository needs, keep a token,
and go on with a pull interrupted by Ctrl+C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from server.services import settings_from_store
from tests.support.fake_hub import GATED_REPO, GGUF_REPO, SMOL, TOKEN, FakeHub

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def command(data: Path, hub: FakeHub) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "AISP_DATA_DIR": str(data), "AISP_HF_ENDPOINT": hub.url, "PYTHONPATH": str(ROOT)}
    return [sys.executable, "-m", "server.cli", "models"], env


def run(data: Path, hub: FakeHub, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    base, env = command(data, hub)
    return subprocess.run(
        [*base, *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=180
    )


def test_list_files_shows_the_quantisations_and_the_recommendation(tmp_path: Path, hub: FakeHub) -> None:
    listed = run(tmp_path, hub, "list-files", GGUF_REPO)
    assert listed.returncode == 0, listed.stderr
    assert "Q4_1" in listed.stdout and "(recommended)" in listed.stdout and "93.81 MiB" in listed.stdout


def test_pull_downloads_a_quantisation_and_adds_it_to_the_table(tmp_path: Path, hub: FakeHub) -> None:
    pulled = run(tmp_path, hub, "pull", GGUF_REPO, "--quant", "q4_1", "--name", "smol")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == "smol\n"
    assert "Downloading  0%" in pulled.stderr  # a progress line, then what became of it
    assert f"added to the model table as smol ({tmp_path / 'models'}" in pulled.stderr
    assert "the server loads it at its next start" in pulled.stderr
    model = settings_from_store(environ={"AISP_DATA_DIR": str(tmp_path)}).model("smol")
    assert model is not None and model.source == str(tmp_path / "models" / GGUF_REPO / SMOL.name)
    again = run(tmp_path, hub, "pull", GGUF_REPO, "--quant", "Q8_0")
    assert (
        again.returncode == 1 and "no quantisation 'Q8_0' in this repository (it has: Q4_1)" in again.stderr
    )


def test_a_gated_pull_says_what_to_do_and_works_once_the_token_is_kept(tmp_path: Path, hub: FakeHub) -> None:
    refused = run(tmp_path, hub, "pull", GATED_REPO)
    assert refused.returncode == 1
    assert f"accept its licence at {hub.url}/{GATED_REPO}" in refused.stderr

    kept = run(tmp_path, hub, "token", "set", stdin=TOKEN + "\n")
    assert kept.returncode == 0 and f"kept in the file {tmp_path / 'hf-token'}" in kept.stderr
    shown = run(tmp_path, hub, "token", "show")
    assert shown.stdout == f"an access token is kept in the file {tmp_path / 'hf-token'}\n"
    pulled = run(tmp_path, hub, "pull", GATED_REPO)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == "gated-minilm\n"
    for output in (refused, kept, shown, pulled):
        assert TOKEN not in output.stdout + output.stderr


def test_ctrl_c_pauses_a_pull_and_the_same_command_goes_on_with_it(tmp_path: Path, hub: FakeHub) -> None:
    hub.rate = 10 * MB
    base, env = command(tmp_path, hub)
    pulling = subprocess.Popen(
        [*base, "pull", GGUF_REPO],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        # Ctrl+C as at a terminal, even when these tests run in the background (where a shell without job
        # control starts its commands with SIGINT ignored, and Python then never raises KeyboardInterrupt).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    staged = tmp_path / "models" / ".downloads"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(p.stat().st_size for p in staged.rglob("*.gguf")) < 20 * MB:
        time.sleep(0.2)
    pulling.send_signal(signal.SIGINT)
    out, err = pulling.communicate(timeout=60)
    assert pulling.returncode == 130, err
    assert "paused at" in err and "run the same command again" in err

    hub.rate = None
    resumed = run(tmp_path, hub, "pull", GGUF_REPO)
    assert resumed.returncode == 0, resumed.stderr
    starts = [s.range for s in hub.requests_for(SMOL.name) if "/blobs/" in s.path]
    assert starts[0] is None and starts[-1] is not None and int(starts[-1][6:-1]) >= 20 * MB
    assert (tmp_path / "models" / GGUF_REPO / SMOL.name).stat().st_size == SMOL.stat().st_size
