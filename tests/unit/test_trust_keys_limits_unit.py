"""Key lifecycle limits (review): a hub or renewed certificate is valid for 1 to 825 days like every other one; the
hub-key watch never switches a worker to a hub certificate that is not valid now; ``hub pki expiry`` without a PKI
is a configuration error and an expired certificate says so; the backup's pg_dump / pg_restore never see the
database password on their command line."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from hub import clock
from hub.backup import _libpq
from hub.cli import main
from hub.errors import ConfigError
from hub.trust import Signer, lifecycle, pki

PASS = "unit-test-passphrase"


def _hub_signer(pki_dir: Path) -> Signer:
    paths = pki.PkiPaths(pki_dir)
    return Signer.load(paths.hub_key, paths.hub_cert, passphrase=PASS.encode())


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    pki.init_ca(d, PASS)
    return d


@pytest.mark.parametrize("days", [0, -1, 826])
def test_a_hub_or_renewed_certificate_outside_1_to_825_days_is_refused_and_nothing_changes(ca: Path, days: int) -> None:
    paths = pki.PkiPaths(ca)
    before = (paths.hub_cert.read_bytes(), paths.hub_key.read_bytes())
    with pytest.raises(ConfigError, match="a certificate is valid for 1 to 825 days") as exc:
        pki.issue_hub_certificate(ca, PASS, pki.DEFAULT_HUB_AGENCY, days=days)
    assert exc.value.code == "CONFIG"
    assert (paths.hub_cert.read_bytes(), paths.hub_key.read_bytes()) == before
    hub_cert = pki.load_certificates(paths.hub_cert)[0]
    with pytest.raises(ConfigError, match="a certificate is valid for 1 to 825 days"):
        pki.renew(ca, PASS, hub_cert, days=days)
    assert pki.renew(ca, PASS, hub_cert, days=1).certificate.not_valid_after_utc > clock.now()


def test_the_hub_key_watch_keeps_the_current_key_when_the_new_certificate_is_not_valid_now(
    ca: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = _hub_signer(ca)
    watch = lifecycle.HubKeyWatch(ca, PASS.encode())
    assert watch.changed(current.identity.fingerprint) is None
    # A certificate that expired yesterday (issued "a year ago"), as a rotation with a wrong clock would leave it.
    long_ago = clock.now() - dt.timedelta(days=366)
    issued = pki.issue_hub_certificate(ca, PASS, pki.DEFAULT_HUB_AGENCY, days=365, now=long_ago)
    assert issued.certificate.not_valid_after_utc < clock.now()
    with caplog.at_level(logging.ERROR, logger="hub.trust.lifecycle"):
        assert watch.changed(current.identity.fingerprint) is None
        assert watch.changed(current.identity.fingerprint) is None  # the files did not change: not looked at again
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    text = record.getMessage()
    assert (
        "当前无效" in text and "not valid now" in text and issued.serial in text and "keeping the current key" in text
    )
    # A valid rotation afterwards is followed as before.
    pki.issue_hub_certificate(ca, PASS, pki.DEFAULT_HUB_AGENCY)
    rotated = watch.changed(current.identity.fingerprint)
    assert rotated is not None and rotated.identity.fingerprint not in (
        current.identity.fingerprint,
        issued.fingerprint,
    )


def test_the_hub_key_watch_waits_for_a_hub_certificate_that_is_not_valid_yet(ca: Path) -> None:
    current = _hub_signer(ca)
    watch = lifecycle.HubKeyWatch(ca, PASS.encode())
    start = clock.now()
    pki.issue_hub_certificate(ca, PASS, pki.DEFAULT_HUB_AGENCY, now=start + dt.timedelta(days=2))
    assert watch.changed(current.identity.fingerprint) is None
    with clock.override(lambda: start + dt.timedelta(days=3)):
        rotated = watch.changed(current.identity.fingerprint)
    assert rotated is not None


def test_an_expired_certificate_is_named_expired_not_minus_one_day_left(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    start = dt.datetime.now(dt.UTC)
    with clock.override(lambda: start):
        pki.init_ca(d, PASS)
    [hub] = lifecycle.expiry_warnings(d, now=start + dt.timedelta(days=365, hours=1))
    assert hub.expired and hub.as_dict()["expired"] is True
    assert hub.text().startswith("证书已过期 ") and "expired on" in hub.text() and "days left" not in hub.text()
    [soon] = lifecycle.expiry_warnings(d, now=start + dt.timedelta(days=364))
    assert not soon.expired and "证书即将到期" in soon.text() and "days left" in soon.text()


def test_pki_expiry_without_a_pki_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "no-such-state"))
    assert main(["pki", "expiry"]) == 2
    captured = capsys.readouterr()
    assert "ok" not in captured.out
    assert captured.err.startswith("hub: CONFIG: 配置错误 — no CA in ") and "root-ca.pem" in captured.err


@pytest.mark.parametrize(
    ("dsn", "clean", "password"),
    [
        (
            "postgresql://hub:S3cret-DB-pass@db.example:6432/hub?sslmode=verify-full&application_name=x",
            "postgresql://hub@db.example:6432/hub?sslmode=verify-full&application_name=x",
            "S3cret-DB-pass",
        ),
        ("postgres://hub:p%40ss%3Aw@10.0.0.5/hub", "postgres://hub@10.0.0.5/hub", "p@ss:w"),
        ("postgresql://hub@h1:5432,h2:5432/hub?password=pw%26x&sslmode=require", None, "pw&x"),
        ("postgresql://hub@127.0.0.1:5432/hub", "postgresql://hub@127.0.0.1:5432/hub", None),
        ("postgresql:///hub?host=/run/postgresql", "postgresql:///hub?host=/run/postgresql", None),
    ],
)
def test_the_dump_tools_get_the_dsn_without_its_password(
    dsn: str, clean: str | None, password: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    got, env = _libpq(dsn)
    if clean is not None:
        assert got == clean
    else:
        assert got == "postgresql://hub@h1:5432,h2:5432/hub?sslmode=require"
    assert env.get("PGPASSWORD") == password
    if password is not None:
        assert password not in got
