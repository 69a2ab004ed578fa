"""The PROXY protocol header a load balancer in TCP mode puts before the client's bytes (hub/gateway/proxy_header.py):
versions 1 and 2 read exactly (the TLS ClientHello behind stays in the socket), the client's address taken, anything
malformed refused with a reason; and the gateway's listener reads it only from the balancers it trusts, requires it
from them, and reports refusals with the client's address it names."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from pathlib import Path

import pytest
from gateway_certs import client_certificate, client_ssl_context, say_a_line, server_certificate
from trust_fixtures import AGENCY, PASSPHRASE, SYSTEM, TestPki, make_pki

from hub.errors import CODES, ConfigError
from hub.gateway.proxy_header import V2_SIGNATURE, ProxyHeaderError, networks, read_proxy_header, trusted
from hub.gateway.tls import serve_tls, server_ssl_context


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


V2_IPV4 = v2(1, 0x11, bytes([192, 0, 2, 7]) + bytes([10, 0, 0, 21]) + struct.pack("!HH", 51000, 8443))
V2_IPV6 = v2(1, 0x21, socket.inet_pton(socket.AF_INET6, "2001:db8::7") + bytes(16) + struct.pack("!HH", 1, 2))


async def _read(data: bytes) -> tuple[str | Exception | None, bytes]:
    """What ``read_proxy_header`` makes of ``data`` + b"TLS", and what it left in the socket."""
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        b.sendall(data + b"TLS")
        b.shutdown(socket.SHUT_WR)
        try:
            got: str | Exception | None = await asyncio.wait_for(read_proxy_header(a), 5)
        except (ProxyHeaderError, EOFError) as exc:
            got = exc
        rest = b""
        loop = asyncio.get_running_loop()
        while chunk := await loop.sock_recv(a, 100):
            rest += chunk
        return got, rest
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("header", "address"),
    [
        (V2_IPV4, "192.0.2.7"),
        (V2_IPV6, "[2001:db8::7]"),
        (V2_IPV4[:-12][:14] + struct.pack("!H", 12 + 7) + V2_IPV4[16:] + b"\x04\x00\x04abcd", "192.0.2.7"),  # a TLV
        (v2(0, 0x00, b""), None),  # LOCAL: the balancer's own health check
        (v2(1, 0x00, b""), None),  # UNSPEC
        (b"PROXY TCP4 192.0.2.8 10.0.0.21 51000 8443\r\n", "192.0.2.8"),
        (b"PROXY TCP6 2001:db8::8 2001:db8::1 51000 8443\r\n", "[2001:db8::8]"),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
    ],
)
async def test_a_header_is_read_exactly(header: bytes, address: str | None) -> None:
    assert await _read(header) == (address, b"TLS")


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(8), "no PROXY header"),  # a ClientHello: no header
        (V2_SIGNATURE + bytes([0x10, 0x11, 0, 12]) + bytes(12), "version 1, command 0"),
        (V2_SIGNATURE[:6] + bytes(10), "wrong signature"),
        (V2_SIGNATURE + bytes([0x21, 0x11, 0xFF, 0xFF]), "65535 bytes"),
        (v2(1, 0x11, bytes(6)), "too short"),
        (b"PROXY TCP4 192.0.2.8 10.0.0.21 51000\r\n", "malformed PROXY version 1"),
        (b"PROXY TCP4 2001:db8::8 10.0.0.21 1 2\r\n", "does not match its family"),
        (b"PROXY TCP4 192.0.2.8 10.0.0.21 1 99999\r\n", "does not match its family"),
        (b"PROXY TCP4 " + b"1" * 120, "longer than 107"),
        (b"PROXY TCP4 192.0.2", "closed inside"),
    ],
)
async def test_a_bad_header_is_refused_with_a_reason(header: bytes, why: str) -> None:
    got, _ = await _read(header)
    assert isinstance(got, ProxyHeaderError) and why in str(got), got


async def test_a_connection_closed_before_a_byte_is_not_a_bad_header() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.close()
    try:
        with pytest.raises(EOFError):
            await asyncio.wait_for(read_proxy_header(a), 5)
    finally:
        a.close()


def test_the_balancers_are_addresses_or_networks() -> None:
    balancers = networks("10.0.0.5, 10.0.1.0/24,,2001:db8::/64")
    assert trusted("10.0.0.5", balancers) and trusted("10.0.1.77", balancers) and trusted("2001:db8::9", balancers)
    assert not trusted("10.0.0.6", balancers) and not trusted("fe80::1%eth0", balancers)
    with pytest.raises(ConfigError, match=r"'10\.0\.0\.300' is not an address or network"):
        networks("10.0.0.5,10.0.0.300")
    assert "TLS_PROXY_HEADER" in CODES


@pytest.fixture(scope="module")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_the_listener_takes_the_clients_address_from_a_trusted_balancer(tpki: TestPki, tmp_path: Path) -> None:
    cert, key = server_certificate(tpki.dir, PASSPHRASE, tmp_path / "server")
    c, k, _ = client_certificate(tpki.dir, PASSPHRASE, AGENCY, SYSTEM, tmp_path)
    good = client_ssl_context(tpki.dir, c, k)
    seen: list[tuple[str, str | None]] = []
    peers: list[str | None] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        peers.append(server.peer(writer.transport))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await serve_tls(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(), answer),
        server_ssl_context(tpki.dir, cert, key),
        "127.0.0.1",
        0,
        handshake_timeout=0.5,
        refused=lambda code, what, peer: seen.append((code, peer)),
        balancers=networks("127.0.0.1"),
    )
    port = server.sockets[0].getsockname()[1]

    def talk(header: bytes, ctx: ssl.SSLContext | None) -> bytes | BaseException:
        return say_a_line(port, ctx, header)

    try:
        # through the balancer: served, and the connection's address is the client's the header named
        assert await asyncio.to_thread(talk, V2_IPV4, good) == b"ok"
        assert await asyncio.to_thread(talk, b"PROXY TCP4 192.0.2.8 10.0.0.21 51000 8443\r\n", good) == b"ok"
        assert await asyncio.to_thread(talk, v2(0, 0, b""), good) == b"ok"  # LOCAL: the balancer's own check
        assert peers == ["192.0.2.7", "192.0.2.8", "127.0.0.1"]
        # a failed handshake behind the header is reported with the client's address, not the balancer's
        await asyncio.to_thread(talk, V2_IPV4, None)  # plain HTTP after the header
        # a TCP check of the balancer (connects, closes) is no refusal; its connection without a header is
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        assert await asyncio.to_thread(talk, b"", good) != b"ok"
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert seen == [("TLS_PLAIN_HTTP", "192.0.2.7"), ("TLS_PROXY_HEADER", "127.0.0.1")], seen
    finally:
        server.close()
        await server.handshakes_ended()


async def test_the_balancers_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typing import Any

    from hub.gateway.app import start_gateway
    from hub.gateway.config import GatewaySettings

    monkeypatch.delenv("HUB_GATEWAY_PROXY_FROM", raising=False)
    assert GatewaySettings.for_state(tmp_path).proxy_from == ()
    monkeypatch.setenv("HUB_GATEWAY_PROXY_FROM", " 10.0.0.10, 10.0.0.11 ,")
    assert GatewaySettings.for_state(tmp_path).proxy_from == ("10.0.0.10", "10.0.0.11")
    # a bad one stops the gateway before anything starts, naming it
    bad = GatewaySettings.for_state(tmp_path, proxy_from=("haproxy-1",))
    nothing: Any = None
    with pytest.raises(ConfigError, match="'haproxy-1' is not an address or network"):
        await start_gateway(nothing, bad)
