"""The agency side of trust: the system's own signing key, and the checks on everything the hub delivers.

A delivery is opened in this order, and a handler never sees what failed any step (default deny):
safe parse (``hub.envelope.parse``: size, depth, no DTD or entities) → the envelope and the service's XSD (the
same registry as the hub) → the hub's signature, chain to the hub root and CRL → the originator's signature over
the same content, its certificate naming the signed sender (``hub.trust.delivery.verify_delivery``). Only the
signed tree is used afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.sdk._errors import ConfigurationError

log = logging.getLogger("adapters.sdk")

if TYPE_CHECKING:
    from cryptography import x509
    from lxml import etree

    from hub.envelope import Envelope
    from hub.trust import Signer, SignerIdentity, Verifier

__all__ = ["AgencyTrust", "Opened", "load_signer", "registry"]


def registry() -> Any:
    """The hub's schema registry over the XSDs that ship with the SDK: the one the typed messages validate with
    (``adapters.sdk._message.schema_registry``, compiled once per process)."""
    from adapters.sdk._message import schema_registry

    return schema_registry()


#: The system's certificate expiring within this many days is said in the log at each start.
EXPIRY_WARNING_DAYS = 30


def warn_if_expiring(system: str, cert: Any, *, now: datetime | None = None) -> int | None:
    """Say in the log when the system's own certificate expires within ``EXPIRY_WARNING_DAYS`` (or has): with it
    the hub refuses what the system signs and, over HTTPS, the gateway its requests (403 ``CERT_EXPIRED``). The days
    left when it was said, else None."""
    now = now or datetime.now(UTC)
    end = cert.not_valid_after_utc
    days, on = (end - now).days, f"{end:%Y-%m-%d}"
    if end <= now:
        log.error(
            "the certificate of %s expired on %s: the hub refuses what it signs; ask the hub's operators for a new "
            "one (hub adapter enrol) · 本系统证书已于 %s 过期，请向枢纽运维申请换发",
            system,
            on,
            on,
        )
    elif days <= EXPIRY_WARNING_DAYS:
        log.warning(
            "the certificate of %s expires on %s (in %d days): ask the hub's operators for a new one in time "
            "(hub adapter enrol) · 本系统证书将于 %s 到期（还剩 %d 天），请及时向枢纽运维申请换发",
            system,
            on,
            days,
            on,
            days,
        )
    else:
        return None
    return days


def load_signer(key_path: Path, cert_path: Path) -> Signer:
    from hub.errors import HubError
    from hub.trust import Signer

    if not key_path.is_file() or not cert_path.is_file():
        raise ConfigurationError(
            f"no key or certificate at {key_path} / {cert_path}: enrol the system first (hub adapter enrol)",
            code="SDK_NOT_ENROLLED",
        )
    try:
        return Signer.load(key_path, cert_path)
    except HubError as exc:
        raise ConfigurationError(f"the system's key or certificate: {exc.detail}", code=exc.code) from None


@dataclass(frozen=True, slots=True)
class Opened:
    """A verified delivery: the signed envelope (both signatures removed), who signed it, the content digest."""

    envelope: Envelope
    root: etree._Element
    hub: SignerIdentity
    originator: SignerIdentity | None
    digest: str
    data: bytes
    #: The originator's validated leaf certificate (None for the hub's own messages).
    originator_certificate: x509.Certificate | None = None


def _is_hub(identity: SignerIdentity) -> bool:
    from hub.trust.pki import HUB_SYSTEM

    return identity.system == HUB_SYSTEM


class AgencyTrust:
    """Opens deliveries with only the hub root and its CRLs (``TrustStore.from_files``)."""

    def __init__(self, verifier: Verifier, *, max_bytes: int) -> None:
        self.verifier = verifier
        self.max_bytes = max_bytes
        self.registry = registry()

    @classmethod
    def from_files(cls, root_cert: Path, crl_dir: Path, *, max_bytes: int) -> AgencyTrust:
        from hub.errors import HubError
        from hub.trust import TrustStore, Verifier

        if not root_cert.is_file():
            raise ConfigurationError(f"no hub root certificate at {root_cert}", code="SDK_NOT_ENROLLED")
        try:
            store = TrustStore.from_files(root_cert, crl_dir)
        except HubError as exc:
            raise ConfigurationError(f"the hub root or its CRLs: {exc.detail}", code=exc.code) from None
        return cls(Verifier(store), max_bytes=max_bytes)

    def open(self, data: bytes) -> Opened:
        """Raise ``hub.errors.HubError`` (its stable code) for anything that does not verify."""
        from hub.envelope import parse
        from hub.trust.delivery import verify_delivery

        root = parse(data, max_bytes=self.max_bytes)
        self.registry.validate(root)
        o = verify_delivery(root, self.verifier, is_hub=_is_hub)
        return Opened(o.envelope, o.root, o.hub, o.originator, o.digest, data, o.originator_certificate)
