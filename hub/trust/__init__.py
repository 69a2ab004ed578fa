"""Trust: the provincial CA, agency certificates, and XML signatures on every exchange.

Public surface (pinned by tests/unit/test_trust_api.py)::

    store = TrustStore.load(pki_dir)           # hub root + issuing CAs + CRLs, loaded once; store.refresh()
    signer = Signer.load(key_path, cert_path, passphrase=...)   # key loaded once; signer.sign(root) -> root
    verified = Verifier(store).verify(root)    # -> Verified(root=<only what was signed>, signer, digest, method)
    check_signer_binding(verified, envelope)   # certificate agency/system == signed env:Sender
    verify_delivery(root, verifier, is_hub=…)  # hub.trust.delivery: what the hub delivers carries its signature
                                               # and the sender's; both checked (recipients, the adapter SDK)
    TrustStore.from_files(root_cert, crl_dir)  # an agency's store: the hub root and its CRLs, no PKI directory

The CA itself (init, issue from CSR, renew, CRLs, agency keygen + CSR) is ``hub.trust.pki``; keeping its
register in PostgreSQL in step with the files is ``hub.commands.trust_admin``; the ``hub pki``/``keygen``/``sign``/
``verify`` commands are ``hub.commands.pki`` (wiring: this package stays pure, no store, broker or command line).
``hub.trust.reference.SignxmlVerifier`` is the signxml-based reference implementation that the narrow verifier is
tested against.
"""

from hub.trust.keys import ALGORITHMS, check_key_policy
from hub.trust.signature import Signer, SignerIdentity, Verified, Verifier, check_signer_binding, identity_of
from hub.trust.truststore import TrustStore

__all__ = [
    "ALGORITHMS",
    "Signer",
    "SignerIdentity",
    "TrustStore",
    "Verified",
    "Verifier",
    "check_key_policy",
    "check_signer_binding",
    "identity_of",
]
