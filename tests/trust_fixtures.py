"""A throwaway hub PKI for tests, generated per session (EC keys: a few milliseconds), never committed.

``make_pki(dir)`` builds a real PKI directory with ``hub.trust.pki.init_ca`` and adds what the §7 tests need:
agency certificates of every allowed algorithm, deviant leaves (expired, not yet valid, no digitalSignature,
wrong EKU, P-192, RSA-2048, CA-flagged), a foreign CA with the same subject DNs, a second issuing CA that the
root CRL revokes, and a revoked leaf. Test modules import the fixtures they use::

    from trust_fixtures import TestPki, session_pki

    @pytest.fixture(scope="session")
    def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
        return session_pki(tmp_path_factory)
"""

from __future__ import annotations

import copy
import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree

from hub.envelope import parse, to_bytes
from hub.settings import PROJECT_ROOT
from hub.trust import Signer, TrustStore, Verifier, keys, pki
from hub.trust.signature import sign_with

PASSPHRASE = "test-passphrase"
AGENCY = "11220100013544550M"  # 长春市林业局 in the samples
SYSTEM = "city-220100-oa"
OTHER_AGENCY = "11220000013544357T"
OTHER_SYSTEM = "prov-220000-oa"
ENV = "urn:forestry-hub:envelope:1"
DS = "http://www.w3.org/2000/09/xmldsig#"

_SAMPLES = (
    PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml",
    PROJECT_ROOT / "schemas/services/document.receipt/1/samples/valid/handled.xml",
)
SAMPLE = next(p for p in _SAMPLES if p.exists())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Agent:
    """One signing identity: key, certificate, chain, a Signer and the files xmlsec1 needs."""

    key: keys.PrivateKey
    cert: x509.Certificate
    chain: list[x509.Certificate]
    key_path: Path
    cert_path: Path

    @property
    def signer(self) -> Signer:
        return Signer(self.key, self.chain)  # type: ignore[arg-type]

    @property
    def serial(self) -> int:
        return self.cert.serial_number


@dataclass
class TestPki:
    dir: Path
    root: x509.Certificate
    root_key: keys.PrivateKey
    issuing: x509.Certificate
    issuing_key: keys.PrivateKey
    agents: dict[str, Agent] = field(default_factory=dict)
    revoked: list[pki.RevokedEntry] = field(default_factory=list)
    root_revoked: list[pki.RevokedEntry] = field(default_factory=list)

    __test__ = False  # not a test class

    @property
    def paths(self) -> pki.PkiPaths:
        return pki.PkiPaths(self.dir)

    def store(self) -> TrustStore:
        return TrustStore.load(self.dir)

    def verifier(self, **kw: object) -> Verifier:
        return Verifier(self.store(), **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ certificates

    def leaf(
        self,
        key: object,
        *,
        agency: str = AGENCY,
        system: str = SYSTEM,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key_usage: x509.KeyUsage | bool | None = True,
        eku: list[x509.ObjectIdentifier] | None = (pki.DOCUMENT_SIGNING,),  # type: ignore[assignment]
        ca: bool = False,
        issuer: x509.Certificate | None = None,
        issuer_key: keys.PrivateKey | None = None,
    ) -> x509.Certificate:
        """A leaf made directly with cryptography, bypassing the CA's issuing policy (for deviant certs)."""
        issuer = issuer or self.issuing
        issuer_key = issuer_key or self.issuing_key
        t = now()
        b = (
            x509.CertificateBuilder()
            .subject_name(pki.subject_for(agency, system))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())  # type: ignore[attr-defined]
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or t - dt.timedelta(days=1))
            .not_valid_after(not_after or t + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)  # type: ignore[attr-defined]
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
                ),
                critical=False,
            )
        )
        if key_usage is True:
            key_usage = _ku(digital_signature=True)
        if isinstance(key_usage, x509.KeyUsage):
            b = b.add_extension(key_usage, critical=True)
        if eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        return b.sign(issuer_key, hashes.SHA384())  # type: ignore[arg-type]

    def add_agent(self, name: str, key: object, cert: x509.Certificate, chain_ca: list[x509.Certificate]) -> Agent:
        d = self.dir.parent / f"{self.dir.name}-agents"
        d.mkdir(exist_ok=True)
        key_path, cert_path = d / f"{name}.key", d / f"{name}.pem"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )  # type: ignore[attr-defined]
        )
        cert_path.write_bytes(pki.certificate_pem(cert, *chain_ca))
        agent = Agent(key, cert, [cert, *chain_ca], key_path, cert_path)  # type: ignore[arg-type]
        self.agents[name] = agent
        return agent

    def publish(self) -> None:
        """Rewrite both CRLs from ``revoked`` / ``root_revoked`` (fresh, 24 h)."""
        pki.publish_crl(
            self.paths.issuing_crl, self.issuing, self.issuing_key, self.revoked, number=len(self.revoked) + 2
        )
        pki.publish_crl(
            self.paths.root_crl, self.root, self.root_key, self.root_revoked, number=len(self.root_revoked) + 2
        )

    def copy_to(self, target: Path) -> Path:
        """A copy of the PKI directory (for tests that damage CRLs)."""
        shutil.copytree(self.dir, target)
        return target

    # ------------------------------------------------------------------ envelopes

    def envelope(self, agency: str = AGENCY, system: str = SYSTEM) -> etree._Element:
        """An unsigned, schema-valid envelope (the ~2 KB document.official sample) sent by agency/system."""
        root = parse(SAMPLE.read_bytes())
        sender = root.find(f"{{{ENV}}}Header/{{{ENV}}}Sender")
        assert sender is not None
        sender.set("agency", agency)
        sender.set("system", system)
        return root

    def signed(self, agent: str = "p256", root: etree._Element | None = None) -> bytes:
        a = self.agents[agent]
        agency, system = pki.agency_and_system(a.cert.subject)
        tree = root if root is not None else self.envelope(agency, system)
        try:
            keys.check_key_policy(a.key)
        except Exception:  # a deviant key the Signer refuses: sign without the policy
            return to_bytes(sign_with(tree, a.key, a.chain))
        return to_bytes(a.signer.sign(tree))


def _ku(*, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


_RSA_CACHE: dict[int, rsa.RSAPrivateKey] = {}


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """RSA keys are slow to make; one per size per session."""
    if bits not in _RSA_CACHE:
        _RSA_CACHE[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _RSA_CACHE[bits]


def make_pki(base: Path) -> TestPki:
    created = pki.init_ca(base / "pki", PASSPHRASE)
    root_cert, root_key = pki.load_ca(created.paths.root, PASSPHRASE, which="root")
    issuing, issuing_key = pki.load_ca(created.paths.root, PASSPHRASE)
    t = TestPki(created.paths.root, root_cert, root_key, issuing, issuing_key)
    ca = (issuing, issuing_key)

    # Properly issued agents, one per algorithm, through the CA's own CSR path.
    for name, alg, system in (
        ("p256", "ec-p256", SYSTEM),
        ("p384", "ec-p384", "city-220100-gis"),
        ("rsa3072", "rsa-3072", "city-220100-archive"),
    ):
        k = rsa_key(3072) if alg == "rsa-3072" else keys.generate_private_key(alg)
        issued = pki.issue_from_csr(t.dir, PASSPHRASE, pki.make_csr(k, AGENCY, system), ca=ca)
        t.add_agent(name, k, issued.certificate, [issuing])
    k = keys.generate_private_key()
    issued = pki.issue_from_csr(t.dir, PASSPHRASE, pki.make_csr(k, OTHER_AGENCY, OTHER_SYSTEM), ca=ca)
    t.add_agent("other", k, issued.certificate, [issuing])

    # Deviant leaves under the real issuing CA.
    def ec_leaf(name: str, curve: ec.EllipticCurve = ec.SECP256R1(), **kw: object) -> None:
        key = ec.generate_private_key(curve)
        t.add_agent(name, key, t.leaf(key, **kw), [issuing])  # type: ignore[arg-type]

    ec_leaf("expired", not_before=now() - dt.timedelta(days=60), not_after=now() - dt.timedelta(days=1))
    ec_leaf("not_yet_valid", not_before=now() + dt.timedelta(days=2), not_after=now() + dt.timedelta(days=60))
    ec_leaf("no_digital_signature", key_usage=_ku(digital_signature=False))
    ec_leaf("no_key_usage", key_usage=None)
    ec_leaf("wrong_eku", eku=[x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    ec_leaf("no_eku", eku=None)
    ec_leaf("p192", curve=ec.SECP192R1())
    ec_leaf("p521", curve=ec.SECP521R1())
    k2048 = rsa_key(2048)
    t.add_agent("rsa2048", k2048, t.leaf(k2048), [issuing])
    ec_leaf("revoked")

    # A foreign CA whose names are copies of the hub's; its leaf names the real agency and system.
    foreign = pki.init_ca(base / "foreign", "foreign-pass")
    f_cert, f_key = pki.load_ca(foreign.paths.root, "foreign-pass")
    fk = keys.generate_private_key()
    fleaf = t.leaf(fk, issuer=f_cert, issuer_key=f_key)
    t.add_agent("foreign", fk, fleaf, [f_cert])
    t.add_agent("foreign_leaf_only", fk, fleaf, [])

    # A second issuing CA under the hub root, revoked in the root CRL, with a leaf.
    ca2_key = keys.generate_private_key("ec-p384")
    ca2 = pki._ca_certificate(
        pki._ca_name("Forestry Exchange Hub Issuing CA 2"),
        ca2_key.public_key(),
        root_cert,
        root_key,
        days=365,
        path_length=0,
        now=now(),
    )
    k = keys.generate_private_key()
    t.add_agent("under_revoked_ca", k, t.leaf(k, issuer=ca2, issuer_key=ca2_key), [ca2])

    t.revoked.append(pki.RevokedEntry(t.agents["revoked"].serial, "key-compromise", now() - dt.timedelta(hours=1)))
    t.root_revoked.append(pki.RevokedEntry(ca2.serial_number, "ca-compromise", now() - dt.timedelta(hours=1)))
    t.publish()
    return t


_SESSION: dict[str, TestPki] = {}


def session_pki(factory: pytest.TempPathFactory) -> TestPki:
    """The one test PKI of this session (each test module declares a ``tpki`` fixture that returns it)."""
    if "pki" not in _SESSION:
        _SESSION["pki"] = make_pki(factory.mktemp("trust"))
    return _SESSION["pki"]


# ------------------------------------------------------------------ xmlsec1

XMLSEC1 = shutil.which("xmlsec1")


def xmlsec1_verify(t: TestPki, data: bytes, tmp: Path) -> tuple[bool, str]:
    """``xmlsec1 --verify`` trusting only the hub root (and the issuing CA as untrusted intermediate)."""
    return xmlsec1_verify_with(t.paths, data, tmp)


def xmlsec1_verify_with(paths: pki.PkiPaths, data: bytes, tmp: Path) -> tuple[bool, str]:
    """``xmlsec1 --verify`` trusting only the root of ``paths`` (its issuing CA offered as untrusted)."""
    assert XMLSEC1, "xmlsec1 is required (scripts/ensure-services.sh installs it)"
    f = tmp / "xmlsec1-in.xml"
    f.write_bytes(data)
    r = subprocess.run(
        [
            XMLSEC1,
            "--verify",
            "--trusted-pem",
            str(paths.root_cert),
            "--untrusted-pem",
            str(paths.issuing_cert),
            "--enabled-reference-uris",
            "empty",
            str(f),
        ],
        capture_output=True,
        timeout=30,
    )
    return r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")[-600:]


SIGN_TEMPLATE = (
    '<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo>'
    '<CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
    '<SignatureMethod Algorithm="{method}"/><Reference URI=""><Transforms>'
    '<Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
    '<Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></Transforms>'
    '<DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/></Reference></SignedInfo>'
    "<SignatureValue/><KeyInfo><X509Data/></KeyInfo></Signature>"
)


def xmlsec1_sign(agent: Agent, root: etree._Element, tmp: Path, method: str) -> bytes:
    """Sign an envelope with ``xmlsec1 --sign`` (a template in the hub profile, the key and its chain)."""
    assert XMLSEC1, "xmlsec1 is required"
    tree = copy.deepcopy(root)
    template = etree.fromstring(SIGN_TEMPLATE.format(method=method))
    template.tail = "\n"  # as in a pretty-printed document: the tail stays signed content after the transform
    tree.append(template)
    src, out = tmp / "xmlsec1-template.xml", tmp / "xmlsec1-signed.xml"
    src.write_bytes(to_bytes(tree))
    # xmlsec1 reads one certificate from each file: the signer's, then its issuing CA's (the hub's intake asks for
    # the issuing CA in ds:X509Data — recipients hold only the root — as hub/trust/USAGE.md says).
    pems = agent.cert_path.read_bytes().split(b"-----END CERTIFICATE-----")
    chain = []
    for i, pem in enumerate(p for p in pems if b"-----BEGIN CERTIFICATE-----" in p):
        part = tmp / f"xmlsec1-chain-{i}.pem"
        part.write_bytes(pem.strip() + b"\n-----END CERTIFICATE-----\n")
        chain.append(str(part))
    r = subprocess.run(
        [
            XMLSEC1,
            "--sign",
            "--privkey-pem",
            ",".join([str(agent.key_path), *chain]),
            "--enabled-reference-uris",
            "empty",
            "--output",
            str(out),
            str(src),
        ],
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return out.read_bytes()


def resign(data: bytes, agent: Agent, mutate) -> bytes:  # type: ignore[no-untyped-def]
    """Parse a signed message, let ``mutate`` change its signature, and sign SignedInfo again with ``agent``'s key
    (for profile vectors that must carry a *valid* signature value, proving the rejection is the profile's)."""
    root = etree.fromstring(data)
    sig = root.find(f"{{{DS}}}Signature")
    assert sig is not None
    mutate(root, sig)
    si = sig.find(f"{{{DS}}}SignedInfo")
    c14n = etree.tostring(si, method="c14n", exclusive=True)
    if isinstance(agent.key, ec.EllipticCurvePrivateKey):
        value = keys.der_to_raw(agent.key.sign(c14n, ec.ECDSA(hashes.SHA256())), agent.key)
    else:
        from cryptography.hazmat.primitives.asymmetric import padding

        value = agent.key.sign(c14n, padding.PKCS1v15(), hashes.SHA256())
    import base64

    sig.find(f"{{{DS}}}SignatureValue").text = base64.b64encode(value).decode()  # type: ignore[union-attr]
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


__all__ = [
    "AGENCY",
    "DS",
    "ENV",
    "OTHER_AGENCY",
    "OTHER_SYSTEM",
    "PASSPHRASE",
    "SYSTEM",
    "XMLSEC1",
    "Agent",
    "TestPki",
    "make_pki",
    "resign",
    "session_pki",
    "sign_with",
    "xmlsec1_sign",
    "xmlsec1_verify",
]


# ================================================================================================ test vectors
#
# Each vector is a complete message (bytes) with the hub's expected verdict. ``code`` is what the hub's verifiers
# (narrow and signxml-reference) say when the bytes are parsed faithfully (comments and PIs kept); ``intake_code``
# is what they say after hub.envelope.parse (which drops comments and PIs before anything reads the tree).
# ``xmlsec1`` and ``raw_signxml`` record what those implementations say on their own (xmlsec1 --verify trusting
# the hub root; signxml configured per XML-SECURITY §2.1 but without the hub's profile layer). For vectors marked
# ``crypto`` the cryptographic verdict is the whole story and all four must agree; the others show where the
# hub's profile refuses what a general-purpose implementation accepts (XML-SECURITY §9).

import base64 as _b64  # noqa: E402
import hashlib as _hashlib  # noqa: E402
import hmac as _hmac  # noqa: E402

from cryptography.hazmat.primitives.asymmetric import padding as _padding  # noqa: E402

XSLT = "http://www.w3.org/TR/1999/REC-xslt-19991116"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"
XPATH2 = "http://www.w3.org/2002/06/xmldsig-filter2"
BASE64 = "http://www.w3.org/2000/09/xmldsig#base64"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
HMAC_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
DSA_SHA256 = "http://www.w3.org/2009/xmldsig11#dsa-sha256"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
EXC_C14N_WC = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"
C14N_10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
DSIG11 = "http://www.w3.org/2009/xmldsig11#"


@dataclass
class Vector:
    name: str
    data: bytes
    code: str | None  # None = accepted
    intake_code: str | None = "same"
    crypto: bool = False
    xmlsec1: bool | None = None
    raw_signxml: bool | None = None
    #: the full text an element must have in the verified tree (comment-injection vectors)
    expect_text: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.intake_code == "same":
            self.intake_code = self.code


def faithful_parse(data: bytes) -> etree._Element:
    """Parse keeping comments and PIs (what the bytes say), still without DTDs, entities or network."""
    p = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        remove_comments=False,
        remove_pis=False,
        huge_tree=False,
    )
    return etree.fromstring(data, p)


def _ds(name: str) -> str:
    return f"{{{DS}}}{name}"


def _env(name: str) -> str:
    return f"{{{ENV}}}{name}"


def _bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _c14n(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n", exclusive=True, with_comments=False)


def _sign_info(root: etree._Element, agent: Agent, hash_alg: hashes.HashAlgorithm | None = None) -> None:
    """(Re)compute SignatureValue over the current SignedInfo with the agent's key."""
    sig = root.find(_ds("Signature"))
    assert sig is not None
    si = sig.find(_ds("SignedInfo"))
    alg = si.find(_ds("CanonicalizationMethod")).get("Algorithm") or ""  # type: ignore[union-attr]
    # canonicalise as the (possibly deviant) CanonicalizationMethod says, so the signature value is genuine
    data = etree.tostring(
        si, method="c14n", exclusive=alg.startswith(EXC_C14N), with_comments=alg.endswith("#WithComments")
    )
    h = hash_alg or hashes.SHA256()
    if isinstance(agent.key, ec.EllipticCurvePrivateKey):
        value = keys.der_to_raw(agent.key.sign(data, ec.ECDSA(h)), agent.key)
    else:
        value = agent.key.sign(data, _padding.PKCS1v15(), h)
    sig.find(_ds("SignatureValue")).text = _b64.b64encode(value).decode()  # type: ignore[union-attr]


def _redigest(root: etree._Element, hash_name: str = "sha256") -> None:
    """Recompute DigestValue of the whole envelope (without its Signature)."""
    sig = root.find(_ds("Signature"))
    assert sig is not None
    idx = root.index(sig)
    root.remove(sig)
    digest = _hashlib.new(hash_name, _c14n(root)).digest()
    root.insert(idx, sig)
    sig.find(f"{_ds('SignedInfo')}/{_ds('Reference')}/{_ds('DigestValue')}").text = _b64.b64encode(digest).decode()  # type: ignore[union-attr]


def _transforms(root: etree._Element) -> etree._Element:
    t = root.find(f"{_ds('Signature')}/{_ds('SignedInfo')}/{_ds('Reference')}/{_ds('Transforms')}")
    assert t is not None
    return t


def xslt_marker(tmp: Path) -> Path:
    return tmp / "xslt-was-executed.txt"


def vectors(t: TestPki, tmp: Path) -> list[Vector]:
    a = t.agents["p256"]
    base = t.signed("p256")
    out: list[Vector] = []

    def tree() -> etree._Element:
        return faithful_parse(base)

    def add(name: str, root_or_bytes: etree._Element | bytes, code: str | None, **kw: object) -> None:
        data = root_or_bytes if isinstance(root_or_bytes, bytes) else _bytes(root_or_bytes)
        out.append(Vector(name, data, code, **kw))  # type: ignore[arg-type]

    # ---------------------------------------------------------------- positive controls
    add("valid-ecdsa-p256", base, None, crypto=True, xmlsec1=True, raw_signxml=True)
    add("valid-ecdsa-p384", t.signed("p384"), None, crypto=True, xmlsec1=True, raw_signxml=True)
    add("valid-rsa-3072", t.signed("rsa3072"), None, crypto=True, xmlsec1=True, raw_signxml=True)
    if XMLSEC1:
        add(
            "valid-signed-by-xmlsec1",
            xmlsec1_sign(a, t.envelope(), tmp, ECDSA_SHA256),
            None,
            crypto=True,
            xmlsec1=True,
            raw_signxml=True,
        )

    # ---------------------------------------------------------------- §7.10 tampering
    r = tree()
    title = next(
        el
        for el in r.iter()
        if isinstance(el.tag, str)
        and el.text
        and el.text.strip()
        and len(el) == 0
        and el.tag.startswith("{urn:forestry-hub:document")
    )
    title.text = title.text + "（已改）"  # type: ignore[operator]
    add("tamper-text", r, "SIG_DIGEST", crypto=True, xmlsec1=False, raw_signxml=False)
    r = tree()
    r.find(f"{_env('Header')}/{_env('Classification')}").text = "内部"  # type: ignore[union-attr]
    add("tamper-classification", r, "SIG_DIGEST", crypto=True, xmlsec1=False, raw_signxml=False)
    r = tree()
    r.find(f"{_env('Header')}/{_env('Sender')}").set("system", "city-220100-gis")  # type: ignore[union-attr]
    add("tamper-attribute", r, "SIG_DIGEST", crypto=True, xmlsec1=False, raw_signxml=False)
    r = tree()
    rs = r.find(f"{_env('Header')}/{_env('Recipients')}")
    assert rs is not None and len(rs) >= 2
    first = rs[0]
    rs.remove(first)
    rs.append(first)
    add("tamper-order", r, "SIG_DIGEST", crypto=True, xmlsec1=False, raw_signxml=False)
    r = tree()
    etree.SubElement(
        r.find(f"{_env('Header')}/{_env('Recipients')}"),
        _env("Agency"),
        role="cc",  # type: ignore[arg-type]
        code=OTHER_AGENCY,
    )
    add("tamper-added-element", r, "SIG_DIGEST", crypto=True, xmlsec1=False, raw_signxml=False)
    r = tree()
    r.find(_env("Body"))[0].append(etree.ProcessingInstruction("route", "external"))  # type: ignore[index]
    # hub.envelope.parse drops the PI before the verifier sees the tree: the hub acts on the signed content only.
    add("tamper-added-pi", r, "SIG_DIGEST", intake_code="intake ENV_PI", crypto=True, xmlsec1=False, raw_signxml=False)
    r = tree()
    r.find(_ds("Signature")).tail = "\n"  # type: ignore[union-attr]
    add("tamper-whitespace-after-signature", r, "SIG_DIGEST", crypto=True, xmlsec1=False, raw_signxml=False)
    r = tree()
    r.find(_ds("Signature")).find(_ds("SignatureValue")).text = _b64.b64encode(b"\x01" * 64).decode()  # type: ignore[union-attr]
    add("tamper-signature-value", r, "SIG_VALUE", crypto=True, xmlsec1=False, raw_signxml=False)
    r = tree()
    dv = r.find(f"{_ds('Signature')}/{_ds('SignedInfo')}/{_ds('Reference')}/{_ds('DigestValue')}")
    dv.text = _b64.b64encode(b"\x00" * 32).decode()  # type: ignore[union-attr]
    add("tamper-digest-value", r, "SIG_VALUE", crypto=True, xmlsec1=False, raw_signxml=False)

    # ---------------------------------------------------------------- §7.11 comment injection
    for where in ("leading", "middle"):
        r = tree()
        cls_el = r.find(f"{_env('Header')}/{_env('Classification')}")
        assert cls_el is not None
        full = cls_el.text or ""
        if where == "leading":
            cls_el.text = ""
            cls_el.insert(0, etree.Comment("x"))
            cls_el[0].tail = full
        else:
            cls_el.text = full[:1]
            cls_el.insert(0, etree.Comment(""))
            cls_el[0].tail = full[1:]
        add(
            f"comment-{where}-in-classification",
            r,
            None,
            crypto=True,
            xmlsec1=True,
            raw_signxml=True,
            expect_text=(_env("Classification"), full),
        )

    # ---------------------------------------------------------------- §7.12 wrapping (XSW 1-8 adapted to URI="")
    def evil_copy() -> etree._Element:
        e = faithful_parse(base)
        e.remove(e.find(_ds("Signature")))  # type: ignore[arg-type]
        e.find(f"{_env('Header')}/{_env('Classification')}").text = "公开"  # type: ignore[union-attr]
        e.find(f"{_env('Header')}/{_env('Recipients')}")[0].set("role", "cc")  # type: ignore[index]
        return e

    # XSW1: evil envelope; the original signed envelope smuggled inside the (moved) Signature's ds:Object.
    r = evil_copy()
    orig = tree()
    sig = orig.find(_ds("Signature"))
    orig.remove(sig)  # type: ignore[arg-type]
    obj = etree.SubElement(sig, _ds("Object"))  # type: ignore[arg-type]
    obj.append(orig)
    r.append(sig)  # type: ignore[arg-type]
    add("xsw1-original-in-object", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    # XSW2: evil envelope, original (unsigned part) as a sibling before the moved Signature.
    r = evil_copy()
    orig = tree()
    sig = orig.find(_ds("Signature"))
    orig.remove(sig)  # type: ignore[arg-type]
    r.append(orig)
    r.append(sig)  # type: ignore[arg-type]
    add("xsw2-original-as-sibling", r, "SIG_DIGEST", crypto=True, xmlsec1=False, raw_signxml=False)
    # XSW3: evil envelope; the whole signed original (with its signature) inserted as its first child.
    r = evil_copy()
    r.insert(0, tree())
    add("xsw3-signed-original-first-child", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    # XSW4: evil envelope wrapping the signed original in its Body.
    r = evil_copy()
    r.find(_env("Body")).append(tree())  # type: ignore[union-attr]
    add("xsw4-signed-original-in-body", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    # XSW5: evil fields with the original's Signature, plus a copy of the original inside a ds:Object.
    r = evil_copy()
    orig = tree()
    sig = orig.find(_ds("Signature"))
    orig.remove(sig)  # type: ignore[arg-type]
    r.append(sig)  # type: ignore[arg-type]
    etree.SubElement(sig, _ds("Object")).append(orig)  # type: ignore[arg-type]
    add("xsw5-copy-in-object", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    # XSW6: the signed original inside a ds:Object of the Signature, which is the evil root's last child.
    r = evil_copy()
    orig = tree()
    sig = copy.deepcopy(orig.find(_ds("Signature")))
    r.append(sig)
    etree.SubElement(sig, _ds("Object")).append(orig)
    add("xsw6-signed-original-in-object", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    # XSW7: the original placed in an extra (unknown) element of the evil envelope.
    r = evil_copy()
    orig = tree()
    sig = orig.find(_ds("Signature"))
    orig.remove(sig)  # type: ignore[arg-type]
    etree.SubElement(r, "{urn:attacker}Extensions").append(orig)
    r.append(sig)  # type: ignore[arg-type]
    add("xsw7-original-in-extension", r, "SIG_DIGEST", crypto=True, xmlsec1=False, raw_signxml=False)
    # XSW8: like XSW6 with the original re-declaring its namespaces inside ds:Object.
    r = evil_copy()
    orig = faithful_parse(
        base.replace(b"<env:Envelope ", b'<env:Envelope xmlns:ds="http://www.w3.org/2000/09/xmldsig#" ')
    )
    sig = orig.find(_ds("Signature"))
    orig.remove(sig)  # type: ignore[arg-type]
    r.append(sig)  # type: ignore[arg-type]
    etree.SubElement(sig, _ds("Object")).append(orig)  # type: ignore[arg-type]
    add("xsw8-redeclared-original-in-object", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    # Signature relocation: into the Header; first child of the root.
    r = tree()
    sig = r.find(_ds("Signature"))
    r.find(_env("Header")).append(sig)  # type: ignore[union-attr,arg-type]
    add("relocated-signature-in-header", r, "SIG_PROFILE", xmlsec1=True, raw_signxml=False)
    r = tree()
    r.insert(0, r.find(_ds("Signature")))  # type: ignore[arg-type]
    add("relocated-signature-first-child", r, "SIG_PROFILE", xmlsec1=True, raw_signxml=True)
    # ds:Object smuggling next to a valid signature.
    r = tree()
    smug = etree.SubElement(r.find(_ds("Signature")), _ds("Object"))  # type: ignore[arg-type]
    etree.SubElement(smug, _env("Classification")).text = "绝密"
    add("object-smuggling", r, "SIG_PROFILE", xmlsec1=True, raw_signxml=True)
    r = tree()
    r.append(copy.deepcopy(r.find(_ds("Signature"))))
    add("two-signatures", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    r = tree()
    si = r.find(f"{_ds('Signature')}/{_ds('SignedInfo')}")
    si.append(copy.deepcopy(si.find(_ds("Reference"))))  # type: ignore[union-attr,arg-type]
    _sign_info(r, a)
    add("two-references", r, "SIG_PROFILE", xmlsec1=True, raw_signxml=False)
    r = tree()
    sig = r.find(_ds("Signature"))
    sig.insert(1, copy.deepcopy(sig.find(_ds("SignedInfo"))))  # type: ignore[union-attr,arg-type]
    add("two-signedinfos", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    r = tree()
    r.append(etree.Element("{urn:attacker}Signature"))
    add("foreign-element-named-signature", r, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    r = tree()
    r.remove(r.find(_ds("Signature")))  # type: ignore[arg-type]
    add("unsigned", r, "SIG_MISSING", crypto=True, xmlsec1=False, raw_signxml=False)

    # ---------------------------------------------------------------- §7.13 algorithms
    r3 = t.agents["rsa3072"]
    rsa_base = t.signed("rsa3072")

    def alg(name: str, start: bytes, mutate, agent: Agent, code: str, *, hash_alg=None, **kw: object) -> None:  # type: ignore[no-untyped-def]
        root = faithful_parse(start)
        mutate(root)
        if agent is not None:
            _sign_info(root, agent, hash_alg)
        add(name, root, code, **kw)

    def set_method(uri: str):  # type: ignore[no-untyped-def]
        def m(root: etree._Element) -> None:
            root.find(f"{_ds('Signature')}/{_ds('SignedInfo')}/{_ds('SignatureMethod')}").set("Algorithm", uri)  # type: ignore[union-attr]

        return m

    alg(
        "alg-rsa-sha1",
        rsa_base,
        set_method(RSA_SHA1),
        r3,
        "SIG_ALGORITHM",
        hash_alg=hashes.SHA1(),
        xmlsec1=True,
        raw_signxml=False,
    )

    def sha1_digest(root: etree._Element) -> None:
        root.find(f"{_ds('Signature')}/{_ds('SignedInfo')}/{_ds('Reference')}/{_ds('DigestMethod')}").set(
            "Algorithm", SHA1
        )  # type: ignore[union-attr]
        _redigest(root, "sha1")

    alg("alg-sha1-digest", base, sha1_digest, a, "SIG_ALGORITHM", xmlsec1=True, raw_signxml=False)
    for with_len in (False, True):
        root = tree()
        sm = root.find(f"{_ds('Signature')}/{_ds('SignedInfo')}/{_ds('SignatureMethod')}")
        sm.set("Algorithm", HMAC_SHA256)  # type: ignore[union-attr]
        if with_len:
            etree.SubElement(sm, _ds("HMACOutputLength")).text = "0"  # type: ignore[arg-type]
        si = root.find(f"{_ds('Signature')}/{_ds('SignedInfo')}")
        mac = _hmac.new(b"guessable", _c14n(si), "sha256").digest()[: 0 if with_len else 32]  # type: ignore[arg-type]
        root.find(f"{_ds('Signature')}/{_ds('SignatureValue')}").text = _b64.b64encode(mac).decode() or "AA=="  # type: ignore[union-attr]
        add(f"alg-hmac{'-outputlength-0' if with_len else ''}", root, "SIG_ALGORITHM", xmlsec1=False, raw_signxml=False)
    alg("alg-dsa-sha256", base, set_method(DSA_SHA256), None, "SIG_ALGORITHM", xmlsec1=False, raw_signxml=False)
    add("alg-ecdsa-p192-key", t.signed("p192"), "SIG_KEY_POLICY", xmlsec1=True, raw_signxml=True)
    add("alg-ecdsa-p521-key", t.signed("p521"), "SIG_KEY_POLICY", xmlsec1=True, raw_signxml=True)
    add("alg-rsa-2048-key", t.signed("rsa2048"), "SIG_KEY_POLICY", xmlsec1=True, raw_signxml=True)

    def c14n_method(uri: str):  # type: ignore[no-untyped-def]
        def m(root: etree._Element) -> None:
            root.find(f"{_ds('Signature')}/{_ds('SignedInfo')}/{_ds('CanonicalizationMethod')}").set("Algorithm", uri)  # type: ignore[union-attr]

        return m

    alg("alg-c14n-withcomments", base, c14n_method(EXC_C14N_WC), a, "SIG_ALGORITHM", xmlsec1=True, raw_signxml=True)
    alg("alg-c14n-inclusive", base, c14n_method(C14N_10), a, "SIG_ALGORITHM", xmlsec1=True, raw_signxml=True)

    def transform2(uri: str):  # type: ignore[no-untyped-def]
        def m(root: etree._Element) -> None:
            _transforms(root)[1].set("Algorithm", uri)

        return m

    alg(
        "transform-exc-c14n-withcomments",
        base,
        transform2(EXC_C14N_WC),
        a,
        "SIG_TRANSFORM",
        xmlsec1=True,
        raw_signxml=True,
    )

    # ---------------------------------------------------------------- §7.14 transforms and key information
    marker = xslt_marker(tmp)
    stylesheet = (
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
        'xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl">'
        f'<xsl:template match="/"><exsl:document href="{marker}" method="text"><xsl:text>pwned</xsl:text>'
        "</exsl:document><xsl:copy-of select='.'/></xsl:template></xsl:stylesheet>"
    )

    def add_transform(uri: str, child: str | None = None, replace_second: bool = False):  # type: ignore[no-untyped-def]
        def m(root: etree._Element) -> None:
            ts = _transforms(root)
            tr = etree.Element(_ds("Transform"), Algorithm=uri)
            if child is not None:
                tr.append(etree.fromstring(child))
            if replace_second:
                ts.remove(ts[1])
            ts.append(tr)

        return m

    # signxml skips transforms it does not implement (never runs them), so XSLT/XPath pass there (§9).
    alg(
        "transform-xslt-writing-a-file",
        base,
        add_transform(XSLT, stylesheet),
        a,
        "SIG_TRANSFORM",
        xmlsec1=False,
        raw_signxml=True,
    )
    alg(
        "transform-xpath",
        base,
        add_transform(XPATH, f'<XPath xmlns="{DS}">not(ancestor-or-self::*[local-name()="Classification"])</XPath>'),
        a,
        "SIG_TRANSFORM",
        xmlsec1=False,
        raw_signxml=True,
    )
    alg(
        "transform-xpath-filter2",
        base,
        add_transform(XPATH2, f'<XPath xmlns="{XPATH2}" Filter="subtract">//*[local-name()="Classification"]</XPath>'),
        a,
        "SIG_TRANSFORM",
        xmlsec1=False,
        raw_signxml=True,
    )
    alg("transform-base64", base, add_transform(BASE64), a, "SIG_TRANSFORM", xmlsec1=False, raw_signxml=False)

    def inclusive_ns(root: etree._Element) -> None:
        etree.SubElement(_transforms(root)[1], f"{{{EXC_C14N}}}InclusiveNamespaces", PrefixList="env")

    alg("transform-with-parameters", base, inclusive_ns, a, "SIG_TRANSFORM", xmlsec1=True, raw_signxml=True)

    def uri(value: str):  # type: ignore[no-untyped-def]
        def m(root: etree._Element) -> None:
            root.find(f"{_ds('Signature')}/{_ds('SignedInfo')}/{_ds('Reference')}").set("URI", value)  # type: ignore[union-attr]

        return m

    alg(
        "reference-external-uri",
        base,
        uri("http://127.0.0.1:9/envelope.xml"),
        a,
        "SIG_PROFILE",
        xmlsec1=False,
        raw_signxml=False,
    )
    alg("reference-xpointer", base, uri("#xpointer(/)"), a, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)
    alg("reference-id", base, uri("#envelope"), a, "SIG_PROFILE", xmlsec1=False, raw_signxml=False)

    def retrieval(root: etree._Element) -> None:
        ki = root.find(f"{_ds('Signature')}/{_ds('KeyInfo')}")
        etree.SubElement(
            ki,
            _ds("RetrievalMethod"),
            URI="http://127.0.0.1:9/key.der",  # type: ignore[arg-type]
            Type="http://www.w3.org/2000/09/xmldsig#rawX509Certificate",
        )

    alg("keyinfo-retrievalmethod", base, retrieval, None, "SIG_PROFILE", xmlsec1=True, raw_signxml=True)

    def key_value(agent: Agent):  # type: ignore[no-untyped-def]
        def m(root: etree._Element) -> None:
            ki = root.find(f"{_ds('Signature')}/{_ds('KeyInfo')}")
            pub = agent.key.public_key()  # type: ignore[union-attr]
            kv = etree.Element(_ds("KeyValue"))
            ec_kv = etree.SubElement(kv, f"{{{DSIG11}}}ECKeyValue")
            etree.SubElement(ec_kv, f"{{{DSIG11}}}NamedCurve", URI="urn:oid:1.2.840.10045.3.1.7")
            etree.SubElement(ec_kv, f"{{{DSIG11}}}PublicKey").text = _b64.b64encode(
                pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            ).decode()
            ki.insert(0, kv)  # type: ignore[union-attr]

        return m

    # A KeyValue is refused even when it matches (hub/trust/USAGE.md: the key comes from the certificate only).
    alg("keyinfo-keyvalue-matching", base, key_value(a), None, "SIG_PROFILE", xmlsec1=True, raw_signxml=True)
    alg(
        "keyinfo-keyvalue-mismatched",
        base,
        key_value(t.agents["other"]),
        None,
        "SIG_PROFILE",
        xmlsec1=True,
        raw_signxml=False,
    )

    def key_name(root: etree._Element) -> None:
        etree.SubElement(root.find(f"{_ds('Signature')}/{_ds('KeyInfo')}"), _ds("KeyName")).text = "hub"  # type: ignore[arg-type]

    alg("keyinfo-keyname", base, key_name, None, "SIG_PROFILE", xmlsec1=True, raw_signxml=True)
    return out
