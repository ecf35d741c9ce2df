"""Build llama-cpp-python the way llama.cpp's own releases are built: portable across CPUs.

The published llama-cpp-python is a source package that compiles llama.cpp on install, by default with
``-march=native``: the library then runs only on CPUs with every instruction of the build machine, and a
bundle built on one workstation dies with SIGILL on most others. Here llama.cpp is compiled with
``GGML_NATIVE=OFF``, ``GGML_BACKEND_DL=ON`` and ``GGML_CPU_ALL_VARIANTS=ON``: one CPU backend per x86-64
level (``libggml-cpu-haswell.so``, ``…-skylakex.so``, …), of which the server loads the best one for the CPU
it runs on (``server/engines/llama_backends.py``). The variants are installed beside llama.cpp's other
libraries in ``llama_cpp/lib`` (llama-cpp-python's own install rules leave them out of that folder).

The source package is checked against the hashes in the lock file before it is built, and the built wheel
is kept in a cache keyed on the version, the source's hash and the build flags, so a new virtual
environment (or ``make package`` after ``make install``) reuses it. pip's own wheel cache is not used: it
keys a built wheel on the source only, so a wheel built once with other flags would be reused silently.

Usage: ``python packaging/llama_build.py --lock packaging/lock/app.txt [--cmake-args "..."]``; prints the
wheel's path. ``make install`` runs it through ``packaging/install.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llama-cpp-python"
PORTABLE_ARGS = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_BACKEND_DL=ON",
    "-DGGML_CPU_ALL_VARIANTS=ON",
    # Text only: the multimodal library is not needed.
    "-DLLAVA_BUILD=OFF",
    # ggml installs its backend modules to the install prefix's bin/ (the top of site-packages in a
    # wheel); this puts them, and its libraries, in llama_cpp/lib beside libllama.
    "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib",
    "-DCMAKE_INSTALL_LIBDIR=llama_cpp/lib",
)
"""The flags every build gets; ``--cmake-args`` (``make CMAKE_ARGS=…``) adds to them, e.g. CUDA."""
FORBIDDEN_ARGS = ("-DGGML_NATIVE=ON", "-march=native", "-DGGML_CPU_ALL_VARIANTS=OFF", "-DGGML_BACKEND_DL=OFF")
"""Flags that would make the build run only on CPUs like the build machine's."""


class BuildError(RuntimeError):
    pass


def locked(lock: Path, name: str = PACKAGE) -> tuple[str, set[str]]:
    """The version and the sha256 hashes the lock file pins for ``name``."""
    text = lock.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(name)}==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{{64}})+)", text, re.M)
    if match is None:
        raise BuildError(f"{lock} pins no {name} with hashes")
    return match.group(1), set(re.findall(r"sha256:([0-9a-f]{64})", match.group(2)))


def cache_root() -> Path:
    base = os.environ.get("AISP_BUILD_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ai-service-platform"


def build_args(extra: str) -> list[str]:
    args = [*PORTABLE_ARGS, *shlex.split(extra)]
    bad = [a for a in args if any(a.replace(" ", "").upper() == f.upper() for f in FORBIDDEN_ARGS)]
    if bad:
        raise BuildError(f"refusing {' '.join(bad)}: the build must run on other CPUs than this one")
    return args


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_source(version: str, hashes: set[str], into: Path) -> Path:
    """The locked source package, downloaded into ``into`` and checked against the lock's hashes."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{PACKAGE}=={version}",
            "--dest",
            str(into),
        ],
        check=True,
    )
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if len(found) != 1:
        raise BuildError(f"pip download gave {[p.name for p in into.iterdir()]}, not one source package")
    digest = _sha256(found[0])
    if digest not in hashes:
        raise BuildError(f"{found[0].name} has sha256 {digest}, which the lock file does not list")
    return found[0]


def check_wheel(wheel: Path) -> list[str]:
    """The CPU variants in a built wheel; raises if it has none (a native or a broken build)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    variants = sorted(
        m.group(1)
        for n in names
        if (m := re.fullmatch(r"llama_cpp/lib/(?:lib)?ggml-cpu-([\w.]+)\.(?:so|dll)", n))
    )
    if not variants:
        raise BuildError(f"{wheel.name} holds no CPU backend variants in llama_cpp/lib")
    return variants


def build(lock: Path, extra_args: str = "") -> Path:
    """The portable wheel for the locked version: from the cache, or built now."""
    version, hashes = locked(lock)
    args = build_args(extra_args)
    key = hashlib.sha256("\n".join([version, *sorted(hashes), *args]).encode()).hexdigest()[:16]
    folder = cache_root() / "wheels" / f"{PACKAGE}-{version}-{key}"
    cached = sorted(folder.glob("*.whl"))
    if cached:
        check_wheel(cached[0])
        return cached[0]
    with tempfile.TemporaryDirectory(prefix="aisp-llama-") as work:
        source = download_source(version, hashes, Path(work) / "source")
        environment = dict(os.environ, CMAKE_ARGS=" ".join(args))
        # Compile with every core the machine has, as llama.cpp's own builds do.
        environment.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        print(
            f"llama_build: compiling llama.cpp {version} for every CPU level (several minutes)",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-cache-dir",
                "--wheel-dir",
                str(Path(work) / "wheel"),
                str(source),
            ],
            check=True,
            env=environment,
        )
        (wheel,) = sorted((Path(work) / "wheel").glob("*.whl"))
        variants = check_wheel(wheel)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / wheel.name
        shutil.move(str(wheel), str(target) + ".part")
        os.replace(str(target) + ".part", target)
        (folder / "build-flags.txt").write_text(" ".join(args) + "\n", encoding="utf-8")
        print(
            f"llama_build: {target.name} with CPU variants {', '.join(variants)}", file=sys.stderr, flush=True
        )
        return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, required=True, help="the lock file that pins llama-cpp-python")
    parser.add_argument("--cmake-args", default=os.environ.get("CMAKE_ARGS", ""), help="more CMake flags")
    options = parser.parse_args()
    # Stopped (the install it runs beside failed): leave no half-built source behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        print(build(options.lock, options.cmake_args))
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"llama_build: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
