"""Starting each system under test as its own process: the gateway (``ai-service-platform serve``), the mock
upstream, the aiohttp floor, LiteLLM's proxy and ``python -m llama_cpp.server``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, ROOT, Proc, free_port, get_json, wait_http
from server.engines import llama_backends

LITELLM_VERSION = "1.108.0"
"""Pinned: the newest release whose ``[proxy]`` extra resolves from PyPI here (1.108.x–1.110.x name
``litellm-proxy``/``litellm-proxy-extras`` releases that were never published; 1.107.0 was pulled)."""
LITELLM_ENV = ROOT / "bench" / ".envs" / "litellm"
LITELLM_MASTER_KEY = "sk-bench-master-0123456789"
MOCK_MODEL = "m"


@dataclass
class Running:
    """A started system: its process(es), base URL (ending in ``/v1``) and the key to call it with."""

    name: str
    procs: list[Proc]
    base_url: str
    key: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.procs[0].pid

    @property
    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.key:
            headers["authorization"] = f"Bearer {self.key}"
        return headers

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def cli_command() -> list[str]:
    """``ai-service-platform`` as its console script runs it (``app.main:main``, which hands every verb to
    ``server.cli``), from this tree: the installed script would import whichever tree was installed."""
    if (ROOT / "app" / "main.py").exists():
        return [PYTHON, "-m", "app.main"]
    return [PYTHON, "-c", "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"]


def start_mock(name: str, logs: Path, cpus: Iterable[int] | None, *, chunks: int, interval: float) -> Running:
    port = free_port()
    proc = Proc(
        name,
        [
            PYTHON,
            "-m",
            "bench.mock_server",
            "--port",
            str(port),
            "--chunks",
            str(chunks),
            "--interval",
            str(interval),
            "--model",
            MOCK_MODEL,
        ],
        logs=logs,
        cpus=cpus,
    ).start()
    url = f"http://127.0.0.1:{port}/v1"
    wait_http(url + "/models", proc, timeout=30)
    return Running(name, [proc], url)


def start_floor(
    name: str, logs: Path, cpus: Iterable[int] | None, upstream: str, loop: str = "uvloop"
) -> Running:
    port = free_port()
    argv = [PYTHON, "-m", "bench.floor", "--port", str(port), "--upstream", upstream, "--loop", loop]
    proc = Proc(name, argv, logs=logs, cpus=cpus)
    proc.start()
    url = f"http://127.0.0.1:{port}/v1"
    wait_http(url + "/models", proc, timeout=30)
    return Running(name, [proc], url)


def start_gateway(
    name: str,
    workdir: Path,
    logs: Path,
    cpus: Iterable[int] | None,
    *,
    models: list[dict[str, Any]] | None = None,
    expect: Iterable[str] = (),
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 240.0,
) -> Running:
    """``ai-service-platform serve`` on a fresh data directory, with a key created by ``keys create``;
    returns once every model in ``expect`` is listed by ``/v1/models``."""
    data = workdir / name
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    environment = {
        "AISP_DATA_DIR": str(data / "data"),
        "AISP_PORT": str(port),
        "AISP_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "QT_QPA_PLATFORM": "offscreen",
        **(env or {}),
    }
    if models is not None:
        table = data / "models.json"
        table.write_text(json.dumps(models))
        environment["AISP_MODELS"] = str(table)
    created = subprocess.run(
        [
            PYTHON,
            "-c",
            "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))",
            "keys",
            "create",
            "--name",
            "bench",
        ],
        env={**_base_env(), **environment},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    key = created.stdout.strip()
    if created.returncode != 0 or not key:
        raise RuntimeError(f"keys create failed: {created.stderr[-1500:]}")
    proc = Proc(name, [*(command or cli_command()), "serve"], logs=logs, env=environment, cpus=cpus).start()
    url = f"http://127.0.0.1:{port}/v1"
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=timeout)
    wanted = set(expect)
    if wanted:
        _wait_models(url, key, wanted, proc, timeout)
    return Running(name, [proc], url, key)


def _base_env() -> dict[str, str]:
    return dict(os.environ)


def _wait_models(url: str, key: str, wanted: set[str], proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    listed: set[str] = set()
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            listed = {m["id"] for m in get_json(url + "/models", {"authorization": f"Bearer {key}"})["data"]}
        except OSError:
            listed = set()
        if wanted <= listed:
            return
        time.sleep(0.25)
    raise RuntimeError(f"{proc.name}: models {sorted(wanted - listed)} did not load within {timeout:.0f} s")


def llama_cpp_environment() -> dict[str, str]:
    """For a program that loads llama.cpp itself: the CPU variant the server would load, which llama.cpp's
    own loader would not find (it looks beside the executable and in the working directory)."""
    library = llama_backends.best_cpu_library()
    return {"GGML_BACKEND_PATH": str(library)} if library else {}


def start_llama_server(
    name: str, logs: Path, cpus: Iterable[int] | None, *, gguf: str, n_ctx: int, threads: int, alias: str
) -> Running:
    port = free_port()
    proc = Proc(
        name,
        [
            PYTHON,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--n_batch",
            "512",
            "--verbose",
            "false",
            # By default a new request interrupts the one running: 8 concurrent clients would cancel 7 streams.
            "--interrupt_requests",
            "false",
        ],
        logs=logs,
        cpus=cpus,
        env={"PYTHONWARNINGS": "ignore", **llama_cpp_environment()},
    ).start()
    url = f"http://127.0.0.1:{port}/v1"
    wait_http(url + "/models", proc, timeout=120)
    return Running(name, [proc], url)


def litellm_available() -> str | None:
    """Why LiteLLM cannot run here, or None when its environment holds the pinned version."""
    if not (LITELLM_ENV / "bin" / "litellm").exists():
        return f"LiteLLM is not installed in {LITELLM_ENV} (make bench installs litellm[proxy]=={LITELLM_VERSION})"
    if not any(LITELLM_ENV.glob(f"lib/python*/site-packages/litellm-{LITELLM_VERSION}.dist-info")):
        return f"{LITELLM_ENV} does not hold litellm {LITELLM_VERSION}, the pinned version"
    return None


def start_litellm(
    name: str, workdir: Path, logs: Path, cpus: Iterable[int] | None, routes: dict[str, str]
) -> Running:
    """LiteLLM's proxy, one worker, routing each served name to ``openai/m`` at its mock's base URL.

    Its virtual keys live in a database reached through Prisma, whose query engine Prisma downloads from
    its own servers at ``prisma generate``: not reachable from this machine. So the proxy runs without a
    database and is called with its master key (its cheapest authentication path)."""
    config = workdir / "litellm.yaml"
    lines = ["model_list:"]
    for served, base in routes.items():
        lines += [
            f"  - model_name: {served}",
            "    litellm_params:",
            f"      model: openai/{MOCK_MODEL}",
            f"      api_base: {base}",
            "      api_key: sk-mock",
        ]
    lines += [
        "litellm_settings:",
        "  telemetry: false",
        "  drop_params: true",
        "general_settings:",
        f"  master_key: {LITELLM_MASTER_KEY}",
    ]
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    proc = Proc(
        name,
        [
            str(LITELLM_ENV / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        logs=logs,
        cpus=cpus,
        env={
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "NO_DOCS": "True",
            "DISABLE_ADMIN_UI": "True",
        },
    ).start()
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health/liveliness", proc, timeout=180)
    return Running(
        name,
        [proc],
        base + "/v1",
        LITELLM_MASTER_KEY,
        notes=[
            "master key, no database: virtual keys need Prisma's query engine, which cannot be downloaded here"
        ],
    )
