"""Interoperability with Apache Santuario (Java), the signer docs/gateway.md tells Java systems to use: an envelope
signed by ``tests/interop/santuario/Sign.java`` — the profile of docs/gateway.md, item by item — verifies with the
hub's verifier for every algorithm the hub allows; a ds:KeyValue is refused; Santuario with secure validation
verifies what the hub signed. Needs a JDK (11+, single-file source launch) and Santuario's jars (Debian:
``libxml-security-java``; ``make services`` installs both)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from trust_fixtures import PASSPHRASE, TestPki, session_pki

from hub.envelope import parse, to_bytes
from hub.errors import SignatureInvalid
from hub.settings import PROJECT_ROOT
from hub.trust import Signer, keys
from hub.trust.pki import fingerprint

pytestmark = pytest.mark.integration

SOURCES = PROJECT_ROOT / "tests" / "interop" / "santuario"
JARS = [Path("/usr/share/java") / n for n in ("xmlsec.jar", "commons-codec.jar", "slf4j-api.jar", "slf4j-nop.jar")]
JAVA = shutil.which("java")
METHODS = {
    "p256": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "p384": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "rsa3072": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
}


@pytest.fixture(scope="module", autouse=True)
def santuario() -> None:
    """Java and Apache Santuario are part of the machine (scripts/ensure-services.sh installs them): never skipped."""
    missing = [str(j) for j in JARS[:3] if not j.exists()]
    assert JAVA is not None and not missing, (
        f"needs java and Apache Santuario's jars (missing: {missing or 'java'}); run `make services`"
    )


@pytest.fixture(scope="module")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return session_pki(tmp_path_factory)


def java(program: str, *args: str) -> str:
    assert JAVA is not None
    classpath = ":".join(str(j) for j in JARS if j.exists())
    done = subprocess.run(
        [JAVA, "-cp", classpath, str(SOURCES / program), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("agent", sorted(METHODS))
def test_an_envelope_signed_with_santuario_verifies_at_the_hub(tpki: TestPki, tmp_path: Path, agent: str) -> None:
    a = tpki.agents[agent]
    draft, signed = tmp_path / "draft.xml", tmp_path / "signed.xml"
    draft.write_bytes(to_bytes(tpki.envelope()))
    java("Sign.java", str(a.key_path), str(a.cert_path), str(draft), str(signed), METHODS[agent])
    verified = tpki.verifier().verify(parse(signed.read_bytes()))
    assert verified.signer.fingerprint == fingerprint(a.cert)


def test_a_key_value_from_santuario_is_refused(tpki: TestPki, tmp_path: Path) -> None:
    a = tpki.agents["p256"]
    draft, signed = tmp_path / "draft.xml", tmp_path / "signed.xml"
    draft.write_bytes(to_bytes(tpki.envelope()))
    java("Sign.java", str(a.key_path), str(a.cert_path), str(draft), str(signed), METHODS["p256"], "key-value")
    with pytest.raises(SignatureInvalid) as caught:
        tpki.verifier().verify(parse(signed.read_bytes()))
    assert caught.value.code == "SIG_PROFILE" and "KeyValue" in str(caught.value)


def test_santuario_with_secure_validation_verifies_the_hub(tpki: TestPki, tmp_path: Path) -> None:
    hub = Signer.load(tpki.paths.hub_key, tpki.paths.hub_cert, passphrase=PASSPHRASE.encode())
    signed = tmp_path / "hub-signed.xml"
    signed.write_bytes(to_bytes(hub.sign(tpki.envelope(hub.identity.agency, "hub"))))
    out = java("Verify.java", str(signed))
    assert out.startswith("true ") and "CN=hub" in out


def test_keys_module_is_the_one_the_profile_names() -> None:
    """The method URIs the Java test passes are the hub's (hub.trust.keys), so the doc and the test agree."""
    assert {keys.ECDSA_SHA256, keys.ECDSA_SHA384, keys.RSA_SHA256} == set(METHODS.values())
