"""The hub's one signature profile, checked on the parsed tree before any cryptography (XML-SECURITY.md §4, §5.4).

Exactly one ``ds:Signature`` in the whole document (and no other element named ``Signature``), as the last
child element of the envelope root; ``SignedInfo`` with exclusive C14N (never ``#WithComments``), an
allow-listed ``SignatureMethod`` without parameters, and exactly one ``Reference`` with ``URI=""`` whose
transforms are exactly enveloped-signature then exclusive C14N, digested with SHA-256; ``KeyInfo`` with one
``X509Data`` holding one to three certificates and nothing else: the key comes from the certificate only
(``KeyValue`` is refused, as hub/trust/USAGE.md says; a second statement of the key adds nothing but a chance of
disagreement). No ``ds:Object``, ``Manifest``, ``RetrievalMethod``, ``KeyName``, ``X509CRL``, transform
parameters, XSLT, XPath, base64 or external and ``#xpointer`` URIs.

Nothing here executes a transform or touches a key: a rejected signature costs a walk over a dozen elements.
Every walk over children stops one past what the profile allows, so a signature element stuffed with a hundred
thousand children (the XSD admits foreign content in several places) costs no more than a correct one.
Errors name the offending algorithm, transform or element.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from itertools import islice

from lxml import etree

from hub.errors import SignatureInvalid
from hub.trust.keys import ECDSA_SHA256, ECDSA_SHA384, RSA_SHA256

__all__ = [
    "ALLOWED_DIGESTS",
    "ALLOWED_SIGNATURE_METHODS",
    "DS",
    "DSIG11",
    "ENVELOPED",
    "EXC_C14N",
    "SHA256",
    "SignatureParts",
    "check_profile",
    "check_signature",
    "name_of",
]

DS = "http://www.w3.org/2000/09/xmldsig#"
DSIG11 = "http://www.w3.org/2009/xmldsig11#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"

ALLOWED_SIGNATURE_METHODS: frozenset[str] = frozenset({ECDSA_SHA256, ECDSA_SHA384, RSA_SHA256})
ALLOWED_DIGESTS: frozenset[str] = frozenset({SHA256})

#: Friendly names for the URIs an error may have to name (anything else is quoted as it came).
_NAMES = {
    ECDSA_SHA256: "ecdsa-sha256",
    ECDSA_SHA384: "ecdsa-sha384",
    RSA_SHA256: "rsa-sha256",
    SHA256: "sha256",
    EXC_C14N: "exc-c14n",
    ENVELOPED: "enveloped-signature",
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": "rsa-sha1",
    "http://www.w3.org/2000/09/xmldsig#dsa-sha1": "dsa-sha1",
    "http://www.w3.org/2009/xmldsig11#dsa-sha256": "dsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1": "ecdsa-sha1",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha224": "ecdsa-sha224",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": "ecdsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha224": "rsa-sha224",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": "rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": "rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-md5": "rsa-md5",
    "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1": "rsa-pss-sha256",
    "http://www.w3.org/2000/09/xmldsig#hmac-sha1": "hmac-sha1",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256": "hmac-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha384": "hmac-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512": "hmac-sha512",
    "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
    "http://www.w3.org/2001/04/xmldsig-more#sha224": "sha224",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
    "http://www.w3.org/2001/04/xmldsig-more#md5": "md5",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments": "exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315": "c14n 1.0 (inclusive)",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments": "c14n 1.0#WithComments",
    "http://www.w3.org/2006/12/xml-c14n11": "c14n 1.1 (inclusive)",
    "http://www.w3.org/2006/12/xml-c14n11#WithComments": "c14n 1.1#WithComments",
    "http://www.w3.org/TR/1999/REC-xslt-19991116": "XSLT",
    "http://www.w3.org/TR/1999/REC-xpath-19991116": "XPath",
    "http://www.w3.org/2002/06/xmldsig-filter2": "XPath Filter 2.0",
    "http://www.w3.org/2000/09/xmldsig#base64": "base64",
}

_T = {
    name: f"{{{DS}}}{name}"
    for name in (
        "Signature",
        "SignedInfo",
        "SignatureValue",
        "KeyInfo",
        "CanonicalizationMethod",
        "SignatureMethod",
        "Reference",
        "Transforms",
        "Transform",
        "DigestMethod",
        "DigestValue",
        "X509Data",
        "X509Certificate",
        "KeyValue",
        "Object",
    )
}
_ANY_SIGNATURE = "{*}Signature"
_MAX_CERTS = 3
_MAX_CERT_B64 = 12 * 1024  # a hub certificate is well under 2 KiB; RSA-8192 leaves stay under 3 KiB
_MAX_SIGVALUE_B64 = 2048


def name_of(uri: str | None) -> str:
    """A readable name of an algorithm URI for error messages."""
    if uri is None:
        return "(no Algorithm attribute)"
    name = _NAMES.get(uri)
    text = uri if len(uri) <= 100 else uri[:100] + "…"
    return f"{name} ({text})" if name else repr(text)


@dataclass(slots=True)
class SignatureParts:
    """What the profile check found: references into the tree, decoded values, nothing verified yet."""

    signature: etree._Element
    signed_info: etree._Element
    method: str
    digest_value: bytes
    signature_value: bytes
    #: The base64 text of every X509Certificate, in document order. Decoded only when the verifier has not
    #: seen this certificate set before (``decode_certificates``): a known sender costs no base64 work.
    certificate_texts: tuple[str, ...]

    def decode_certificates(self) -> tuple[bytes, ...]:
        out = []
        for text in self.certificate_texts:
            try:
                out.append(base64.b64decode("".join(text.split()), validate=True))
            except (binascii.Error, ValueError):
                raise _profile("ds:X509Certificate is not valid base64") from None
        return tuple(out)


def _profile(detail: str) -> SignatureInvalid:
    return SignatureInvalid(detail, code="SIG_PROFILE")


def _short(tag: object) -> str:
    if not isinstance(tag, str):
        return "a comment or processing instruction"
    q = etree.QName(tag)
    if q.namespace == DS:
        return f"ds:{q.localname}"
    return f"{{{q.namespace}}}{q.localname}" if q.namespace else q.localname


def _children(el: etree._Element, limit: int) -> list[etree._Element]:
    """Element children only (a tree that kept comments still has them as nodes), at most ``limit`` of them:
    callers pass one more than they allow, so that an excess is seen without walking all of it."""
    return list(islice(el.iterchildren(_ELEMENTS), limit))


_ELEMENTS = etree.Element  # as iterchildren's tag: elements only, filtered in C
#: The Clark names ``_expect`` compares against, per list of local names (made once each).
_WANT: dict[tuple[str, ...], tuple[str, ...]] = {}


def _expect(el: etree._Element, names: tuple[str, ...], where: str) -> list[etree._Element]:
    kids = _children(el, len(names) + 1)
    tags = tuple([k.tag for k in kids])
    want = _WANT.get(names)
    if want is None:
        want = _WANT[names] = tuple(_T[n] for n in names)
    if tags != want:
        extra = next((k for k in kids if k.tag not in want), None)
        if extra is not None:
            raise _profile(f"{_short(extra.tag)} is not allowed in {where}")
        raise _profile(f"{where} must contain exactly {', '.join('ds:' + n for n in names)} in this order")
    return kids


def _only_attributes(el: etree._Element, allowed: tuple[str, ...]) -> None:
    for name in el.keys():  # one C call; iterating .attrib makes a proxy first
        if name not in allowed:
            raise _profile(f"attribute {name!r} is not allowed on {_short(el.tag)}")


def _b64(el: etree._Element, what: str, limit: int) -> bytes:
    # A text-only element (what every signer writes) needs no itertext(); white space is allowed and dropped.
    text = (el.text or "") if not len(el) else "".join(map(str, el.itertext()))
    compact = "".join(text.split())
    if not compact or len(compact) > limit:
        raise _profile(f"{what} is empty or longer than {limit} base64 characters")
    try:
        # What base64.b64decode(validate=True) does, without its wrapper: only the alphabet, correct padding.
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _profile(f"{what} is not valid base64") from None


def check_profile(root: etree._Element) -> SignatureParts:
    """Check the signature profile of an envelope tree; return its parts or raise ``SignatureInvalid``."""
    found = list(root.iter(_ANY_SIGNATURE))
    if not found:
        raise SignatureInvalid("the message carries no ds:Signature", code="SIG_MISSING")
    for el in found:
        if el.tag != _T["Signature"]:
            raise _profile(f"an element {_short(el.tag)} is not allowed (only the one ds:Signature may be so named)")
    if len(found) > 1:
        raise _profile(f"the message carries {len(found)} ds:Signature elements; exactly one is allowed")
    sig = found[0]
    if sig is root or sig.getparent() is not root or any(isinstance(s.tag, str) for s in sig.itersiblings()):
        raise _profile("ds:Signature must be the last child element of the envelope root")
    return check_signature(sig)


def check_signature(sig: etree._Element) -> SignatureParts:
    """The per-signature part of the profile, for one given ``ds:Signature`` element: everything
    ``check_profile`` checks except where the signature sits and how many the document carries (a delivery carries
    two, ``hub.trust.delivery``; the caller places them)."""
    _only_attributes(sig, ("Id",))

    signed_info, sig_value_el, key_info = _expect_signature(sig)
    _only_attributes(signed_info, ("Id",))
    c14n, method_el, reference = _expect(
        signed_info, ("CanonicalizationMethod", "SignatureMethod", "Reference"), "ds:SignedInfo"
    )

    c14n_alg = c14n.get("Algorithm")
    if c14n_alg != EXC_C14N:
        raise SignatureInvalid(
            f"canonicalization {name_of(c14n_alg)} is not allowed; only exclusive C14N without comments",
            code="SIG_ALGORITHM",
        )
    if len(c14n):
        raise SignatureInvalid(
            f"parameters of the canonicalization method ({_short(c14n[0].tag)}) are not allowed",
            code="SIG_TRANSFORM",
        )

    method = method_el.get("Algorithm")
    if method not in ALLOWED_SIGNATURE_METHODS:
        raise SignatureInvalid(
            f"signature method {name_of(method)} is not allowed; use ecdsa-sha256, ecdsa-sha384 or rsa-sha256",
            code="SIG_ALGORITHM",
        )
    if len(method_el):
        raise SignatureInvalid(
            f"parameters of the signature method ({_short(method_el[0].tag)}) are not allowed", code="SIG_ALGORITHM"
        )

    digest_method, digest_value_el = _check_reference(reference)
    digest_alg = digest_method.get("Algorithm")
    if digest_alg not in ALLOWED_DIGESTS:
        raise SignatureInvalid(f"digest method {name_of(digest_alg)} is not allowed; use sha256", code="SIG_ALGORITHM")
    if len(digest_method):
        raise _profile("ds:DigestMethod takes no parameters")
    digest_value = _b64(digest_value_el, "ds:DigestValue", 64)
    if len(digest_value) != 32:
        raise _profile(f"ds:DigestValue has {len(digest_value)} bytes; SHA-256 has 32")

    signature_value = _b64(sig_value_el, "ds:SignatureValue", _MAX_SIGVALUE_B64)
    certificate_texts = _check_key_info(key_info)
    return SignatureParts(sig, signed_info, method, digest_value, signature_value, certificate_texts)


def _expect_signature(sig: etree._Element) -> tuple[etree._Element, etree._Element, etree._Element]:
    kids = _children(sig, 4)
    for k in kids:
        if k.tag == _T["Object"]:
            raise _profile("ds:Object is not allowed in the signature (nothing outside the envelope is signed)")
    kids_t = _expect(sig, ("SignedInfo", "SignatureValue", "KeyInfo"), "ds:Signature")
    _only_attributes(kids_t[1], ("Id",))
    _only_attributes(kids_t[2], ("Id",))
    return kids_t[0], kids_t[1], kids_t[2]


def _check_reference(reference: etree._Element) -> tuple[etree._Element, etree._Element]:
    _only_attributes(reference, ("URI", "Id", "Type"))
    uri = reference.get("URI")
    if uri is None:
        raise _profile('ds:Reference has no URI; only URI="" (the whole envelope) is allowed')
    if uri != "":
        shown = uri if len(uri) <= 80 else uri[:80] + "…"
        raise _profile(f'ds:Reference URI {shown!r} is not allowed; only URI="" (the whole envelope) is allowed')
    kids = _children(reference, 1)
    if not kids or kids[0].tag != _T["Transforms"]:
        raise SignatureInvalid(
            "ds:Reference must list its transforms: exactly enveloped-signature, then exc-c14n", code="SIG_TRANSFORM"
        )
    _, digest_method, digest_value = _expect(reference, ("Transforms", "DigestMethod", "DigestValue"), "ds:Reference")
    transforms = _children(kids[0], 3)
    for t in transforms:
        if t.tag != _T["Transform"]:
            raise _profile(f"{_short(t.tag)} is not allowed in ds:Transforms")
        alg = t.get("Algorithm")
        if alg not in (ENVELOPED, EXC_C14N):
            raise SignatureInvalid(
                f"transform {name_of(alg)} is not allowed; only enveloped-signature then exc-c14n",
                code="SIG_TRANSFORM",
            )
        if len(t):
            raise SignatureInvalid(
                f"parameters of the {name_of(alg)} transform ({_short(t[0].tag)}) are not allowed",
                code="SIG_TRANSFORM",
            )
    if [t.get("Algorithm") for t in transforms] != [ENVELOPED, EXC_C14N]:
        got = ", ".join(name_of(t.get("Algorithm")) for t in transforms) or "none"
        raise SignatureInvalid(
            f"the transforms must be exactly enveloped-signature then exc-c14n; got {got}", code="SIG_TRANSFORM"
        )
    return digest_method, digest_value


def _check_key_info(key_info: etree._Element) -> tuple[str, ...]:
    kids = _children(key_info, 2)
    for el in kids:
        if el.tag == _T["KeyValue"]:
            raise _profile(
                "ds:KeyValue is not allowed in ds:KeyInfo: the key is taken from the certificate in ds:X509Data only"
            )
        if el.tag != _T["X509Data"]:
            raise _profile(f"{_short(el.tag)} is not allowed in ds:KeyInfo; only one ds:X509Data")
    if len(kids) != 1:
        raise _profile("ds:KeyInfo must carry the signer's certificate in ds:X509Data/ds:X509Certificate")
    certs = []
    for el in _children(kids[0], _MAX_CERTS + 1):
        if el.tag != _T["X509Certificate"]:
            raise _profile(f"{_short(el.tag)} is not allowed in ds:X509Data; only ds:X509Certificate")
        text = el.text or ""
        if len(el) or not text.strip() or len(text) > _MAX_CERT_B64:
            raise _profile(
                f"ds:X509Certificate is empty, not plain base64 text, or longer than {_MAX_CERT_B64} characters"
            )
        certs.append(text)
    if not 1 <= len(certs) <= _MAX_CERTS:
        many = f"more than {_MAX_CERTS}" if len(certs) > _MAX_CERTS else str(len(certs))
        raise _profile(f"ds:X509Data holds {many} certificates; 1 to {_MAX_CERTS} are allowed")
    return tuple(certs)
