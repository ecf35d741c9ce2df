"""Everything the server runs on, opened once: the store, keys, the ledger, the models, stored responses.

The window holds the same object, so it manages keys and reads usage whether or not the HTTP server is
listening.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.access.keys import KeyService, load_or_create_secret
from server.access.limits import AuthThrottle, Limiter
from server.config import Settings, load_settings, storable_models, stored_values
from server.datadir import protect
from server.engines.manager import Factory, ModelManager
from server.engines.upstream import UpstreamClient
from server.hub.credentials import TokenStore
from server.hub.downloads import DownloadService
from server.hub.process import Hub
from server.instance import InstanceLock
from server.metering.inflight import InFlight, recover
from server.metering.journal import JOURNAL_FOLDER, Journal
from server.metering.ledger import Ledger
from server.store import Store
from server.stored_responses import ResponseStore

log = logging.getLogger(__name__)


def settings_from_store(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, what the window saved in the store, the environment and ``overrides``."""
    base = load_settings(environ, **{k: v for k, v in overrides.items() if k == "data_dir"})
    if base.database_path.exists():
        store = Store(base.database_path)
        try:
            saved = store.all_settings()
        finally:
            store.close()
    else:
        saved = {}
    return load_settings(environ, stored=stored_values(saved), **overrides)


def save_model_table(store: Store, models: ModelManager) -> None:
    """Save the model table as it is now, read back at the next start."""
    store.set_setting("models", storable_models(tuple(models.configs())))


@dataclass
class Services:
    settings: Settings
    store: Store
    keys: KeyService
    ledger: Ledger
    models: ModelManager
    responses: ResponseStore
    limiter: Limiter
    auth_throttle: AuthThrottle
    upstream: UpstreamClient
    """The HTTP session to upstream engines; opened and closed on the server's event loop."""
    inflight: InFlight
    """The requests being served, checkpointed; ended with their rows when the server stops."""
    tokens: TokenStore
    """The Hugging Face access token, for gated repositories."""
    downloads: DownloadService
    """Models downloaded from Hugging Face into the models folder, and from there into the table."""
    instance: InstanceLock | None = None
    """This process's hold on the data directory: one window or server per data folder."""

    @classmethod
    def open(cls, settings: Settings, *, engines: Mapping[str, Factory] | None = None) -> Services:
        """Open the data directory (creating it, private to its user), migrate the store, and start loading
        the models.

        Raises :class:`server.instance.DataDirInUse` if another process runs on the same data directory.
        """
        protect(settings.data_dir)  # the user's alone, whatever an older version left
        instance = InstanceLock(settings.data_dir)
        try:
            store = Store(settings.database_path)
        except BaseException:
            instance.release()
            raise
        secret = load_or_create_secret(settings.secret_path)
        models = ModelManager(settings.models, max_queue=settings.max_queue, engines=engines)
        ledger = Ledger(store, journal=Journal(settings.data_dir / JOURNAL_FOLDER))
        limiter = Limiter(store)
        tokens = TokenStore(settings.data_dir)
        downloads = DownloadService(
            settings.models_folder,
            Hub(settings.hf_endpoint, tokens.get, settings.log_level),
            models,
            lambda: save_model_table(store, models),
            load=settings.load_models,
        )
        services = cls(
            settings=settings,
            store=store,
            keys=KeyService(store, secret),
            ledger=ledger,
            models=models,
            responses=ResponseStore(store),
            limiter=limiter,
            auth_throttle=AuthThrottle(),
            upstream=UpstreamClient(
                models.upstreams,
                read_timeout_s=settings.upstream_timeout_s,
                max_body_bytes=settings.upstream_max_body_bytes,
            ),
            inflight=InFlight(store, limiter.boot),
            tokens=tokens,
            downloads=downloads,
            instance=instance,
        )
        recovered = recover(store, ledger, limiter.boot, settings.models)
        if recovered:
            log.warning(
                "billed %d requests a previous run was serving when it ended (interrupted)", recovered
            )
        released = limiter.release_orphans()
        if released:
            log.warning("released %d budget reservations left by a previous run", released)
        if settings.load_models:
            models.load_all_in_background()
            downloads.resume_interrupted()  # those a previous run was working on when it ended
        return services

    def save_server_settings(self, **values: object) -> None:
        """Save host, port, LAN or the models folder for the next start (the running server keeps its
        address)."""
        allowed = {"host", "port", "lan", "models_dir"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"not server settings: {', '.join(sorted(unknown))}")
        current = dict(self.store.get_setting("server", {}) or {})
        current.update(values)
        self.store.set_setting("server", current)

    def save_models(self) -> None:
        """Save the model table as it is now (the Models page's changes survive a restart)."""
        save_model_table(self.store, self.models)

    def close(self) -> None:
        """Stop the downloads (each goes on at the next start), finish writing the ledger, unload the models
        and close the store."""
        self.downloads.close()
        self.inflight.close()
        self.ledger.close()
        self.keys.close()
        self.models.close()
        self.store.close()
        if self.instance is not None:
            self.instance.release()
