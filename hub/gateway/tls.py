"""The gateway's TLS server context: the hub CA's own server certificate, client certificates of the hub CA.

TLS 1.2 or newer; ``CERT_OPTIONAL`` so that a request without a certificate is answered (401
``GATEWAY_NO_CERTIFICATE`` as JSON) instead of failing in the handshake. A certificate that is presented must chain
to the hub root (the only anchors are the root and the issuing CA certificates of the PKI directory), or the
handshake fails. Its dates are checked per request, with revocation and the directory (``identity``): an expired
certificate is answered 403 ``CERT_EXPIRED`` as JSON, naming the system and the date, instead of a handshake that
fails with nothing for the client to read (asyncio closes the connection without sending OpenSSL's alert, so a
client saw "empty reply from server") and nothing for the people on duty to see. It also refuses a keep-alive
connection's next request once its certificate expired, which a check in the handshake did not.

The gateway accepts its connections itself and starts each one's TLS with ``loop.connect_accepted_socket``
(``serve_tls``) instead of a server started with ``ssl=``, which ends a failed handshake without telling anyone
(asyncio logs it only in debug mode) and keeps the peer's address from the TLS layer. A handshake that fails (a
certificate of another CA, a client that does not trust the gateway's certificate, plain HTTP, an old TLS version)
or does not end within the header timeout is classified (``handshake_code``, ``TLS_HANDSHAKE_TIMEOUT``) and
reported with the client's address: the ops overview's 网关拒绝 rows, Prometheus, one log line a minute. For a
bureau whose system the gateway could not identify, the address is the one clue to who it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from hub.errors import ConfigError
from hub.gateway.proxy_header import Networks, ProxyHeaderError, read_proxy_header, trusted
from hub.trust.pki import PkiPaths, serial_hex

__all__ = ["ServerCredentials", "TlsServer", "handshake_code", "peer_of", "serve_tls", "server_ssl_context"]

log = logging.getLogger("hub.gateway")

#: OpenSSL's ``X509_V_FLAG_NO_CHECK_TIME`` (x509_vfy.h; Python's ``ssl.VerifyFlags`` does not name it): the chain
#: is verified, its dates are not — ``identity.Identifier`` checks them per request and refuses with a JSON answer.
NO_CHECK_TIME = 0x200000

#: Verification results that say the certificate is not the hub CA's (x509_vfy.h): no issuer among the anchors
#: (2, 20), self-signed (18, 19), the leaf's signature not verifiable or wrong (21, 7).
_UNTRUSTED = frozenset({2, 7, 18, 19, 20, 21})
#: Failures that say the client and the gateway share no TLS version or cipher, or the bytes were not TLS.
_PROTOCOL = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "WRONG_VERSION_NUMBER",
        "VERSION_TOO_LOW",
        "NO_PROTOCOLS_AVAILABLE",
        "NO_SHARED_CIPHER",
        "NO_SHARED_GROUPS",
        "NO_SUITABLE_SIGNATURE_ALGORITHM",
        "UNKNOWN_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "TLSV1_ALERT_INSUFFICIENT_SECURITY",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
    }
)


def handshake_code(exc: ssl.SSLError) -> str:
    """The stable code (``hub.errors.CODES``) of a failed server-side handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS_CERT_UNTRUSTED" if exc.verify_code in _UNTRUSTED else "TLS_CERT_INVALID"
    reason = exc.reason or ""
    if reason in ("HTTP_REQUEST", "HTTPS_PROXY_REQUEST"):
        return "TLS_PLAIN_HTTP"
    if reason in _PROTOCOL:
        return "TLS_PROTOCOL"
    # An alert from the client about the gateway's certificate: it does not trust the hub root (unknown CA), or the
    # certificate is expired or does not name the host it called (Java: certificate_unknown).
    if reason.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_")) and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
        return "TLS_CLIENT_DISTRUSTS_HUB"
    return "TLS_HANDSHAKE_FAILED"


def peer_of(address: Any) -> str | None:
    """A peer's socket address as the refusal rows show it ("10.1.2.3", "[2001:db8::1]"; no port: a client's ports
    change with every connection); None when there is none."""
    if not isinstance(address, tuple) or not address:
        return None
    host = str(address[0])
    return f"[{host}]" if ":" in host else host


#: ``refused(code, what, peer)``: a failed handshake's code (``handshake_code``), OpenSSL's words, the peer's address.
Refused = Callable[[str, str, "str | None"], None]

#: After an accept that failed for want of file descriptors or memory, the listener waits this long (as asyncio's does).
ACCEPT_RETRY_S = 1.0
#: Connections accepted in one pass of the event loop before others get their turn (asyncio's servers: the backlog).
ACCEPT_BATCH = 128


class TlsServer:
    """Listening sockets whose connections are accepted here and handed to ``loop.connect_accepted_socket`` with the
    TLS context (``serve_tls``): the handshake has the timeout given, and a failed one is seen with the peer's address
    — a server started with ``ssl=`` ends a failed handshake inside asyncio (or uvloop) and tells nobody. ``sockets``
    and ``close`` as ``asyncio.Server``'s; ``close`` also ends the handshakes under way (``handshakes_ended`` waits
    for that). Connections past their handshake belong to the protocols ``factory`` made (aiohttp's server closes
    them)."""

    def __init__(
        self,
        factory: Callable[[], asyncio.BaseProtocol],
        ctx: ssl.SSLContext,
        sockets: list[socket.socket],
        *,
        handshake_timeout: float,
        refused: Refused,
        max_handshakes: int = 512,
        balancers: Networks = (),
    ) -> None:
        self._factory = factory
        self._balancers = balancers
        #: The clients' addresses of connections that came through a balancer (``peer``), by their transport.
        self._proxied: dict[asyncio.BaseTransport, str] = {}
        self._sweep_at = 1024
        self._ctx = ctx
        self.sockets = tuple(sockets)
        self._timeout = handshake_timeout
        self._refused = refused
        self._max_handshakes = max_handshakes
        #: Handshakes under way.
        self.handshaking = 0
        #: Accepted sockets not yet handed to the event loop's TLS (``_handshake``): a handshake task cancelled by
        #: ``close`` before it ran would leave its socket open otherwise.
        self._unhanded: set[socket.socket] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def use(self, ctx: ssl.SSLContext) -> None:
        """New connections get their TLS from ``ctx`` (``ServerCredentials.reload_if_changed``)."""
        self._ctx = ctx

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._retry is not None:
                self._retry.cancel()
            for sock in self.sockets:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._unhanded):  # their handshake tasks never ran: nor will their count's decrement
            conn.close()
            self.handshaking -= 1
        self._unhanded.clear()

    async def handshakes_ended(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, listening: socket.socket) -> None:
        """The listening socket is readable: accept what waits (at most a backlog's worth per pass, as asyncio's own
        servers do). A reader callback, not a task awaiting ``sock_accept``: a task cancelled by ``close`` just as its
        accept completed dropped the connection's socket unclosed (a ResourceWarning in a gateway restart)."""
        for _ in range(ACCEPT_BATCH):
            if self._closed:
                return
            try:
                conn, address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return  # nothing more waits
            except ConnectionAbortedError:
                continue  # the peer went before it was accepted
            except OSError as exc:  # out of file descriptors or memory: wait, as asyncio's own servers do
                log.error("the gateway could not accept a connection (%s); trying again in %g s", exc, ACCEPT_RETRY_S)
                self._pause()
                return
            conn.setblocking(False)
            if self.handshaking >= self._max_handshakes:  # a flood: closed at once, the established keep theirs
                conn.close()
                self._report("TLS_HANDSHAKES_FULL", f"{self.handshaking} handshakes under way", peer_of(address))
                continue
            self.handshaking += 1
            self._unhanded.add(conn)
            self._spawn(self._handshake(conn, address))

    def _pause(self) -> None:
        """Stop accepting for ``ACCEPT_RETRY_S`` (the loop would call a reader that cannot accept again at once)."""
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())

        def resume() -> None:
            self._retry = None
            if not self._closed:
                for sock in self.sockets:
                    self._loop.add_reader(sock.fileno(), self._accept, sock)

        if self._retry is None:
            self._retry = self._loop.call_later(ACCEPT_RETRY_S, resume)

    def peer(self, transport: asyncio.BaseTransport | None) -> str | None:
        """The client's address of a connection: the one its balancer's PROXY header named, else its socket's peer."""
        if transport is None:
            return None
        return self._proxied.get(transport) or peer_of(transport.get_extra_info("peername"))

    async def _handshake(self, conn: socket.socket, address: Any) -> None:
        self._unhanded.discard(conn)  # from here on this task closes it, or the transport it becomes does
        try:
            peer = peer_of(address)
            proxied = None
            if self._balancers and isinstance(address, tuple) and trusted(str(address[0]), self._balancers):
                ok, proxied = await self._proxy_header(conn, peer)
                if not ok:
                    return
                peer = proxied or peer
            await self._tls(conn, peer, proxied)
        finally:
            self.handshaking -= 1

    async def _proxy_header(self, conn: socket.socket, peer: str | None) -> tuple[bool, str | None]:
        """(True, the client's address the balancer's PROXY header names, or None: none), or (False, None) when the
        connection was closed for want of a valid header (reported)."""
        try:
            conn.setblocking(False)
            async with asyncio.timeout(self._timeout):
                return True, await read_proxy_header(conn)
        except (ProxyHeaderError, TimeoutError) as exc:
            why = str(exc) if isinstance(exc, ProxyHeaderError) else f"no PROXY header within {self._timeout:g} s"
            self._report("TLS_PROXY_HEADER", why, peer)
            conn.close()
            return False, None
        except (EOFError, OSError):  # closed before a byte, or reset (a TCP check): no refusal, as without a header
            conn.close()
            return False, None
        except BaseException:
            conn.close()
            raise

    async def _tls(self, conn: socket.socket, peer: str | None, proxied: str | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_accepted_socket(
                self._factory, conn, ssl=self._ctx, ssl_handshake_timeout=self._timeout
            )
        except ssl.SSLError as exc:
            what = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else exc.reason
            self._report(handshake_code(exc), str(what or exc.__class__.__name__), peer)
        except ConnectionAbortedError as exc:  # asyncio's and uvloop's words for the handshake's timeout
            if "taking longer" in str(exc):
                self._report("TLS_HANDSHAKE_TIMEOUT", f"not finished within {self._timeout:g} s", peer)
        except OSError:
            pass  # the peer closed before or during its handshake (a load balancer's TCP check): no refusal
        else:
            if proxied:
                self._remember(transport, proxied)
        # on failure the loop closed the connection's transport, and with it the socket; on success the transport has it

    def _remember(self, transport: asyncio.BaseTransport, peer: str) -> None:
        if len(self._proxied) >= self._sweep_at:  # the closed connections' entries go
            self._proxied = {t: p for t, p in self._proxied.items() if not t.is_closing()}
            self._sweep_at = max(1024, 2 * len(self._proxied))
        self._proxied[transport] = peer

    def _report(self, code: str, what: str, peer: str | None) -> None:
        try:
            self._refused(code, what, peer)
        except Exception:  # pragma: no cover - reporting must never change the handshake's outcome
            log.exception("a failed TLS handshake could not be reported")


async def serve_tls(
    factory: Callable[[], asyncio.BaseProtocol],
    ctx: ssl.SSLContext,
    host: str,
    port: int,
    *,
    handshake_timeout: float,
    refused: Refused,
    max_handshakes: int = 512,
    balancers: Networks = (),
    backlog: int = 128,
) -> TlsServer:
    """Listen on ``host``/``port`` (every address it resolves to; port 0: a free one); each connection's TLS handshake
    (``ctx``) must end within ``handshake_timeout``, then ``factory()`` gets the connection as if the server had been
    started with ``ssl=ctx``. A handshake that fails is reported to ``refused(code, what, peer)`` (``what``: OpenSSL's
    words, e.g. "unable to get local issuer certificate" — never key material or payload; ``peer``: the client's
    address), one that does not end in time as ``TLS_HANDSHAKE_TIMEOUT``, a connection closed at once because
    ``max_handshakes`` are under way as ``TLS_HANDSHAKES_FULL``. A peer that closes before or during its handshake (a
    load balancer's TCP check) is not reported. A connection from one of ``balancers`` must begin with a PROXY
    header (``hub.gateway.proxy_header``), whose client address then stands for the connection's (``peer``); one
    without is closed and reported as ``TLS_PROXY_HEADER``. Public asyncio APIs (``add_reader``,
    ``connect_accepted_socket``), on asyncio's loop and uvloop's alike."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the same free port on every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise OSError(exc.errno, f"the gateway cannot listen on {host}:{port}: {exc.strerror}") from None
    return TlsServer(
        factory,
        ctx,
        sockets,
        handshake_timeout=handshake_timeout,
        refused=refused,
        max_handshakes=max_handshakes,
        balancers=balancers,
    )


#: While files that do not load stay as they are, the error is said again this often.
RELOAD_FAILURE_REPEAT_S = 3600.0


class ServerCredentials:
    """The server context (``server_ssl_context``) and the files it was made of — the hub root and issuing CA
    certificates, the gateway's certificate and key — read again when their contents change (``reload_if_changed``):
    after ``hub pki issue-server`` renews the certificate, or ``hub pki rollover-issuing`` adds an issuing CA, new
    connections get the new ones without a restart (connections already open keep theirs). Contents, not file
    dates: a copy over the file that keeps its size within one timestamp tick is seen too. Files that do not load (a
    key and certificate that do not match) leave the context in use as it is and are tried again at every look; a
    periodic look says so once they fail twice alike (``hub pki issue-server`` writes the key, then the
    certificate: a look between the two must not page anyone), a SIGHUP at once, and again every
    ``RELOAD_FAILURE_REPEAT_S`` while they fail. The certificate in use is ``presented`` (the gateway writes it with
    its row in the store, and the ops overview warns before it expires): what to watch, since a failed reload leaves
    an older certificate served than the file ``hub pki expiry`` reads."""

    _NAMES = ("the hub root certificate", "the issuing CA certificate", "the server certificate", "the server key")

    def __init__(self, pki_dir: Path, cert_file: Path, key_file: Path, *, key_password: str | None = None) -> None:
        paths = PkiPaths(Path(pki_dir))
        self._args = (Path(pki_dir), Path(cert_file), Path(key_file))
        self._password = key_password
        self._files = (paths.root_cert, paths.issuing_cert, Path(cert_file), Path(key_file))
        self._stamp = self._stamps()
        #: (the contents that do not load, since when, when it was last said) — monotonic seconds
        self._failing: tuple[tuple[str | None, ...], float, float | None] | None = None
        self.context = server_ssl_context(*self._args, key_password=key_password)
        self.presented = self._presented()

    def _stamps(self) -> tuple[str | None, ...]:
        found: list[str | None] = []
        for f in self._files:
            try:
                found.append(hashlib.sha256(f.read_bytes()).hexdigest())
            except OSError:
                found.append(None)
        return tuple(found)

    def _presented(self) -> x509.Certificate | None:
        """The server certificate just loaded (the first of its file)."""
        try:
            return x509.load_pem_x509_certificates(self._args[1].read_bytes())[0]
        except (OSError, ValueError, IndexError):  # replaced again since it loaded: the next look reads it
            return None

    def reload_if_changed(self, *, asked: bool = False) -> bool:
        """Whether the files changed and the new context is in ``context`` now. ``asked``: a SIGHUP — say what came
        of it whatever it was."""
        stamp = self._stamps()
        if stamp == self._stamp:
            if asked:
                log.info(
                    "the gateway's server certificate, key and hub CA certificates are as they were: nothing to read"
                )
            return False
        try:
            context = server_ssl_context(*self._args, key_password=self._password)
        except (ConfigError, OSError, ValueError) as exc:
            now = time.monotonic()
            if self._failing is None or self._failing[0] != stamp:
                self._failing = (stamp, now, None)
            _, since, said = self._failing
            if asked or (said is None and now > since) or (said is not None and now - said >= RELOAD_FAILURE_REPEAT_S):
                self._failing = (stamp, since, now)
                log.error(
                    "the gateway's server certificate, key or the hub CA certificates changed on disk but do not "
                    "load (for %.0f s); new connections keep getting %s until they do: %s",
                    now - since,
                    self._describe(self.presented),
                    exc.detail if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}",
                )
            return False
        changed = [name for name, old, new in zip(self._NAMES, self._stamp, stamp, strict=True) if old != new]
        self._stamp = stamp
        self._failing = None
        self.context = context
        self.presented = self._presented() or self.presented
        log.info(
            "the gateway serves new connections with %s (%s changed on disk)",
            self._describe(self.presented),
            ", ".join(changed),
        )
        return True

    @staticmethod
    def _describe(cert: x509.Certificate | None) -> str:
        if cert is None:
            return "the server certificate"
        return f"server certificate {serial_hex(cert.serial_number)}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"


def server_ssl_context(
    pki_dir: Path, cert_file: Path, key_file: Path, *, key_password: str | None = None
) -> ssl.SSLContext:
    """The server context: ``cert_file`` (the server certificate, then its issuing CA) and ``key_file`` (PEM; when
    encrypted, with ``key_password``: the CA passphrase)."""
    paths = PkiPaths(Path(pki_dir))
    for f in (paths.root_cert, cert_file, key_file):
        if not Path(f).is_file():
            raise ConfigError(f"the gateway needs {f}; issue the gateway's server certificate first")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.verify_flags |= NO_CHECK_TIME
    cadata = paths.root_cert.read_text(encoding="ascii")
    if paths.issuing_cert.is_file():
        cadata += "\n" + paths.issuing_cert.read_text(encoding="ascii")
    try:
        ctx.load_verify_locations(cadata=cadata)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the hub's root (and issuing) certificate from {paths.root_cert}: {exc}"
        ) from None
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file), password=key_password or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the gateway's server certificate and key: {exc}") from None
    return ctx
