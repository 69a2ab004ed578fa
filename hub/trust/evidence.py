"""Checking the hub's signatures on evidence checkpoints across key rotations (the store cannot import the trust
layer, so the CLI passes this in; ``hub.commands.trust_admin.installation_checkpoint_verifier`` builds it from the
register of this installation's store).

A checkpoint records the fingerprint of the certificate that signed it. It is accepted only when that certificate

1. is one of the hub's own certificates of this installation (the current one, the archived earlier ones in
   ``<pki>/hub/archive/``, or a ``hub`` certificate of the register) — else **certificate unknown** — and has the
   hub's signing profile: subject CN ``hub`` (a name the CA gives no one else: ``pki.issue_from_csr`` refuses it) and
   documentSigning — else **not the hub's signing certificate**. The register is a table of the very database the
   checkpoints protect: a row of it says nothing about what a certificate is for, the certificate does;
2. chains to the hub's root through one of its issuing CAs, and it and its issuing CA were valid when the checkpoint
   was made (and not revoked by then) — else the reason;
3. verifies the signature — else **signature wrong** (the checkpoint or what it seals was changed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from hub.errors import CheckpointRefused
from hub.trust import keys
from hub.trust.crl import load_crls
from hub.trust.lifecycle import hub_certificates
from hub.trust.pki import (
    DOCUMENT_SIGNING,
    HUB_SYSTEM,
    PkiPaths,
    agency_and_system,
    fingerprint,
    issued_by,
    load_certificates,
    serial_hex,
)

__all__ = ["CheckpointVerifier", "checkpoint_verifier"]


def _signing_profile_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is not a hub signing certificate (subject CN ``hub``, documentSigning), or None."""
    try:
        _, system = agency_and_system(cert.subject)
    except ValueError:
        system = ""
    if system != HUB_SYSTEM:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        named = str(cns[0].value) if cns else "(none)"
        return f"its subject names {named!r}, not the hub's system {HUB_SYSTEM!r}"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "it carries no extended key usage (the hub's signs with documentSigning)"
    if DOCUMENT_SIGNING not in usages:
        return "it is not for document signing (no documentSigning)"
    return None


def _valid_at(cert: x509.Certificate, at: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


class CheckpointVerifier:
    """``verify(payload, signature, fingerprint, at)`` for ``hub.store.evidence`` (``takes_time``)."""

    takes_time = True

    def __init__(
        self,
        root: x509.Certificate,
        issuing: Iterable[x509.Certificate],
        hub_certs: Iterable[x509.Certificate],
        revoked: dict[int, dt.datetime] | None = None,
    ) -> None:
        self.root = root
        #: Earlier roots (``previous-root-ca*.pem`` after a root rollover): evidence of earlier years chains to them.
        self.previous_roots: list[x509.Certificate] = []
        self.issuing = list(issuing)
        self.hub = {fingerprint(c): c for c in hub_certs}
        self.revoked = dict(revoked or {})
        self._chains: dict[str, x509.Certificate | None] = {}

    def _issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        fp = fingerprint(cert)
        if fp not in self._chains:
            self._chains[fp] = next(
                (
                    ca
                    for ca in self.issuing
                    if issued_by(cert, ca) and any(issued_by(ca, r) for r in (self.root, *self.previous_roots))
                ),
                None,
            )
        return self._chains[fp]

    def __call__(self, payload: bytes, signature: bytes, signer: str, at: dt.datetime | None = None) -> bool:
        cert = self.hub.get(signer)
        if cert is None:
            raise CheckpointRefused(
                f"证书未知 its certificate {signer[:16]}… is unknown: not one of this installation's hub certificates "
                "(current, archived in pki/hub/archive/, or in the register) — the signature could not be checked"
            )
        who = f"certificate {serial_hex(cert.serial_number)}"
        not_hub = _signing_profile_problem(cert)
        if not_hub is not None:
            raise CheckpointRefused(
                f"证书不是枢纽签名证书 its {who} is not the hub's signing certificate: {not_hub}; a checkpoint is "
                "valid only when signed with the hub's own key (a register row marked 'hub' does not make it one)"
            )
        issuer = self._issuer_of(cert)
        if issuer is None:
            raise CheckpointRefused(f"证书不可信 its {who} does not chain to this hub's root CA")
        if at is not None:
            for c, what in ((cert, who), (issuer, f"issuing CA {serial_hex(issuer.serial_number)}")):
                if not _valid_at(c, at):
                    raise CheckpointRefused(
                        f"证书当时无效 it was made on {at:%Y-%m-%d %H:%M} UTC, when its {what} was not valid "
                        f"({c.not_valid_before_utc:%Y-%m-%d} – {c.not_valid_after_utc:%Y-%m-%d})"
                    )
            revoked_at = self.revoked.get(cert.serial_number)
            if revoked_at is not None and revoked_at <= at:
                raise CheckpointRefused(
                    f"证书已吊销 it was made on {at:%Y-%m-%d %H:%M} UTC, after its {who} was revoked "
                    f"({revoked_at:%Y-%m-%d %H:%M} UTC)"
                )
        try:
            return keys.verify_raw(cert.public_key(), payload, signature)
        except Exception:  # any failure is "not valid"
            return False


def checkpoint_verifier(
    pki_dir: Path, register: Iterable[bytes] = (), register_revoked: dict[int, dt.datetime] | None = None
) -> CheckpointVerifier:
    """The verifier for this PKI directory: the hub certificates in its files plus ``register`` (DER of the
    register's ``hub`` certificates), revocations from the CRLs in the directory plus ``register_revoked``."""
    paths = PkiPaths(Path(pki_dir))
    root = load_certificates(paths.root_cert)[0]
    issuing = load_certificates(paths.issuing_cert) if paths.issuing_cert.is_file() else []
    certs = hub_certificates(paths.root)
    certs += [x509.load_der_x509_certificate(der) for der in register]
    revoked: dict[int, dt.datetime] = dict(register_revoked or {})
    for crl in load_crls(paths.crl_dir, [root, *issuing]).values():
        for serial, (_, when) in crl.revoked.items():
            revoked[serial] = min(when, revoked.get(serial, when))
    verifier = CheckpointVerifier(root, issuing, certs, revoked)
    verifier.previous_roots = [
        c for f in sorted(paths.root.glob("previous-root-ca*.pem")) for c in load_certificates(f)
    ]
    return verifier
