"""The hub's speed layer over aiormq and pamqp: every replacement of their internals, in this one module, used only
while ``Settings.amqp_fast`` (``HUB_AMQP_FAST``, on by default) is on. With ``HUB_AMQP_FAST=0`` the hub runs
aiormq's own code paths only (same behaviour; measured: 10–20 % more CPU per message in the workers, the e2e
ratio within the machine's noise). Tested with aiormq 7.2 and pamqp 4.0, the versions pyproject.toml pins.

The fast paths, each by the name its WARNING gives it:

``frame reader``
    ``install_reader``: aiormq's ``FrameReceiver.get_frame`` replaced on the class (aiormq makes a receiver inside
    each connect and never stores it) by ``_get_frame``: two reads a frame instead of three through a BytesIO and a
    lock, decoded by ``decode``. Process-wide, so only ``hub run``'s worker processes install it
    (``hub.pipeline.worker.worker_main``); CLIs, clients and code that imports ``hub.transport`` never do.
``frame decoding``
    ``decode``: ``basic.deliver``, content headers, bodies, ``basic.ack``/``nack`` read with ``struct`` into the
    same pamqp objects (every other frame, and any frame it cannot read, goes to pamqp). Used by the frame reader.
``in-line delivery``
    ``deliver_in_line``: a consumer channel's deliveries handed to the consumer from aiormq's frame reader instead
    of a task per delivery.
``frame-queue bound``
    ``unbounded_frames``: a consumer channel's frame queue bounded by its prefetch alone, not by aiormq's 10 frames.
``batch publish``
    ``publish_batch``: all frames of a batch written at once (``publish``: encoded with ``struct``, the repeating
    method frames and short strings cached) and one future for the confirms of the whole batch (``_Confirms``) in
    place of aiormq's future per message.

Each path checks what it relies on where it is installed; where the installed aiormq lacks it (a renamed
attribute), aiormq's own code runs and ``fallback`` logs one WARNING naming the path (once per path and process):
never silently. tests/unit/test_frames.py pins that the replacements behave as aiormq's and pamqp's code;
tests/integration/test_amqp_fast.py that with the switch on each path is in effect, that a missing attribute falls
back with its WARNING, and that importing ``hub.transport`` and connecting leaves aiormq unpatched.

Frames (the bytes are exactly pamqp's). pamqp builds a frame object per method, header and body and encodes each
field through a generic type dispatch: about 25 µs for one hub delivery, and the hub publishes two messages (the
delivery and the receipt) for every one it receives. The hub's publishes always have the same shape —
``basic.publish`` with ``mandatory``, a content header with the properties the transport sets, the body — so they
are written here with ``struct`` in a few µs (tests/unit/test_frames.py compares them for every property
combination the hub uses); header values other than text, booleans and integers go through pamqp's own encoder.
Reading is the mirror image: every consumed message arrives as three frames and every publish is answered by a
``basic.ack``; pamqp decodes each through a generic per-attribute loop (about 20 µs for the three frames of one
delivery). Under callgrind, consuming a delivery went from 355,000 instructions to 184,000 with these paths.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial
from typing import Any, Final, cast

import aiormq
import aiormq.exceptions as amqp_errors
import pamqp.frame
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp import body as pamqp_body
from pamqp import commands, encode
from pamqp import decode as pamqp_decode
from pamqp import header as pamqp_header
from pamqp.exceptions import PAMQPException

from hub.transport.topology import Outgoing

__all__ = [
    "PATHS",
    "can_publish_batch",
    "decode",
    "deliver_in_line",
    "fallback",
    "install_reader",
    "publish",
    "publish_batch",
    "reader_installed",
    "unbounded_frames",
    "uninstall_reader",
]

log = logging.getLogger("hub.transport")

#: The fast paths by the names their WARNINGs give them.
PATHS: Final = ("frame reader", "in-line delivery", "frame-queue bound", "batch publish")

#: Paths that fell back to aiormq's own code in this process (each WARNING is logged once).
_fallen_back: set[str] = set()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def fallback(path: str, reason: str) -> None:
    """Note that ``path`` runs aiormq's own code in this process because ``reason``; the first time, one WARNING."""
    if path in _fallen_back:
        return
    _fallen_back.add(path)
    log.warning(
        "AMQP fast path %r is not available with aiormq %s (%s): aiormq's own code runs instead (HUB_AMQP_FAST)",
        path,
        _version("aiormq"),
        reason,
    )


# -- frames: encoding ------------------------------------------------------------------------------------------------

_FRAME_END: Final = b"\xce"
_METHOD: Final = 1
_HEADER: Final = 2
_BODY: Final = 3
_BASIC: Final = 60
_PUBLISH: Final = 40

# Basic content-header property flags (AMQP 0-9-1 §4.2.6.1), in the order the values follow the flags.
_CONTENT_TYPE: Final = 1 << 15
_HEADERS: Final = 1 << 13
_DELIVERY_MODE: Final = 1 << 12
_PRIORITY: Final = 1 << 11
_CORRELATION_ID: Final = 1 << 10
_EXPIRATION: Final = 1 << 8
_MESSAGE_ID: Final = 1 << 7
_USER_ID: Final = 1 << 4

_frame_head = struct.Struct(">BHI").pack
_publish_head = struct.Struct(">HHH").pack  # class, method, reserved-1 (ticket)
_header_head = struct.Struct(">HHQH").pack  # class, weight, body size, property flags
_long = struct.Struct(">I").pack


def _shortstr(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {text[:40]!r}…")
    return bytes((len(data),)) + data


#: Short strings that repeat from publish to publish (exchanges, routing keys, header names, the content type,
#: users), encoded once (bounded).
_name = lru_cache(maxsize=4096)(_shortstr)


@lru_cache(maxsize=4096)
def _method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    """The method frame of a publish: the same few dozen (channel, exchange, routing key), every batch."""
    method = _publish_head(_BASIC, _PUBLISH, 0) + _name(exchange) + _name(routing_key) + b"\x01"
    return _frame(_METHOD, channel, method)


def _value(value: Any) -> bytes:
    if isinstance(value, str):
        data = value.encode("utf-8")
        return b"S" + _long(len(data)) + data
    if isinstance(value, bool):
        return b"t\x01" if value else b"t\x00"
    return encode.encode_table_value(value)  # integers and anything else: pamqp's choice of type


def _table(headers: Mapping[str, Any]) -> bytes:
    parts = [_name(key) + _value(headers[key]) for key in sorted(headers)]
    data = b"".join(parts)
    return _long(len(data)) + data


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _frame_head(kind, channel, len(payload)) + payload + _FRAME_END


def publish(
    channel: int,
    *,
    exchange: str,
    routing_key: str,
    body: bytes,
    max_content: int,
    content_type: str,
    delivery_mode: int,
    priority: int | None,
    message_id: str | None,
    user_id: str | None,
    correlation_id: str | None,
    headers: Mapping[str, Any] | None,
    expiration: str | None = None,
) -> bytes:
    """The frames of one ``basic.publish`` (mandatory) on ``channel``: method, content header, body frames of at
    most ``max_content`` bytes each. Properties that are None or empty are left out, as pamqp does."""
    flags = 0
    props: list[bytes] = []
    if content_type:
        flags |= _CONTENT_TYPE
        props.append(_name(content_type))
    if headers is not None:
        flags |= _HEADERS
        props.append(_table(headers))
    flags |= _DELIVERY_MODE
    props.append(bytes((delivery_mode,)))
    if priority is not None:
        flags |= _PRIORITY
        props.append(bytes((priority,)))
    if correlation_id:
        flags |= _CORRELATION_ID
        props.append(_shortstr(correlation_id))
    if expiration:
        flags |= _EXPIRATION
        props.append(_shortstr(expiration))
    if message_id:
        flags |= _MESSAGE_ID
        props.append(_shortstr(message_id))
    if user_id:
        flags |= _USER_ID
        props.append(_name(user_id))
    out = [
        _method_frame(channel, exchange, routing_key),
        _frame(_HEADER, channel, _header_head(_BASIC, 0, len(body), flags) + b"".join(props)),
    ]
    for start in range(0, len(body), max_content):
        out.append(_frame(_BODY, channel, body[start : start + max_content]))
    return b"".join(out)


# -- frames: decoding ------------------------------------------------------------------------------------------------

_FRAME_END_BYTE: Final = 0xCE
_DELIVER_INDEX: Final[int] = commands.Basic.Deliver.index  # (class << 16) | method, as on the wire
_ACK_INDEX: Final[int] = commands.Basic.Ack.index
_NACK_INDEX: Final[int] = commands.Basic.Nack.index

_frame_parts = struct.Struct(">BHI").unpack
_method_index = struct.Struct(">I").unpack_from
_long_long = struct.Struct(">q").unpack_from  # signed, as pamqp reads a longlong
_header_fixed = struct.Struct(">HHQH").unpack_from  # class, weight, body size, first property-flags word

_Deliver = commands.Basic.Deliver
_Ack = commands.Basic.Ack
_Nack = commands.Basic.Nack
_Properties = commands.Basic.Properties
_ContentHeader = pamqp_header.ContentHeader
_ContentBody = pamqp_body.ContentBody
_PROPERTY_NAMES: Final = tuple(_Properties.__slots__)
#: What ``Basic.Properties()`` holds before pamqp reads the flagged values into it (``cluster_id`` is "").
_PROPERTY_DEFAULTS: Final = tuple(getattr(_Properties(), name) for name in _PROPERTY_NAMES)


def _short(data: bytes, at: int) -> tuple[str, int]:
    end = at + 1 + data[at]
    if end > len(data):
        raise ValueError("short string beyond the frame")
    return data[at + 1 : end].decode("utf-8"), end


def _property_decoders() -> tuple[tuple[str, int, Any, Any], ...]:
    """(name, flag, decoder, default) for the Basic properties in wire order; a decoder is ``"s"`` (short string,
    read here), ``"o"`` (octet) or pamqp's own function for the type (``decode.by_type``'s table)."""
    out = []
    for name, default in zip(_PROPERTY_NAMES, _PROPERTY_DEFAULTS, strict=True):
        kind = getattr(_Properties, "_" + name)
        if kind == "shortstr":
            decoder: Any = "s"
        elif kind == "octet":
            decoder = "o"
        else:
            decoder = pamqp_decode.METHODS[kind]
        out.append((name, _Properties.flags[name], decoder, default))
    return tuple(out)


_PROPERTY_DECODERS: Final = _property_decoders()
_field_table = pamqp_decode.field_table
_EMPTY_TABLE: Final = bytes(4)


def _deliver(payload: bytes) -> commands.Basic.Deliver:
    consumer_tag, at = _short(payload, 4)
    (delivery_tag,) = _long_long(payload, at)
    redelivered = bool(payload[at + 8] & 1)
    exchange, at = _short(payload, at + 9)
    routing_key, at = _short(payload, at)
    frame = _Deliver.__new__(_Deliver)
    frame.consumer_tag = consumer_tag
    frame.delivery_tag = delivery_tag
    frame.redelivered = redelivered
    frame.exchange = exchange
    frame.routing_key = routing_key
    return frame


def _ack(payload: bytes) -> commands.Basic.Ack:
    frame = _Ack.__new__(_Ack)
    (frame.delivery_tag,) = _long_long(payload, 4)
    frame.multiple = bool(payload[12] & 1)
    return frame


def _nack(payload: bytes) -> commands.Basic.Nack:
    frame = _Nack.__new__(_Nack)
    (frame.delivery_tag,) = _long_long(payload, 4)
    bits = payload[12]
    frame.multiple = bool(bits & 1)
    frame.requeue = bool(bits & 2)
    return frame


def _content_header(payload: bytes) -> pamqp_header.ContentHeader | None:
    """The content header, or None when it has more than one property-flags word (pamqp reads those)."""
    class_id, weight, body_size, flags = _header_fixed(payload, 0)
    if flags & 1:
        return None
    props = _Properties.__new__(_Properties)
    at = 14
    for name, flag, decoder, default in _PROPERTY_DECODERS:
        if not flags & flag:
            setattr(props, name, default)
        elif decoder == "s":
            value, at = _short(payload, at)
            setattr(props, name, value)
        elif decoder == "o":
            setattr(props, name, payload[at])
            at += 1
        elif payload.startswith(_EMPTY_TABLE, at) and decoder is _field_table:
            setattr(props, name, {})  # the hub's senders publish empty headers
            at += 4
        else:
            used, value = decoder(payload[at:])
            setattr(props, name, value)
            at += used
    if at > len(payload):
        raise ValueError("content header properties beyond the frame")
    head = _ContentHeader.__new__(_ContentHeader)
    head.class_id = class_id
    head.weight = weight
    head.body_size = body_size
    head.properties = props
    return head


def decode(head: bytes, payload: bytes) -> tuple[int, int, Any]:
    """``pamqp.frame.unmarshal(head + payload)`` for one whole frame: ``head`` its 7 bytes of type, channel and
    size, ``payload`` the rest including the frame-end octet. Returns (bytes consumed, channel, frame object)."""
    kind, channel, size = _frame_parts(head)
    if size and len(payload) == size + 1 and payload[size] == _FRAME_END_BYTE:
        data = payload[:size]  # without the frame-end octet: no field may run into it
        try:
            frame: Any = None
            if kind == _BODY:
                frame = _ContentBody(data)
            elif kind == _METHOD and size >= 4:
                (index,) = _method_index(data, 0)
                if index == _DELIVER_INDEX:
                    frame = _deliver(data)
                elif index == _ACK_INDEX and size == 13:
                    frame = _ack(data)
                elif index == _NACK_INDEX and size == 13:
                    frame = _nack(data)
            elif kind == _HEADER and size >= 14:
                frame = _content_header(data)
            if frame is not None:
                return size + 8, channel, frame
        except (struct.error, ValueError, IndexError):
            pass  # pamqp decides: it reads it or raises its UnmarshalingException
    return pamqp.frame.unmarshal(head + payload)


# -- frame reader (process-wide) -------------------------------------------------------------------------------------

_original_get_frame: Callable[..., Any] | None = None


def _read_error(exc: BaseException) -> amqp_errors.AMQPConnectionError:
    """aiormq's translation of a failed socket read (``FrameReceiver.get_frame``), word for word."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return amqp_errors.AMQPConnectionError(
            f"Server connection unexpectedly closed. Read {len(exc.partial)} bytes but {exc.expected} bytes expected",
        )
    if isinstance(exc, ConnectionRefusedError):
        return amqp_errors.AMQPConnectionError(f"Server connection refused: {exc!r}")
    if isinstance(exc, ConnectionResetError):
        return amqp_errors.AMQPConnectionError(f"Server connection reset: {exc!r}")
    if isinstance(exc, ConnectionError):
        return amqp_errors.AMQPConnectionError(f"Server connection error: {exc!r}")
    return amqp_errors.AMQPConnectionError(f"Server communication error: {exc!r}")


async def _get_frame(receiver: Any) -> Any:
    """aiormq's ``FrameReceiver.get_frame`` once the connection is open: two reads a frame (its 7-byte head, then
    the rest) instead of three through a BytesIO and a lock, decoded by ``decode`` (pamqp's objects). The handshake
    (``started`` still False: the broker may answer with a protocol header) goes through aiormq's own code. After
    the handshake only the connection's reader task reads frames, so no lock is needed."""
    if not receiver.started:
        return await cast(Callable[..., Any], _original_get_frame)(receiver)
    reader = receiver.reader
    if reader.at_eof():
        del receiver.reader
        raise StopAsyncIteration
    try:
        head = await reader.readexactly(7)
        payload = await reader.readexactly(int.from_bytes(head[3:7], "big") + 1)
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise _read_error(exc) from exc
    try:
        return decode(head, payload)
    except PAMQPException as exc:
        raise amqp_errors.InvalidFrameError(str(exc)) from exc


def _receiver_class() -> Any:
    connection = getattr(aiormq, "connection", None)
    return getattr(connection, "FrameReceiver", None)


def reader_installed() -> bool:
    """Whether aiormq reads frames with ``_get_frame`` in this process."""
    return getattr(_receiver_class(), "get_frame", None) is _get_frame


def install_reader() -> bool:
    """Have aiormq read frames with ``_get_frame`` in this process (idempotent). Only ``hub run``'s worker
    processes call it. Returns False, changes nothing and logs the ``frame reader`` WARNING when the installed
    aiormq's receiver lacks what ``_get_frame`` relies on (``FrameReceiver.get_frame``, ``reader``, ``started``)."""
    global _original_get_frame
    receiver_class = _receiver_class()
    current = getattr(receiver_class, "get_frame", None)
    if receiver_class is None or current is None:
        fallback("frame reader", "no aiormq.connection.FrameReceiver.get_frame")
        return False
    if current is _get_frame:
        return True
    init = getattr(receiver_class.__init__, "__code__", None)
    if init is None or not {"reader", "started"} <= set(init.co_names):
        fallback("frame reader", "FrameReceiver does not set reader and started")
        return False
    _original_get_frame = current
    receiver_class.get_frame = _get_frame
    return True


def uninstall_reader() -> None:
    """Give aiormq its own frame reader back (tests)."""
    receiver_class = _receiver_class()
    if _original_get_frame is not None and getattr(receiver_class, "get_frame", None) is _get_frame:
        receiver_class.get_frame = _original_get_frame


# -- consumer channels -----------------------------------------------------------------------------------------------


def deliver_in_line(channel: Any, accept: Callable[[DeliveredMessage], None]) -> bool:
    """Have aiormq's frame reader hand this channel's deliveries straight to ``accept``, instead of starting a task
    per delivery (aiormq's ``_on_deliver_frame`` runs ``create_task(consumer(message))``: 50,000 instructions a
    message under callgrind, 14 % of its consuming). ``Transport.consume`` gives each consumer a channel of its own.

    It replaces ``_on_deliver_frame`` on this channel object with the same steps minus the task, through two aiormq
    internals (reading the content header and body); where they are missing (another aiormq) nothing is replaced,
    aiormq's own path runs and the ``in-line delivery`` WARNING is logged. As in aiormq, a delivery for a consumer
    tag the channel no longer has (cancelled) is left unsettled, and a failure in ``accept`` is logged without
    stopping the channel."""
    read_header = getattr(channel, "_Channel__get_content_header", None)
    read_content = getattr(channel, "_read_content", None)
    consumers = getattr(channel, "consumers", None)
    if read_header is None or read_content is None or consumers is None or not hasattr(channel, "_on_deliver_frame"):
        fallback("in-line delivery", "no Channel.__get_content_header, _read_content, consumers or _on_deliver_frame")
        return False

    async def on_deliver_frame(frame: commands.Basic.Deliver) -> None:
        message = await read_content(frame, await read_header())
        if frame.consumer_tag not in consumers:
            return
        try:
            accept(message)
        except Exception:
            log.exception("consumer callback failed on channel %s", channel.number)

    channel._on_deliver_frame = on_deliver_frame
    return True


def unbounded_frames(channel: Any) -> bool:
    """Lift the bound of 10 frames aiormq puts on a channel's frame queue (``Channel.frames``), for a consumer
    channel. With the bound, the connection's reader stops every 10 frames (three a delivery) and waits for the
    channel's reader to take them: two more event-loop turns every three messages, 20 % of the instructions of
    consuming a message under callgrind. A consumer channel needs no bound of its own: the broker sends it at most
    ``prefetch`` unacknowledged deliveries, so the queue holds at most about three times that many frames. Returns
    False, changes nothing and logs the ``frame-queue bound`` WARNING where the queue is not an ``asyncio.Queue``
    with its ``_maxsize``."""
    frames_queue = getattr(channel, "frames", None)
    if not isinstance(frames_queue, asyncio.Queue) or not isinstance(getattr(frames_queue, "_maxsize", None), int):
        fallback("frame-queue bound", "Channel.frames is not an asyncio.Queue with _maxsize")
        return False
    frames_queue._maxsize = 0  # type: ignore[attr-defined]  # what asyncio.Queue(maxsize=0) sets: unbounded
    return True


# -- batch publish ---------------------------------------------------------------------------------------------------

#: aiormq channel attributes the batch publish path relies on (as ``aiormq.Channel.basic_publish`` uses them).
_BATCH_ATTRS: Final = (
    "lock",
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "write_queue",
    "number",
    "max_content_size",
    "create_future",
)


class _Confirms:
    """The broker's answers to one published batch: one ``_Confirmation`` per delivery tag in aiormq's
    ``Channel.confirmations``, all feeding ``future`` (made by ``channel.create_future()``, so a channel that closes
    fails it). aiormq's own path makes an asyncio future per message, and gathering them schedules three callbacks
    a message; here the last answer of the batch sets the one future with every result in publish order (a
    ``Basic.Ack``, the returned message, or the exception aiormq set), as ``gather(return_exceptions=True)``
    returned them."""

    __slots__ = ("future", "left", "results")

    def __init__(self, future: asyncio.Future[list[Any]], n: int) -> None:
        self.future = future
        self.results: list[Any] = [None] * n
        self.left = n

    def settle(self, index: int, result: Any) -> None:
        self.results[index] = result
        self.left -= 1
        if not self.left and not self.future.done():
            self.future.set_result(self.results)


class _Confirmation:
    """What aiormq finds in ``Channel.confirmations`` for one message of a ``_Confirms`` batch: the part of the
    future API it calls (``done``, ``cancelled``, ``set_result``, ``set_exception``). Done once answered, or when the
    batch's future is (cancelled by a publish timeout, failed by a closing channel): aiormq then ignores the
    answer, as it ignores the answer for a cancelled future."""

    __slots__ = ("answered", "batch", "index")

    def __init__(self, batch: _Confirms, index: int) -> None:
        self.batch = batch
        self.index = index
        self.answered = False

    def done(self) -> bool:
        return self.answered or self.batch.future.done()

    def cancelled(self) -> bool:
        return self.batch.future.cancelled()

    def set_result(self, result: Any) -> None:
        self._answer(result)

    def set_exception(self, exc: BaseException) -> None:
        self._answer(exc)

    def _answer(self, result: Any) -> None:
        if self.answered:
            raise asyncio.InvalidStateError("this delivery tag was answered already")
        self.answered = True
        self.batch.settle(self.index, result)


def _forget(channel: Any, tags: dict[str, int], _: asyncio.Future[Any]) -> None:
    """Drop a finished batch's message ids from aiormq's return map (unless a later publish took the id over)."""
    known = channel.message_id_delivery_tag
    for message_id, tag in tags.items():
        if known.get(message_id) == tag:
            del known[message_id]


def can_publish_batch(channel: Any) -> bool:
    """Whether ``channel`` has what ``publish_batch`` relies on; if not, the ``batch publish`` WARNING (once)."""
    missing = [a for a in _BATCH_ATTRS if not hasattr(channel, a)]
    if missing:
        fallback("batch publish", "no Channel." + ", ".join(missing))
        return False
    return True


async def publish_batch(channel: Any, items: Sequence[Outgoing], *, content_type: str) -> list[Any]:
    """Publish ``items`` (persistent, mandatory) on an aiormq channel that ``can_publish_batch``: write all their
    frames at once and await their confirms together. Returns one result per item in order, as
    ``gather(*(channel.basic_publish(…) …), return_exceptions=True)`` does: ``Basic.Ack``, the returned message of
    an unroutable one, or the exception aiormq set (a nack, a closed channel)."""
    ch: Any = channel
    number, max_content = ch.number, ch.max_content_size
    # Every publish carries a message id: a returned (unroutable) message is matched to its publish by that id, and
    # aiormq drops a return without one (logging it) while the broker acks the publish — the message lost with a
    # confirm. aiormq's own basic_publish fills one in the same way.
    ids = [item.message_id or f"hub-{uuid.uuid4().hex}" for item in items]
    payload = b"".join(
        publish(
            number,
            exchange=item.exchange,
            routing_key=item.routing_key,
            body=item.body,
            max_content=max_content,
            content_type=content_type,
            delivery_mode=2,
            priority=item.priority,
            message_id=message_id,
            user_id=item.user_id,
            correlation_id=item.correlation_id,
            headers=item.headers or None,
            expiration=item.expiration,
        )
        for item, message_id in zip(items, ids, strict=True)
    )
    async with ch.lock:
        if ch.is_closed:
            raise amqp_errors.ChannelInvalidStateError("the publish channel is closed")
        first = ch.delivery_tag + 1
        batch = _Confirms(ch.create_future(), len(items))
        confirmations = ch.confirmations
        returns = ch.message_id_delivery_tag
        tags: dict[str, int] = {}  # the last tag of each message id (a fan-out repeats an id)
        for offset, message_id in enumerate(ids):
            tag = first + offset
            confirmations[tag] = _Confirmation(batch, offset)
            returns[message_id] = tags[message_id] = tag
        batch.future.add_done_callback(partial(_forget, ch, tags))
        ch.delivery_tag = first + len(items) - 1
        drain = ch.create_future()
        try:
            await ch.write_queue.put(ChannelFrame(payload=payload, should_close=False, drain_future=drain))
        except BaseException:
            # Nothing reached the socket: give the sequence numbers back, as basic_publish does.
            ch.delivery_tag = first - 1
            for offset in range(len(items)):
                confirmations.pop(first + offset, None)
            _forget(ch, tags, batch.future)  # now, before another publish can take these tags
            batch.future.cancel()
            drain.cancel()
            raise
    try:
        await drain
        return await batch.future
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # this task is being cancelled: by its caller, or by the publish timeout
        # aiormq fails the futures of a channel or connection that closed under us with CancelledError (a stuck
        # connection, a plain close): an outage, as gather(return_exceptions=True) reported it.
        return [exc if result is None else result for result in batch.results]
