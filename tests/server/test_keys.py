from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from server.access import keys
from server.errors import InvalidRequest, Unauthenticated
from server.services import Services
from tests.conftest import Live


def test_generated_keys_are_well_formed_unique_and_long() -> None:
    made = {keys.generate_key() for _ in range(200)}
    assert len(made) == 200
    for token in made:
        assert token.startswith("aisp-") and len(token) == keys.KEY_LENGTH
        assert keys.well_formed(token)


def test_a_single_changed_character_breaks_the_checksum() -> None:
    token = keys.generate_key()
    body_char = token[10]
    altered = token[:10] + ("A" if body_char != "A" else "B") + token[11:]
    assert not keys.well_formed(altered)
    assert not keys.well_formed(token[:-1])
    assert not keys.well_formed(token + "x")
    assert not keys.well_formed("sk-" + token[5:])


def test_only_a_keyed_digest_is_stored(make_services: Callable[..., Services]) -> None:
    services = make_services()
    secret, record = services.keys.create("alice", owner_note="laptop")
    dump = "\n".join(services.store.db.connection().iterdump())
    assert secret not in dump
    assert secret[5:-6] not in dump
    assert services.keys.digest(secret) in dump
    assert record.hint == f"aisp-…{secret[-4:]}"


def test_authenticate_revoke_and_expiry(make_services: Callable[..., Services]) -> None:
    services = make_services()
    secret, record = services.keys.create("bob")
    assert services.keys.authenticate(secret).id == record.id
    services.keys.revoke(record.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        services.keys.authenticate(secret)
    short, _ = services.keys.create("short", expires_at=time.time() + 0.2)
    services.keys.authenticate(short)
    time.sleep(0.3)
    with pytest.raises(Unauthenticated, match="expired"):
        services.keys.authenticate(short)


def test_malformed_keys_never_reach_the_database(make_services: Callable[..., Services]) -> None:
    services = make_services()
    services.keys.create("real")
    queries: list[str] = []
    connection = services.store.db.connection()
    connection.set_trace_callback(queries.append)
    try:
        real = keys.generate_key()
        wrong_check = real[:-1] + ("1" if real[-1] == "0" else "0")  # a key's shape, a checksum that fails
        for token in ["", "aisp-", "' OR 1=1 --", "x" * 10_000, wrong_check]:
            with pytest.raises(Unauthenticated):
                services.keys.authenticate(token)
    finally:
        connection.set_trace_callback(None)
    assert queries == []


def _last_used(services: Services, key_id: str) -> float:
    deadline = time.monotonic() + 5
    while (stamp := services.keys.get(key_id).last_used_at) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stamp is not None
    return stamp


def test_last_use_is_written_coarsely_and_never_by_the_caller(make_services: Callable[..., Services]) -> None:
    """Authenticating writes nothing on the caller's thread (the event loop's, in the server): when the key
    was last used is written on a thread of its own, at most once a minute per key."""
    services = make_services()
    secret, record = services.keys.create("busy")
    assert record.last_used_at is None
    writes: list[str] = []
    connection = services.store.db.connection()
    connection.set_trace_callback(lambda sql: writes.append(sql) if not sql.startswith("SELECT") else None)
    try:
        for _ in range(20):
            services.keys.authenticate(secret)
        first = _last_used(services, record.id)
        for _ in range(20):
            services.keys.authenticate(secret)
    finally:
        connection.set_trace_callback(None)
    assert writes == []
    services.keys.close()  # every write handed over is done
    assert services.keys.get(record.id).last_used_at == first


def test_roll_keeps_the_old_key_for_the_grace_period(make_services: Callable[..., Services]) -> None:
    services = make_services()
    old_secret, old = services.keys.create("rolling", allowed_models=["fake-chat"])
    new_secret, new = services.keys.roll(old.id, grace_seconds=0.3)
    assert new.allowed_models == ("fake-chat",)
    assert services.keys.authenticate(old_secret).status() == "expiring"
    assert services.keys.authenticate(new_secret).id == new.id
    time.sleep(0.4)
    with pytest.raises(Unauthenticated):
        services.keys.authenticate(old_secret)
    assert services.keys.authenticate(new_secret).id == new.id


def test_secret_file_is_private_and_stable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "secret"
    first = keys.load_or_create_secret(path)
    assert keys.load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o077 == 0


def test_parse_duration() -> None:
    assert keys.parse_duration("30d") == 30 * 86400
    assert keys.parse_duration("90m") == 5400
    with pytest.raises(ValueError):
        keys.parse_duration("soon")


def test_a_keys_expiry_can_change_and_a_revoked_key_can_be_deleted(live: Live) -> None:
    service = live.services.keys
    secret, record = service.create("changing", expires_at=time.time() + 3600)

    def status(token: str) -> int:
        return httpx.get(
            live.base_url + "/models", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).status_code

    assert service.set_expiry(record.id, None).expires_at is None
    assert status(secret) == 200
    with pytest.raises(InvalidRequest, match="in the future"):
        service.set_expiry(record.id, time.time() - 1)
    service.set_expiry(record.id, time.time() + 0.5)
    time.sleep(0.6)
    assert status(secret) == 401
    with pytest.raises(InvalidRequest, match="revoke it"):
        service.delete(service.create("still works")[1].id)
    service.revoke(record.id)
    with pytest.raises(InvalidRequest, match="revoked"):
        service.set_expiry(record.id, time.time() + 3600)
    service.delete(record.id)
    assert record.id not in {r.id for r in service.list()}
    assert status(secret) == 401
