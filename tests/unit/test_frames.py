"""hub.transport.frames writes exactly the bytes pamqp (through aiormq) writes for the same publish."""

from __future__ import annotations

import itertools

import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from hub.transport import frames

MAX_CONTENT = 131072 - 8  # aiormq: frame_max minus the frame overhead


def _pamqp(channel: int, body: bytes, **p: object) -> bytes:
    headers = p["headers"]
    properties = spec.Basic.Properties(
        content_type=p["content_type"],
        delivery_mode=p["delivery_mode"],
        priority=p["priority"],
        message_id=p["message_id"],
        user_id=p["user_id"],
        correlation_id=p["correlation_id"],
        headers=dict(headers) if headers else None,  # type: ignore[call-overload]
    )
    parts: list[object] = [
        spec.Basic.Publish(exchange=p["exchange"], routing_key=p["routing_key"], mandatory=True),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    parts += [ContentBody(body[i : i + MAX_CONTENT]) for i in range(0, len(body), MAX_CONTENT)]
    return ChannelFrame.marshall(channel, parts).payload  # type: ignore[arg-type]


HEADERS = [
    None,
    {"x-hub-kind": "delivery", "x-hub-service": "document.official/1", "x-hub-role": "to"},
    {"x-hub-kind": "error", "x-hub-ref": "", "x-hub-ref-verified": False},
    {"x-hub-kind": "receipt", "x-hub-ref": "a1b2", "x-hub-ref-verified": True, "x-hub-attempt": 3},
    {"x-hub-reason": "签名无效 signature invalid", "x-hub-big": 70000, "x-hub-neg": -5, "x-hub-first": 1 << 40},
]
BODIES = [
    b"",
    b"<x/>",
    "公文".encode() * 10,
    b"a" * MAX_CONTENT,
    b"b" * (MAX_CONTENT + 1),
    b"c" * (3 * MAX_CONTENT + 7),
]


@pytest.mark.parametrize(
    ("headers", "body", "optional"),
    list(itertools.product(HEADERS, BODIES, [(0, None, None, None), (9, "m-1", "hub-user", "c-1"), (5, "", "", "")])),
)
def test_publish_frames_are_pamqps(headers: dict[str, object] | None, body: bytes, optional: tuple) -> None:
    priority, message_id, user_id, correlation_id = optional
    p = dict(
        exchange="ns.hub.deliver",
        routing_key="city-220100-oa",
        content_type="application/xml",
        delivery_mode=2,
        priority=priority,
        message_id=message_id,
        user_id=user_id,
        correlation_id=correlation_id,
        headers=headers,
    )
    ours = frames.publish(7, body=body, max_content=MAX_CONTENT, **p)  # type: ignore[arg-type]
    assert ours == _pamqp(7, body, **p)


def test_a_short_string_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        frames.publish(
            1,
            exchange="x",
            routing_key="r" * 256,
            body=b"",
            max_content=MAX_CONTENT,
            content_type="application/xml",
            delivery_mode=2,
            priority=0,
            message_id=None,
            user_id=None,
            correlation_id=None,
            headers=None,
        )
