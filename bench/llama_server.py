"""llama.cpp's own ``llama-server``, the reference for many clients at once.

Built from the llama.cpp source vendored in the locked llama-cpp-python (the same llama.cpp the appliance
runs), with the same CPU flags as the appliance's build (``GGML_NATIVE=OFF``, one CPU backend per x86-64
level, the best chosen at run time), into ``bench/.envs/llama-server-<version>/`` once; later runs reuse
it (``CMAKE_ARGS`` adds flags, e.g. ``-DGGML_CUDA=ON``, each set built in a folder of its own). The build
takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

from bench.procs import ROOT

LOCK = ROOT / "packaging" / "lock" / "app.txt"
FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_BACKEND_DL=ON",
    "-DGGML_CPU_ALL_VARIANTS=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
)


def _llama_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aisp_llama_build", ROOT / "packaging" / "llama_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure(say: object | None = None) -> Path:
    """The ``llama-server`` executable, built now if it is not there yet."""
    build = _llama_build()
    version, hashes = build.locked(LOCK)
    extra = shlex.split(os.environ.get("CMAKE_ARGS", ""))  # e.g. -DGGML_CUDA=ON, as the appliance's build
    suffix = "-" + hashlib.sha256(" ".join(extra).encode()).hexdigest()[:8] if extra else ""
    target = ROOT / "bench" / ".envs" / f"llama-server-{version}{suffix}"
    binary = target / "llama-server"
    if binary.is_file():
        return binary
    with tempfile.TemporaryDirectory(prefix="aisp-llama-server-") as work:
        source = build.download_source(version, hashes, Path(work) / "download")
        with tarfile.open(source) as archive:
            archive.extractall(Path(work) / "source", filter="data")
        (unpacked,) = (Path(work) / "source").iterdir()
        tree = unpacked / "vendor" / "llama.cpp"
        out = Path(work) / "build"
        if callable(say):
            say(f"building llama-server {version} from its source (about 10 minutes)")
        subprocess.run(
            ["cmake", "-S", str(tree), "-B", str(out), *FLAGS, *extra], check=True, capture_output=True
        )
        subprocess.run(
            ["cmake", "--build", str(out), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
            check=True,
            capture_output=True,
        )
        built = out / "bin"
        staging = target.with_name(target.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for path in built.iterdir():
            if path.name == "llama-server" or ".so" in path.name or path.suffix == ".dll":
                shutil.copy2(path, staging / path.name, follow_symlinks=True)
        staging.rename(target)
    return binary
