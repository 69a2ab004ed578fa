"""A CRL from the gateway is filed under its own CA, never under the name the answer gives (review of this
session's CRL refresh): under another CA's file name a genuine root CRL displaced the issuing CA's only CRL, and then
an older, still fresh CRL of that CA — from before a revocation — passed the "not older than what is held" check:
the revoked certificate was accepted again. No services: a CA of its own in a temporary directory."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from adapters.sdk._crl import accept_crls
from hub.trust import pki
from hub.trust.truststore import TrustStore


def _entry(name: str, crl: x509.CertificateRevocationList, ca: x509.Certificate) -> dict[str, Any]:
    return {
        "name": name,
        "der_base64": base64.b64encode(crl.public_bytes(serialization.Encoding.DER)).decode(),
        "issuer_der_base64": base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode(),
    }


def test_a_crl_cannot_displace_another_cas_and_an_old_one_cannot_undo_a_revocation(tmp_path: Path) -> None:
    passphrase = "crl-names-passphrase-123"
    pki.init_ca(tmp_path / "pki", passphrase)
    root, root_key = pki.load_ca(tmp_path / "pki", passphrase, which="root")
    issuing, issuing_key = pki.load_ca(tmp_path / "pki", passphrase, which="issuing")
    now = dt.datetime.now(dt.UTC)
    victim = 0x1234567
    before = pki.build_crl(issuing, issuing_key, (), number=1, now=now - dt.timedelta(hours=2))
    after = pki.build_crl(
        issuing,
        issuing_key,
        (pki.RevokedEntry(victim, "keyCompromise", now - dt.timedelta(minutes=5)),),
        number=2,
        now=now,
    )
    root_crl = pki.build_crl(root, root_key, (), number=1, now=now)
    crl_dir = tmp_path / "home" / "crl"
    crl_dir.mkdir(parents=True)
    (crl_dir / "root-ca.crl").write_bytes(root_crl.public_bytes(serialization.Encoding.PEM))
    (crl_dir / "issuing-ca.crl").write_bytes(after.public_bytes(serialization.Encoding.PEM))

    def seen() -> tuple[int, bool] | None:
        crl = TrustStore.from_files(tmp_path / "pki" / "root-ca.pem", crl_dir).crl_for(issuing)
        return None if crl is None else (crl.number, victim in crl.revoked)

    assert seen() == (2, True)
    accept_crls({"crls": [_entry("issuing-ca.crl", root_crl, root)]}, root, crl_dir)
    assert seen() == (2, True)  # the root's CRL went to the root's file, not over the issuing CA's
    accept_crls({"crls": [_entry("issuing-ca.crl", before, issuing)]}, root, crl_dir)
    assert seen() == (2, True)  # the older CRL of the issuing CA did not replace the newer
    # a new CA's CRL, whatever the answer calls it, gets a file of its own
    update = accept_crls({"crls": [_entry("root-ca.crl", after, issuing)]}, root, crl_dir)
    assert update.written == () and sorted(p.name for p in crl_dir.glob("*.crl")) == ["issuing-ca.crl", "root-ca.crl"]
