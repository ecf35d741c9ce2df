"""What the Models page shows of each model: its state, queue, settings, size and fit, as plain text.

:func:`read_models` gathers it (blocking: it reads the files' sizes and metadata, so the page calls it
through :class:`app.tasks.Tasks`); the other functions only format.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import PurePath

from app.pages.hardware import fit_of, fit_text, source_size
from server.config import ModelConfig
from server.engines.manager import ModelManager, ModelStatus
from server.gpu import FitEstimate, Hardware

COLUMNS = (
    "Name",
    "Kind",
    "State",
    "Queue",
    "Wait",
    "Engine",
    "Size",
    "Context",
    "Parallel",
    "GPU layers",
    "Threads",
    "Price in / out (per 1M)",  # the heading shown names the currency (ModelsPage.set_currency)
    "Memory",
    "Source",
)
PRICE_COLUMN = "Price in / out (per 1M)"
REPLICA_COLUMNS = (
    "Replica",
    "Healthy",
    "In flight",
    "Latency",
    "Checked",
    "Served",
    "Failures",
    "Last error",
)
STATES = {
    "loading": "Loading…",
    "loaded": "Loaded",
    "restarting": "Restarting after a crash…",
    "failed": "Failed",
    "unloaded": "Not loaded",
}
LONGEST_CELL = 48


@dataclass(frozen=True)
class ModelRow:
    """One model as the page shows it."""

    status: ModelStatus
    config: ModelConfig
    size: int | None
    fit: FitEstimate | None
    """``None`` until the hardware has been checked."""


def read_models(models: ModelManager, hardware: Hardware | None) -> list[ModelRow]:
    """Every model's state, size and fit (blocking: reads the files' sizes and metadata)."""
    configs = {config.name: config for config in models.configs()}
    return [
        ModelRow(
            status,
            configs[status.name],
            source_size(configs[status.name]),
            fit_of(configs[status.name], hardware) if hardware is not None else None,
        )
        for status in models.statuses()
        if status.name in configs
    ]


def short(text: str, longest: int = LONGEST_CELL) -> str:
    return text if len(text) <= longest else text[: longest - 1] + "…"


def size_text(size: int | None) -> str:
    if size is None:
        return "–"
    if size >= 1024**3:
        return f"{size / 1024**3:.1f} GB"
    return f"{size / 1024**2:.0f} MB"


def state_text(status: ModelStatus) -> str:
    state = STATES.get(status.state, status.state)
    if status.state == "failed" and status.error:
        return f"{state}: {status.error}"
    if status.reloading:
        return f"{state}; loading the new settings…"
    if status.state == "loaded" and status.reload_error:
        return f"{state} with the previous settings: the new ones failed ({status.reload_error})"
    if status.state == "loaded" and status.restarts:
        return f"{state} (restarted {status.restarts}× after a crash)"
    return state


def crash_lines(status: ModelStatus) -> list[str]:
    """Each death of the model's engine process, newest first, and what the engine runs on."""
    lines = [
        f"Engine crashed at {time.strftime('%H:%M:%S', time.localtime(crash.at))}: {crash.reason}"
        for crash in reversed(status.crashes)
    ]
    llama = (status.engine_info or {}).get("llama")
    if llama:
        variant = llama.get("cpu_variant") or "built in"
        amx = "the CPU has AMX, which llama.cpp does not use" if llama.get("amx_cpu") else "no AMX"
        gpus = ", ".join(llama.get("gpu_backends") or []) or "none"
        lines.append(f"llama.cpp: CPU backend {variant} ({amx}); GPU backends: {gpus}.")
    return lines


def gpu_text(config: ModelConfig) -> str:
    if config.engine == "llama.cpp":
        return {-1: "All", 0: "None (CPU)"}.get(config.n_gpu_layers, str(config.n_gpu_layers))
    if config.engine == "sentence-transformers":
        return "If available" if config.n_gpu_layers else "None (CPU)"
    return "–"


def parallel_text(row: ModelRow) -> str:
    """Requests generated at once: what the loaded engine runs, else what is configured."""
    if row.config.engine != "llama.cpp":
        return "–"
    slots = (row.status.engine_info or {}).get("slots")
    if slots:
        return str(slots)
    return str(row.config.parallel) if row.config.parallel else "Automatic"


def queue_text(status: ModelStatus) -> str:
    if status.replicas:
        return f"{sum(r.outstanding for r in status.replicas)} in flight"
    queue = status.queue
    if queue is None:
        return "–"
    keys = f" ({queue.waiting_keys} keys)" if queue.waiting_keys > 1 else ""
    return f"{queue.running} running · {queue.waiting} waiting{keys}"


def wait_text(status: ModelStatus) -> str:
    queue = status.queue
    if queue is None:
        return "–"
    mean = f"{queue.mean_wait_s:.2f} s mean"
    return f"{queue.longest_wait_s:.1f} s now · {mean}" if queue.waiting else mean


def memory_text(row: ModelRow) -> str:
    if row.config.engine not in ("llama.cpp", "sentence-transformers"):
        return "–"
    if row.fit is None:
        return "Checking…"
    return {True: "Fits", False: "Does not fit", None: "Unknown"}[row.fit.fits]


def cells(row: ModelRow, whole: bool = False) -> tuple[str, ...]:
    """The row's text in :data:`COLUMNS` order; long values are cut short unless ``whole`` (tooltips)."""
    config, status = row.config, row.status
    local = config.engine in ("llama.cpp", "sentence-transformers")
    source = PurePath(config.source).name if local and not whole else config.source
    cut = (lambda text: text) if whole else short
    return (
        config.name,
        "Embeddings" if config.kind == "embedding" else "Chat",
        cut(state_text(status)),
        queue_text(status),
        wait_text(status),
        config.engine,
        size_text(row.size),
        f"{config.context_length:,}",
        parallel_text(row),
        gpu_text(config),
        (str(config.threads) if config.threads else "Automatic") if local else "–",
        f"{config.price_input_per_million:g} / {config.price_output_per_million:g}",
        memory_text(row),
        cut(source),
    )


def suggestion(row: ModelRow) -> str | None:
    """What the operator could do about a model that failed, or that may not fit."""
    error = (row.status.error or row.status.reload_error or "").lower()
    fit = row.fit
    if fit is not None and fit.message.startswith("cannot read the model's metadata"):
        return "The file is not a GGUF model, or it is damaged: choose the model's .gguf file (Edit…)."
    too_big = "out of memory" in error or "will not fit" in error or (fit is not None and fit.fits is False)
    if too_big:
        # Fewer GPU layers help only where layers go to a GPU at all.
        offloaded = fit.gpu_bytes > 0 if fit is not None else row.config.n_gpu_layers != 0
        if offloaded:
            return "Offload fewer GPU layers or choose a smaller context (Edit…), then load it again."
        return "Choose a smaller context or a smaller model (Edit…), then load it again."
    if row.status.state == "failed" and error.startswith("no "):
        return "Check where the model is (Edit…), then load it again."
    if row.status.state == "failed":
        return "Check the model's settings (Edit…), then load it again."
    return None


def details_html(row: ModelRow) -> str:
    status, config = row.status, row.config
    lines = [
        f"<b>{html.escape(config.name)}</b>: "
        f"{'embeddings' if config.kind == 'embedding' else 'chat'}, {html.escape(config.engine)}",
        f"State: {html.escape(state_text(status))}",
    ]
    advice = suggestion(row)
    if advice:
        lines.append(f"Suggestion: {html.escape(advice)}")
    if config.source:
        lines.append(f"Source: {html.escape(config.source)}")
    if row.fit is not None:
        lines.append(f"Memory: {html.escape(fit_text(row.fit))}")
    if status.state == "loaded" and status.load_seconds is not None:
        lines.append(f"Loaded in {status.load_seconds:.1f} s.")
    lines += [html.escape(line) for line in crash_lines(status)]
    queue = status.queue
    if queue is not None:
        lines.append(
            f"Queue: {queue.running} running, {queue.waiting} waiting from {queue.waiting_keys} keys"
            + (f", the longest for {queue.longest_wait_s:.1f} s" if queue.waiting else "")
            + f"; {queue.served} served, after {queue.mean_wait_s:.2f} s in the queue on average."
        )
    return "<br>".join(lines)


def replica_cells(row: ModelRow) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for replica in row.status.replicas:
        checked = replica.checked_at
        found.append(
            (
                replica.base_url,
                ("Yes" if replica.healthy else "No") if checked is not None else "Not checked yet",
                str(replica.outstanding),
                f"{replica.latency_ms:.0f} ms" if replica.latency_ms is not None else "–",
                time.strftime("%H:%M:%S", time.localtime(checked)) if checked is not None else "–",
                str(replica.served),
                str(replica.failures),
                short(replica.last_error or "", 3 * LONGEST_CELL),
            )
        )
    return found
