"""Checking the hub's signatures on evidence checkpoints (the store cannot import the trust layer, so the CLI
passes this in)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hub.trust import keys
from hub.trust.pki import PkiPaths, fingerprint, load_certificates


def checkpoint_verifier(pki_dir: Path) -> Callable[[bytes, bytes, str], bool]:
    """``verify(payload, signature, signer_fingerprint)``: True only for a valid signature by the hub's own
    certificate (the one at ``<pki>/hub/hub.pem``) whose fingerprint is the one recorded."""
    cert = load_certificates(PkiPaths(pki_dir).hub_cert)[0]
    expected = fingerprint(cert)
    public_key = cert.public_key()

    def verify(payload: bytes, signature: bytes, signer_fingerprint: str) -> bool:
        if signer_fingerprint != expected:
            return False
        try:
            return keys.verify_raw(public_key, payload, signature)
        except Exception:  # any failure is "not valid"
            return False

    return verify
