"""What every section of a run shares: the mode, the rounds, the working and log directories, progress."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Context:
    rounds: int
    smoke: bool
    workdir: Path
    """Scratch space for data directories and configuration (a temporary directory)."""
    logs: Path
    """Each process's output, kept with the results."""
    chat_threads: int | None = None
    """Threads for the embedded chat model in every system compared (None: the default table's)."""
    chat_gguf: str | None = None
    """Another GGUF for the batching section (None: the embedded SmolLM2)."""
    gpu_layers: int = 0
    """Layers the batching section offloads to the GPU (-1: all), in both systems."""
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        """Progress on stderr (stdout is for the table)."""
        sys.stderr.write(f"[bench {time.monotonic() - self.started:6.1f}s] {text}\n")
        sys.stderr.flush()
