"""What a recipient checks on a delivery: the hub's signature and the originating system's, side by side.

The format (README "End-to-end proof: who signed a 公文"): a delivery of a system's message is the canonical signed
content ``C`` (the exclusive-C14N bytes the sender's signature covers) with two ``ds:Signature`` elements as the last
two children of ``env:Envelope``, nothing between or after them::

    <env:Envelope …>…</env:Body><ds:Signature>HUB</ds:Signature><ds:Signature>ORIGINATOR</ds:Signature></env:Envelope>

* the originator's is the sender's own ``ds:Signature``, verbatim in its exclusive-C14N form; it covers ``C``;
* the hub's (enveloped-signature + exc-c14n, ``URI=""``) covers the envelope *including* the originator's
  signature: ``C`` with that signature inserted before the root's end tag.

So ``xmlsec1 --verify`` on a delivery checks the hub's signature (the first one in the document), and after deleting
the hub's ``ds:Signature`` element, ``xmlsec1 --verify`` checks the originator's. The hub's own replies
(``hub.receipt``, ``hub.error``) carry one signature, the hub's. Messages sent *to* the hub keep exactly one
signature (``hub.trust.profile.check_profile``); this module reads only what the hub delivers.

``verify_delivery`` accepts exactly that layout and nothing else. Each signature passes the hub's narrow profile
(``check_signature``), its certificate chain to the trusted root, key policy, revocation and CRL freshness (the
``Verifier``); the hub's must be by a certificate ``is_hub`` recognises, the originator's must name the signed
``env:Sender``. Cost: two signature checks over ``SignedInfo``, one exclusive C14N of the envelope without both
signatures (``C``), one of the originator's signature element (a few hundred bytes, context-free: see
``_context_free``), two SHA-256 — the hub's digest is taken over ``C`` with those bytes spliced in, which is exactly
the exclusive C14N of the envelope without the hub's signature.

Codes: ``SIG_MISSING``/``SIG_PROFILE`` (layout), the per-signature profile codes, ``CERT_*`` for either chain,
``CERT_SIGNER_MISMATCH`` (the first signature is not the hub's, or the originator's certificate does not name the
signed sender), ``SIG_VALUE``/``SIG_DIGEST`` (the hub's signature, or anything it covers — the content or the
originator's signature — changed after the hub signed), ``SIG_ORIGIN_MISSING`` (a system's message without its
originator's signature), ``SIG_ORIGIN_INVALID`` (the hub vouched for an originator's signature that does not cover
the content: only a faulty or compromised hub key makes one).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from cryptography import x509
from lxml import etree

from hub.envelope.intake import parser as intake_parser
from hub.envelope.model import ENV_NS, ERROR_SERVICE, RECEIPT_SERVICE, Envelope
from hub.errors import CertificateUntrusted, SignatureInvalid
from hub.trust.profile import DS, check_signature
from hub.trust.signature import SignerIdentity, Verifier, c14n

if TYPE_CHECKING:
    from hub.trust.profile import SignatureParts

__all__ = ["HUB_ONLY_SERVICES", "OpenedDelivery", "verify_delivery"]

#: Services only the hub sends: they carry one signature, the hub's.
HUB_ONLY_SERVICES: frozenset[str] = frozenset({RECEIPT_SERVICE, ERROR_SERVICE})

_T_SIGNATURE = f"{{{DS}}}Signature"
_T_SERVICE = f"{{{ENV_NS}}}Service"
_T_HEADER = f"{{{ENV_NS}}}Header"
_T_ENVELOPE = f"{{{ENV_NS}}}Envelope"
_DS_PREFIX = f"{{{DS}}}"


@dataclass(frozen=True, slots=True)
class OpenedDelivery:
    """A verified delivery.

    ``root`` is the envelope with both signatures removed: exactly what the originator signed (for a hub.receipt or
    hub.error, what the hub signed); act on it only. ``hub`` and ``originator`` are the signers (``originator`` is
    None for the hub's own replies). ``canonical`` is the exclusive C14N of ``root`` and ``digest`` its hex SHA-256:
    the originator's DigestValue, and what a reply's ``RequestHash`` names. ``envelope`` is read from ``root``.
    ``hub_certificate`` and ``originator_certificate`` are the validated leaf certificates themselves (for an
    adapter's context, or to keep as evidence).
    """

    root: etree._Element
    hub: SignerIdentity
    originator: SignerIdentity | None
    digest: str
    canonical: bytes
    envelope: Envelope
    hub_certificate: x509.Certificate | None = None
    originator_certificate: x509.Certificate | None = None


def _profile(detail: str) -> SignatureInvalid:
    return SignatureInvalid(detail, code="SIG_PROFILE")


def _layout(root: etree._Element) -> tuple[etree._Element, etree._Element | None]:
    """The hub's signature and the originator's (or None) at the end of the root; refuse anything else."""
    last_two = list(islice(root.iterchildren(etree.Element, reversed=True), 2))
    if not last_two or last_two[0].tag != _T_SIGNATURE:
        if next(root.iter("{*}Signature"), None) is None:
            raise SignatureInvalid("the delivery carries no ds:Signature", code="SIG_MISSING")
        raise _profile("a delivery's last child element must be a ds:Signature")
    sigs = last_two if len(last_two) == 2 and last_two[1].tag == _T_SIGNATURE else last_two[:1]
    if len(sigs) == 2:
        hub, origin = sigs[1], sigs[0]
        if hub.tail or origin.tail:
            raise _profile("nothing may stand between or after a delivery's two ds:Signature elements")
    else:
        hub, origin = sigs[0], None
    expected = len(sigs)
    found = 0
    for el in root.iter("{*}Signature"):
        found += 1
        if found > expected or el.tag != _T_SIGNATURE:
            raise _profile(
                "a delivery carries its signatures as the last children of the envelope and no other element named "
                "Signature"
            )
    return hub, origin


def _context_free(root: etree._Element, sig: etree._Element) -> None:
    """Exclusive C14N renders on an element only the namespaces it visibly uses that its output ancestors have not
    rendered already. The envelope's root renders only its own namespace (it has no namespaced attributes); every
    element of a profile-conforming signature is XML-DSig and its attributes are unqualified. So the signature's
    canonical form is the same alone and inside the envelope. Anything else is refused rather than computed
    differently."""
    if root.tag != _T_ENVELOPE or any(k[0] == "{" for k in root.keys()):
        raise _profile("the envelope root must be env:Envelope without namespaced attributes")
    for el in sig.iter():
        tag = el.tag
        if not isinstance(tag, str):
            continue
        if not tag.startswith(_DS_PREFIX) or any(k[0] == "{" for k in el.keys()):
            raise _profile("the originator's ds:Signature may hold only unqualified attributes and ds: elements")


def _detach(root: etree._Element, sig: etree._Element) -> Callable[[], None]:
    """Remove a signature as the enveloped-signature transform does (its tail stays content); return an undo."""
    index = root.index(sig)
    prev = sig.getprevious()
    saved = prev.tail if prev is not None else root.text
    tail = sig.tail
    root.remove(sig)
    if tail:
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            root.text = (root.text or "") + tail

    def undo() -> None:
        if prev is not None:
            prev.tail = saved
        else:
            root.text = saved
        root.insert(index, sig)

    return undo


def _service_of(root: etree._Element) -> str:
    header = root.find(_T_HEADER)
    service = header.find(_T_SERVICE) if header is not None else None
    return (service.get("name") or "") if service is not None else ""


def verify_delivery(
    root: etree._Element, verifier: Verifier, *, is_hub: Callable[[SignerIdentity], bool]
) -> OpenedDelivery:
    """Verify a delivery tree (parsed by ``hub.envelope.parse``); raise a ``TrustError`` naming what failed.

    ``is_hub(identity)`` says whether a certificate is the hub's. The hub keeps it by fingerprint (its current and
    archived certificates, ``hub.trust.lifecycle.hub_fingerprints``); an agency, which holds only the root and its
    CRLs, may use ``identity.system == hub.trust.pki.HUB_SYSTEM``: the CA issues a certificate for the system id
    ``hub`` only to the hub itself (``pki.issue_from_csr`` refuses the name, ``pki.renew`` keeps an existing
    subject), and every chain must end at the trusted root.

    On success both signatures are removed from ``root`` (``OpenedDelivery.root`` is the tree to use; it is ``root``
    itself unless the tree kept comments); on failure ``root`` is left as it was.
    """
    hub_sig, origin_sig = _layout(root)
    service = _service_of(root)
    if service in HUB_ONLY_SERVICES:
        if origin_sig is not None:
            raise _profile(f"a {service} is the hub's own message and carries one signature, the hub's")
    elif origin_sig is None:
        raise SignatureInvalid(
            f"the delivery of {service or 'a message'} carries only one signature: the originating system's "
            "signature is missing, so who signed the content cannot be checked",
            code="SIG_ORIGIN_MISSING",
        )

    # 1: the profile of each signature, before any cryptography.
    hub_parts = check_signature(hub_sig)
    origin_parts: SignatureParts | None = None
    if origin_sig is not None:
        origin_parts = check_signature(origin_sig)
        _context_free(root, origin_sig)

    # 2-4: both certificate chains (cached), and the hub's must be the hub's.
    now = verifier.now()
    hub_leaf = verifier.trusted(hub_parts, now)
    if not is_hub(hub_leaf.identity):
        raise CertificateUntrusted(
            f"the delivery's first signature is by {hub_leaf.identity} (certificate {hub_leaf.identity.serial_hex}), "
            "not by one of the hub's certificates",
            code="CERT_SIGNER_MISMATCH",
        )
    origin_leaf = verifier.trusted(origin_parts, now) if origin_parts is not None else None

    # 5: the hub's SignatureValue, then its digest over the envelope with the originator's signature in it.
    Verifier.check_value(hub_parts, hub_leaf, whose=" of the hub's signature")
    origin_bytes = c14n(origin_sig) if origin_sig is not None else b""
    undo_origin = _detach(root, origin_sig) if origin_sig is not None else None
    undo_hub = _detach(root, hub_sig)

    def restore() -> None:
        undo_hub()
        if undo_origin is not None:
            undo_origin()

    canonical = c14n(root)
    if origin_bytes:
        cut = canonical.rfind(b"</")
        covered = hashlib.sha256(canonical[:cut] + origin_bytes + canonical[cut:]).digest()
    else:
        covered = hashlib.sha256(canonical).digest()
    if not hmac.compare_digest(covered, hub_parts.digest_value):
        restore()
        what = "the content or the originator's signature" if origin_bytes else "the content"
        raise SignatureInvalid(
            f"the delivery's digest does not match the hub's signed DigestValue: {what} changed after the hub signed",
            code="SIG_DIGEST",
        )
    digest = covered if not origin_bytes else hashlib.sha256(canonical).digest()

    # The originator's signature, which the hub's covers: its value, then its digest over C.
    if origin_parts is not None and origin_leaf is not None:
        try:
            Verifier.check_value(origin_parts, origin_leaf, whose=" of the originator's signature")
        except SignatureInvalid as exc:
            restore()
            raise SignatureInvalid(
                f"{exc.detail}; the hub countersigned a signature that is not the originator's",
                code="SIG_ORIGIN_INVALID",
            ) from None
        if not hmac.compare_digest(digest, origin_parts.digest_value):
            restore()
            raise SignatureInvalid(
                f"the originator's signature ({origin_leaf.identity}) does not cover this content (its DigestValue "
                "belongs to another document); the hub countersigned a mismatched pair",
                code="SIG_ORIGIN_INVALID",
            )

    signed_root = root
    if next(root.iter(etree.Comment), None) is not None:
        signed_root = etree.fromstring(canonical, intake_parser())
    envelope = Envelope.from_tree(signed_root)
    sender = envelope.sender
    if origin_leaf is not None:
        who = origin_leaf.identity
        if (who.agency, who.system) != (sender.agency, sender.system):
            restore()
            raise CertificateUntrusted(
                f"the originator's signature is by {who} (certificate {who.serial_hex}) but the signed sender is "
                f"{sender.agency}/{sender.system}",
                code="CERT_SIGNER_MISMATCH",
            )
    elif (hub_leaf.identity.agency, hub_leaf.identity.system) != (sender.agency, sender.system):
        restore()
        raise CertificateUntrusted(
            f"the {service} is signed by the hub ({hub_leaf.identity}) but names {sender.agency}/{sender.system} "
            "as its sender",
            code="CERT_SIGNER_MISMATCH",
        )
    return OpenedDelivery(
        signed_root,
        hub_leaf.identity,
        origin_leaf.identity if origin_leaf is not None else None,
        digest.hex(),
        canonical,
        envelope,
        hub_leaf.certificate,
        origin_leaf.certificate if origin_leaf is not None else None,
    )
