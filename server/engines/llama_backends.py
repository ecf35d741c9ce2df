"""Which llama.cpp backends a process uses: the best CPU variant for the CPU it runs on, and any GPU backend.

llama.cpp is built the way its own releases are (``packaging/llama_build.py``): one CPU backend per x86-64
level in ``llama_cpp/lib`` (``libggml-cpu-haswell.so``, ``…-zen4.so``, …), each with a function that scores
how well it fits this CPU (0: it would not run here). llama.cpp's own loader looks for them beside the
executable and in the working directory, which for Python is neither, so this module picks and registers
them before the first model loads: every GPU backend present (CUDA, Vulkan, …), then the best-scoring CPU
variant.

The AMX variant (``sapphirerapids``) is never loaded: llama.cpp's AMX matrix multiplication crashes the
process on CPUs that have AMX (llama.cpp issue #20824). On those CPUs the next best variant (``zen4``: every
AVX-512 extension the AMX one has, without AMX) is used, with its repacked weight layouts (extra buffer
types) on as usual.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXCLUDED_VARIANTS = {"sapphirerapids": "AMX crashes llama.cpp (llama.cpp issue #20824)"}
"""CPU variants never loaded, with the reason the doctor prints."""
GPU_BACKENDS = ("cuda", "hip", "vulkan", "sycl", "musa", "opencl", "metal", "cann", "blas")
"""Backend libraries registered when present, before the CPU one, as llama.cpp's own loader orders them."""
CPU_FLAGS_SHOWN = (
    "sse4_2", "avx", "f16c", "fma", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vbmi",
    "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip
"""Instruction sets that decide which variant runs, as Linux names them in /proc/cpuinfo."""


class BackendError(RuntimeError):
    """llama.cpp cannot run here; the message says why."""


@dataclass(frozen=True)
class BackendReport:
    """What was loaded, and why: what the doctor and the Models page show."""

    library_dir: str
    dynamic: bool
    """Built with one loadable backend per CPU level (False: a build for one CPU, e.g. ``-march=native``)."""
    cpu_variant: str | None
    """The CPU variant in use (``haswell``, ``zen4``, …), None for a build with its CPU backend built in."""
    scores: dict[str, int] = field(default_factory=dict)
    """Every CPU variant found, with its score on this CPU (0: it cannot run here)."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Variants present but never loaded, with the reason."""
    gpu_backends: tuple[str, ...] = ()
    """GPU backends registered (``CUDA0``, … are their devices)."""
    gpu_failures: dict[str, str] = field(default_factory=dict)
    """GPU backend libraries present that could not load (no driver, say)."""
    amx_cpu: bool = False
    """The CPU has AMX (the AMX variant scores above 0)."""

    @property
    def amx_used(self) -> bool:
        return self.cpu_variant in EXCLUDED_VARIANTS

    def as_dict(self) -> dict[str, Any]:
        return {
            "library_dir": self.library_dir,
            "dynamic": self.dynamic,
            "cpu_variant": self.cpu_variant,
            "scores": self.scores,
            "excluded": self.excluded,
            "gpu_backends": list(self.gpu_backends),
            "gpu_failures": self.gpu_failures,
            "amx_cpu": self.amx_cpu,
            "amx_used": self.amx_used,
        }


def _library_name(stem: str) -> str:
    return f"{stem}.dll" if sys.platform == "win32" else f"lib{stem}.so"


def _variant_of(path: Path) -> str | None:
    match = re.fullmatch(r"(?:lib)?ggml-cpu-([\w.]+)\.(?:so|dll)", path.name)
    return match.group(1) if match else None


def score(path: Path) -> int:
    """A CPU variant's own verdict on this CPU: 0 if it cannot run here, higher for a better fit."""
    try:
        library = ctypes.CDLL(str(path))
    except OSError:
        return 0
    function = getattr(library, "ggml_backend_score", None)
    if function is None:
        return 0
    function.restype = ctypes.c_int
    return int(function())


def choose(scores: dict[str, int]) -> str | None:
    """The variant to load: the best score above 0 among those not excluded."""
    usable = {name: s for name, s in scores.items() if s > 0 and name not in EXCLUDED_VARIANTS}
    return max(usable, key=lambda name: (usable[name], name)) if usable else None


def _ggml(library_dir: Path) -> Any:
    """The ggml library llama.cpp itself uses (another copy of the file would have its own, empty registry)."""
    if sys.platform == "win32":
        library = ctypes.CDLL(str(library_dir / "ggml.dll"))
    else:
        # By its soname: the copy libllama was linked against, already loaded with it.
        library = ctypes.CDLL("libggml.so.0")
    library.ggml_backend_reg_count.restype = ctypes.c_size_t
    library.ggml_backend_load.restype = ctypes.c_void_p
    library.ggml_backend_load.argtypes = [ctypes.c_char_p]
    library.ggml_backend_reg_get.restype = ctypes.c_void_p
    library.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    library.ggml_backend_reg_name.restype = ctypes.c_char_p
    library.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    return library


def _registered(ggml: Any) -> list[str]:
    return [
        ggml.ggml_backend_reg_name(ggml.ggml_backend_reg_get(i)).decode()
        for i in range(ggml.ggml_backend_reg_count())
    ]


def library_dir() -> Path:
    """llama-cpp-python's folder of shared libraries (found without loading them)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("llama-cpp-python is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "lib"


def variants(folder: Path) -> dict[str, Path]:
    """The CPU variants in a library folder, by name."""
    return {name: path for path in sorted(folder.iterdir()) if (name := _variant_of(path))}


def best_cpu_library() -> Path | None:
    """The CPU variant this machine would load, for programs that load llama.cpp themselves (such as
    llama-cpp-python's own server, given it as ``GGML_BACKEND_PATH``); None for a build without variants."""
    folder = library_dir()
    base = folder / _library_name("ggml-base")
    if sys.platform != "win32":
        base = base.with_name(base.name + ".0")  # the variants need it by this name (their soname)
    if base.is_file():
        ctypes.CDLL(str(base))
    found = variants(folder)
    chosen = choose({name: score(path) for name, path in found.items()})
    return found[chosen] if chosen else None


@functools.cache
def load() -> BackendReport:
    """Register llama.cpp's backends in this process (once; later calls return the first report).

    Raises ``BackendError`` when no CPU variant can run here."""
    import llama_cpp  # noqa: F401, PLC0415  (loads libllama and libggml: only in processes that run llama.cpp)

    # llama-cpp-python prints llama.cpp's log at the level of its own logger, by default every line of
    # every model load; only errors are worth the operator's eyes.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    folder = library_dir()
    ggml = _ggml(folder)
    found = variants(folder)
    if ggml.ggml_backend_reg_count() and not found:
        # The CPU backend is built into libggml: a build for one CPU, nothing to choose.
        return BackendReport(
            str(folder), dynamic=False, cpu_variant=None, gpu_backends=tuple(_registered(ggml))
        )
    scores = {name: score(path) for name, path in found.items()}
    excluded = {name: reason for name, reason in EXCLUDED_VARIANTS.items() if name in found}
    chosen = choose(scores)
    if chosen is None:
        raise BackendError(
            f"none of llama.cpp's CPU backends in {folder} runs on this CPU "
            f"({', '.join(sorted(found)) or 'none found'})"
        )
    failures: dict[str, str] = {}
    for name in GPU_BACKENDS:
        path = folder / _library_name(f"ggml-{name}")
        if path.is_file() and not ggml.ggml_backend_load(os.fsencode(path)):
            failures[name] = f"{path.name} did not load (is the driver installed?)"
    if not ggml.ggml_backend_load(os.fsencode(found[chosen])):
        raise BackendError(f"llama.cpp's {chosen} CPU backend did not load from {found[chosen]}")
    gpus = tuple(name for name in _registered(ggml) if name != "CPU")
    return BackendReport(
        str(folder),
        dynamic=True,
        cpu_variant=chosen,
        scores=scores,
        excluded=excluded,
        gpu_backends=gpus,
        gpu_failures=failures,
        amx_cpu=scores.get("sapphirerapids", 0) > 0,
    )


def cpu_facts() -> dict[str, Any]:
    """The CPU's model name and the instruction sets that decide which variant runs."""
    name = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            name = value.strip()
        elif key.strip() == "flags":
            present = set(value.split())
            flags = [flag for flag in CPU_FLAGS_SHOWN if flag in present]
            break
    return {"model": name, "cores": os.cpu_count(), "instruction_sets": flags}
