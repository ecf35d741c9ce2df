"""The Models page's form: add a model (from a preset, a GGUF file, a sentence-transformers directory or
another OpenAI-compatible server) or change one's settings, with a live estimate of whether it fits.

The estimate reads the model file's metadata, so it runs through :class:`app.tasks.Tasks`, a moment
after the operator stops typing. The dialog checks the settings with :class:`server.config.ModelConfig`
itself and stays open, showing what is wrong, until they are valid.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import ValidationError
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.pages.hardware import fit_of, fit_text, source_problem
from app.tasks import Tasks
from app.theme import Tone, set_tone
from server.config import ModelConfig, needs_reload
from server.gpu import Hardware
from server.model_presets import PRESETS, preset

ENGINES: tuple[tuple[str, str], ...] = (
    ("llama.cpp", "llama.cpp: a GGUF file"),
    ("sentence-transformers", "sentence-transformers: a model directory"),
    ("upstream", "Another OpenAI-compatible server"),
    ("fake", "Test engine: no model file"),
)
KINDS: tuple[tuple[str, str], ...] = (
    ("chat", "Chat (chat completions and responses)"),
    ("embedding", "Embeddings"),
)
SOURCE_LABELS = {
    "llama.cpp": ("GGUF &file:", "/path/to/model.gguf"),
    "sentence-transformers": ("Model &directory:", "/path/to/model-directory"),
    "upstream": ("Base &URLs:", "http://gpu-box:8000/v1, http://gpu-box-2:8000/v1"),
    "fake": ("&Options:", "e.g. delay=0.05, reply=hello"),
}
FIELD_NAMES = {
    "name": "Name",
    "source": "Source",
    "n_gpu_layers": "GPU layers",
    "context_length": "Context length",
    "threads": "Threads",
    "price_input_per_million": "Input price",
    "price_output_per_million": "Output price",
    "max_batch": "Inputs per request",
    "default_max_tokens": "Default max reply",
    "upstream_model": "Upstream model",
    "credential_env": "Credential variable",
}
ESTIMATE_DELAY_MS = 250
ENGINE_SETTINGS = ("prompts", "default_input_type", "matryoshka_dimensions", "dtype")
"""Settings the form shows no field for that only the sentence-transformers engine takes."""
LOCAL = ("llama.cpp", "sentence-transformers")
NO_OFFLOAD = " llama.cpp here has no GPU offload, so the model runs on the CPU."


def _label(text: str, buddy: QWidget, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setBuddy(buddy)
    return label


class WrappedLabel(QLabel):
    """Word-wrapped text that asks for the height of its lines at the width it has.

    QFormLayout sizes a row by its field's size hint, which for wrapped text is taken at a narrower
    width than the form gives it, leaving empty lines under a long note.
    """

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        if self.width() > 0 and self.text():
            return QSize(hint.width(), self.heightForWidth(self.width()))
        return hint

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.updateGeometry()


def problems(error: ValidationError) -> str:
    """A pydantic error as the operator reads it: the field's label and what is wrong."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(
            f"{FIELD_NAMES.get(field, field)}: {message}" if field else message[:1].upper() + message[1:]
        )
    return "\n".join(lines)


class ModelDialog(QDialog):
    """Add a model, or change the settings of ``existing`` (its name stays).

    ``loaded``: ``existing`` is serving now. Its prices, limits and reasoning change at once; settings the
    engine is built with take a reload, which the OK button then says (the model keeps answering while
    its new instance loads).
    """

    estimated = Signal(str)
    """The estimate shown was updated; the argument is its text."""

    def __init__(
        self,
        tasks: Tasks,
        hardware: Hardware | None,
        taken: Collection[str],
        existing: ModelConfig | None = None,
        parent: QWidget | None = None,
        *,
        loaded: bool = False,
        currency: str = "",
    ) -> None:
        super().__init__(parent)
        self._tasks = tasks
        self._hardware = hardware
        self._taken = set(taken)
        self.existing = existing
        self._loaded = loaded
        self._estimating = 0
        self._preset_settings: dict[str, Any] = {}
        """The chosen preset's settings, those the form shows no field for (prompts, sizes…) included."""
        self._checking = False
        self.picker: QFileDialog | None = None
        self.setWindowTitle(f"Settings of {existing.name}" if existing else "Add a model")

        self.preset = QComboBox(self)
        self.preset.addItem("None: fill in the settings yourself", "")
        for item in PRESETS:
            self.preset.addItem(item.label, item.name)
        self.preset_note = WrappedLabel(self)
        self.name = QLineEdit(self)
        self.name.setMaxLength(128)
        self.name.setPlaceholderText("the name clients put in “model”, e.g. qwen3-30b-a3b")
        # Created in the form's order, which is the order Tab visits them in.
        self.engine = QComboBox(self)
        for key, text in ENGINES:
            self.engine.addItem(text, key)
        self.kind = QComboBox(self)
        for key, text in KINDS:
            self.kind.addItem(text, key)
        self.source = QLineEdit(self)
        self.browse_button = QPushButton("&Browse…", self)
        self.upstream_model = QLineEdit(self)
        self.upstream_model.setPlaceholderText("default: the same name as here")
        self.credential_env = QLineEdit(self)
        self.credential_env.setPlaceholderText(
            "optional, e.g. UPSTREAM_API_KEY (the key itself is never stored)"
        )
        self.gpu_layers = QSpinBox(self)
        self.gpu_layers.setRange(-1, 1000)
        self.gpu_layers.setSpecialValueText("All layers")
        self.gpu_layers.setToolTip("Layers offloaded to the GPU; 0 keeps the model on the CPU")
        self.use_gpu = QCheckBox("Use the GPU when torch sees one", self)
        self.context = QSpinBox(self)
        self.context.setRange(256, 1_048_576)
        self.context.setSingleStep(1024)
        self.context.setSuffix(" tokens")
        self.context.setGroupSeparatorShown(True)
        self.threads = QSpinBox(self)
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("Automatic")
        self.parallel = QSpinBox(self)
        self.parallel.setRange(0, 64)
        self.parallel.setSpecialValueText("Automatic")
        self.parallel.setToolTip(
            "Requests generated at once, decoded together, each with the whole context length; "
            "Automatic: as many as fit in a quarter of the free memory, up to 8"
        )
        self.reasoning = QCheckBox("Thinks in <think> blocks (returned as reasoning_content)", self)
        self.max_batch = QSpinBox(self)
        self.max_batch.setRange(1, 4096)
        self.max_reply = QSpinBox(self)
        self.max_reply.setRange(0, 1_048_576)
        self.max_reply.setSingleStep(256)
        self.max_reply.setSuffix(" tokens")
        self.max_reply.setGroupSeparatorShown(True)
        self.max_reply.setSpecialValueText("Up to the context")
        self.max_reply.setToolTip("The longest reply when a request sets no maximum of its own")
        self.price_in = QDoubleSpinBox(self)
        self.price_out = QDoubleSpinBox(self)
        for price in (self.price_in, self.price_out):
            price.setRange(0, 1_000_000)
            price.setDecimals(4)
            price.setSuffix(f" {currency} per 1M tokens" if currency else " per 1M tokens")
        for box in (
            self.preset,
            self.kind,
            self.engine,
            self.gpu_layers,
            self.context,
            self.threads,
            self.parallel,
            self.max_reply,
        ):
            box.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)  # never cut short
        self.estimate = WrappedLabel(self)
        self.estimate.setText("Estimating…")
        self.estimate.setAccessibleName("Memory estimate")
        self.error = QLabel(self)
        self.error.setWordWrap(True)
        set_tone(self.error, "error")
        self.error.hide()
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Save" if existing else "Add and load")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._build_form()
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self._start_estimate)

        self.preset.currentIndexChanged.connect(self._preset_chosen)
        self.engine.currentIndexChanged.connect(self._engine_changed)
        self.browse_button.clicked.connect(self.browse)
        for edit in (self.source, self.name, self.upstream_model, self.credential_env):
            edit.textChanged.connect(self._changed)
        for spin in (self.gpu_layers, self.context, self.threads, self.parallel):
            spin.valueChanged.connect(self._changed)
        self.use_gpu.toggled.connect(self._changed)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self._fill(
            existing or ModelConfig(name="new-model", kind="chat", engine="llama.cpp", context_length=8192)
        )
        if existing is None:
            self.name.clear()
        else:
            self.name.setReadOnly(True)
            self.name.setToolTip("A model keeps its name: keys and usage refer to it")

    def _build_form(self) -> None:
        source_row = QHBoxLayout()
        source_row.addWidget(self.source, 1)
        source_row.addWidget(self.browse_button)
        self.source_label = _label("", self.source, self)
        form = QFormLayout()
        self.form = form
        if self.existing is None:
            form.addRow(_label("&Preset:", self.preset, self), self.preset)
            form.addRow("", self.preset_note)
        else:
            self.preset.hide()
            self.preset_note.hide()
        form.addRow(_label("&Name:", self.name, self), self.name)
        form.addRow(_label("&Engine:", self.engine, self), self.engine)
        form.addRow(_label("&Kind:", self.kind, self), self.kind)
        form.addRow(self.source_label, source_row)
        form.addRow(_label("Upstream &model:", self.upstream_model, self), self.upstream_model)
        form.addRow(_label("&Credential variable:", self.credential_env, self), self.credential_env)
        form.addRow(_label("&GPU layers:", self.gpu_layers, self), self.gpu_layers)
        form.addRow("", self.use_gpu)
        form.addRow(_label("Con&text length:", self.context, self), self.context)
        form.addRow(_label("&Threads:", self.threads, self), self.threads)
        form.addRow(_label("P&arallel requests:", self.parallel, self), self.parallel)
        form.addRow("", self.reasoning)
        form.addRow(_label("Default max &reply:", self.max_reply, self), self.max_reply)
        form.addRow(_label("Inputs per re&quest:", self.max_batch, self), self.max_batch)
        form.addRow(_label("&Input price:", self.price_in, self), self.price_in)
        form.addRow(_label("O&utput price:", self.price_out, self), self.price_out)
        form.addRow(_label("Memory:", self.estimate, self), self.estimate)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addStretch(1)  # room left over goes here, not between the rows
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

    # -- filling in ------------------------------------------------------------------------------
    def _fill(self, config: ModelConfig) -> None:
        self.name.setText(config.name)
        self.engine.setCurrentIndex(self.engine.findData(config.engine))
        self.kind.setCurrentIndex(self.kind.findData(config.kind))
        self.source.setText(config.source)
        self.upstream_model.setText(config.upstream_model or "")
        self.credential_env.setText(config.credential_env or "")
        self.gpu_layers.setValue(config.n_gpu_layers)
        self.use_gpu.setChecked(config.n_gpu_layers != 0)
        self.context.setValue(config.context_length)
        self.threads.setValue(config.threads or 0)
        self.parallel.setValue(config.parallel or 0)
        self.reasoning.setChecked(config.reasoning)
        self.max_batch.setValue(config.max_batch)
        self.max_reply.setValue(config.default_max_tokens or 0)
        self.price_in.setValue(config.price_input_per_million)
        self.price_out.setValue(config.price_output_per_million)
        self._engine_changed()

    def _preset_chosen(self) -> None:
        name = self.preset.currentData()
        if not name:
            self._preset_settings = {}
            self.preset_note.clear()
            return
        chosen = preset(name)
        self._preset_settings = dict(chosen.settings)
        self._fill(chosen.config(source=""))
        self.preset_note.setText(chosen.description)
        self._match_hardware()
        self._fit()
        self.source.setPlaceholderText(
            f"the {'GGUF file' if chosen.source_kind == 'file' else 'model directory'} of {chosen.name}"
        )
        self.source.setFocus()

    def _engine_changed(self) -> None:
        engine = self.engine.currentData()
        # Local engines serve one kind; only an upstream or the test engine may serve either.
        fixed = {"llama.cpp": "chat", "sentence-transformers": "embedding"}.get(engine)
        if fixed is not None:
            self.kind.setCurrentIndex(self.kind.findData(fixed))
        self.kind.setEnabled(fixed is None)
        text, placeholder = SOURCE_LABELS[engine]
        self.source_label.setText(text)
        if not self.preset.currentData():
            self.source.setPlaceholderText(placeholder)
        local = engine in ("llama.cpp", "sentence-transformers")
        self.browse_button.setVisible(local)
        self.browse_button.setAccessibleName(
            "Choose the GGUF file" if engine == "llama.cpp" else "Choose the model directory"
        )
        self.browse_button.setToolTip(self.browse_button.accessibleName())
        form = self.form
        form.setRowVisible(self.upstream_model, engine == "upstream")
        form.setRowVisible(self.credential_env, engine == "upstream")
        form.setRowVisible(self.gpu_layers, engine == "llama.cpp")
        form.setRowVisible(self.use_gpu, engine == "sentence-transformers")
        form.setRowVisible(self.threads, local)
        form.setRowVisible(self.parallel, engine == "llama.cpp")
        self._kind_changed()
        self._changed()

    def _match_hardware(self) -> None:
        """A preset offloads every layer to the GPU; where llama.cpp has no GPU offload, none."""
        name = self.preset.currentData()
        hardware = self._hardware
        if not name or hardware is None or hardware.llama_gpu_offload:
            return
        if self.engine.currentData() == "llama.cpp" and self.gpu_layers.value() != 0:
            self.gpu_layers.setValue(0)
            self.preset_note.setText(preset(name).description + NO_OFFLOAD)

    def _kind_changed(self) -> None:
        chat = self.kind.currentData() == "chat"
        self.form.setRowVisible(self.reasoning, chat)
        self.form.setRowVisible(self.max_reply, chat)
        self.form.setRowVisible(self.max_batch, not chat)
        self.form.setRowVisible(self.price_out, chat)  # an embedding has no output to price
        self._changed()
        self._fit()

    def _fit(self) -> None:
        """Take the height the form now needs (rows shown or hidden, a preset's note, an error)."""
        layout = self.layout()
        if layout is None or not self.isVisible():
            return
        layout.activate()
        width = max(self.width(), layout.totalMinimumSize().width())
        height = (
            layout.totalHeightForWidth(width)
            if layout.hasHeightForWidth()
            else layout.totalSizeHint().height()
        )
        self.resize(width, max(height, layout.totalMinimumSize().height()))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._fit()

    # -- choosing a file -------------------------------------------------------------------------
    def browse(self) -> None:
        """Open the file picker (a GGUF file, or a directory for sentence-transformers), window-modal."""
        directory = self.engine.currentData() == "sentence-transformers"
        picker = QFileDialog(self, "Choose the model directory" if directory else "Choose the GGUF file")
        if directory:
            picker.setFileMode(QFileDialog.FileMode.Directory)
            picker.setOption(QFileDialog.Option.ShowDirsOnly, True)
        else:
            picker.setFileMode(QFileDialog.FileMode.ExistingFile)
            picker.setNameFilters(["GGUF models (*.gguf)", "All files (*)"])
        if self.source.text().strip():
            picker.selectFile(self.source.text().strip())
        picker.fileSelected.connect(self.source.setText)
        self.picker = picker
        picker.open()

    # -- the result ------------------------------------------------------------------------------
    def config(self) -> ModelConfig:
        """The model as the form describes it; raises pydantic's ``ValidationError`` if it is invalid."""
        engine = self.engine.currentData()
        source = self.source.text().strip()
        if engine == "upstream":
            source = ",".join(url.strip() for url in source.split(",") if url.strip())
        kind = self.kind.currentData()
        values = {
            "name": self.name.text().strip(),
            "kind": kind,
            "engine": engine,
            "source": source,
            "n_gpu_layers": (-1 if self.use_gpu.isChecked() else 0)
            if engine == "sentence-transformers"
            else self.gpu_layers.value(),
            "context_length": self.context.value(),
            "threads": self.threads.value() or None,
            "parallel": (self.parallel.value() or None) if engine == "llama.cpp" else None,
            "reasoning": kind == "chat" and self.reasoning.isChecked(),
            "max_batch": self.max_batch.value(),
            "default_max_tokens": self.max_reply.value() or None,
            "price_input_per_million": self.price_in.value(),
            "price_output_per_million": self.price_out.value() if kind == "chat" else 0.0,
            "upstream_model": (self.upstream_model.text().strip() or None) if engine == "upstream" else None,
            "credential_env": (self.credential_env.text().strip() or None) if engine == "upstream" else None,
        }
        kept = self.existing.model_dump() if self.existing is not None else self._preset_settings
        if engine != kept.get("engine", engine):  # another engine's own settings do not carry over
            kept = {k: v for k, v in kept.items() if k not in ENGINE_SETTINGS}
        return ModelConfig(**{**kept, **values})

    def check(self) -> str | None:
        """What is wrong with the form, or ``None``."""
        try:
            config = self.config()
        except ValidationError as exc:
            return problems(exc)
        if self.existing is None and config.name in self._taken:
            return f"Name: a model named {config.name} already exists."
        if not config.source and config.engine != "fake":
            return (
                f"{SOURCE_LABELS[config.engine][0].replace('&', '').rstrip(':')}: choose where the model is."
            )
        return None

    def accept(self) -> None:
        """Close with valid settings whose file or directory exists (checked off the GUI thread)."""
        problem = self.check()
        if problem is not None:
            self._refuse(problem)
            return
        config = self.config()
        moved = self.existing is None or config.source != self.existing.source
        if config.engine in LOCAL and moved:
            if not self._checking:
                self._checking = True
                self._tasks.spawn(self._accept_if_found(config), "checking where the model is")
            return
        self.error.hide()
        super().accept()

    async def _accept_if_found(self, config: ModelConfig) -> None:
        try:
            missing = await self._tasks.call(source_problem, config)
        finally:
            self._checking = False
        if missing is not None:
            self._refuse(f"{SOURCE_LABELS[config.engine][0].replace('&', '').rstrip(':')}: {missing}.")
            self.source.setFocus()
            return
        if self.isVisible():
            self.error.hide()
            super().accept()

    def _refuse(self, problem: str) -> None:
        self.error.setText(problem)
        self.error.show()
        self._fit()

    def done(self, result: int) -> None:
        self._estimating += 1  # an estimate still on its way has no dialog left to show it in
        self._estimate_timer.stop()
        super().done(result)

    # -- the estimate ----------------------------------------------------------------------------
    def set_hardware(self, hardware: Hardware) -> None:
        self._hardware = hardware
        self._match_hardware()
        self._changed()

    def _changed(self) -> None:
        self._estimate_timer.start()
        if self.existing is not None:
            try:
                reload = self._loaded and needs_reload(self.existing, self.config())
            except ValidationError:
                reload = False
            self.ok_button.setText("Save and reload" if reload else "Save")

    def _start_estimate(self) -> None:
        self._estimating += 1
        self._tasks.spawn(self._estimate(self._estimating), "estimating the model's memory")

    async def _estimate(self, attempt: int) -> None:
        tone: Tone = ""
        if self._hardware is None:
            text = "Checking the hardware…"
        else:
            try:
                config = self.config()
            except ValidationError:
                text = "Fill in the settings to see whether the model fits."
            else:
                if config.engine in LOCAL and not config.source:
                    what = "file" if config.engine == "llama.cpp" else "directory"
                    text = f"Choose the model's {what} to see whether it fits."
                else:
                    fit = await self._tasks.call(fit_of, config, self._hardware)
                    text = fit_text(fit)
                    tone = "warning" if fit.fits is False else ""
        if attempt != self._estimating:
            return  # the form changed meanwhile; a newer estimate is on its way
        self.estimate.setText(text)
        set_tone(self.estimate, tone)
        self._fit()
        self.estimated.emit(text)
