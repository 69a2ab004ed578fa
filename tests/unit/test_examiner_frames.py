"""The gateway ⇄ examiner frames (hub.gateway.examiners): a round trip, the frames of one pass sent together, the end
of the stream, and the limits."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import socket
import struct

import pytest

from hub.gateway.examiners import MAX_FRAME, FrameWriter, read_frame, sendable
from hub.transport.topology import Outgoing


async def _pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter]:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)
    return ra, wa, rb, wb


async def test_frames_round_trip_and_end() -> None:
    _ra, wa, rb, wb = await _pair()
    writes: list[int] = []
    real = wa.writelines
    wa.writelines = lambda parts: (writes.append(len(parts)), real(parts))  # type: ignore[method-assign]
    frames = FrameWriter(wa)
    body = "<报文/>".encode() * 2000
    frames.send(("submit", 7, "county-220122-oa", body, "id", "normal", 0))
    frames.send(("cancel", 7))
    assert writes == []  # nothing written yet: the frames of this pass leave together at its end
    await asyncio.sleep(0)
    assert writes == [4]  # two frames (length and data each) in one writelines
    frames.send(("expecting", 3))
    frames.close()  # what it holds goes before the close
    assert await read_frame(rb) == ("submit", 7, "county-220122-oa", body, "id", "normal", 0)
    assert await read_frame(rb) == ("cancel", 7)
    assert await read_frame(rb) == ("expecting", 3)
    assert await read_frame(rb) is None  # the end of the stream
    wb.close()


async def test_an_oversized_or_foreign_frame_ends_the_link() -> None:
    _ra, wa, rb, wb = await _pair()
    wa.write(struct.pack(">I", MAX_FRAME + 1))
    await wa.drain()
    with pytest.raises(ConnectionError):
        await read_frame(rb)
    data = pickle.dumps(["not", "a", "tuple"])
    wa.write(struct.pack(">I", len(data)) + data)
    await wa.drain()
    with pytest.raises(ConnectionError):
        await read_frame(rb)
    wa.close()
    wb.close()


def test_an_answer_crosses_without_its_egress_check() -> None:
    item = Outgoing("ns.deliver", "county-220122-oa", b"<r/>", {"x-hub-kind": "receipt"}, 5, "m-1", egress=print)
    crossing = sendable(item)
    assert crossing is not None and crossing.egress is None and item.egress is print
    assert pickle.loads(pickle.dumps(crossing)) == dataclasses.replace(item, egress=None)
    assert sendable(None) is None
