"""The model table at run time: which models are loading, loaded or failed, and their workers.

Engines are found by name in a registry of factories; the built-in ones are registered exactly as an
extension's would be. Loading happens on a background thread so the server answers at once; a model
that fails is reported with its reason and is never replaced by another.

Changing a model's settings never interrupts it: what is read per request (prices, reasoning, the name
shown, limits) applies at once, and a change that needs a new instance of the engine loads that instance
beside the running one, which keeps answering until the new one is ready. Then requests go to the new
instance, and the old one finishes what it had started before it closes. (For that time both are in
memory: a model too large for two copies is unloaded first, then loaded.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from server.config import ModelConfig, needs_reload
from server.engines.base import ChatBackend, EmbeddingBackend, LoadError
from server.engines.chat_process import ProcessChat
from server.engines.supervisor import Crash, Supervisor
from server.engines.upstream import ReplicaStatus, UpstreamModel
from server.engines.worker import ModelWorker, QueueStats
from server.errors import EngineCrashed, ModelNotFound, ModelUnavailable
from server.tuning import release, settle

log = logging.getLogger(__name__)

Backend = ChatBackend | EmbeddingBackend
Factory = Callable[[ModelConfig], Backend]
State = Literal["loading", "loaded", "restarting", "failed", "unloaded"]
RETIRE_GRACE_S = 5.0
"""How long a replaced instance stays open after the switch for the requests that found it just before
(they render their prompt on it, then queue on its worker)."""
DRAIN_S = 300.0
"""How long a replaced instance may take to finish the requests it was running or had queued."""


def _llama(config: ModelConfig) -> Backend:
    # In a child process: a crash in llama.cpp (a segfault, an abort on a CUDA error) must cost only the
    # requests it was running, never the server or the window.
    return ProcessChat(config, "llama.cpp")


def _sentence_transformers(config: ModelConfig) -> Backend:
    # In a child process: torch holds the interpreter lock for long stretches, which would stall the
    # window and the server alike.
    from server.engines.embedder_process import ProcessEmbedder  # noqa: PLC0415  (numpy, multiprocessing)

    return ProcessEmbedder(config)


def _upstream(config: ModelConfig) -> Backend:
    return UpstreamModel.from_config(config)  # type: ignore[return-value]


def _fake(config: ModelConfig) -> Backend:
    from server.engines.fake import FakeChat, FakeEmbedder, options  # noqa: PLC0415

    if config.kind == "embedding":
        return FakeEmbedder(config)
    # process=1: in an engine process of its own, as llama.cpp runs (its crash options need one).
    return ProcessChat(config, "fake") if options(config.source).get("process") == "1" else FakeChat(config)


BUILTIN_ENGINES: Mapping[str, Factory] = {
    "llama.cpp": _llama,
    "sentence-transformers": _sentence_transformers,
    "upstream": _upstream,
    "fake": _fake,
}


@dataclass(frozen=True)
class ModelStatus:
    """What the window and ``/v1/models`` know of one model."""

    name: str
    kind: str
    engine: str
    state: State
    error: str | None
    source: str
    load_seconds: float | None
    queue: QueueStats | None
    replicas: tuple[ReplicaStatus, ...] = ()
    """For an upstream model: each replica's health and load."""
    crashes: tuple[Crash, ...] = ()
    """For a model in an engine process: each time the process died since the model was loaded."""
    restarts: int = 0
    engine_info: dict[str, Any] | None = None
    """What the engine process reported of itself (the llama.cpp backend it chose, …)."""
    reloading: bool = False
    """A new instance with new settings is loading; this one keeps answering until it is ready."""
    reload_error: str | None = None
    """Why the latest new settings did not load (the model kept serving with its previous ones)."""


def _supervisor(backend: Backend | None) -> Supervisor | None:
    """The engine process behind a backend, if it runs in one."""
    supervisor = getattr(backend, "supervisor", None)
    return supervisor if isinstance(supervisor, Supervisor) else None


def _live_state(slot: _Slot) -> tuple[State, str | None]:
    """A model's state and error, counting its engine process: restarting after a crash, or down."""
    supervisor = _supervisor(slot.backend)
    if slot.state != "loaded" or supervisor is None or supervisor.state == "running":
        return slot.state, slot.error
    if supervisor.state == "restarting":
        return "restarting", slot.error
    return "failed", supervisor.down_reason


class _Slot:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.state: State = "unloaded"
        self.error: str | None = None
        self.backend: Backend | None = None
        self.worker: ModelWorker | None = None
        self.load_seconds: float | None = None
        self.load_lock = threading.Lock()
        self.created = int(time.time())
        self.pending: ModelConfig | None = None
        """New settings waiting for :meth:`ModelManager.load` (the running instance keeps the old ones)."""
        self.reloading = False
        self.reload_error: str | None = None

    @property
    def wanted(self) -> ModelConfig:
        """The settings the table holds: the pending ones, if any."""
        return self.pending or self.config


class ModelManager:
    """Holds every configured model and its worker thread."""

    def __init__(
        self,
        configs: Iterable[ModelConfig],
        *,
        max_queue: int,
        engines: Mapping[str, Factory] | None = None,
        retire_grace_s: float = RETIRE_GRACE_S,
    ) -> None:
        self._engines = dict(BUILTIN_ENGINES if engines is None else engines)
        self._retire_grace_s = retire_grace_s
        self._max_queue = max_queue
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {c.name: _Slot(c) for c in configs}
        self._loader: threading.Thread | None = None
        self._closing = False
        self._closed = threading.Event()
        self._retiring: list[threading.Thread] = []
        self.loaded_event = threading.Event()
        self.loaded_event.set()  # nothing is loading until load_all_in_background

    # -- loading ---------------------------------------------------------------------------------
    def load_all_in_background(self) -> None:
        """Load every model, one after another, on a background thread."""
        names = [name for name, slot in self._slots.items() if slot.config.load_at_start]
        self.loaded_event.clear()
        for name in names:
            self._slots[name].state = "loading"
        self._loader = threading.Thread(
            target=self._load_many, args=(names,), name="model-loader", daemon=True
        )
        self._loader.start()

    def _load_many(self, names: list[str]) -> None:
        for name in names:
            if self._closing:
                break
            self.load(name)
        self.loaded_event.set()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self.loaded_event.wait(timeout)

    def load(self, name: str) -> ModelStatus:
        """Load (or reload) one model on the calling thread; failures are recorded, not raised."""
        slot = self._slot(name)
        with slot.load_lock:  # two loads of one model run one after the other, never leaking a backend
            status = self._load(name, slot)
        settle()  # the engine's objects live until it unloads: out of the collector's full passes
        return status

    def _load(self, name: str, slot: _Slot) -> ModelStatus:
        if slot.backend is not None:
            return self._reload(name, slot)
        if self._unload(name):
            release()  # the old engine's objects go back to the collector, which frees its reference cycles
        with self._lock:
            slot.config, slot.pending = slot.wanted, None
            slot.state, slot.error, slot.reload_error = "loading", None, None
        started = time.monotonic()
        try:
            backend = self._build(slot.config)
        except LoadError as exc:
            slot.state, slot.error = "failed", str(exc)
            log.warning("model %s failed to load: %s", name, exc)
            return self.status(name)
        except Exception as exc:  # an engine's unexpected failure is the operator's to read
            slot.state, slot.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", name)
            return self.status(name)
        with self._lock:
            if self._closing:  # closed while this model loaded: nobody will serve it
                backend.close()
                slot.state = "unloaded"
                return self.status(name)
            slot.backend = backend
            slot.worker = self._worker(name, backend)
            slot.load_seconds = time.monotonic() - started
            slot.state = "loaded"
        log.info("model %s loaded in %.2f s", name, slot.load_seconds)
        return self.status(name)

    def _build(self, config: ModelConfig) -> Backend:
        factory = self._engines.get(config.engine)
        if factory is None:
            raise LoadError(f"no engine named {config.engine!r} is registered")
        return factory(config)

    def _worker(self, name: str, backend: Backend) -> ModelWorker | None:
        # An upstream schedules its own work; local engines get their worker thread, and a model that
        # generates several requests together a worker per slot.
        if isinstance(backend, UpstreamModel):
            return None
        return ModelWorker(name, self._max_queue, parallel=int(getattr(backend, "slots", 1)))

    def _reload(self, name: str, slot: _Slot) -> ModelStatus:
        """A new instance beside the running one, which answers until the new one is ready."""
        config = slot.wanted
        slot.reloading, slot.reload_error = True, None
        started = time.monotonic()
        try:
            backend = self._build(config)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, LoadError) else f"{type(exc).__name__}: {exc}"
            with self._lock:
                slot.pending, slot.reloading, slot.reload_error = None, False, reason
            log.warning("model %s kept its previous settings: the new ones did not load: %s", name, reason)
            return self.status(name)
        with self._lock:
            if self._closing:
                backend.close()
                slot.reloading = False
                return self.status(name)
            old = slot.backend, slot.worker
            slot.config, slot.pending = config, None
            slot.backend, slot.worker = backend, self._worker(name, backend)
            slot.state, slot.error, slot.reloading = "loaded", None, False
            slot.load_seconds = time.monotonic() - started
            slot.created = int(time.time())
        log.info("model %s reloaded with new settings in %.2f s", name, slot.load_seconds)
        self._retire(name, *old)
        return self.status(name)

    def _retire(self, name: str, backend: Backend | None, worker: ModelWorker | None) -> None:
        """Close a replaced instance once the requests it had have ended (on a thread of its own)."""
        held: list[Any] = [backend, worker]  # let go of before the collector runs, so they can be freed

        def retire() -> None:
            self._closed.wait(self._retire_grace_s)
            old_backend, old_worker = held
            held.clear()
            if old_worker is not None:
                old_worker.finish(0.0 if self._closed.is_set() else DRAIN_S)
            if old_backend is not None:
                old_backend.close()
            del old_backend, old_worker
            if not self._closed.is_set():
                release()  # what the old engine left in reference cycles is freed
            log.info("the previous instance of model %s is closed", name)

        thread = threading.Thread(target=retire, name=f"retire:{name}", daemon=True)
        with self._lock:
            self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]
        thread.start()

    def unload(self, name: str) -> None:
        if self._unload(name):
            release()  # what the engine left in reference cycles is freed; what still lives is set aside again

    def _unload(self, name: str) -> bool:
        """Close the model's worker and engine; whether it had one."""
        slot = self._slot(name)
        with self._lock:
            backend, worker = slot.backend, slot.worker
            slot.backend, slot.worker = None, None
            slot.state = "unloaded"
            slot.config, slot.pending = slot.wanted, None
        if worker is not None:
            worker.close()
        if backend is not None:
            backend.close()
        return backend is not None

    def close(self, wait_s: float = 1.0) -> None:
        """Unload everything. A load still running is not waited for beyond ``wait_s``: when it ends,
        its model is closed at once (the loader is a daemon thread, ended with the process)."""
        self._closing = True
        self._closed.set()  # replaced instances close now, not after their grace period
        if self._loader is not None:
            self._loader.join(timeout=wait_s)
        for name in list(self._slots):
            self._unload(name)  # the process, or this table, is ending: no collector bookkeeping
        with self._lock:
            retiring = list(self._retiring)
        for thread in retiring:
            thread.join(timeout=wait_s + 10)

    # -- the table -------------------------------------------------------------------------------
    def configs(self) -> list[ModelConfig]:
        """The table as the operator set it (settings waiting for a reload included)."""
        return [slot.wanted for slot in self._snapshot()]

    def add(self, config: ModelConfig) -> None:
        """Add a model to the table, unloaded."""
        with self._lock:
            if config.name in self._slots:
                raise ValueError(f"a model named {config.name!r} already exists")
            self._slots[config.name] = _Slot(config)

    def replace(self, config: ModelConfig) -> bool:
        """Change a model's settings. Those read per request (prices, reasoning, the name shown, limits)
        apply at once and ``False`` is returned; ``True`` means the engine must be built again: the new
        settings wait for :meth:`load`, and the running instance keeps answering meanwhile."""
        slot = self._slot(config.name)
        with self._lock:
            if needs_reload(slot.config, config):
                slot.pending = config
                return True
            slot.config, slot.pending = config, None
            return False

    def remove(self, name: str) -> None:
        self.unload(name)
        with self._lock:
            self._slots.pop(name, None)

    # -- serving ---------------------------------------------------------------------------------
    def _slot(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None:
            raise ModelNotFound(name)
        return slot

    def get(self, name: str, kind: str) -> tuple[Backend, ModelWorker | None, ModelConfig]:
        """A loaded model of the given kind, or the error a client should see."""
        slot = self._slots.get(name)
        if slot is None or slot.config.kind != kind:
            raise ModelNotFound(name)
        with self._lock:
            backend, worker = slot.backend, slot.worker
        if backend is None or (worker is None and not isinstance(backend, UpstreamModel)):
            if slot.state == "loading":
                raise ModelUnavailable(
                    f"The model '{name}' is still loading; try again shortly.", param="model"
                )
            raise ModelNotFound(name)
        supervisor = _supervisor(backend)
        if supervisor is not None and supervisor.state == "down":
            raise EngineCrashed(name, supervisor.down_reason or "its engine crashed", down=True)
        return backend, worker, slot.config

    def _snapshot(self) -> list[_Slot]:
        with self._lock:
            return list(self._slots.values())

    def served(self) -> list[tuple[ModelConfig, int]]:
        """The loaded models, with their creation time, in table order."""
        return [
            (s.config, s.created) for s in self._snapshot() if _live_state(s)[0] in ("loaded", "restarting")
        ]

    def states(self) -> list[tuple[ModelConfig, int, State]]:
        """Every model with its creation time and state, in table order (cheaper than ``statuses``)."""
        return [(s.config, s.created, _live_state(s)[0]) for s in self._snapshot()]

    def status(self, name: str) -> ModelStatus:
        return self._status(self._slot(name))

    def _status(self, slot: _Slot) -> ModelStatus:
        name = slot.config.name
        worker, backend = slot.worker, slot.backend
        supervisor = _supervisor(backend)
        state, error = _live_state(slot)
        return ModelStatus(
            name=name,
            kind=slot.config.kind,
            engine=slot.config.engine,
            state=state,
            error=error,
            source=slot.config.source,
            load_seconds=slot.load_seconds,
            queue=worker.stats() if worker is not None else None,
            replicas=tuple(backend.statuses()) if isinstance(backend, UpstreamModel) else (),
            crashes=tuple(supervisor.crashes) if supervisor is not None else (),
            restarts=supervisor.restarts if supervisor is not None else 0,
            engine_info=dict(supervisor.info) if supervisor is not None else None,
            reloading=slot.reloading,
            reload_error=slot.reload_error,
        )

    def upstreams(self) -> list[UpstreamModel]:
        """The loaded upstream models (their replicas are health-checked by the server)."""
        found: list[UpstreamModel] = []
        for slot in self._snapshot():
            if isinstance(slot.backend, UpstreamModel):
                found.append(slot.backend)
        return found

    def statuses(self) -> list[ModelStatus]:
        return [self._status(slot) for slot in self._snapshot()]

    def set_load_at_start(self, name: str, value: bool) -> None:
        """Remember whether the model loads at the next start (without loading or unloading it now)."""
        slot = self._slot(name)
        with self._lock:
            slot.config = slot.config.model_copy(update={"load_at_start": value})
