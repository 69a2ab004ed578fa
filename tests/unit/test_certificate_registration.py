"""The directory's ``cert-sha256``: the certificates registered for a system, enforced by the examination (one
processor for the AMQP path and the gateway) — a message signed with another certificate of the system, valid and
issued by the hub CA, is refused ``CERT_NOT_REGISTERED`` and occupies no message id; listed, it passes. The loader
reads one to four fingerprints and refuses one registered for two systems. (The gateway's client certificate:
tests/unit/test_gateway_tls.py; the store's column: tests/integration/test_directory_store.py; over RabbitMQ:
tests/integration/test_pipeline.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from directory_edits import with_system

from hub.directory import Directory, check_directory, load_directory
from hub.errors import CODES
from hub.pipeline.processor import Accepted, Rejected
from hub.settings import PROJECT_ROOT
from hub.trust.pki import fingerprint
from tests.hostile import costly

DEMO = PROJECT_ROOT / "routes" / "directory.xml"
DEMO_TEXT = DEMO.read_text(encoding="utf-8")
A, B, C, D, E = ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64)
SIPING = '<System id="city-220300-oa" '
LIAOYUAN = '<System id="city-220400-oa" '


def _with(tmp_path: Path, *changes: tuple[str, str]) -> Path:
    text = DEMO_TEXT
    for tag, pins in changes:
        assert text.count(tag) == 1
        text = text.replace(tag, f'{tag}cert-sha256="{pins}" ')
    path = tmp_path / "directory.xml"
    path.write_text(text, encoding="utf-8")
    return path


def _codes(path: Path) -> set[str]:
    directory, problems = check_directory(path)
    assert directory is None
    return {p.code for p in problems}


def test_the_loader_reads_the_registered_certificates(tmp_path: Path) -> None:
    directory = load_directory(_with(tmp_path, (SIPING, f"{A} {B}")))
    siping = directory.system("city-220300-oa")
    assert siping.cert_sha256 == (A, B)
    assert siping.registers(A) and siping.registers(B) and not siping.registers(C)
    # a system without the attribute: any certificate the hub CA issued to it
    liaoyuan = directory.system("city-220400-oa")
    assert liaoyuan.cert_sha256 == () and liaoyuan.registers(C)
    # `hub directory list` shows them, shortened, on the system's line
    from hub.commands.directory import render

    lines = render(directory).splitlines()
    assert f"[登记证书 certificates {A[:12]}… {B[:12]}…]" in next(ln for ln in lines if "city-220300-oa" in ln)
    assert "登记证书" not in next(ln for ln in lines if "city-220400-oa" in ln)


def test_openssl_spelling_is_read_as_the_hub_writes_it(tmp_path: Path) -> None:
    """As ``openssl x509 -fingerprint -sha256`` prints it: upper case, bytes separated by colons."""
    spelled = ":".join(B[i : i + 2] for i in range(0, 64, 2)).upper()
    directory = load_directory(_with(tmp_path, (SIPING, f"{A.upper()} {spelled}")))
    assert directory.system("city-220300-oa").cert_sha256 == (A, B)


def test_the_hub_system_registers_no_certificates(tmp_path: Path) -> None:
    """The hub's own certificates are its CA's (hub pki rotate changes them): cert-sha256 on the hub system would
    refuse the process engine's own messages after a rotation."""
    hub_tag = '<System id="hub" '
    assert hub_tag in DEMO_TEXT
    assert "DIR_INCONSISTENT" in _codes(_with(tmp_path, (hub_tag, A)))


def test_a_fingerprint_registered_for_two_systems_is_refused(tmp_path: Path) -> None:
    assert "DIR_DUPLICATE" in _codes(_with(tmp_path, (SIPING, f"{A} {B}"), (LIAOYUAN, f"{C} {B}")))


@pytest.mark.parametrize("pins", [f"{A} {B} {C} {D} {E}", "", A[:63], A + ":", "AB:CD"])
def test_the_schema_bounds_the_list(tmp_path: Path, pins: str) -> None:
    """One to four SHA-256 fingerprints."""
    assert _codes(_with(tmp_path, (SIPING, pins))) == {"CONFIG_SCHEMA"}


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> costly.Kit:
    return costly.make_kit(tmp_path_factory.mktemp("registration"))


def _registering(directory: Directory, system: str, pins: tuple[str, ...]) -> Directory:
    return with_system(directory, system, cert_sha256=pins)


def test_the_examination_refuses_a_certificate_the_directory_does_not_register(kit: costly.Kit) -> None:
    processor = kit.processor
    sender = costly.SENDER[0]
    own = fingerprint(kit.signers[sender].certificates[0])
    listed = kit.directory
    try:
        processor.directory = _registering(listed, sender, (A, B))
        data = kit.typical()
        got = processor.examine(data)
        assert isinstance(got, Rejected) and got.error.code == "CERT_NOT_REGISTERED" and got.error.code in CODES
        assert f"system {sender}" in str(got.error) and own[:16] in str(got.error)
        # the signed error goes to the sender (the signature is the system's own), but the id stays free: the same
        # message signed with a registered certificate is a first copy
        assert got.reply_to is not None and got.reply_to.system == sender and not got.sender_confirmed
        # published by another system's user: that publisher is answered (CERT_SIGNER_MISMATCH), not the sender
        other = processor.examine(data, amqp_user="county-220182-oa")
        assert isinstance(other, Rejected) and other.error.code == "CERT_SIGNER_MISMATCH"
        assert other.reply_to is None or other.reply_to.system != sender
        processor.directory = _registering(listed, sender, (A, own))
        assert isinstance(processor.examine(data), Accepted)
    finally:
        processor.directory = listed
    assert isinstance(processor.examine(kit.typical()), Accepted)


def test_the_hint_keeps_at_most_four() -> None:
    """``hub pki issue``/``renew``/``hub adapter approve``: the attribute to write lists the new certificate; with
    four registered already the first makes room (the schema takes four)."""
    from hub.commands.trust_admin import registration_hint

    assert registration_hint("s", A, ()) is None and registration_hint("s", A, (B, A)) is None
    hint = registration_hint("s", E, (A, B))
    assert hint is not None and f'cert-sha256="{A} {B} {E}"' in hint and "CERT_NOT_REGISTERED" in hint
    full = registration_hint("s", E, (A, B, C, D))
    assert full is not None and f'cert-sha256="{B} {C} {D} {E}"' in full and A[:12] in full
