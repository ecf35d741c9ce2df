"""The bundle as a user without Python meets it: found or built, copied to a folder of its own, and run
with a bare environment (no virtual environment, no PYTHONPATH, only PATH, HOME and what the test names)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import httpx

ROOT = Path(__file__).resolve().parents[2]
NAME = "ai-service-platform"
DIST = ROOT / "dist"
BUNDLE = DIST / NAME
CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"
BUILD_TIMEOUT = 900.0
READY_TIMEOUT = 180.0


def build_script() -> ModuleType:
    """packaging/build.py, loaded by path: the folder is not a package (``packaging`` is a PyPI name)."""
    spec = importlib.util.spec_from_file_location("aisp_packaging_build", ROOT / "packaging" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_bundle() -> Path:
    """The bundle of the sources as they are now: reused when its stamp says so, built otherwise.

    ``AISP_TEST_BUNDLE=path`` tests the bundle at that path as it is (one built elsewhere, say)."""
    given = os.environ.get("AISP_TEST_BUNDLE")
    if given:
        assert (Path(given) / NAME).is_file(), f"AISP_TEST_BUNDLE={given} holds no {NAME} executable"
        return Path(given)
    build = build_script()
    if not build.is_current(DIST):
        subprocess.run(
            [sys.executable, str(ROOT / "packaging" / "build.py")],
            cwd=ROOT,
            check=True,
            timeout=BUILD_TIMEOUT,
        )
    assert build.is_current(DIST), "the build finished but its stamp does not match the sources"
    return BUNDLE


def copy_bundle(source: Path, target: Path) -> Path:
    """A copy of the bundle in a folder of its own (hard links where the file system allows them)."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy)
    return target


def bare_env(home: Path, **variables: str | Path) -> dict[str, str]:
    """What ``env -i`` leaves, plus a home, the offscreen Qt platform and the variables given."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    env.update({name: str(value) for name, value in variables.items()})
    return env


def run(executable: Path, *args: str, env: dict[str, str], cwd: Path, timeout: float = 120.0) -> str:
    """Run a verb to completion and return its standard output; fail with its standard error."""
    done = subprocess.run(
        [str(executable), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"{executable.name} {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    )
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder with its size and modification time: to show nothing writes there."""
    found: dict[str, tuple[int, int]] = {}
    for directory, names, files in os.walk(folder):
        for name in files + names:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            found[os.path.relpath(path, folder)] = (
                info.st_size if not os.path.isdir(path) else 0,
                info.st_mtime_ns,
            )
    return found


def mapped_files(pid: int) -> set[str]:
    """The files a running process has mapped: its executable and every shared library it loaded."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            paths.add(parts[5].removesuffix(" (deleted)"))
    return paths


@contextmanager
def serving(
    executable: Path, key: str, env: dict[str, str], cwd: Path, log: Path
) -> Iterator[tuple[str, int]]:
    """``serve`` on a free port until both embedded models answer ``/v1/models``; yields (base URL, pid).
    On leaving, the server is sent SIGTERM and must exit cleanly."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(executable), "serve", "--port", str(port)], env=env, cwd=cwd, stdout=output, stderr=output
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        served: set[str] = set()
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answer = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
                if answer.status_code == 200:
                    served = {m["id"] for m in answer.json()["data"]}
                    if {CHAT_MODEL, EMBEDDING_MODEL} <= served:
                        break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"the bundle's server was not serving both models within {READY_TIMEOUT:.0f} s "
                f"(exit code {process.poll()}, serving {sorted(served)}):\n{tail(log)}"
            )
        yield base, process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"serve did not stop within 30 s of SIGTERM:\n{tail(log)}") from None
    assert code == 0, f"serve exited {code} after SIGTERM:\n{tail(log)}"


def tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
