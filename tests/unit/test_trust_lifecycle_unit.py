"""The pure parts of issue 13: checkpoints verified against the certificate recorded with them (certificate
unknown, not valid then, revoked by then, signature wrong — four different sentences), the hub-key watch, expiry
warnings, the backup file's encryption, and the demo's per-checkout names."""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
from pathlib import Path

import pytest

from hub import clock
from hub.backup import CHUNK, _decrypt, _encrypt
from hub.errors import ConfigError
from hub.store.evidence import GENESIS, chain, checkpoint_payload, verify_rows
from hub.store.records import EvidenceEntry
from hub.trust import Signer, lifecycle, pki
from hub.trust.evidence import CheckpointVerifier, checkpoint_verifier

PASS = "unit-test-passphrase"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki") / "pki"
    pki.init_ca(d, PASS)
    return d


def _hub_signer(pki_dir: Path) -> Signer:
    paths = pki.PkiPaths(pki_dir)
    return Signer.load(paths.hub_key, paths.hub_cert, passphrase=PASS.encode())


def _sealed(signer: Signer, at: dt.datetime, *, tamper: bool = False) -> list:
    rows = chain(
        [EvidenceEntry("received", "hub", None, {"n": i}) for i in range(3)], head_seq=0, head_hash=GENESIS, at=at
    )
    sig = signer.sign_bytes(checkpoint_payload(3, rows[-1].hash))
    if tamper:
        sig = signer.sign_bytes(b"something else")
    detail = {
        "covers": 3,
        "head": rows[-1].hash.hex(),
        "signer": signer.identity.fingerprint,
        "signature": base64.b64encode(sig).decode(),
    }
    return rows + chain([EvidenceEntry("checkpoint", "hub", None, detail)], head_seq=3, head_hash=rows[-1].hash, at=at)


def test_checkpoints_of_earlier_hub_certificates_verify_and_each_refusal_says_why(ca: Path, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    first = _hub_signer(ca)
    old_rows = _sealed(first, now)
    # rotate the hub's certificate (files only: the archive keeps the earlier one)
    lifecycle.archive_hub_certificate(ca, first.certificates[0])
    pki.issue_hub_certificate(ca, PASS, pki.DEFAULT_HUB_AGENCY)
    second = _hub_signer(ca)
    assert second.identity.fingerprint != first.identity.fingerprint
    verifier = checkpoint_verifier(ca)
    assert verify_rows(old_rows, verify_signature=verifier) == []
    assert verify_rows(_sealed(second, now), verify_signature=verifier) == []

    # certificate unknown: the earlier certificate is forgotten (not in the archive, not in the register)
    root = pki.load_certificates(pki.PkiPaths(ca).root_cert)[0]
    issuing = pki.load_certificates(pki.PkiPaths(ca).issuing_cert)
    forgetful = CheckpointVerifier(root, issuing, [second.certificates[0]])
    [problem] = verify_rows(old_rows, verify_signature=forgetful)
    assert problem.kind == "checkpoint" and "is unknown" in problem.message and "证书未知" in problem.message

    # signature wrong: a known certificate, a signature that does not match
    [problem] = verify_rows(_sealed(second, now, tamper=True), verify_signature=verifier)
    assert "the signature is wrong" in problem.message and "unknown" not in problem.message

    # not valid when the checkpoint was made (dated after the certificate expired)
    late = second.certificates[0].not_valid_after_utc + dt.timedelta(days=1)
    [problem] = verify_rows(_sealed(second, late), verify_signature=verifier)
    assert "was not valid" in problem.message

    # revoked before the checkpoint was made; a checkpoint made before the revocation still verifies
    revoked_at = now + dt.timedelta(days=10)
    strict = CheckpointVerifier(
        root, issuing, [second.certificates[0]], {second.certificates[0].serial_number: revoked_at}
    )
    [problem] = verify_rows(_sealed(second, now + dt.timedelta(days=11)), verify_signature=strict)
    assert "revoked" in problem.message
    assert verify_rows(_sealed(second, now + dt.timedelta(days=9)), verify_signature=strict) == []

    # a certificate of another CA, even if named as the hub's, does not chain
    foreign_dir = tmp_path / "foreign"
    pki.init_ca(foreign_dir, PASS)
    foreign = _hub_signer(foreign_dir)
    mixed = CheckpointVerifier(root, issuing, [foreign.certificates[0]])
    [problem] = verify_rows(_sealed(foreign, now), verify_signature=mixed)
    assert "does not chain" in problem.message


def test_the_hub_key_watch_loads_a_rotated_key_once_and_waits_for_a_matching_pair(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d, PASS)
    current = _hub_signer(d)
    watch = lifecycle.HubKeyWatch(d, PASS.encode())
    assert watch.changed(current.identity.fingerprint) is None
    paths = pki.PkiPaths(d)
    old_cert = paths.hub_cert.read_bytes()
    pki.issue_hub_certificate(d, PASS, pki.DEFAULT_HUB_AGENCY)
    new_cert = paths.hub_cert.read_bytes()
    paths.hub_cert.write_bytes(old_cert)  # caught half-way: the new key, the old certificate
    os.utime(paths.hub_cert, ns=(1, 1))
    assert watch.changed(current.identity.fingerprint) is None
    paths.hub_cert.write_bytes(new_cert)
    rotated = watch.changed(current.identity.fingerprint)
    assert rotated is not None and rotated.identity.fingerprint != current.identity.fingerprint
    assert watch.changed(rotated.identity.fingerprint) is None


def test_expiry_warnings_name_what_expires_and_what_to_do(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    start = dt.datetime.now(dt.UTC)
    with clock.override(lambda: start):
        pki.init_ca(d, PASS)
    assert lifecycle.expiry_warnings(d, now=start) == []
    [hub] = lifecycle.expiry_warnings(d, now=start + dt.timedelta(days=340))
    assert hub.what == "hub" and hub.days_left in (24, 25) and "hub pki rotate" in hub.text()
    assert hub.as_dict()["days_left"] == hub.days_left
    late = lifecycle.expiry_warnings(d, now=start + dt.timedelta(days=1810))
    assert {w.what for w in late} == {"hub", "issuing"}  # the hub's has expired long ago, still named
    assert any("rollover-issuing" in w.text() for w in late)
    assert {w.what for w in lifecycle.expiry_warnings(d, now=start + dt.timedelta(days=3640))} >= {"root"}


@pytest.mark.parametrize("size", [0, 10, CHUNK - 1, CHUNK, 2 * CHUNK + 5])
def test_the_backup_encryption_round_trips_and_refuses_any_change(size: int) -> None:
    plain = os.urandom(size)
    sealed = io.BytesIO()
    _encrypt(io.BytesIO(plain), sealed, b"passphrase!")
    data = sealed.getvalue()
    out = io.BytesIO()
    _decrypt(io.BytesIO(data), out, b"passphrase!")
    assert out.getvalue() == plain
    for broken, why in (
        (data[:-1], "changed or truncated"),  # truncated inside the last part
        (data + b"x", "after its last part"),
        (data[:40] + bytes([data[40] ^ 1]) + data[41:], "changed"),  # the length of the first part
        (data[:-3] + bytes([data[-3] ^ 1]) + data[-2:], "changed"),  # its authentication tag
    ):
        with pytest.raises(ConfigError, match=why) as exc:
            _decrypt(io.BytesIO(broken), io.BytesIO(), b"passphrase!")
        assert exc.value.code == "BACKUP_FAILED"
    with pytest.raises(ConfigError):
        _decrypt(io.BytesIO(data), io.BytesIO(), b"wrong passphrase")
    if size > CHUNK:  # a whole last part removed is noticed too
        first_len = int.from_bytes(data[len(b"FXHUB-BACKUP\x001\n") + 24 :][:4], "big")
        cut = len(b"FXHUB-BACKUP\x001\n") + 24 + 4 + first_len
        with pytest.raises(ConfigError, match="truncated"):
            _decrypt(io.BytesIO(data[:cut]), io.BytesIO(), b"passphrase!")


def test_two_checkouts_get_their_own_demo_database_and_namespace() -> None:
    from hub import demo

    a, b = demo.checkout_names(Path("/home/a/forestry-hub")), demo.checkout_names(Path("/home/b/forestry-hub"))
    assert a != b and a == demo.checkout_names(Path("/home/a/forestry-hub"))
    for database, namespace in (a, b):
        assert database.startswith("hub_demo_") and demo._DB_NAME.match(database)
        assert namespace.startswith("demo-")
    assert (demo.DEFAULT_DATABASE, demo.DEFAULT_NAMESPACE) == demo.checkout_names(demo.PROJECT_ROOT)


def test_the_documented_root_rollover_keeps_earlier_checkpoints_verifiable(tmp_path: Path) -> None:
    """USAGE.md's root rollover, step by step on files: the new root cross-signed by the old, a new issuing CA and hub
    certificate under the new root, the old root kept as previous-root-ca.pem: checkpoints of both hierarchies
    verify, and a chain of the new hierarchy verifies for an agency that trusts only the old root (cross)."""
    from hub.trust import keys

    d = tmp_path / "pki"
    pki.init_ca(d, PASS)
    now = dt.datetime.now(dt.UTC)
    before = _sealed(_hub_signer(d), now)
    pw = PASS.encode()
    # step 2
    old_root, old_key = pki.load_ca(d, pw, which="root")
    new_key = keys.generate_private_key("ec-p384")
    name = pki.ca_name("Forestry Exchange Hub Root CA 2")
    new_root = pki.ca_certificate(name, new_key.public_key(), None, new_key, days=3650, path_length=1, now=clock.now())
    days_left = (old_root.not_valid_after_utc - clock.now()).days
    cross = pki.ca_certificate(name, new_key.public_key(), old_root, old_key, days=days_left, path_length=1, now=now)
    # step 4: a new issuing CA under the new root, the hub's certificate from it
    issuing_key = keys.generate_private_key("ec-p384")
    issuing = pki.ca_certificate(
        pki.ca_name("Forestry Exchange Hub Issuing CA 2"),
        issuing_key.public_key(),
        new_root,
        new_key,
        days=1825,
        path_length=0,
        now=now,
    )
    paths = pki.PkiPaths(d)
    lifecycle.archive_hub_certificate(d, _hub_signer(d).certificates[0])
    old_issuing = pki.load_certificates(paths.issuing_cert)
    keys.write_public_file(paths.issuing_cert, pki.certificate_pem(issuing, *old_issuing))
    keys.write_private_file(paths.issuing_key, keys.private_key_pem(issuing_key, pw))
    pki.issue_hub_certificate(d, PASS, pki.DEFAULT_HUB_AGENCY)
    after = _sealed(_hub_signer(d), now)
    # an agency trusting only the old root verifies the new hub certificate through the cross-certificate
    leaf = _hub_signer(d).certificates[0]
    leaf.verify_directly_issued_by(issuing)
    issuing.verify_directly_issued_by(cross)  # the cross-certificate carries the new root's name and key …
    cross.verify_directly_issued_by(old_root)  # … signed by the old root
    # step 6: the new root becomes the anchor, the old one is kept as previous-root-ca.pem
    keys.write_public_file(d / "previous-root-ca.pem", pki.certificate_pem(old_root))
    keys.write_public_file(paths.root_cert, pki.certificate_pem(new_root))
    keys.write_private_file(paths.root_key, keys.private_key_pem(new_key, pw))
    verifier = checkpoint_verifier(d)
    assert verify_rows(before, verify_signature=verifier) == []
    assert verify_rows(after, verify_signature=verifier) == []
    (d / "previous-root-ca.pem").unlink()
    [problem] = verify_rows(before, verify_signature=checkpoint_verifier(d))
    assert "does not chain" in problem.message


def test_expiry_warnings_are_logged_once_a_day(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d, PASS)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=350)
    with caplog.at_level("WARNING", logger="hub.trust.lifecycle"):
        lifecycle.log_expiry_warnings(d, now=soon)
        lifecycle.log_expiry_warnings(d, now=soon + dt.timedelta(hours=1))
        lifecycle.log_expiry_warnings(d, now=soon + dt.timedelta(days=1))
    lines = [r.getMessage() for r in caplog.records if "证书即将到期" in r.getMessage()]
    assert len(lines) == 2 and "hub pki rotate" in lines[0]
