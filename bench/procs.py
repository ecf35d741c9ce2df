"""Processes under test: spawn them pinned to cores, wait for their port, read their CPU time, stop them."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def child_setup(cpus: set[int] | None) -> None:
    """In a child before it runs: pin it to ``cpus`` and have it terminated if the harness dies.

    (Its priority is the harness's own, which ``--nice`` sets before anything starts.)"""
    if cpus:
        os.sched_setaffinity(0, cpus)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def split_cores() -> tuple[set[int], set[int]]:
    """(client cores, cores for the system under test): the first core for load generator and mocks, the
    second for the system measured; on a single core everything shares it."""
    available = cores()
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, {available[1]}


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def _children(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return tree


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User + system CPU of a process (all its threads) and, with ``tree``, of its live descendants."""
    total = 0
    for member in _children(pid) if tree else [pid]:
        fields = _stat(member)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICKS


def runqueue_wait_seconds(pid: int) -> float:
    """Seconds the threads of a process (and its live descendants) spent runnable but waiting for a CPU
    (``/proc/<pid>/task/<tid>/schedstat``): how much other work on the machine held it back."""
    total = 0
    for member in _children(pid):
        try:
            tasks = list(Path(f"/proc/{member}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Proc:
    """One process under test (or helping the test): its output goes to a log file in the run directory."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        logs: Path,
        env: dict[str, str] | None = None,
        cpus: Iterable[int] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cpus = set(cpus) if cpus is not None else None
        self.log_path = logs / f"{name}.log"
        self._stdin = stdin
        self._stdout_pipe = stdout_pipe
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop)
        cpus = self.cpus

        def pin() -> None:
            child_setup(cpus)

        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdin=self._stdin,
            stdout=subprocess.PIPE if self._stdout_pipe else self._log,
            stderr=self._log,
            preexec_fn=pin,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen is not None:
            for stream in (self.popen.stdin, self.popen.stdout):
                if stream is not None:
                    stream.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Proc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_http(
    url: str, proc: Proc | None = None, timeout: float = 120.0, headers: dict[str, str] | None = None
) -> None:
    """Wait until ``url`` answers 200 (or ``proc`` dies, which raises with its log's tail)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.tail()}")
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(
        f"{url} did not answer within {timeout:.0f} s ({last})" + (f"\n{proc.tail()}" if proc else "")
    )


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def run_json(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cpus: Iterable[int] | None = None,
    timeout: float = 600.0,
) -> Any:
    """Run a helper process that prints one JSON document last on stdout, and return it."""
    cpu_set = set(cpus) if cpus is not None else None

    def pin() -> None:
        child_setup(cpu_set)

    done = subprocess.run(
        list(argv),
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
        preexec_fn=pin,
        check=False,
    )
    lines = [line for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(argv[:4])} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}"
        )
    return json.loads(lines[-1])
