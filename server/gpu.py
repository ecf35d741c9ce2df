"""What the hardware can hold: GPU offload support, devices and their memory, and whether a model fits.

Nothing here loads a model. Probing torch takes seconds, so callers run it off any event loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import ModelConfig
from server.engines import llama_backends
from server.gguf import GGUFError, architecture, read_metadata

GIB = 1024**3


@dataclass(frozen=True)
class Device:
    name: str
    total_bytes: int
    free_bytes: int | None


@dataclass(frozen=True)
class Hardware:
    """What the appliance can use, as the Models page shows it."""

    llama_gpu_offload: bool
    torch_cuda: bool
    devices: tuple[Device, ...]
    system_ram_bytes: int | None
    system_ram_available_bytes: int | None
    notes: tuple[str, ...]
    cpu_model: str = ""
    cpu_instructions: tuple[str, ...] = ()
    """The instruction sets that decide which llama.cpp CPU backend runs (Linux's names)."""
    llama: dict[str, Any] | None = None
    """Which llama.cpp backends were loaded and why (``llama_backends.BackendReport.as_dict()``)."""
    torch_version: str | None = None
    torch_device: str | None = None

    @property
    def gpu_free_bytes(self) -> int | None:
        known = [d.free_bytes for d in self.devices if d.free_bytes is not None]
        return sum(known) if known else None


def _meminfo() -> tuple[int | None, int | None]:
    try:
        fields = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
        )
        total = int(fields["MemTotal"].split()[0]) * 1024
        available = int(fields.get("MemAvailable", fields["MemFree"]).split()[0]) * 1024
        return total, available
    except (OSError, KeyError, ValueError):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            return total, None
        except (ValueError, OSError, AttributeError):
            return None, None


def _nvidia_smi() -> list[Device]:
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        out = subprocess.run(
            [tool, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    devices = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            devices.append(Device(parts[0], int(parts[1]) * 1024**2, int(parts[2]) * 1024**2))
    return devices


def probe(*, with_torch: bool = True) -> Hardware:
    """Look at the machine: which engines can use a GPU and how much memory there is.

    ``with_torch=False`` skips torch (seconds to import), for a quick check before a llama.cpp load."""
    notes: list[str] = []
    llama: dict[str, Any] | None = None
    try:
        import llama_cpp  # noqa: PLC0415  (heavy; only when asked)

        llama = llama_backends.load().as_dict()
        llama["version"] = getattr(llama_cpp, "__version__", None)
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        if not offload:
            notes.append("llama.cpp was built without GPU offload (CPU only).")
    except ImportError:
        offload = False
        notes.append("llama-cpp-python is not installed.")
    except llama_backends.BackendError as exc:
        offload = False
        notes.append(f"llama.cpp cannot run here: {exc}")
    devices = _nvidia_smi()
    torch_cuda = False
    torch_version: str | None = None
    try:
        if not with_torch:
            raise ImportError("not asked")
        import torch  # noqa: PLC0415

        torch_version = str(torch.__version__)
        torch_cuda = bool(torch.cuda.is_available())
        if torch_cuda and not devices:
            for index in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(index)
                devices.append(Device(torch.cuda.get_device_name(index), int(total), int(free)))
        if not torch_cuda:
            notes.append("torch sees no CUDA GPU: embeddings run on the CPU.")
    except ImportError:
        if with_torch:
            notes.append("torch is not installed.")
    if not devices:
        notes.append("No GPU found.")
    ram_total, ram_available = _meminfo()
    cpu = llama_backends.cpu_facts()
    return Hardware(
        offload,
        torch_cuda,
        tuple(devices),
        ram_total,
        ram_available,
        tuple(notes),
        cpu_model=str(cpu["model"]),
        cpu_instructions=tuple(cpu["instruction_sets"]),
        llama=llama,
        torch_version=torch_version,
        torch_device=("cuda" if torch_cuda else "cpu") if torch_version else None,
    )


@dataclass(frozen=True)
class FitEstimate:
    """Memory a model would need, and whether the machine has it."""

    gpu_bytes: int
    cpu_bytes: int
    fits: bool | None
    message: str
    memory_short: str | None = None
    """Set when the machine surely lacks the memory: loading would fail or exhaust the machine."""


MAX_DEFAULT_SLOTS = 8
"""Parallel requests a llama.cpp model gets when the operator sets none, at most (llama-server's -np 8 is
where batched decoding stops gaining on small machines)."""
KV_SHARE = 0.25
"""The share of the free memory the default slots' KV cache may take."""


def kv_bytes(arch: dict[str, int], context_length: int) -> int:
    """The KV cache of one full context: keys and values in 16 bits, every layer."""
    return 2 * context_length * (arch["layers"] or 1) * arch["kv_width"]


def default_slots(config: ModelConfig, hardware: Hardware) -> int:
    """How many requests a llama.cpp model runs at once when ``parallel`` is unset: as many as a full
    context each fits in a quarter of the free memory where the cache lives, between 1 and 8."""
    if config.parallel is not None:
        return config.parallel
    try:
        arch = architecture(read_metadata(Path(config.source)))
        size = Path(config.source).stat().st_size
    except (GGUFError, OSError):
        return 1
    per_slot = max(1, kv_bytes(arch, config.context_length))
    on_gpu = config.n_gpu_layers != 0 and hardware.llama_gpu_offload and hardware.gpu_free_bytes is not None
    free = (
        (hardware.gpu_free_bytes or 0) - size if on_gpu else (hardware.system_ram_available_bytes or 0) - size
    )
    return max(1, min(MAX_DEFAULT_SLOTS, int(max(0, free) * KV_SHARE // per_slot)))


def estimate(config: ModelConfig, hardware: Hardware) -> FitEstimate:
    """Estimate weights plus KV cache for the configured context and parallel requests, split between GPU
    and CPU."""
    path = Path(config.source)
    if not path.is_file():
        return FitEstimate(0, 0, None, f"no file at {config.source}")
    size = path.stat().st_size
    if config.engine != "llama.cpp":
        return FitEstimate(0, size, None, f"about {size / GIB:.1f} GiB")
    try:
        arch = architecture(read_metadata(path))
    except (GGUFError, OSError) as exc:
        return FitEstimate(0, size, False, f"cannot read the model's metadata: {exc}")
    layers = arch["layers"] or 1
    slots = default_slots(config, hardware)
    kv = kv_bytes(arch, config.context_length) * slots
    offloaded = layers if config.n_gpu_layers < 0 else min(config.n_gpu_layers, layers)
    if offloaded and not hardware.llama_gpu_offload:
        offloaded = 0
    share = offloaded / layers
    gpu = int((size + kv) * share)
    cpu = size + kv - gpu
    problems = []
    if gpu and hardware.gpu_free_bytes is not None and gpu > hardware.gpu_free_bytes:
        problems.append(
            f"needs {gpu / GIB:.1f} GiB of GPU memory, {hardware.gpu_free_bytes / GIB:.1f} GiB free: "
            "offload fewer layers, or use a smaller context or fewer parallel requests"
        )
    ram = hardware.system_ram_available_bytes
    if ram is not None and cpu > ram:
        problems.append(
            f"needs {cpu / GIB:.1f} GiB of RAM, {ram / GIB:.1f} GiB available: use a smaller context "
            "or fewer parallel requests"
        )
    short = "; ".join(problems) or None
    if config.context_length > arch["trained_context"] > 0:
        problems.append(
            f"the context {config.context_length} exceeds the {arch['trained_context']} it was trained for"
        )
    summary = (
        f"{gpu / GIB:.2f} GiB on the GPU, {cpu / GIB:.2f} GiB in RAM ({offloaded}/{layers} layers offloaded, "
        f"{slots} request{'s' if slots > 1 else ''} at once)"
    )
    fits = None if gpu and hardware.gpu_free_bytes is None else not problems
    return FitEstimate(gpu, cpu, fits, summary + ("; " + "; ".join(problems) if problems else ""), short)


def weights_budget(hardware: Hardware) -> tuple[int | None, str]:
    """The memory a llama.cpp model with every layer offloaded would live in, and where that is: the GPUs'
    free memory when llama.cpp can offload to them, otherwise the RAM available. ``None`` when unknown."""
    if hardware.llama_gpu_offload and hardware.gpu_free_bytes is not None:
        return hardware.gpu_free_bytes, "GPU memory free"
    return hardware.system_ram_available_bytes, "RAM available"
