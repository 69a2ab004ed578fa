"""The reference verifier: the same profile, path, key-policy and revocation checks as ``Verifier``, with signxml
doing the cryptography as XML-SECURITY.md §5.8 describes it (``location="./"``, one reference, explicit
allow-lists of methods and digests, the validated leaf pinned as ``x509_cert`` so certifi is never consulted),
and ``signed_xml`` as the result.

It is slower (signxml re-serialises and re-parses the document per reference) and exists so that differential
tests, ``hub verify --engine signxml`` and ``bench/trust.py`` can show that the narrow verifier agrees with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, SignXMLException
from signxml.exceptions import InvalidSignature as SignxmlInvalidSignature

from hub.errors import CertificateUntrusted, SignatureInvalid
from hub.trust.profile import SignatureParts
from hub.trust.signature import Verifier, _TrustedLeaf

__all__ = ["SignxmlVerifier"]

_METHODS = frozenset({SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384, SignatureMethod.RSA_SHA256})
_DIGESTS = frozenset({DigestAlgorithm.SHA256})


class SignxmlVerifier(Verifier):
    """``Verifier`` with signxml 5.2 for step 5 (signature value and digest)."""

    def _check_signature(
        self, root: etree._Element, parts: SignatureParts, leaf: _TrustedLeaf
    ) -> tuple[etree._Element, str, bytes]:
        config = SignatureConfiguration(
            require_x509=True,
            location="./",
            expect_references=1,
            signature_methods=_METHODS,
            digest_algorithms=_DIGESTS,
            ignore_ambiguous_key_info=False,
            verification_time=self._now().astimezone(dt.UTC),
        )
        try:
            result = XMLVerifier().verify(root, x509_cert=leaf.certificate, expect_config=config)
        except InvalidDigest:
            raise SignatureInvalid("signxml: the envelope's digest does not match", code="SIG_DIGEST") from None
        except InvalidCertificate as exc:
            raise CertificateUntrusted(f"signxml: {str(exc)[:200]}", code="CERT_EXPIRED") from None
        except SignxmlInvalidSignature as exc:
            raise SignatureInvalid(f"signxml: {str(exc)[:200]}", code="SIG_VALUE") from None
        except InvalidInput as exc:
            raise SignatureInvalid(f"signxml: {str(exc)[:200]}", code="SIG_PROFILE") from None
        except (SignXMLException, etree.LxmlError, TypeError, ValueError) as exc:
            # signxml raises TypeError for a base64 transform and DocumentInvalid for schema errors (§9).
            raise SignatureInvalid(f"signxml: {type(exc).__name__}", code="SIG_PROFILE") from None
        assert not isinstance(result, list)
        if result.signed_xml is None:
            raise SignatureInvalid("signxml: the signed data is not XML", code="SIG_PROFILE")
        return result.signed_xml, hashlib.sha256(result.signed_data).hexdigest(), result.signed_data
