"""Install the project into the running interpreter's environment exactly as a lock file pins it.

``make install`` (``packaging/lock/app.txt``), ``make test`` (``test.txt``) and ``make package``
(``package.txt``) run this with the virtual environment's Python:

1. every locked package but llama-cpp-python, hash-checked, without resolving anything (``--no-deps``:
   the lock already holds every package, transitive ones included);
2. llama-cpp-python from the portable wheel ``packaging/llama_build.py`` builds (or finds in its cache)
   from the locked, hash-checked source, in a process of its own that compiles while step 1 runs;
3. the project itself, editable, without its dependencies (they are in place).

A lock made on another platform may name packages this one has no wheels for; ``make lock`` on that
platform makes its own (see README, "Reproducible installs").
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_llama_build() -> object:
    spec = importlib.util.spec_from_file_location("aisp_llama_build", ROOT / "packaging" / "llama_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without(lock_text: str, name: str) -> str:
    """The lock's text with one package's entry (its pin, hashes and ``# via`` lines) taken out."""
    kept: list[str] = []
    skipping = False
    for line in lock_text.splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            skipping = line.split("==", 1)[0].strip().lower() == name
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + "\n"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def start_llama_build(lock: Path, cmake_args: str) -> subprocess.Popen[str]:
    """``llama_build.py`` in a process of its own (and its own process group, to be stopped whole); it
    prints the wheel's path last."""
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "packaging" / "llama_build.py"),
            "--lock",
            str(lock),
            "--cmake-args",
            cmake_args,
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=os.name == "posix",
    )


def stop(process: subprocess.Popen[str]) -> None:
    """End the build and the compilers it started."""
    if process.poll() is None:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--cmake-args", default=os.environ.get("CMAKE_ARGS", ""))
    options = parser.parse_args()
    package: str = _load_llama_build().PACKAGE  # type: ignore[attr-defined]
    # llama.cpp compiles (minutes, every core) while pip downloads and unpacks the rest (the network and
    # the disk): together they take about as long as the compile alone.
    building = start_llama_build(options.lock, options.cmake_args)
    try:
        with tempfile.TemporaryDirectory(prefix="aisp-install-") as work:
            rest = Path(work) / options.lock.name
            rest.write_text(without(options.lock.read_text(encoding="utf-8"), package), encoding="utf-8")
            pip("install", "--quiet", "--no-deps", "--require-hashes", "-r", str(rest))
    except BaseException:
        stop(building)
        raise
    output, _ = building.communicate()
    if building.returncode != 0:
        return building.returncode
    wheel = output.strip().splitlines()[-1]
    pip("install", "--quiet", "--no-deps", "--force-reinstall", wheel)
    pip("install", "--quiet", "--no-deps", "--no-build-isolation", "--editable", str(ROOT))
    pip("check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
