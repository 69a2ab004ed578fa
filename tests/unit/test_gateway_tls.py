"""The gateway's TLS (hub/gateway/tls.py, hub/gateway/identity.py).

- A handshake that fails or never ends is classified (a stable code) and reported with the client's address to the
  gateway, which shows it to the people on duty (网关拒绝): asyncio logs a failed handshake only in debug mode, so
  before this nobody saw a bureau whose client does not trust the hub root, or that calls with a certificate of
  another CA, or speaks plain HTTP — and the address is the one clue to who it is. Real handshakes over localhost
  against the gateway's own server context and its own listener (``serve_tls``).
- A certificate's dates are the request's check, not the handshake's: an expired hub certificate completes the
  handshake and its request is refused 403 ``CERT_EXPIRED``, naming the system and the date (a failed handshake gave
  the client "empty reply from server": asyncio closes without sending OpenSSL's alert). Checked on every request,
  so a keep-alive connection's certificate that lapses is refused at its next request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from gateway_certs import client_certificate, client_ssl_context, presented_serial, say_a_line, server_certificate
from trust_fixtures import AGENCY, PASSPHRASE, SYSTEM, TestPki, make_pki

from hub.errors import ConfigError, NoRoute
from hub.gateway.identity import Identifier, Refused
from hub.gateway.tls import TlsServer, handshake_code, serve_tls, server_ssl_context
from hub.trust import TrustStore, pki


@pytest.fixture(scope="module")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("gateway-tls"))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PKI directory of another CA (same agency, same system names: only the anchor differs)."""
    base = tmp_path_factory.mktemp("foreign-ca")
    pki.init_ca(base / "pki", "foreign-passphrase", hub_agency=AGENCY)
    return base / "pki"


class _Directory:
    """What ``Identifier`` asks of the directory: a system's agency, or a ``HubError``."""

    def __init__(self, systems: dict[str, str], pins: tuple[str, ...] = ()) -> None:
        self.systems = systems
        self.pins = pins  # the systems' cert-sha256

    def system(self, system_id: str) -> SimpleNamespace:
        if system_id not in self.systems:
            raise NoRoute(f"system {system_id} is not in the directory", code="ROUTE_UNKNOWN_RECIPIENT")
        return SimpleNamespace(
            id=system_id,
            agency=self.systems[system_id],
            gateway_addresses=(),
            registers=lambda fp: not self.pins or fp in self.pins,
        )


class _Served:
    def __init__(self, port: int, seen: list[tuple[str, str]], peers: list[str | None]) -> None:
        self.port = port
        self.seen = seen
        self.peers = peers

    async def reported(self, n: int) -> list[tuple[str, str]]:
        """The first ``n`` reports, once there are that many (the server side ends its handshake after the client)."""
        for _ in range(500):
            if len(self.seen) >= n:
                break
            await asyncio.sleep(0.01)
        return self.seen[:n]

    async def talk(self, ctx: ssl.SSLContext | None) -> bytes | BaseException:
        """Connect (TLS with ``ctx``, or plain), say a line, read the answer (``say_a_line``, in a thread)."""
        return await asyncio.to_thread(say_a_line, self.port, ctx)


async def _answering(ctx: ssl.SSLContext, refused: Callable[[str, str, str | None], None], **kw: Any) -> TlsServer:
    """``serve_tls`` on a free port of 127.0.0.1 with a protocol that answers a request line with "ok"."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            writer.write(b"ok" if line.startswith(b"GET") else b"??")
            await writer.drain()
        finally:
            writer.close()

    kw.setdefault("handshake_timeout", 0.5)
    return await serve_tls(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(), answer), ctx, "127.0.0.1", 0, refused=refused, **kw
    )


@pytest.fixture
async def served(tpki: TestPki, tmp_path: Path):  # type: ignore[no-untyped-def]
    cert, key = server_certificate(tpki.dir, PASSPHRASE, tmp_path / "server")
    ctx = server_ssl_context(tpki.dir, cert, key)
    seen: list[tuple[str, str]] = []
    peers: list[str | None] = []

    def refused(code: str, what: str, peer: str | None) -> None:
        seen.append((code, what))
        peers.append(peer)

    server = await _answering(ctx, refused)
    try:
        yield _Served(server.sockets[0].getsockname()[1], seen, peers)
    finally:
        server.close()
        await server.handshakes_ended()


def _client(pki_dir: Path, passphrase: str, tmp: Path, *, trust: Path, days: int = 30) -> ssl.SSLContext:
    cert, key, _ = client_certificate(pki_dir, passphrase, AGENCY, SYSTEM, tmp, days=days)
    return client_ssl_context(trust, cert, key)


async def test_a_hub_certificate_passes_and_nothing_is_reported(served: _Served, tpki: TestPki, tmp_path: Path):
    assert await served.talk(_client(tpki.dir, PASSPHRASE, tmp_path, trust=tpki.dir)) == b"ok"
    # An expired one too: its dates are the request's check (403 CERT_EXPIRED as JSON), not the handshake's.
    assert await served.talk(_client(tpki.dir, PASSPHRASE, tmp_path, trust=tpki.dir, days=-2)) == b"ok"
    assert served.seen == []


async def test_a_renewed_server_certificate_is_served_without_a_restart(
    tpki: TestPki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``ServerCredentials``: the server certificate renewed on disk (``hub pki issue-server``) is presented to new
    connections once the gateway looks (every ``cert_check_s``, or SIGHUP); files that do not load — a new key
    beside the old certificate, as between the two writes of issue-server — keep the one in use, said once, and
    are tried again at each look until they load."""
    import logging

    from hub.gateway.tls import ServerCredentials

    folder = tmp_path / "server"
    cert, key = server_certificate(tpki.dir, PASSPHRASE, folder)
    first = x509.load_pem_x509_certificates(cert.read_bytes())[0].serial_number
    credentials = ServerCredentials(tpki.dir, cert, key)
    server = await _answering(credentials.context, lambda *a: None)
    port = server.sockets[0].getsockname()[1]
    client = _client(tpki.dir, PASSPHRASE, tmp_path, trust=tpki.dir)
    try:
        assert credentials.reload_if_changed() is False  # nothing changed
        assert await presented_serial("127.0.0.1", port, client) == first
        # a new key beside the old certificate: refused, said once, the old pair still served
        other, _ = server_certificate(tpki.dir, PASSPHRASE, tmp_path / "elsewhere")
        key.write_bytes((other.parent / "server.key").read_bytes())
        with caplog.at_level(logging.ERROR, logger="hub.gateway"):
            assert credentials.reload_if_changed() is False  # a first look may fall between issue-server's writes
            assert not [r for r in caplog.records if "do not load" in r.getMessage()]
            assert credentials.reload_if_changed() is False  # alike at the next: said, naming what is still served
            assert credentials.reload_if_changed() is False
        said = [r for r in caplog.records if "do not load" in r.getMessage()]
        assert len(said) == 1 and f"server certificate {first:x}" in said[0].getMessage()
        assert await presented_serial("127.0.0.1", port, client) == first
        # the matching certificate arrives: taken at the next look, presented to new connections
        cert.write_bytes(other.read_bytes())
        renewed = x509.load_pem_x509_certificates(cert.read_bytes())[0]
        second = renewed.serial_number
        with caplog.at_level(logging.INFO, logger="hub.gateway"):
            assert credentials.reload_if_changed() is True
        assert "(the server certificate, the server key changed on disk)" in caplog.records[-1].getMessage()
        server.use(credentials.context)
        assert await presented_serial("127.0.0.1", port, client) == second != first
        assert credentials.reload_if_changed() is False
        # what is presented, for the people on duty (the gateway writes it with its row in the store)
        assert credentials.presented is not None and credentials.presented.serial_number == second
        # the same contents copied over again (same size, maybe the same timestamp): nothing to read
        cert.write_bytes(cert.read_bytes())
        assert credentials.reload_if_changed() is False
        # a copy of other contents of the same size in place: read (contents, not dates, are compared)
        third, _ = server_certificate(tpki.dir, PASSPHRASE, tmp_path / "third")
        stat = cert.stat()
        key.write_bytes((third.parent / "server.key").read_bytes())
        cert.write_bytes(third.read_bytes())
        import os

        os.utime(cert, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert credentials.reload_if_changed() is True
        # a SIGHUP with nothing changed says so; with files that do not load, says why at once
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hub.gateway"):
            assert credentials.reload_if_changed(asked=True) is False
            key.write_bytes((other.parent / "server.key").read_bytes())
            assert credentials.reload_if_changed(asked=True) is False
        messages = [r.getMessage() for r in caplog.records]
        assert any("as they were" in m for m in messages) and any("do not load" in m for m in messages)
    finally:
        server.close()
        await server.handshakes_ended()


async def test_failed_handshakes_are_reported_by_what_failed(
    served: _Served, tpki: TestPki, foreign: Path, tmp_path: Path
) -> None:
    # A certificate of another CA: the handshake fails (nothing of it can be trusted, not even the system it names).
    got = await served.talk(_client(foreign, "foreign-passphrase", tmp_path, trust=tpki.dir))
    assert isinstance(got, (ssl.SSLError, OSError)) or got == b"", got
    assert await served.reported(1) == [("TLS_CERT_UNTRUSTED", "unable to get local issuer certificate")]

    # A client that trusts another root than the hub's: it refuses the gateway's certificate with an alert.
    got = await served.talk(_client(tpki.dir, PASSPHRASE, tmp_path, trust=foreign))
    assert isinstance(got, ssl.SSLCertVerificationError), got
    assert (await served.reported(2))[1][0] == "TLS_CLIENT_DISTRUSTS_HUB"

    # A peer that connects and closes (a load balancer's check) is not a refusal: the next report is plain HTTP's.
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.close()
    await writer.wait_closed()
    await served.talk(None)  # plain HTTP on the HTTPS port
    assert (await served.reported(3))[2] == ("TLS_PLAIN_HTTP", "HTTP_REQUEST")

    # A peer that connects and never starts (or never ends) its handshake: closed after the handshake timeout and
    # reported, so a slow loris before TLS is seen too.
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    assert (await served.reported(4))[3] == ("TLS_HANDSHAKE_TIMEOUT", "not finished within 0.5 s")
    await asyncio.sleep(0.2)
    assert len(served.seen) == 4, served.seen
    # every report names the client's address (the one clue to who it is: no system can be trusted)
    assert served.peers == ["127.0.0.1"] * 4


async def test_connections_past_the_handshake_are_the_protocols_many_at_once(
    served: _Served, tpki: TestPki, tmp_path: Path
) -> None:
    # twenty clients at once, each sending its request right behind its handshake (TLS 1.3 lets the request arrive
    # with the client's Finished): every one answered
    ctx = _client(tpki.dir, PASSPHRASE, tmp_path, trust=tpki.dir)
    got = await asyncio.gather(*(served.talk(ctx) for _ in range(20)))
    assert got == [b"ok"] * 20 and served.seen == []


async def test_a_flood_of_unfinished_handshakes_is_capped(tpki: TestPki, tmp_path: Path) -> None:
    """With ``max_handshakes`` under way, a new connection is closed at once and reported (TLS_HANDSHAKES_FULL, with
    its address): a flood of connections that never finish their handshake holds a bounded number of file
    descriptors, and once the flood's handshakes time out a real client is served again."""
    cert, key = server_certificate(tpki.dir, PASSPHRASE, tmp_path / "server")
    seen: list[tuple[str, str | None]] = []
    server = await _answering(
        server_ssl_context(tpki.dir, cert, key),
        lambda code, what, peer: seen.append((code, peer)),
        handshake_timeout=0.8,
        max_handshakes=2,
    )
    served = _Served(server.sockets[0].getsockname()[1], [], [])
    try:
        idle = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(2)]
        for _ in range(50):
            if server.handshaking == 2:
                break
            await asyncio.sleep(0.01)
        assert server.handshaking == 2
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        started = time.monotonic()
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed at once, not after the handshake timeout
        assert time.monotonic() - started < 0.5
        writer.close()
        assert seen == [("TLS_HANDSHAKES_FULL", "127.0.0.1")]
        for r, w in idle:  # the flood's handshakes time out; then a real client is served
            async with asyncio.timeout(5):
                assert await r.read() == b""
            w.close()
        assert server.handshaking == 0
        good = _client(tpki.dir, PASSPHRASE, tmp_path / "good", trust=tpki.dir)
        assert await served.talk(good) == b"ok"
        assert [code for code, _ in seen] == ["TLS_HANDSHAKES_FULL", "TLS_HANDSHAKE_TIMEOUT", "TLS_HANDSHAKE_TIMEOUT"]
    finally:
        server.close()
        await server.handshakes_ended()


def test_the_gateway_raises_its_open_files_limit(tmp_path: Path) -> None:
    """``hub gateway`` asks for more open files (each connection is one) than systemd's default soft limit of 1,024,
    up to the hard limit, and says so when it stays low."""
    import subprocess
    import sys

    code = (
        "import logging, resource; logging.basicConfig(level=logging.WARNING)\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from hub.gateway.server import open_files_limit\n"
        "print(open_files_limit(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 300))\n"
        "print(open_files_limit(1000))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["1000", "1000", "300"], done
    assert done.stderr.count("raise the limit") == 2 and "LimitNOFILE=65536" in done.stderr  # 1000 and 300: few


async def test_the_same_on_uvloop(tpki: TestPki, foreign: Path, tmp_path: Path) -> None:
    """``hub gateway`` runs on uvloop (its own ``start_tls`` and TLS protocol): a good client is answered, a
    certificate of another CA and a silent peer are reported with the address."""
    import uvloop

    cert, key = server_certificate(tpki.dir, PASSPHRASE, tmp_path / "server")
    good = _client(tpki.dir, PASSPHRASE, tmp_path / "good", trust=tpki.dir)
    bad = _client(foreign, "foreign-passphrase", tmp_path / "bad", trust=tpki.dir)

    async def main() -> tuple[list[bytes | BaseException], list[tuple[str, str | None]]]:
        seen: list[tuple[str, str | None]] = []
        server = await _answering(server_ssl_context(tpki.dir, cert, key), lambda code, what, p: seen.append((code, p)))
        served = _Served(server.sockets[0].getsockname()[1], [], [])
        try:
            got = [await served.talk(good), await served.talk(bad)]
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await asyncio.sleep(0.1)
            return got, seen
        finally:
            server.close()
            await server.handshakes_ended()

    got, seen = await asyncio.to_thread(uvloop.run, main())
    assert got[0] == b"ok" and got[1] != b"ok", got
    assert seen == [("TLS_CERT_UNTRUSTED", "127.0.0.1"), ("TLS_HANDSHAKE_TIMEOUT", "127.0.0.1")], seen


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("UNSUPPORTED_PROTOCOL", "TLS_PROTOCOL"),  # a TLS 1.0/1.1 client (openssl s_client -tls1_1)
        ("NO_SHARED_CIPHER", "TLS_PROTOCOL"),
        ("WRONG_VERSION_NUMBER", "TLS_PROTOCOL"),
        ("HTTP_REQUEST", "TLS_PLAIN_HTTP"),
        ("TLSV1_ALERT_UNKNOWN_CA", "TLS_CLIENT_DISTRUSTS_HUB"),
        ("SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLS_CLIENT_DISTRUSTS_HUB"),  # Java: the host name is not in it
        ("SSLV3_ALERT_CERTIFICATE_EXPIRED", "TLS_CLIENT_DISTRUSTS_HUB"),  # the gateway's own certificate lapsed
        ("TLSV1_ALERT_DECODE_ERROR", "TLS_HANDSHAKE_FAILED"),
        (None, "TLS_HANDSHAKE_FAILED"),
    ],
)
def test_handshake_codes(reason: str | None, code: str) -> None:
    from hub.errors import CODES

    exc = ssl.SSLError(1, "handshake failed")
    exc.reason = reason  # type: ignore[misc]
    assert handshake_code(exc) == code and code in CODES


@pytest.mark.parametrize(
    ("verify_code", "code"), [(20, "TLS_CERT_UNTRUSTED"), (18, "TLS_CERT_UNTRUSTED"), (26, "TLS_CERT_INVALID")]
)
def test_verification_codes(verify_code: int, code: str) -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = verify_code  # type: ignore[misc]
    exc.reason = "CERTIFICATE_VERIFY_FAILED"  # type: ignore[misc]
    assert handshake_code(exc) == code


# ------------------------------------------------------------------------------------------- dates per request


def _identifier(tpki: TestPki) -> Identifier:
    return Identifier(TrustStore.load(tpki.dir), _Directory({SYSTEM: AGENCY}))  # type: ignore[arg-type]


def _der(tpki: TestPki, tmp: Path, days: int = 30) -> tuple[bytes, x509.Certificate]:
    cert_path, _, _ = client_certificate(tpki.dir, PASSPHRASE, AGENCY, SYSTEM, tmp, days=days)
    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    return cert.public_bytes(Encoding.DER), cert


def test_a_certificate_the_directory_does_not_register_is_refused(tpki: TestPki, tmp_path: Path) -> None:
    """A system whose certificates the directory registers (``cert-sha256``) is served with those only: another
    certificate of the same system, valid and issued by the hub CA, is 403 ``CERT_NOT_REGISTERED`` naming its serial
    and fingerprint; listed beside another one, it is served. A directory change applies at the next request."""
    from hub.errors import CODES
    from hub.trust.pki import fingerprint

    der, cert = _der(tpki, tmp_path)
    other, _ = _der(tpki, tmp_path / "renewed")
    ident = Identifier(TrustStore.load(tpki.dir), _Directory({SYSTEM: AGENCY}, (fingerprint(cert),)))  # type: ignore[arg-type]
    assert ident.identify(der).system == SYSTEM
    with pytest.raises(Refused) as info:
        ident.identify(other)
    got = info.value
    assert (got.status, got.code, got.system) == (403, "CERT_NOT_REGISTERED", SYSTEM) and got.code in CODES
    other_fp = fingerprint(x509.load_der_x509_certificate(other))
    assert other_fp[:16] in got.detail and "cert-sha256" in got.detail
    ident.directory.pins = (fingerprint(cert), other_fp)
    assert ident.identify(other).system == SYSTEM
    ident.directory.pins = ()
    assert ident.identify(other).system == SYSTEM


def test_an_expired_or_not_yet_valid_certificate_is_refused_per_request(tpki: TestPki, tmp_path: Path) -> None:
    ident = _identifier(tpki)
    der, cert = _der(tpki, tmp_path)
    inside = cert.not_valid_before_utc + dt.timedelta(hours=1)
    assert ident.identify(der, inside).system == SYSTEM
    # the same certificate, its verdicts cached, at its next request after it lapsed: refused, naming system and date
    with pytest.raises(Refused) as info:
        ident.identify(der, cert.not_valid_after_utc + dt.timedelta(seconds=1))
    assert (info.value.status, info.value.code, info.value.system) == (403, "CERT_EXPIRED", SYSTEM)
    assert f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC" in info.value.detail
    with pytest.raises(Refused) as info:
        ident.identify(der, cert.not_valid_before_utc - dt.timedelta(minutes=1))
    assert (info.value.code, info.value.system) == ("CERT_EXPIRED", SYSTEM)
    assert "not valid before" in info.value.detail and "clock" in info.value.detail
    assert ident.identify(der, inside).system == SYSTEM


def test_a_certificate_outliving_its_issuing_ca_is_refused_when_the_ca_lapsed(tpki: TestPki, tmp_path: Path) -> None:
    # The CA caps what it issues at its own end; a certificate made past it (here by the test's own builder) still
    # chains, and the handshake no longer checks dates: the request's check covers the CA too.
    ident = _identifier(tpki)
    lapsed = tpki.issuing.not_valid_after_utc + dt.timedelta(days=1)
    der, cert = _der(tpki, tmp_path, days=(lapsed - dt.datetime.now(dt.UTC)).days + 30)
    assert cert.not_valid_after_utc > lapsed
    with pytest.raises(Refused) as info:
        ident.identify(der, lapsed)
    assert info.value.code == "CERT_EXPIRED" and "issuing CA" in info.value.detail


def test_stale_crls_are_the_hubs_state_503_not_a_refusal_of_the_certificate(tpki: TestPki, tmp_path: Path) -> None:
    """With the hub's CRLs stale no certificate can be checked for revocation: 503 ``CERT_CRL_UNAVAILABLE`` with
    Retry-After (the hub's state; clients and the SDK's start try again), not a 403 that says their certificate was
    refused."""
    from hub.gateway.identity import CRL_RETRY_AFTER_S

    store = TrustStore.load(tpki.dir)
    stale_at = max(c.next_update for c in (store.crl_for(store.root), store.crl_for(tpki.issuing)) if c is not None)
    later = stale_at + dt.timedelta(minutes=1)
    der, cert = _der(tpki, tmp_path, days=(later - dt.datetime.now(dt.UTC)).days + 30)
    assert cert.not_valid_after_utc > later
    with pytest.raises(Refused) as info:
        _identifier(tpki).identify(der, later)
    assert (info.value.status, info.value.code) == (503, "CERT_CRL_UNAVAILABLE")
    assert info.value.retry_after == CRL_RETRY_AFTER_S and "try again later" in info.value.detail


def test_max_handshakes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hub.gateway.config import GatewaySettings

    monkeypatch.delenv("HUB_GATEWAY_MAX_HANDSHAKES", raising=False)
    assert GatewaySettings.for_state(tmp_path).max_handshakes == 512
    monkeypatch.setenv("HUB_GATEWAY_MAX_HANDSHAKES", "64")
    assert GatewaySettings.for_state(tmp_path).max_handshakes == 64
    for refused in ("0", "-3", "many"):  # not a limit: a sentence naming the variable (it fell back in silence)
        monkeypatch.setenv("HUB_GATEWAY_MAX_HANDSHAKES", refused)
        with pytest.raises(ConfigError, match="HUB_GATEWAY_MAX_HANDSHAKES must be a whole number from 1"):
            GatewaySettings.for_state(tmp_path)


def test_drain_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hub.gateway.config import GatewaySettings

    monkeypatch.delenv("HUB_GATEWAY_DRAIN_S", raising=False)
    assert GatewaySettings.for_state(tmp_path).drain_s == 0.0  # no load balancer: stop at once
    monkeypatch.setenv("HUB_GATEWAY_DRAIN_S", "6")
    assert GatewaySettings.for_state(tmp_path).drain_s == 6.0
    monkeypatch.setenv("HUB_GATEWAY_DRAIN_S", "7.5")
    assert GatewaySettings.for_state(tmp_path).drain_s == 7.5  # it meant no drain at all before
    for refused in ("600", "10s", "-1", "nan"):  # 600: hub run's supervisor waits 60 s for a stopping process
        monkeypatch.setenv("HUB_GATEWAY_DRAIN_S", refused)
        with pytest.raises(ConfigError, match="HUB_GATEWAY_DRAIN_S must be a number of seconds from 0 to 30"):
            GatewaySettings.for_state(tmp_path)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HUB_GATEWAY_IN_PROCESS", "nein"),
        ("HUB_GATEWAY_BATCHES", "two"),
        ("HUB_GATEWAY_BATCHES", "0"),
        ("HUB_GATEWAY_EXAMINERS", "-1"),
        ("HUB_GATEWAY_LINK_CHECK_S", "off"),
        ("HUB_GATEWAY_IDLE_S", "2m"),
        ("HUB_DIRECTORY_REFRESH_S", "0.5"),
    ],
)
def test_a_malformed_gateway_variable_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    from hub.gateway.config import GatewaySettings

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name} must be"):
        GatewaySettings.for_state(tmp_path)


async def test_a_connection_accepted_as_the_server_closes_is_closed_too(tpki: TestPki, tmp_path: Path) -> None:
    """A connection accepted just before ``close`` whose handshake task never ran (cancelled by ``close`` before its
    first step): its socket is closed with the server — the client reads the end — not left open to the garbage
    collector (a ResourceWarning in CI, a file descriptor held meanwhile)."""
    import socket as _socket

    cert, key = server_certificate(tpki.dir, PASSPHRASE, tmp_path / "server")
    server = await _answering(server_ssl_context(tpki.dir, cert, key), lambda *a: None)
    port = server.sockets[0].getsockname()[1]
    server._spawn = lambda coro: coro.close()  # type: ignore[method-assign,assignment,return-value]  # never runs
    client = _socket.create_connection(("127.0.0.1", port))
    try:
        for _ in range(200):
            if server.handshaking:
                break
            await asyncio.sleep(0.01)
        assert server.handshaking == 1
        server.close()
        assert server.handshaking == 0
        client.settimeout(2)
        assert await asyncio.to_thread(client.recv, 1) == b""  # the server's end was closed
    finally:
        client.close()
        await server.handshakes_ended()


async def test_accepting_pauses_when_the_process_is_out_of_files_then_goes_on(
    tpki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A listening socket whose accept fails (EMFILE: out of file descriptors) is not called again at once — the
    loop would spin — but after ``ACCEPT_RETRY_S``, said in the log; then connections are served again."""
    import errno
    import logging

    from hub.gateway import tls

    monkeypatch.setattr(tls, "ACCEPT_RETRY_S", 0.3)
    cert, key = server_certificate(tpki.dir, PASSPHRASE, tmp_path / "server")
    server = await _answering(server_ssl_context(tpki.dir, cert, key), lambda *a: None)
    port = server.sockets[0].getsockname()[1]
    calls: list[float] = []

    class OutOfFiles:  # stands for the listening socket while the process has no descriptor left
        def accept(self) -> Any:
            calls.append(time.monotonic())
            raise OSError(errno.EMFILE, "Too many open files")

    try:
        with caplog.at_level(logging.ERROR, logger="hub.gateway"):
            server._accept(OutOfFiles())  # type: ignore[arg-type]
        # one try, not a backlog's worth of them on a socket that cannot accept
        assert len(calls) == 1 and any("could not accept" in r.getMessage() for r in caplog.records)
        # paused: a connection made now waits in the backlog until the pause is over, then is served
        started = time.monotonic()
        client = _client(tpki.dir, PASSPHRASE, tmp_path, trust=tpki.dir)
        assert await asyncio.to_thread(say_a_line, port, client) == b"ok"
        assert time.monotonic() - started >= 0.2
    finally:
        server.close()
        await server.handshakes_ended()
