"""The PROXY protocol header (HAProxy's ``send-proxy`` / ``send-proxy-v2``; version 1 text, version 2 binary) that a
load balancer in TCP mode puts before the client's bytes, so that the gateway learns the client's address.

Read only from the balancers the gateway is told to trust (``GatewaySettings.proxy_from``,
``HUB_GATEWAY_PROXY_FROM``), and required from them: a header from anybody else is not read (it would be a TLS
handshake's garbage), so no client can claim another's address. The header is read from the accepted socket before
its TLS starts, exactly as many bytes as it has — the ClientHello behind it stays in the socket for the handshake.
A ``LOCAL`` header (version 2: the balancer's own health check) or ``PROXY UNKNOWN`` (version 1) carries no client:
the connection keeps the balancer's address. Specification: haproxy.org/download/2.9/doc/proxy-protocol.txt.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Iterable
from typing import Final

from hub.errors import ConfigError

__all__ = ["Networks", "ProxyHeaderError", "networks", "read_proxy_header", "trusted"]

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

#: Version 2's signature (12 bytes), and version 1's start.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_START: Final = b"PROXY "
#: Version 1's longest line (with CRLF), per the specification.
V1_MAX: Final = 107
#: Version 2's address block: IPv4 (12 bytes), IPv6 (36); TLVs after it are skipped. Longer headers are refused.
V2_MAX_LENGTH: Final = 512


class ProxyHeaderError(Exception):
    """A trusted balancer's connection without a valid PROXY header (the reason, for the refusal's log line)."""


def networks(spec: str | Iterable[str]) -> Networks:
    """The balancers' addresses or networks ("10.0.0.5, 10.0.1.0/24"); ConfigError naming a bad one."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    found = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"HUB_GATEWAY_PROXY_FROM: {item!r} is not an address or network (e.g. 10.0.0.5 or 10.0.1.0/24)"
            ) from None
    return tuple(found)


def trusted(host: str, balancers: Networks) -> bool:
    """Whether a connection from ``host`` (its socket's peer) comes from one of ``balancers``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a scoped IPv6 address, a UNIX socket: not a balancer of the list
        return False
    return any(address in network for network in balancers)


async def _exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``sock``, never more (what follows is the TLS handshake's)."""
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(sock, n - len(got))
        if not chunk:
            raise ProxyHeaderError("the connection closed inside the PROXY header")
        got += chunk
    return bytes(got)


async def read_proxy_header(sock: socket.socket) -> str | None:
    """Read one PROXY header (version 1 or 2) off ``sock`` and return the client's address it names (without the
    port), or None when it names none (``LOCAL``, ``UNKNOWN``, a family other than TCP over IPv4/IPv6). EOFError when
    the peer closed before its first byte; ProxyHeaderError for anything else that is not a header. The caller bounds
    the time (``asyncio.timeout``)."""
    loop = asyncio.get_running_loop()
    first = await loop.sock_recv(sock, 1)
    if not first:  # connected and closed without a byte (a TCP check): nothing to refuse
        raise EOFError("the connection closed before it sent anything")
    start = first + await _exactly(loop, sock, 5)  # the shortest header, "PROXY UNKNOWN\r\n", has 15 bytes
    if start == V2_SIGNATURE[:6]:
        head = start + await _exactly(loop, sock, 10)
        if head[:12] != V2_SIGNATURE:
            raise ProxyHeaderError("a PROXY version 2 header with a wrong signature")
        length = struct.unpack("!H", head[14:16])[0]
        if length > V2_MAX_LENGTH:
            raise ProxyHeaderError(f"a PROXY version 2 header of {length} bytes")
        return _v2(head, await _exactly(loop, sock, length))
    if start == V1_START:
        line = bytearray(start)
        while not line.endswith(b"\r\n"):
            if len(line) >= V1_MAX:
                raise ProxyHeaderError("a PROXY version 1 line longer than 107 bytes")
            line += await _exactly(loop, sock, 1)
        return _v1(bytes(line))
    raise ProxyHeaderError("no PROXY header from a load balancer that must send one (HAProxy: send-proxy-v2)")


def _v2(head: bytes, body: bytes) -> str | None:
    version, command = head[12] >> 4, head[12] & 0x0F
    if version != 2 or command not in (0, 1):
        raise ProxyHeaderError(f"a PROXY version 2 header with version {version}, command {command}")
    if command == 0:  # LOCAL: the balancer's own connection (its health check)
        return None
    family = head[13]
    if family == 0x11 and len(body) >= 12:  # TCP over IPv4: source, destination, source port, destination port
        return str(ipaddress.IPv4Address(body[:4]))
    if family == 0x21 and len(body) >= 36:  # TCP over IPv6
        return f"[{ipaddress.IPv6Address(body[:16])}]"
    if family in (0x11, 0x21):
        raise ProxyHeaderError("a PROXY version 2 header too short for its addresses")
    return None  # UNSPEC or a UNIX socket: no client address


def _v1(line: bytes) -> str | None:
    try:
        parts = line[:-2].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("a PROXY version 1 line that is not ASCII") from None
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("a malformed PROXY version 1 line")
    try:
        source = ipaddress.ip_address(parts[2])
        ipaddress.ip_address(parts[3])
        ports = [int(p) for p in parts[4:]]
    except ValueError:
        raise ProxyHeaderError("a PROXY version 1 line with a malformed address or port") from None
    if (source.version == 4) != (parts[1] == "TCP4") or not all(0 <= p <= 65535 for p in ports):
        raise ProxyHeaderError("a PROXY version 1 line whose address does not match its family")
    return f"[{source}]" if source.version == 6 else str(source)
