"""The machine a run happened on: CPU, cores, memory, OS, Python, package versions, git commit."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.procs import ROOT, cores

PACKAGES = (
    "llama_cpp_python",
    "sentence-transformers",
    "torch",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "aiohttp",
    "peewee",
    "PySide6_Essentials",
    "qasync",
    "uvloop",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        return ""


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_digest() -> str:
    """A digest of the Python sources measured (server/, app/): which code ran, committed or not."""
    digest = hashlib.sha256()
    for folder in ("server", "app"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def machine_facts() -> dict[str, Any]:
    status = _git("status", "--porcelain")
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": cores(),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "distribution": _os_release(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status),
        "source_digest": source_digest(),
        "load_average_at_start": list(os.getloadavg()),
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return ""
