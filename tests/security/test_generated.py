"""Generated attacks: schemathesis sends requests built from the server's own OpenAPI document (valid ones and
deliberately invalid ones) and finds no 5xx and no answer outside the document; Hypothesis checks key
parsing and the ledger's arithmetic as properties."""

from __future__ import annotations

import random
import string
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import requests.adapters
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from server.access import keys
from server.access.keys import KeyService
from server.config import ModelConfig
from server.errors import Unauthenticated
from server.metering.ledger import Ledger, UsageEntry, cost_of, ledger_rows
from server.store import Store
from tests.security.conftest import ServerProcess

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    server = ServerProcess(tmp_path_factory.mktemp("schemathesis") / "data")
    key, _ = server.create_key("schemathesis")
    server.start()
    yield server, key
    server.kill()


def _schema(server: ServerProcess, key: str) -> Any:
    """The document the server serves (behind its key), loaded into schemathesis."""
    response = httpx.get(
        server.url + "/v1/openapi.json", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 200
    assert httpx.get(server.url + "/v1/openapi.json", timeout=30).status_code == 401, (
        "the document needs a key"
    )
    return schemathesis.openapi.from_dict(response.json())


class _FromAddress(requests.adapters.HTTPAdapter):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class Clients:
    """Sessions from ever new loopback addresses: requests sent without a valid key (the negative cases)
    count against their address's failed-authentication throttle, as many clients' would."""

    def __init__(self, per_address: int = 10) -> None:
        self.per_address = per_address
        self.sent = 0
        self.current: requests.Session | None = None

    def session(self) -> requests.Session:
        if self.current is None or self.sent % self.per_address == 0:
            if self.current is not None:
                self.current.close()
            number = self.sent // self.per_address
            self.current = requests.Session()
            self.current.mount("http://", _FromAddress(f"127.1.{number // 250}.{number % 250 + 1}"))
        self.sent += 1
        return self.current


def _fuzz(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: schemathesis.GenerationMode,
    count: int,
    url: str,
    headers: dict[str, str],
    clients: Clients,
    statuses: dict[str, int],
) -> None:
    checks = CHECKS + ([negative_data_rejection] if mode is schemathesis.GenerationMode.NEGATIVE else [])

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30, session=clients.session())
        seen = f"{operation.label} {response.status_code}"
        statuses[seen] = statuses.get(seen, 0) + 1
        # A body too large to read (413) is rejected as surely as a malformed one, though schemathesis lists
        # only the other 4xx statuses as rejections of invalid data.
        rejected_whole = response.status_code == 413 and mode is schemathesis.GenerationMode.NEGATIVE
        case.validate_response(response, checks=CHECKS if rejected_whole else checks, headers=headers)

    check()


def run_schemathesis(server: ServerProcess, key: str, examples: int) -> dict[str, int]:
    schema = _schema(server, key)
    headers = {"Authorization": f"Bearer {key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "GET /v1/models",
        "GET /v1/models/{model}",
        "POST /v1/chat/completions",
        "POST /v1/embeddings",
        "POST /v1/responses",
        "GET /v1/responses/{response_id}",
        "DELETE /v1/responses/{response_id}",
        "GET /v1/responses/{response_id}/input_items",
    }
    statuses: dict[str, int] = {}
    clients = Clients()
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            count = examples if operation.method.upper() == "POST" else max(10, examples // 4)
            _fuzz(operation, mode, count, server.url, headers, clients, statuses)
    return statuses


def test_schemathesis_finds_no_5xx_and_no_schema_violation(api: tuple[ServerProcess, str]) -> None:
    server, key = api
    started = time.monotonic()
    statuses = run_schemathesis(server, key, examples=40)
    assert any(s.startswith("POST /v1/chat/completions 200") for s in statuses), statuses
    assert any(s.startswith("POST /v1/chat/completions 400") for s in statuses), statuses
    assert time.monotonic() - started < 120
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.soak
def test_schemathesis_long_run(api: tuple[ServerProcess, str]) -> None:
    server, key = api
    run_schemathesis(server, key, examples=400)
    assert "Traceback" not in server.log(), server.log()[-3000:]


# -- key parsing ------------------------------------------------------------------------------------------

ALPHABET = string.ascii_letters + string.digits


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False))
def test_every_generated_key_is_well_formed_and_every_single_change_breaks_it(rng: random.Random) -> None:
    token = keys.generate_key()
    assert keys.well_formed(token) and len(token) == keys.KEY_LENGTH and token.startswith(keys.PREFIX)
    position = rng.randrange(len(keys.PREFIX), len(token))
    replacement = rng.choice([c for c in ALPHABET if c != token[position]])
    assert not keys.well_formed(token[:position] + replacement + token[position + 1 :])
    i, j = sorted(rng.sample(range(len(keys.PREFIX), len(token)), 2))
    if token[i] != token[j]:  # two characters swapped
        assert not keys.well_formed(token[:i] + token[j] + token[i + 1 : j] + token[i] + token[j + 1 :])


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"aisp-[0-9A-Za-z]{49}", fullmatch=True))
def test_arbitrary_text_is_never_mistaken_for_a_key(text: str) -> None:
    # A random 49-character body passes the 6-character checksum about once in 62**6 tries.
    assert keys.well_formed(text) is (
        text.startswith("aisp-") and len(text) == keys.KEY_LENGTH and keys._checksum(text[5:-6]) == text[-6:]
    )


@pytest.fixture(scope="module")
def key_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyService]:
    store = Store(tmp_path_factory.mktemp("keys") / "db.sqlite3")
    yield KeyService(store, b"s" * 32)
    store.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_authenticating_arbitrary_text_fails_without_sql(key_service: KeyService, text: str) -> None:
    queries: list[str] = []
    connection = key_service._store.db.connection()
    connection.set_trace_callback(queries.append)
    try:
        with pytest.raises(Unauthenticated):
            key_service.authenticate(text)
    finally:
        connection.set_trace_callback(None)
    assert queries == [] or keys.well_formed(text)


# -- the ledger's arithmetic --------------------------------------------------------------------------------

MODELS = {
    "cheap": ModelConfig(
        name="cheap", kind="chat", engine="fake", price_input_per_million=0.1, price_output_per_million=0.3
    ),
    "dear": ModelConfig(
        name="dear", kind="chat", engine="fake", price_input_per_million=30, price_output_per_million=60
    ),
    "free": ModelConfig(name="free", kind="embedding", engine="fake"),
}
T0 = 1_750_000_000.0

entries = st.builds(
    lambda n, key, model, status, tokens_in, tokens_out, offset, stream: UsageEntry(
        request_id=f"req_{n}",
        key_id=key,
        model=model,
        endpoint="chat.completions",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost=0.0 if status == "failed" and tokens_out == 0 else cost_of(MODELS[model], tokens_in, tokens_out),
        status=status,
        stream=stream,
        created_at=T0 + offset,
    ),
    st.integers(0, 40),  # request ids repeat: a replayed row must not count twice
    st.sampled_from(["key_a", "key_b", None]),
    st.sampled_from(sorted(MODELS)),
    st.sampled_from(["completed", "disconnected", "failed"]),
    st.integers(0, 10**7),
    st.integers(0, 10**6),
    st.floats(0, 5 * 86400, allow_nan=False),  # across hours and days
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(entries, max_size=60), st.integers(1, 7))
def test_the_ledger_adds_up(batch: list[UsageEntry], batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "db.sqlite3")
        ledger = Ledger(store, batch=batch_size)
        try:
            for entry in batch:
                ledger.submit(entry)
            ledger.flush()
            rows = list(ledger_rows(store))
            first: dict[str, UsageEntry] = {}
            for entry in batch:
                first.setdefault(entry.request_id, entry)  # the first row for a request id wins
            assert sorted(r["request_id"] for r in rows) == sorted(first)
            for row in rows:
                entry = first[row["request_id"]]
                assert (row["input_tokens"], row["output_tokens"]) == (
                    entry.input_tokens,
                    entry.output_tokens,
                )
                assert row["total_tokens"] == entry.input_tokens + entry.output_tokens
                assert row["cost"] == entry.cost
            db = store.db
            # The hourly roll-up (what the graphs read) equals the ledger, bucket by bucket.
            hourly = {
                (h, k, m): (n, i, o, c)
                for h, k, m, n, i, o, c in db.execute_sql(
                    "SELECT hour, key_id, model, requests, input_tokens, output_tokens, cost FROM usage_hourly"
                )
            }
            expected: dict[tuple[int, str, str], list[float]] = {}
            for entry in first.values():
                bucket = expected.setdefault(
                    (int(entry.created_at // 3600 * 3600), entry.key_id or "", entry.model), [0, 0, 0, 0.0]
                )
                bucket[0] += 1
                bucket[1] += entry.input_tokens
                bucket[2] += entry.output_tokens
                bucket[3] += entry.cost
            assert set(hourly) == set(expected)
            for hour, (n, i, o, c) in hourly.items():
                assert (n, i, o) == tuple(expected[hour][:3])
                assert c == pytest.approx(expected[hour][3], rel=1e-9, abs=1e-12)
            # The daily spend (what budgets read) counts billed tokens: none for a failure before any output.
            spend = {
                (k, d): (t, c)
                for k, d, t, c in db.execute_sql("SELECT key_id, day, tokens, cost FROM key_spend_daily")
            }
            billed: dict[tuple[str, int], list[float]] = {}
            for entry in first.values():
                if entry.key_id is None:
                    continue
                day = billed.setdefault((entry.key_id, int(entry.created_at // 86400 * 86400)), [0, 0.0])
                day[0] += entry.billed_tokens
                day[1] += entry.cost
            assert set(spend) == set(billed)
            for key_day, (tokens, cost) in spend.items():
                assert tokens == billed[key_day][0]
                assert cost == pytest.approx(billed[key_day][1], rel=1e-9, abs=1e-12)
        finally:
            ledger.close()
            store.close()


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9), st.sampled_from(sorted(MODELS)))
def test_cost_is_linear_and_never_negative(a: int, b: int, c: int, model: str) -> None:
    config = MODELS[model]
    assert cost_of(config, a, b) >= 0
    assert cost_of(config, a + c, b) >= cost_of(config, a, b)
    assert cost_of(config, a, b) == pytest.approx(
        cost_of(config, a, 0) + cost_of(config, 0, b), rel=1e-12, abs=1e-12
    )
    assert cost_of(None, a, b) == 0.0
