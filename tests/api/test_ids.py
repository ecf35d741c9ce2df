"""Request and response ids: unique, and in the order they were made."""

from __future__ import annotations

import re
import time

from server.api.request import new_id


def test_ids_have_the_prefix_and_27_hex_digits_and_never_repeat() -> None:
    ids = [new_id("req_") for _ in range(20_000)]
    assert all(re.fullmatch(r"req_[0-9a-f]{27}", made) for made in ids)
    assert len(set(ids)) == len(ids)


def test_an_id_made_later_sorts_later() -> None:
    """The ledger's and the response store's unique indexes on these ids then grow at one end."""
    earlier = [new_id("resp_") for _ in range(100)]
    time.sleep(0.002)
    later = [new_id("resp_") for _ in range(100)]
    assert max(earlier) < min(later)
    stamp = int(later[0].removeprefix("resp_")[:11], 16)
    assert abs(stamp / 1000 - time.time()) < 5
