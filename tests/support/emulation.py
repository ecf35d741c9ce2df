"""Running a program under Debian's qemu-user as an older x86-64 CPU than this machine's."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

EMULATED = {"Haswell": "haswell", "Nehalem": "sse42"}
"""QEMU's CPU model, and the llama.cpp CPU backend that fits it best."""


def qemu() -> str:
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("emulates x86-64 CPUs on an x86-64 machine")
    found = shutil.which("qemu-x86_64")
    if found is None:
        why = "qemu-x86_64 is not installed (Debian's qemu-user; .ci/run installs it)"
        if os.environ.get("AISP_REQUIRE_QEMU") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return found


def emulated_doctor(
    command: list[str], cpu: str, data: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> dict[str, object]:
    """``doctor --only chat --in-process --brief --json`` run under QEMU as ``cpu`` (in ``env``, by default
    this process's environment); its JSON report."""
    env = {
        **(os.environ if env is None else env),
        "AISP_DATA_DIR": str(data),
        # OpenBLAS (inside numpy) picks its kernels by the CPU's model number, which QEMU's user mode does not
        # report as the CPU it emulates: told the model, it keeps to instructions that CPU has.
        "OPENBLAS_CORETYPE": cpu,
    }
    done = subprocess.run(
        [qemu(), "-cpu", cpu, *command, "doctor", "--only", "chat", "--in-process", "--brief", "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=data.parent,
    )
    assert done.returncode == 0, (
        f"doctor under -cpu {cpu} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    report: dict[str, object] = json.loads(done.stdout)
    return report
