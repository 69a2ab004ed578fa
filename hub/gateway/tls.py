"""The gateway's TLS server context: the hub CA's own server certificate, client certificates of the hub CA.

TLS 1.2 or newer; ``CERT_OPTIONAL`` so that a request without a certificate is answered (401
``GATEWAY_NO_CERTIFICATE`` as JSON) instead of failing in the handshake. A certificate that is presented must chain
to the hub root (the only anchors are the root and the issuing CA certificates of the PKI directory), or the
handshake fails. Its dates are checked per request, with revocation and the directory (``identity``): an expired
certificate is answered 403 ``CERT_EXPIRED`` as JSON, naming the system and the date, instead of a handshake that
fails with nothing for the client to read (asyncio closes the connection without sending OpenSSL's alert, so a
client saw "empty reply from server") and nothing for the people on duty to see. It also refuses a keep-alive
connection's next request once its certificate expired, which a check in the handshake did not.

A handshake that still fails (a certificate of another CA, a client that does not trust the gateway's certificate,
plain HTTP, an old TLS version) is classified here (``handshake_code``) and reported to ``watch_handshakes``'s
callback: the ops overview's 网关拒绝 rows, Prometheus, one log line a minute. Nothing else can see it: asyncio
logs failed handshakes only in debug mode.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from hub.errors import ConfigError
from hub.trust.pki import PkiPaths

__all__ = ["handshake_code", "server_ssl_context", "watch_handshakes"]

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


def watch_handshakes(ctx: ssl.SSLContext, refused: Callable[[str, str], None]) -> None:
    """Call ``refused(code, what)`` for each handshake that fails on ``ctx`` (``what``: OpenSSL's words, e.g.
    "unable to get local issuer certificate" — never key material or payload). A peer that closes before the
    handshake (a load balancer's TCP check) is not reported: asyncio ends that handshake without calling
    ``do_handshake``. ``ssl.SSLContext.sslobject_class`` is the documented hook for a subclass of ``SSLObject``; only
    the handshake is wrapped, so reads and writes cost what they did."""

    class WatchedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                what = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else exc.reason
                try:
                    refused(handshake_code(exc), str(what or exc.__class__.__name__))
                except Exception:  # pragma: no cover - reporting must never change the handshake's outcome
                    log.exception("a failed TLS handshake could not be reported")
                raise

    ctx.sslobject_class = WatchedSSLObject


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
    ctx.load_verify_locations(cadata=cadata)
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file), password=key_password or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the gateway's server certificate and key: {exc}") from None
    return ctx
