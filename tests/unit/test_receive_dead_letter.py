"""``hub receive`` parks what it refused in the dead-letter exchange with the reason (hub.pipeline.cli
``dead_letter_refused``); when that publish fails, the caller is told to reject the messages (nack without requeue) so
the queue dead-letters them anyway — never acked away. The real-broker path is in tests/integration/test_pipeline.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from hub.errors import BrokerUnavailable, SignatureInvalid
from hub.pipeline.cli import dead_letter_refused
from hub.transport.names import Names


class _Transport:
    def __init__(self, fail: bool) -> None:
        self.names = Names("t")
        self.user = "t.u.county-a-oa"
        self.fail = fail
        self.published: list[Any] = []

    async def publish_many(self, items: list[Any]) -> None:
        if self.fail:
            raise BrokerUnavailable("the broker went away")
        self.published += items


def _incoming(mid: str) -> Any:
    return SimpleNamespace(body=b"<x/>", message_id=mid, routing_key="county-a-oa", correlation_id=None)


def test_refused_deliveries_are_published_with_their_reason() -> None:
    t = _Transport(fail=False)
    m = _incoming("m1")
    err = SignatureInvalid("the content changed after the hub signed", code="SIG_DIGEST")
    assert asyncio.run(dead_letter_refused(t, "county-a-oa", [(m, err)])) == []
    [item] = t.published
    assert item.exchange == "t.dead" and item.body == b"<x/>" and item.message_id == "m1"
    assert item.user_id == t.user
    assert item.headers == {
        "x-refused-by": "county-a-oa",
        "x-refused-code": "SIG_DIGEST",
        "x-refused-reason": "the content changed after the hub signed",
    }


def test_a_failed_publish_returns_the_messages_to_reject() -> None:
    t = _Transport(fail=True)
    m = _incoming("m1")
    err = SignatureInvalid("x", code="SIG_VALUE")
    assert asyncio.run(dead_letter_refused(t, "county-a-oa", [(m, err)])) == [m]
    assert asyncio.run(dead_letter_refused(t, "county-a-oa", [])) == []
