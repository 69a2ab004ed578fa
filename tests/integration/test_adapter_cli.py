"""`hub adapter enrol|approve|run|new` against the real RabbitMQ and PostgreSQL: the enrolment round trip (agency key
and CSR → the operator's bundle → the agency's home, which the SDK reads and whose broker credentials connect), the
operator's refusals, an adapter run from its home until SIGTERM, and a scaffolded package whose generated tests pass
unchanged in memory and against the real hub."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.commands.adapter import BUNDLE_FORMAT, register
from hub.errors import HubError
from hub.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration

AGENCY, SYSTEM = "11220182013552847D", "county-220182-oa"
DIRECTORY = PROJECT_ROOT / "routes" / "directory.xml"


def run(settings: Settings, *argv: str) -> int:
    """One ``hub adapter`` command as hub.cli runs it (a HubError → exit 2 with its line)."""
    parser = argparse.ArgumentParser(prog="hub")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["adapter", *argv])
    try:
        return int(args.handler(args, settings))
    except HubError as exc:
        print(f"hub: {exc.describe()}", file=sys.stderr)
        return 2


def code_of(err: str) -> str:
    return err.strip().splitlines()[-1].split(":")[1].strip()


async def _install(settings: Settings) -> None:
    """A hub installation of its own: the CA and the demo directory (no users yet: approve provisions its one)."""
    from hub.commands import trust_admin as admin
    from hub.directory import load_directory
    from hub.store.db import connection
    from hub.store.directory import DirectoryRepository

    await admin.init(settings, settings.state_dir / "pki")
    async with connection(settings.pg_dsn) as conn:
        await DirectoryRepository(conn).save(load_directory(DIRECTORY))


@pytest.fixture(scope="module")
def hub_settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from conftest import ADMIN_DSN, _admin

    from hub.store.db import migrate
    from hub.transport.users import teardown_namespace

    name = f"hub_test_adapter_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    settings = integration_settings.with_(
        pg_dsn=ADMIN_DSN.rsplit("/", 1)[0] + "/" + name,
        namespace=f"hubtest-{uuid.uuid4().hex[:8]}",
        state_dir=tmp_path_factory.mktemp("adapter-hub"),
        ca_passphrase="adapter-test-passphrase",
    )
    try:
        asyncio.run(migrate(settings.pg_dsn))
        asyncio.run(_install(settings))
        yield settings
    finally:
        asyncio.run(teardown_namespace(settings))
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _enrol(settings: Settings, home: Path, tmp: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The three steps; returns the bundle."""
    assert run(settings, "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(home)) == 0
    bundle = tmp / f"{SYSTEM}.enrolment.json"
    assert run(settings, "approve", str(home / "request.csr"), "--out", str(bundle)) == 0, capsys.readouterr().err
    assert run(settings, "enrol", "--accept", str(bundle), "--home", str(home)) == 0, capsys.readouterr().err
    return bundle


def test_enrol_approve_accept_round_trip(
    hub_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapters.sdk import AdapterSettings
    from adapters.sdk._trust import load_signer
    from hub.store.certificates import CertificateRepository
    from hub.store.db import connection
    from hub.transport import Transport
    from hub.trust import pki

    home = tmp_path / "home"
    bundle_path = _enrol(hub_settings, home, tmp_path, capsys)
    out = capsys.readouterr().out
    assert f"enrolled {AGENCY}/{SYSTEM}" in out

    # the operator's one file: 0600, the chain, the root, the CRLs, the broker URL with the system's own user
    assert stat.S_IMODE(bundle_path.stat().st_mode) == 0o600
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    assert bundle["format"] == BUNDLE_FORMAT and (bundle["agency"], bundle["system"]) == (AGENCY, SYSTEM)
    paths = pki.PkiPaths(hub_settings.state_dir / "pki")
    assert bundle["hub_root"] == paths.root_cert.read_text()
    assert sorted(bundle["crls"]) == ["issuing-ca.crl", "root-ca.crl"]
    user = f"{hub_settings.namespace}.{SYSTEM}"
    assert bundle["broker"]["namespace"] == hub_settings.namespace and f"//{user}:" in bundle["broker"]["url"]
    assert bundle["hub_agency"] == pki.DEFAULT_HUB_AGENCY

    async def registered() -> bool:
        async with connection(hub_settings.pg_dsn) as conn:
            return await CertificateRepository(conn).get(bundle["serial"]) is not None

    assert asyncio.run(registered())  # the same register as hub pki issue

    # the home: what AdapterSettings(system=…, home=…) reads
    settings = AdapterSettings(system=SYSTEM, home=home)
    signer = load_signer(settings.key_path, settings.cert_path)
    assert (signer.identity.agency, signer.identity.system) == (AGENCY, SYSTEM)
    url, namespace = settings.broker()
    assert namespace == hub_settings.namespace
    assert stat.S_IMODE(settings.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.broker_path.stat().st_mode) == 0o600

    async def connect() -> None:  # the system's own broker user, as the adapter connects
        transport = await Transport.connect(Settings(amqp_url=url, namespace=namespace), url=url)
        assert transport.user == user
        await transport.close()

    asyncio.run(connect())


def test_approve_says_when_the_directory_registers_other_certificates(
    hub_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hub adapter approve`` prints the new certificate's fingerprint and, where the directory registers the
    system's certificates (cert-sha256) and not this one, says it will be refused and what to write."""
    from directory_edits import with_system

    from hub.directory import Directory, load_directory
    from hub.store.db import connection
    from hub.store.directory import DirectoryRepository

    async def load(directory: Directory) -> None:
        async with connection(hub_settings.pg_dsn) as conn:
            await DirectoryRepository(conn).save(directory)

    listed = load_directory(DIRECTORY)
    asyncio.run(load(with_system(listed, SYSTEM, cert_sha256=("a" * 64,))))
    try:
        home = tmp_path / "pinned"
        assert run(hub_settings, "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(home)) == 0
        capsys.readouterr()
        out_file = tmp_path / "pinned.json"
        assert run(hub_settings, "approve", str(home / "request.csr"), "--out", str(out_file)) == 0
        got = capsys.readouterr()
    finally:
        asyncio.run(load(listed))
    bundle = json.loads(out_file.read_text(encoding="utf-8"))
    from cryptography import x509

    from hub.trust import pki

    issued = pki.fingerprint(x509.load_pem_x509_certificates(bundle["certificate_chain"].encode())[0])
    assert f"sha256 {issued}" in got.out
    assert "CERT_NOT_REGISTERED" in got.err and f'cert-sha256="{"a" * 64} {issued}"' in got.err


def test_approve_refuses_what_the_directory_does_not_know(
    hub_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.store.db import connection

    async def issued() -> int:
        async with connection(hub_settings.pg_dsn) as conn:
            return int(await conn.fetchval("SELECT count(*) FROM trust_certificates WHERE kind = 'agency'"))

    before = asyncio.run(issued())
    stranger = tmp_path / "stranger"
    assert run(hub_settings, "enrol", "--system", "county-220199-oa", "--agency", AGENCY, "--home", str(stranger)) == 0
    assert run(hub_settings, "approve", str(stranger / "request.csr"), "--out", str(tmp_path / "x.json")) == 1
    assert code_of(capsys.readouterr().err) == "ADAPTER_NOT_IN_DIRECTORY"
    # a system of the directory, requested under another agency's code
    wrong = tmp_path / "wrong"
    city = "11220100013544550M"
    assert run(hub_settings, "enrol", "--system", SYSTEM, "--agency", city, "--home", str(wrong)) == 0
    assert run(hub_settings, "approve", str(wrong / "request.csr"), "--out", str(tmp_path / "y.json")) == 1
    assert code_of(capsys.readouterr().err) == "ADAPTER_AGENCY_MISMATCH"
    assert asyncio.run(issued()) == before
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def test_approve_refuses_when_no_directory_is_loaded(
    fresh_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(fresh_settings, "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(tmp_path / "h")) == 0
    assert run(fresh_settings, "approve", str(tmp_path / "h" / "request.csr"), "--out", str(tmp_path / "b.json")) == 1
    assert code_of(capsys.readouterr().err) == "ADAPTER_NOT_IN_DIRECTORY"


def test_an_enrolled_scaffold_runs_until_sigterm(
    hub_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(hub_settings, "new", "yushu_oa", "--system", SYSTEM, "--dir", str(tmp_path)) == 0
    package = tmp_path / "yushu_oa"
    _enrol(hub_settings, package / "home", tmp_path, capsys)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "adapter", "run", "yushu_oa", "--config", str(package / "settings.toml")],
        cwd=tmp_path,
        env=hub_settings.to_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(json.loads(line))  # every line is one JSON object
            if "ready" in str(lines[-1].get("msg")):
                break
        assert any("ready" in str(x.get("msg")) and "document.official/1" in str(x.get("msg")) for x in lines), lines
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=20)
        assert proc.returncode == 0, rest
        assert any("stopped" in str(json.loads(x).get("msg")) for x in rest.splitlines()), rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_generated_tests_pass_in_memory_and_against_the_real_hub(
    integration_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import ADMIN_DSN

    assert run(integration_settings, "new", "yushu_oa", "--system", SYSTEM, "--dir", str(tmp_path)) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "PYTEST"))}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "yushu_oa/tests"]
    for real in ("0", "1"):
        env |= {"HUB_TEST_REAL": real, "HUB_PG_DSN": ADMIN_DSN, "HUB_AMQP_URL": integration_settings.amqp_url}
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"HUB_TEST_REAL={real}\n{done.stdout}\n{done.stderr}"
        assert "2 passed" in done.stdout


def test_the_self_check_over_the_broker(
    hub_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hub adapter check --config`` for an adapter on RabbitMQ: each step's line, the broker reached with
    broker.json's login and the system's queue found; exit 0. With a wrong password in broker.json the broker step
    fails with the broker's code, and the command exits 1 saying how many steps failed."""
    from yarl import URL

    assert run(hub_settings, "new", "yushu_oa", "--system", SYSTEM, "--dir", str(tmp_path)) == 0
    package = tmp_path / "yushu_oa"
    _enrol(hub_settings, package / "home", tmp_path, capsys)
    capsys.readouterr()
    config = str(package / "settings.toml")
    assert run(hub_settings, "check", "--config", config) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "✔ 消息中间件 broker: reached with broker.json's login" in out and out.rstrip().endswith(
        "✔ 自检通过 every step passed"
    )
    assert [line[:1] for line in out.splitlines()] == ["✔"] * 5, out

    broker = package / "home" / "broker.json"
    data = json.loads(broker.read_text(encoding="utf-8"))
    data["url"] = str(URL(data["url"]).with_password("not-the-password"))
    broker.write_text(json.dumps(data), encoding="utf-8")
    assert run(hub_settings, "check", "--config", config) == 1
    got = capsys.readouterr()
    failed = [line for line in got.out.splitlines() if line.startswith("✘")]
    assert len(failed) == 1 and failed[0].startswith("✘ 消息中间件 broker:"), got.out
    assert "not-the-password" not in got.out + got.err and "1 step(s) failed" in got.err
    # a settings file the SDK cannot take: the command's own code and what is wrong, not INTERNAL
    (tmp_path / "bad.toml").write_text(f'system = "{SYSTEM}"\nhome = "home"\nbogus = 1\n', encoding="utf-8")
    assert run(hub_settings, "check", "--config", str(tmp_path / "bad.toml")) == 2
    err = capsys.readouterr().err
    assert "ADAPTER_SETTINGS" in err and "unknown setting 'bogus'" in err and "INTERNAL" not in err, err
