"""hub.trust.crl.check_revocation: the one revocation rule the verifier, the gateway's client identification and the
SDK's self-check share (top-down, fail closed on a missing or stale CRL, the verdict's lifetime the soonest
nextUpdate) — and the self-check, which before it looked only at the leaf's CRL, now names a revoked issuing CA and a
missing root CRL as the verifier would."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest
from trust_fixtures import SYSTEM, TestPki, now, session_pki

from adapters.sdk import AdapterSettings
from adapters.sdk._check import _certificate
from hub.trust.crl import LoadedCrl, RevocationCleared, RevocationProblem, check_revocation
from hub.trust.pki import certificate_pem


@pytest.fixture(scope="session")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return session_pki(tmp_path_factory)


def _pairs(t: TestPki, agent: str) -> list[tuple[object, object]]:
    chain = t.agents[agent].chain
    issuer = chain[1]
    return [(issuer, t.root), (chain[0], issuer)]


def test_a_good_chain_is_cleared_until_the_soonest_crl_update(tpki: TestPki) -> None:
    store = tpki.store()
    status = check_revocation(store.crl_for, _pairs(tpki, "p256"), now())  # type: ignore[arg-type]
    assert isinstance(status, RevocationCleared)
    updates = {ca: store.crl_for(ca).next_update for ca in (tpki.root, tpki.issuing)}  # type: ignore[union-attr]
    assert status.until == min(updates.values())
    assert status.by in updates and updates[status.by] == status.until


def test_a_revoked_leaf_and_a_revoked_issuing_ca_are_told_apart(tpki: TestPki) -> None:
    store = tpki.store()
    leaf = check_revocation(store.crl_for, _pairs(tpki, "revoked"), now())  # type: ignore[arg-type]
    assert isinstance(leaf, RevocationProblem) and leaf.code == "CERT_REVOKED"
    assert leaf.subject == tpki.agents["revoked"].cert and leaf.reason == "key-compromise" and leaf.when is not None
    ca = check_revocation(store.crl_for, _pairs(tpki, "under_revoked_ca"), now())  # type: ignore[arg-type]
    assert isinstance(ca, RevocationProblem) and ca.code == "CERT_REVOKED" and ca.reason == "ca-compromise"
    assert ca.subject == tpki.agents["under_revoked_ca"].chain[1] and ca.issuer == tpki.root
    # bottom-up the same chain would blame the leaf's own CRL first: the order is the caller's, as documented
    up = check_revocation(store.crl_for, list(reversed(_pairs(tpki, "under_revoked_ca"))), now())  # type: ignore[arg-type]
    assert isinstance(up, RevocationProblem) and up.subject == tpki.agents["under_revoked_ca"].chain[0]


def test_a_missing_or_stale_crl_fails_closed(tpki: TestPki) -> None:
    store = tpki.store()
    fresh = store.crl_for(tpki.issuing)
    assert fresh is not None
    stale = dataclasses.replace(fresh, next_update=now() - dt.timedelta(minutes=1))

    def only_root(ca: object) -> LoadedCrl | None:
        return store.crl_for(ca) if ca == tpki.root else None  # type: ignore[arg-type]

    def stale_issuing(ca: object) -> LoadedCrl | None:
        return stale if ca == tpki.issuing else store.crl_for(ca)  # type: ignore[arg-type]

    missing = check_revocation(only_root, _pairs(tpki, "p256"), now())  # type: ignore[arg-type]
    assert isinstance(missing, RevocationProblem) and missing.code == "CERT_CRL_UNAVAILABLE" and missing.crl is None
    assert missing.issuer == tpki.issuing
    old = check_revocation(stale_issuing, _pairs(tpki, "p256"), now())  # type: ignore[arg-type]
    assert isinstance(old, RevocationProblem) and old.code == "CERT_CRL_UNAVAILABLE" and old.crl is stale
    with pytest.raises(ValueError, match="at least one"):
        check_revocation(store.crl_for, [], now())


def _home(t: TestPki, agent: str, tmp: Path, *, root_crl: bool = True) -> AdapterSettings:
    home = tmp / agent
    (home / "crl").mkdir(parents=True)
    a = t.agents[agent]
    shutil.copy(a.key_path, home / "key.pem")
    (home / "key.pem").chmod(0o600)
    (home / "cert.pem").write_bytes(certificate_pem(*a.chain))
    (home / "hub-root.pem").write_bytes(certificate_pem(t.root))
    shutil.copy(t.paths.issuing_crl, home / "crl" / "issuing.crl")
    if root_crl:
        shutil.copy(t.paths.root_crl, home / "crl" / "root.crl")
    return AdapterSettings(system=SYSTEM, home=home)


def test_the_self_check_names_a_revoked_issuing_ca(tpki: TestPki, tmp_path: Path) -> None:
    good = _certificate(_home(tpki, "p256", tmp_path), now())
    assert [f.ok for f in good] == [True], good
    found = _certificate(_home(tpki, "under_revoked_ca", tmp_path), now())
    assert [(f.ok, f.code) for f in found] == [(False, "CERT_REVOKED")], found
    assert "issuing CA that issued it was revoked" in found[0].text and "ca-compromise" in found[0].text
    leaf = _certificate(_home(tpki, "revoked", tmp_path), now())
    assert [(f.ok, f.code) for f in leaf] == [(False, "CERT_REVOKED")] and "key-compromise" in leaf[0].text


def test_the_self_check_wants_the_root_crl_the_verifier_needs(tpki: TestPki, tmp_path: Path) -> None:
    found = _certificate(_home(tpki, "p256", tmp_path, root_crl=False), now())
    codes = [(f.ok, f.code) for f in found]
    assert (False, "CERT_CRL_UNAVAILABLE") in codes, found
    assert any("root's CRL" in f.text and "missing" in f.text for f in found)
