"""The gateway's TLS server context: the hub CA's own server certificate, client certificates of the hub CA.

TLS 1.2 or newer; ``CERT_OPTIONAL`` so that a request without a certificate is answered (401
``GATEWAY_NO_CERTIFICATE`` as JSON) instead of failing in the handshake; a certificate that is presented must chain
to the hub root (the only anchors are the root and the issuing CA certificates of the PKI directory) and be within
its validity, or the handshake fails. Revocation and the directory are checked per request (``identity``).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from hub.errors import ConfigError
from hub.trust.pki import PkiPaths

__all__ = ["server_ssl_context"]


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
    cadata = paths.root_cert.read_text(encoding="ascii")
    if paths.issuing_cert.is_file():
        cadata += "\n" + paths.issuing_cert.read_text(encoding="ascii")
    ctx.load_verify_locations(cadata=cadata)
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file), password=key_password or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the gateway's server certificate and key: {exc}") from None
    return ctx
