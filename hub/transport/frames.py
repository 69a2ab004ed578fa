"""The AMQP 0-9-1 frames of one publish, encoded directly; the frames the hub receives most, decoded directly.

pamqp builds a frame object per method, header and body and encodes each field through a generic type dispatch:
about 25 µs for one hub delivery, and the hub publishes two messages (the delivery and the receipt) for every one
it receives. The hub's publishes always have the same shape — ``basic.publish`` with ``mandatory``, a content
header with the properties ``_properties`` sets, the body — so they are written here with ``struct`` in a few µs.
The bytes are exactly pamqp's (tests/unit/test_frames.py compares them for every property combination the hub
uses); header values other than text, booleans and integers go through pamqp's own encoder.

Reading is the mirror image: every consumed message arrives as three frames (``basic.deliver``, a content
header, the body) and every publish is answered by a ``basic.ack``. pamqp decodes each through a generic
per-attribute loop (about 20 µs for the three frames of one delivery); ``decode`` reads these four kinds with
``struct`` and builds the same pamqp objects with the same attribute values, and hands every other frame (and any
frame it cannot read) to pamqp, so a malformed frame fails exactly as it would in pamqp
(tests/unit/test_frames.py compares the objects). ``hub.transport.amqp.install_reader`` reads frames with it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

import pamqp.frame
from pamqp import body as pamqp_body
from pamqp import commands, encode
from pamqp import decode as pamqp_decode
from pamqp import header as pamqp_header

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


# -- decoding --------------------------------------------------------------------------------------------------------

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
