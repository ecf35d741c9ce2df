"""``ai-service-platform doctor``: what a support request needs, and whether each model really runs here.

It prints the CPU and its instruction sets, which llama.cpp CPU backend was chosen (and that the AMX one
never is), GPU offload, the GPUs with their free and total memory, torch's version and device, and the
memory; then it loads each configured model (or the one named, or those of one kind), generates four
tokens (``--brief``: two, from a few prompt tokens) or one embedding, and prints the speed, and where the
server's own log is (a support request wants it too). The exit status is 0 only if everything it tried
worked; otherwise the last line gives the reason.

Models load in their engine processes, as the server runs them, so a crash is reported with its cause.
``--in-process`` runs them in the doctor's own process instead: for a debugger (gdb) or an emulator
(``qemu-x86_64 -cpu Haswell``), which follow one process and not the children it starts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TextIO, TypeVar

from server.config import ModelConfig, Settings
from server.engines.base import (
    ChatBackend,
    EmbeddingBackend,
    EngineFailureError,
    LoadError,
    Message,
    Prompt,
    Sampling,
)
from server.gpu import GIB, Hardware, probe

Kind = Literal["chat", "embeddings"]
PROMPT = [Message(role="user", content="Say hello.")]
TOKENS = 4
BRIEF_PROMPT_TOKENS = 4
"""``--brief``: the rendered prompt's last tokens (the opening of the assistant's turn) are all the model
evaluates, and it generates ``BRIEF_TOKENS``: still a batch of several tokens and single-token steps, which
run different kernels, at about a sixth of the cost (under an emulator every token takes seconds)."""
BRIEF_TOKENS = 2


@dataclass
class ModelCheck:
    """One model loaded and run."""

    name: str
    kind: str
    engine: str
    ok: bool
    error: str | None = None
    load_seconds: float | None = None
    tokens: int | None = None
    generate_seconds: float | None = None
    """From the request to the last token, the prompt's evaluation included."""
    tokens_per_second: float | None = None
    text: str | None = None
    dimensions: int | None = None
    embed_ms: float | None = None


def fact_lines(hardware: Hardware) -> list[str]:
    """The machine's facts in words, one a line: what the doctor prints and the Models page shows."""
    lines = [f"CPU: {hardware.cpu_model or 'unknown'}; {_instructions(hardware.cpu_instructions)}."]
    llama = hardware.llama
    if llama is None:
        lines.append("llama.cpp: not loaded (" + "; ".join(n for n in hardware.notes if "llama" in n) + ").")
    elif not llama.get("dynamic"):
        lines.append(
            "llama.cpp: built for one CPU, with its CPU backend built in: it may not run on other CPUs "
            "(rebuild it with `make install`)."
        )
    else:
        usable = sum(1 for score in llama["scores"].values() if score > 0)
        lines.append(
            f"llama.cpp {llama.get('version') or ''}: CPU backend {llama['cpu_variant']}, the best of "
            f"{usable} that run on this CPU (of {len(llama['scores'])} built)."
        )
        amx = "this CPU has AMX" if llama.get("amx_cpu") else "this CPU has no AMX"
        excluded = "; ".join(f"{name}: {why}" for name, why in llama.get("excluded", {}).items())
        lines.append(
            f"AMX: not used ({amx}; the AMX backend is never loaded — {excluded or 'not built'}); "
            "extra buffer types (repacked weights) on."
        )
        for name, why in llama.get("gpu_failures", {}).items():
            lines.append(f"llama.cpp {name}: {why}")
    lines.append(
        "GPU offload: yes (" + ", ".join(llama.get("gpu_backends") or ["GPU"]) + ")."
        if hardware.llama_gpu_offload and llama
        else "GPU offload: no — llama.cpp was built without a GPU backend, chat models run on the CPU."
    )
    if hardware.devices:
        for device in hardware.devices:
            free = f"{device.free_bytes / GIB:.1f} GiB free of " if device.free_bytes is not None else ""
            lines.append(f"GPU: {device.name}, {free}{device.total_bytes / GIB:.1f} GiB.")
    else:
        lines.append("GPU: none found.")
    if hardware.torch_version:
        lines.append(f"torch {hardware.torch_version}: embeddings on the {hardware.torch_device or 'cpu'}.")
    if hardware.system_ram_bytes is not None:
        available = hardware.system_ram_available_bytes
        more = f", {available / GIB:.1f} GiB available" if available is not None else ""
        lines.append(f"Memory: {hardware.system_ram_bytes / GIB:.1f} GiB{more}.")
    return lines


def _instructions(flags: Sequence[str]) -> str:
    if not flags:
        return "instruction sets unknown"
    return "instruction sets " + " ".join(flag.upper().replace("_", "-") for flag in flags)


def _chat_backend(config: ModelConfig, in_process: bool) -> ChatBackend:
    if in_process and config.engine == "llama.cpp":
        from server.engines.llama import LlamaChat  # noqa: PLC0415  (llama.cpp in this very process)

        return LlamaChat(config)
    if in_process and config.engine == "fake":
        from server.engines.fake import FakeChat  # noqa: PLC0415

        return FakeChat(config)
    from server.engines.manager import BUILTIN_ENGINES  # noqa: PLC0415

    return BUILTIN_ENGINES[config.engine](config)  # type: ignore[return-value]


def _embedding_backend(config: ModelConfig, in_process: bool) -> EmbeddingBackend:
    if in_process and config.engine == "sentence-transformers":
        from server.engines.embedder import SentenceTransformerEmbedder  # noqa: PLC0415

        return SentenceTransformerEmbedder(config)
    from server.engines.manager import BUILTIN_ENGINES  # noqa: PLC0415

    return BUILTIN_ENGINES[config.engine](config)  # type: ignore[return-value]


B = TypeVar("B")


def _loaded(check: ModelCheck, load: Callable[[], B]) -> B | None:
    """The model loaded (its load time noted in ``check``), or None with the reason noted."""
    started = time.perf_counter()
    try:
        backend = load()
    except LoadError as exc:
        check.error = f"did not load: {exc}"
        return None
    check.load_seconds = time.perf_counter() - started
    return backend


def check_chat(config: ModelConfig, in_process: bool, brief: bool = False) -> ModelCheck:
    check = ModelCheck(config.name, "chat", config.engine, ok=False)
    backend = _loaded(check, lambda: _chat_backend(config, in_process))
    if backend is None:
        return check
    try:
        prompt = backend.render(PROMPT)
        tokens = TOKENS
        if brief:
            prompt, tokens = Prompt(prompt.tokens[-BRIEF_PROMPT_TOKENS:]), BRIEF_TOKENS
        started = time.perf_counter()
        pieces = list(backend.generate(prompt, Sampling(max_tokens=tokens, temperature=0.0), lambda: False))
        elapsed = time.perf_counter() - started
    except EngineFailureError as exc:
        check.error = str(exc)
        return check
    finally:
        backend.close()
    check.tokens = sum(piece.tokens for piece in pieces)
    check.text = "".join(piece.text for piece in pieces)
    check.generate_seconds = elapsed
    check.tokens_per_second = check.tokens / elapsed if elapsed > 0 else None
    check.ok = bool(check.tokens)
    if not check.ok:
        check.error = "generated no tokens"
    return check


def check_embeddings(config: ModelConfig, in_process: bool) -> ModelCheck:
    check = ModelCheck(config.name, "embedding", config.engine, ok=False)
    backend = _loaded(check, lambda: _embedding_backend(config, in_process))
    if backend is None:
        return check
    try:
        started = time.perf_counter()
        result = backend.embed(["The doctor checks that embeddings work."])
        check.embed_ms = (time.perf_counter() - started) * 1000
        check.dimensions = len(result.vectors[0])
        check.ok = check.dimensions > 0
    except EngineFailureError as exc:
        check.error = str(exc)
    finally:
        backend.close()
    return check


def _model_line(check: ModelCheck) -> str:
    if not check.ok:
        return f"{check.kind} {check.name} ({check.engine}): FAILED — {check.error}"
    loaded = f"loaded in {check.load_seconds:.1f} s" if check.load_seconds is not None else "loaded"
    if check.kind == "chat":
        speed = (
            f" ({check.tokens_per_second:.1f} tokens/s, the prompt included)"
            if check.tokens_per_second
            else ""
        )
        return f"chat {check.name}: {loaded}; {check.tokens} tokens in {check.generate_seconds or 0:.2f} s{speed}: {check.text!r}"
    return f"embedding {check.name}: {loaded}; {check.dimensions} dimensions; one embedding in {check.embed_ms:.0f} ms"


def run(
    settings: Settings,
    *,
    only: Kind | None = None,
    model: str | None = None,
    as_json: bool = False,
    in_process: bool = False,
    brief: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Probe the machine, check the models, print the report; 0 when everything tried worked."""
    configs = [c for c in settings.models if c.engine != "upstream"]
    if model is not None:
        configs = [c for c in configs if c.name == model]
        if not configs:
            out.write(f"doctor: FAILED: no local model named {model!r} in the model table\n")
            return 1
    if only is not None:
        configs = [c for c in configs if (c.kind == "chat") == (only == "chat")]
    # torch takes seconds to import (minutes in an emulator): only when an embedding model is checked.
    hardware = probe(with_torch=any(c.kind == "embedding" for c in configs) or only is None)
    checks = [
        check_chat(config, in_process, brief)
        if config.kind == "chat"
        else check_embeddings(config, in_process)
        for config in configs
    ]
    failed = [check for check in checks if not check.ok]
    if hardware.llama is None and any(c.engine == "llama.cpp" for c in configs):
        failed_reason: str | None = (
            "; ".join(n for n in hardware.notes if "llama" in n) or "llama.cpp did not load"
        )
    else:
        failed_reason = f"{failed[0].kind} {failed[0].name}: {failed[0].error}" if failed else None
    if not configs:
        failed_reason = failed_reason or f"no {only or 'local'} model in the model table to check"
    if as_json:
        report: dict[str, Any] = {
            "hardware": asdict(hardware),
            "facts": fact_lines(hardware),
            "log_file": str(settings.log_path),
            "models": [asdict(check) for check in checks],
            "ok": failed_reason is None,
            "reason": failed_reason,
        }
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        lines = fact_lines(hardware) + [_model_line(check) for check in checks]
        lines.append(
            f"Server log: {settings.log_path} (model loads, crashes and warnings; what it did, never what clients sent)"
        )
        for line in lines:
            out.write(line + "\n")
        out.write(f"doctor: FAILED: {failed_reason}\n" if failed_reason else "doctor: everything worked\n")
    return 0 if failed_reason is None else 1
