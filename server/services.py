"""Everything the server runs on, opened once: the store, keys, the ledger, the models, stored responses.

The window holds the same object, so it manages keys and reads usage whether or not the HTTP server is
listening.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from server.config import Settings
from server.engines.manager import Factory, ModelManager
from server.keys import KeyService, load_or_create_secret
from server.limits import AuthThrottle, Limiter
from server.responses import ResponseStore
from server.store import Store
from server.usage import Ledger

log = logging.getLogger(__name__)


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

    @classmethod
    def open(cls, settings: Settings, *, engines: Mapping[str, Factory] | None = None) -> Services:
        """Open the data directory (creating it), migrate the store, and start loading the models."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.database_path)
        secret = load_or_create_secret(settings.secret_path)
        models = ModelManager(settings.models, max_queue=settings.max_queue, engines=engines)
        services = cls(
            settings=settings,
            store=store,
            keys=KeyService(store, secret),
            ledger=Ledger(store),
            models=models,
            responses=ResponseStore(store),
            limiter=Limiter(store),
            auth_throttle=AuthThrottle(),
        )
        released = services.limiter.release_orphans()
        if released:
            log.warning("released %d budget reservations left by a previous run", released)
        if settings.load_models:
            models.load_all_in_background()
        return services

    def close(self) -> None:
        """Finish writing the ledger, unload the models and close the store."""
        self.ledger.close()
        self.models.close()
        self.store.close()
