"""hub.transport._aiormq_fast writes exactly the bytes pamqp (through aiormq) writes for the same publish, and reads
the frames it decodes itself into exactly the objects pamqp makes of them (or fails where pamqp fails); the
reader and the batch confirmations the hub puts under aiormq behave as aiormq's own."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import re
import struct

import aiormq.connection
import aiormq.exceptions
import pamqp.frame
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.exceptions import UnmarshalingException
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from hub.transport import _aiormq_fast as fast

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
        expiration=p.get("expiration") or None,
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
    list(
        itertools.product(
            HEADERS,
            BODIES,
            [
                (0, None, None, None, None),
                (9, "m-1", "hub-user", "c-1", "86400000"),
                (5, "", "", "", ""),
                (1, "m", None, None, "1"),
            ],
        )
    ),
)
def test_publish_frames_are_pamqps(headers: dict[str, object] | None, body: bytes, optional: tuple) -> None:
    priority, message_id, user_id, correlation_id, expiration = optional
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
        expiration=expiration,
    )
    ours = fast.publish(7, body=body, max_content=MAX_CONTENT, **p)  # type: ignore[arg-type]
    assert ours == _pamqp(7, body, **p)


def test_a_short_string_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        fast.publish(
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


# -- decoding ------------------------------------------------------------------------------------------------------


def _split(wire: bytes) -> list[tuple[bytes, bytes]]:
    """(head, rest) of every frame in ``wire``, as the reader takes them off the socket."""
    out = []
    at = 0
    while at < len(wire):
        (size,) = struct.unpack_from(">I", wire, at + 3)
        out.append((wire[at : at + 7], wire[at + 7 : at + 8 + size]))
        at += 8 + size
    return out


def _state(frame: object) -> tuple[type, dict[str, object]]:
    """A frame's class and every attribute pamqp gives it (slots of methods and properties, nested)."""
    if isinstance(frame, ContentHeader):
        return ContentHeader, {
            "class_id": frame.class_id,
            "weight": frame.weight,
            "body_size": frame.body_size,
            "properties": _state(frame.properties),
        }
    if isinstance(frame, ContentBody):
        return ContentBody, {"value": frame.value}
    names = getattr(type(frame), "__slots__", ())
    return type(frame), {name: getattr(frame, name) for name in names}


def _same_as_pamqp(head: bytes, rest: bytes) -> object:
    consumed, channel, ours = fast.decode(head, rest)
    p_consumed, p_channel, theirs = pamqp.frame.unmarshal(head + rest)
    assert (consumed, channel) == (p_consumed, p_channel)
    assert _state(ours) == _state(theirs)
    mine, pamqps = _state(ours)[1], _state(theirs)[1]
    if isinstance(ours, ContentHeader):
        mine, pamqps = mine["properties"][1], pamqps["properties"][1]  # type: ignore[index]
    for name, value in mine.items():  # the same types too (True == 1, but not for the hub's checks)
        assert type(value) is type(pamqps[name]), name
    return ours


def _deliveries() -> list[bytes]:
    out = []
    for tag, redelivered, exchange, routing_key, consumer in [
        (1, False, "", "q", "ctag1.x"),
        (2**62 + 5, True, "ns.hub.inbound", "document.official/1", "amq.ctag-" + "中" * 20),
        (77, False, "e" * 127, "k" * 255, ""),
    ]:
        out.append(
            pamqp.frame.marshal(
                spec.Basic.Deliver(
                    consumer_tag=consumer,
                    delivery_tag=tag,
                    redelivered=redelivered,
                    exchange=exchange,
                    routing_key=routing_key,
                ),
                3,
            )
        )
    return out


def _headers() -> list[bytes]:
    when = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
    every = spec.Basic.Properties(
        content_type="application/xml",
        content_encoding="utf-8",
        headers={"x-hub-kind": "receipt", "n": 7, "t": True, "nested": {"a": [1, "b"]}, "f": 1.5},
        delivery_mode=2,
        priority=9,
        correlation_id="c-1",
        reply_to="reply",
        expiration="60000",
        message_id="0192f000-0000-7000-8000-000000000001",
        timestamp=when,
        message_type="hub.receipt",
        user_id="city-220100-oa",
        app_id="hub",
    )
    out = []
    for properties in [
        spec.Basic.Properties(),
        every,
        spec.Basic.Properties(message_id="公文-1", priority=0, headers={}),
    ]:
        out.append(pamqp.frame.marshal(ContentHeader(body_size=2048, properties=properties), 5))
    return out


def test_the_frames_the_hub_receives_decode_as_pamqp_decodes_them() -> None:
    wires = _deliveries() + _headers()
    wires += [pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=n, multiple=m), 1) for n, m in [(1, False), (9, True)]]
    wires += [
        pamqp.frame.marshal(spec.Basic.Nack(delivery_tag=4, multiple=m, requeue=r), 1)
        for m, r in itertools.product([False, True], repeat=2)
    ]
    wires += [pamqp.frame.marshal(ContentBody(b), 2) for b in [b"x", "公文".encode() * 500]]
    # frames decode hands to pamqp: other methods, a heartbeat
    wires += [
        pamqp.frame.marshal(spec.Basic.ConsumeOk(consumer_tag="ctag"), 1),
        pamqp.frame.marshal(spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="x", routing_key="r"), 1),
        pamqp.frame.marshal(spec.Channel.CloseOk(), 4),
        Heartbeat.marshal(),
    ]
    # a last short string whose length runs into the frame-end octet: pamqp reads what is there, so do we
    overrun = bytearray(_deliveries()[0])
    overrun[-3] = 2  # the routing key "q" claims two bytes
    wires.append(bytes(overrun))
    kinds = set()
    for wire in wires:
        (head, rest) = _split(wire)[0]
        kinds.add(type(_same_as_pamqp(head, rest)))
    assert {spec.Basic.Deliver, ContentHeader, spec.Basic.Ack, spec.Basic.Nack, ContentBody, Heartbeat} <= kinds
    # a whole publish as the hub writes it, read back frame by frame
    wire = fast.publish(
        9,
        exchange="ns.hub.deliver",
        routing_key="city-220100-oa",
        body=b"<x/>" * 600,
        max_content=1000,
        content_type="application/xml",
        delivery_mode=2,
        priority=5,
        message_id="m-1",
        user_id="hub",
        correlation_id="c-1",
        headers=HEADERS[3],
    )
    parts = [_same_as_pamqp(head, rest) for head, rest in _split(wire)]
    assert isinstance(parts[1], ContentHeader) and parts[1].properties.headers == HEADERS[3]
    assert b"".join(p.value for p in parts[2:]) == b"<x/>" * 600  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "damage",
    [
        "end-octet",
        "short-string-overrun",
        "bad-utf8",
        "truncated-header",
        "property-overrun",
        "flagged-property-missing",
        "empty-body-frame",
    ],
)
def test_damaged_frames_fail_as_in_pamqp(damage: str) -> None:
    deliver = bytearray(_deliveries()[0])
    header = bytearray(_headers()[1])
    if damage == "end-octet":
        wire = deliver[:-1] + b"\x00"
    elif damage == "short-string-overrun":
        wire = deliver
        wire[11] = 250  # consumer tag length far beyond the frame
    elif damage == "bad-utf8":
        wire = deliver
        wire[12] = 0xFF
    elif damage == "truncated-header":
        wire = header[:7] + struct.pack(">I", 10)[1:] + header[10:21] + b"\xce"
        wire[3:7] = struct.pack(">I", 13)
    elif damage == "property-overrun":
        wire = header
        wire[-20] = 200  # a short-string length pointing past the end
    elif damage == "flagged-property-missing":  # priority flagged, no value: only the frame-end octet follows
        wire = bytearray(struct.pack(">BHI", 2, 5, 14) + struct.pack(">HHQH", 60, 0, 10, 0x0800) + b"\xce")
    else:
        wire = bytearray(struct.pack(">BHI", 3, 5, 0) + b"\xce")
    head, rest = bytes(wire[:7]), bytes(wire[7:])
    with pytest.raises(UnmarshalingException) as theirs:
        pamqp.frame.unmarshal(head + rest)
    with pytest.raises(UnmarshalingException) as ours:
        fast.decode(head, rest)
    assert _no_address(str(ours.value)) == _no_address(str(theirs.value))


def _no_address(text: str) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", text)


class _Receiver:
    """What aiormq's FrameReceiver holds, around a StreamReader fed by the test."""

    def __init__(self, data: bytes, *, eof: bool) -> None:
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(data)
        if eof:
            self.reader.feed_eof()
        self.started = True


def test_the_reader_reads_whole_frames_and_fails_as_aiormq() -> None:
    try:
        assert fast.install_reader()
        assert fast.install_reader()  # idempotent
        assert aiormq.connection.FrameReceiver.get_frame is fast._get_frame
        assert fast.reader_installed()
    finally:
        fast.uninstall_reader()  # this process is no hub worker: the other tests run aiormq's own reader
    assert not fast.reader_installed()
    assert aiormq.connection.FrameReceiver.get_frame.__module__ == "aiormq.connection"

    async def run() -> None:
        wire = b"".join(_deliveries()[:1] + _headers()[1:2]) + pamqp.frame.marshal(ContentBody(b"<x/>"), 3)
        receiver = _Receiver(wire, eof=False)
        got = [await fast._get_frame(receiver) for _ in range(3)]
        assert [type(f) for _, _, f in got] == [spec.Basic.Deliver, ContentHeader, ContentBody]
        assert [(w, c) for w, c, _ in got] == [(len(_deliveries()[0]), 3), (len(_headers()[1]), 5), (12, 3)]

        cut = _Receiver(_deliveries()[0][:20], eof=True)
        with pytest.raises(aiormq.exceptions.AMQPConnectionError, match="Read 13 bytes but"):
            await fast._get_frame(cut)
        bad = bytearray(_deliveries()[0])
        bad[-1] = 0
        with pytest.raises(aiormq.exceptions.InvalidFrameError):
            await fast._get_frame(_Receiver(bytes(bad), eof=False))
        ended = _Receiver(b"", eof=True)
        with pytest.raises(StopAsyncIteration):
            await fast._get_frame(ended)

    asyncio.run(run())


def test_a_batch_of_confirmations_settles_one_future_in_publish_order() -> None:
    """hub.transport.fast._Confirms: what aiormq sets for each delivery tag reaches one future, in publish order."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        batch = fast._Confirms(loop.create_future(), 3)
        parts = [fast._Confirmation(batch, i) for i in range(3)]
        nacked = aiormq.exceptions.DeliveryError(None, spec.Basic.Nack(delivery_tag=2))
        ack = spec.Basic.Ack(delivery_tag=1)
        parts[2].set_result("returned message")
        parts[0].set_result(ack)
        assert not batch.future.done() and parts[0].done() and not parts[1].done()
        parts[1].set_exception(nacked)
        assert batch.future.done()
        assert await batch.future == [ack, nacked, "returned message"]
        with pytest.raises(asyncio.InvalidStateError):
            parts[1].set_result(spec.Basic.Ack(delivery_tag=2))

        late = fast._Confirms(loop.create_future(), 2)
        first, second = fast._Confirmation(late, 0), fast._Confirmation(late, 1)
        first.set_result(spec.Basic.Ack(delivery_tag=1))
        late.future.cancel()  # a publish timeout: aiormq then sees the rest as done and ignores their answers
        assert second.done() and second.cancelled() and not second.answered

    asyncio.run(run())
