"""What the machine can run: the Models page's hardware panel, and the memory estimate of one model.

:func:`server.gpu.probe` imports llama.cpp and torch, and torch holds the interpreter lock for long
stretches while it initialises (and keeps hundreds of megabytes afterwards), so the window asks a child
process instead (:func:`probe_in_child`), through :class:`app.tasks.Tasks`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.tasks import Tasks
from app.theme import set_tone
from server.config import ModelConfig
from server.doctor import fact_lines
from server.engines.supervisor import describe_exit
from server.gpu import FitEstimate, Hardware, estimate, probe

GIB = 1024**3


PROBE_TIMEOUT_S = 120.0


def _probe_into(connection: Connection) -> None:
    connection.send(probe())


def probe_in_child() -> Hardware:
    """:func:`server.gpu.probe` run in a fresh process (blocking: seconds). A probe that crashes (llama.cpp
    or a GPU driver can) or hangs raises ``RuntimeError`` naming what happened, rather than leaving the
    panel waiting."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_probe_into, args=(sender,), name="hardware-probe", daemon=True)
    process.start()
    sender.close()
    try:
        if receiver.poll(PROBE_TIMEOUT_S):
            return receiver.recv()  # type: ignore[no-any-return]
        raise RuntimeError(f"the hardware check did not finish within {PROBE_TIMEOUT_S:.0f} s")
    except EOFError:
        process.join(5)
        raise RuntimeError(
            f"the hardware check ended without an answer: {describe_exit(process.exitcode)}"
        ) from None
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(5)


def gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def source_size(config: ModelConfig) -> int | None:
    """Bytes of a model's file, or of every file in its directory; ``None`` if there is nothing there."""
    if config.engine not in ("llama.cpp", "sentence-transformers") or not config.source:
        return None
    path = Path(config.source)
    try:
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None
    return None


def source_problem(config: ModelConfig) -> str | None:
    """Why a local model's file or directory cannot be where the form says (blocking), or ``None``."""
    path = Path(config.source)
    if config.engine == "llama.cpp" and not path.is_file():
        return f"no file at {config.source}"
    if config.engine == "sentence-transformers" and not path.is_dir():
        return f"no directory at {config.source}"
    return None


def fit_of(config: ModelConfig, hardware: Hardware) -> FitEstimate:
    """Whether ``config`` would fit (blocking: reads the model's metadata)."""
    if config.engine == "upstream":
        return FitEstimate(0, 0, None, "runs on the upstream servers, not here")
    if config.engine not in ("llama.cpp", "sentence-transformers"):
        return FitEstimate(0, 0, None, "the test engine needs no model file")
    if config.engine == "sentence-transformers" and Path(config.source).is_dir():
        # server.gpu.estimate reads single files; a model directory is its weights, give or take.
        size = source_size(config) or 0
        return FitEstimate(0, size, None, f"about {gib(size)} of weights")
    return estimate(config, hardware)


def fit_text(fit: FitEstimate) -> str:
    verdict = {True: "Fits: ", False: "Does not fit: ", None: ""}[fit.fits]
    message = verdict + fit.message
    return message[:1].upper() + message[1:]


class HardwarePanel(QGroupBox):
    """Which engines can use a GPU, the devices and their memory; checked on demand."""

    hardware_probed = Signal(object)
    """A new :class:`server.gpu.Hardware` was found."""

    def __init__(self, probe: Callable[[], Hardware], tasks: Tasks, parent: QWidget | None = None) -> None:
        super().__init__("Hardware", parent)
        self._probe_hardware = probe
        self._tasks = tasks
        self.hardware: Hardware | None = None
        self._probing = False
        self.text = QLabel("Not checked yet.", self)
        self.text.setWordWrap(True)
        self.text.setAccessibleName("What this computer can run")
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.refresh_button = QPushButton("Re&fresh", self)
        self.refresh_button.setAccessibleName("Check the GPU and memory again")
        self.refresh_button.setToolTip("Check the GPU and memory again (takes a few seconds)")
        self.refresh_button.clicked.connect(self.refresh)
        button = QVBoxLayout()
        button.addWidget(self.refresh_button)
        button.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addLayout(button)

    def refresh(self) -> None:
        """Probe the hardware again, off the GUI thread (skipped while a probe is on its way)."""
        if not self._probing:
            self._probing = True
            self.refresh_button.setEnabled(False)
            self.text.setText("Checking the GPU and memory…")
            set_tone(self.text, "")
            self._tasks.spawn(self._probe(), "checking the hardware")

    async def _probe(self) -> None:
        try:
            hardware = await self._tasks.call(self._probe_hardware)
        except Exception as exc:
            self.text.setText(f"The hardware could not be checked: {exc}")
            set_tone(self.text, "error")
            raise
        finally:
            self._probing = False
            self.refresh_button.setEnabled(True)
        self.hardware = hardware
        self.text.setText("\n".join(fact_lines(hardware)))
        self.hardware_probed.emit(hardware)
