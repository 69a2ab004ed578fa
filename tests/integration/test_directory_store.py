"""The directory in PostgreSQL: stored and read back equal, replaced as a whole, versioned; the database refuses
what the zone ceilings forbid; `hub directory load|list` end to end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from directory_edits import with_system

from hub.cli import main
from hub.directory import Directory, load_directory
from hub.envelope import Recipient
from hub.errors import ConfigError
from hub.settings import PROJECT_ROOT
from hub.store.directory import DirectoryRepository

pytestmark = pytest.mark.integration

DEMO = PROJECT_ROOT / "routes" / "directory.xml"


@pytest.fixture
async def conn(pg_dsn: str):  # type: ignore[no-untyped-def]
    c = await asyncpg.connect(pg_dsn)
    try:
        yield c
    finally:
        await c.close()


async def test_store_and_read_back(conn: asyncpg.Connection) -> None:
    repo = DirectoryRepository(conn)
    directory = load_directory(DEMO)
    version = await repo.save(directory, source_xml=DEMO.read_text(encoding="utf-8"))
    back = await repo.load()
    assert back == directory
    assert back.sha256 == directory.sha256 and back.hub_ceiling == 3
    # the indexes work on what came back from the database
    got = [s.id for s in back.expand(Recipient.to_group("county-bureaus:222400"), "emergency.alert")]
    assert got == ["county-222403-oa", "county-222404-oa", "county-222424-oa"]
    assert [s.id for s in back.systems()] == [s.id for s in directory.systems()]  # file order kept
    current = await repo.current()
    assert current is not None and current.version == version
    assert (current.agency_count, current.system_count, current.group_count) == (21, 34, 3)
    stored_xml = await conn.fetchval("SELECT source_xml FROM directory_versions WHERE version = $1", version)
    assert "吉林省林业和草原局" in stored_xml
    # the gateway's limits (migration 014) come back, absent ones as None
    assert (back.system("prov-220000-portal").rate, back.system("prov-220000-portal").concurrency) == (50, 16)
    assert (back.system("prov-220000-data").rate, back.system("prov-220000-data").concurrency) == (20, None)
    assert (back.system("city-220100-oa").rate, back.system("city-220100-oa").concurrency) == (None, None)
    # where a system may call the gateway from (migration 029), absent: anywhere
    assert back.system("prov-220000-portal").gateway_addresses == ("10.22.0.0/16", "127.0.0.1/32")
    assert back.system("city-220100-oa").gateway_addresses == ()


async def test_database_refuses_gateway_limits_out_of_range(conn: asyncpg.Connection) -> None:
    repo = DirectoryRepository(conn)
    good = load_directory(DEMO)
    await repo.save(good)
    for change in ({"rate": 0}, {"rate": 100_001}, {"concurrency": 0}, {"concurrency": 1001}):
        forged = Directory(
            good.agencies(),
            [replace(s, **change) if s.id == "city-220100-oa" else s for s in good.systems()],  # type: ignore[arg-type]
            good.groups(),
            hub_system=good.hub_system,
            hub_zone=good.hub_zone,
            hub_ceiling=good.hub_ceiling,
        )
        with pytest.raises(ConfigError):
            await repo.save(forged)
    assert (await repo.load()) == good


async def test_registered_certificates_are_stored_and_bounded(conn: asyncpg.Connection) -> None:
    """``cert-sha256`` (migration 030): the fingerprints come back as they were listed; the database itself refuses
    more than four or anything but lower-case SHA-256 hex, as the schema does."""
    repo = DirectoryRepository(conn)
    good = load_directory(DEMO)

    def with_pins(pins: tuple[str, ...]) -> Directory:
        return with_system(good, "city-220100-oa", cert_sha256=pins)

    pinned = with_pins(("a" * 64, "b" * 64))
    await repo.save(pinned)
    back = await repo.load()
    assert back.system("city-220100-oa").cert_sha256 == ("a" * 64, "b" * 64) and back == pinned
    assert back.system("city-220200-oa").cert_sha256 == ()
    for bad in (
        ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64),
        ("A" * 64,),
        ("a" * 63,),
        ("a" * 64 + " " + "b" * 64,),  # two in one item
        ("a" * 64 + "|" + "b" * 64,),
        ("a" * 64, ""),
        ("",),
    ):
        with pytest.raises(ConfigError):
            await repo.save(with_pins(bad))
    assert (await repo.load()) == pinned


async def test_save_replaces_the_whole_directory(conn: asyncpg.Connection, tmp_path: Path) -> None:
    repo = DirectoryRepository(conn)
    first = await repo.save(load_directory(DEMO))
    smaller_text = DEMO.read_text(encoding="utf-8")
    start = smaller_text.index('  <Agency code="11220800014021658C"')
    end = smaller_text.index("</Agency>", start) + len("</Agency>")
    path = tmp_path / "directory.xml"
    path.write_text(smaller_text[:start] + smaller_text[end:], encoding="utf-8")
    smaller = load_directory(path)
    second = await repo.save(smaller)
    assert second > first
    back = await repo.load()
    assert back == smaller
    assert not back.has_agency("11220800014021658C") and not back.has_system("city-220800-oa")
    assert await conn.fetchval("SELECT count(*) FROM directory_systems WHERE agency = '11220800014021658C'") == 0


async def test_database_refuses_a_ceiling_above_the_zone(conn: asyncpg.Connection) -> None:
    repo = DirectoryRepository(conn)
    good = load_directory(DEMO)
    await repo.save(good)
    portal = good.system("prov-220000-portal")
    forged = Directory(
        good.agencies(),
        [replace(s, ceiling=1) if s.id == portal.id else s for s in good.systems()],
        good.groups(),
        hub_system=good.hub_system,
        hub_zone=good.hub_zone,
        hub_ceiling=good.hub_ceiling,
    )
    with pytest.raises(ConfigError) as info:
        await repo.save(forged)
    assert "could not be stored" in info.value.detail
    # the transaction rolled back: the good directory is still there
    assert (await repo.load()).ceiling("prov-220000-portal") == 0


async def test_load_without_any_directory_is_a_config_error(pg_dsn: str) -> None:
    # a fresh connection on a database where the tables are empty
    c = await asyncpg.connect(pg_dsn)
    try:
        async with c.transaction():
            await c.execute(
                "DELETE FROM directory_group_members; DELETE FROM directory_groups;"
                " DELETE FROM directory_systems; DELETE FROM directory_agencies; DELETE FROM directory_versions"
            )
            with pytest.raises(ConfigError):
                await DirectoryRepository(c).load()
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await c.close()


class _Rollback(Exception):
    pass


async def test_load_warns_of_registrations_no_certificate_answers(conn: asyncpg.Connection) -> None:
    """``hub directory load`` says which registered certificates are no valid certificate of their system in the
    register (unknown, expired, revoked, another system's): a system registered only with such is refused whatever
    it presents. (The register rows are made in a transaction rolled back at the end: the database is shared with
    other modules' installations, which need a register of their own.)"""
    from hub.commands.directory import unusable_registrations

    good = load_directory(DEMO)
    pinned = with_system(good, "city-220100-oa", cert_sha256=("a" * 64, "b" * 64))
    try:
        async with conn.transaction():
            assert await unusable_registrations(conn, good) == []
            said = await unusable_registrations(conn, pinned)
            assert len(said) == 2
            assert all("city-220100-oa" in line and "不是枢纽 CA 为它签发的有效证书" in line for line in said)
            # one of them a valid certificate of the system in the register: only the other is said
            await _register(conn, "ab01", "a" * 64, "city-220100-oa")
            said = await unusable_registrations(conn, pinned)
            assert len(said) == 1 and "b" * 16 in said[0]
            # revoked: said again
            await conn.execute("INSERT INTO trust_revocations (serial, reason) VALUES ('ab01', 'superseded')")
            assert len(await unusable_registrations(conn, pinned)) == 2
            raise _Rollback
    except _Rollback:
        pass
    assert await conn.fetchval("SELECT count(*) FROM trust_certificates WHERE serial IN ('ab00', 'ab01')") == 0


async def _register(conn: asyncpg.Connection, serial: str, fingerprint: str, system: str) -> None:
    """A register row of an agency certificate (no real certificate behind it: only the register is read)."""
    root = await conn.fetchval("SELECT serial FROM trust_certificates WHERE kind = 'root' LIMIT 1")
    if root is None:
        root = "ab00"
        await conn.execute(
            "INSERT INTO trust_certificates (serial, fingerprint, kind, subject, key_algorithm, not_before, not_after,"
            " der) VALUES ($1, $2, 'root', 'CN=root', 'ec-p256', now() - interval '1 day', now() + interval '1 year',"
            " '\\x00') ON CONFLICT DO NOTHING",
            root,
            "f" * 64,
        )
    await conn.execute(
        "INSERT INTO trust_certificates (serial, fingerprint, kind, issuer_serial, agency, system, subject,"
        " key_algorithm, not_before, not_after, der) VALUES ($1, $2, 'agency', $3, '11220100013544550M', $4, 'CN=x',"
        " 'ec-p256', now() - interval '1 day', now() + interval '1 year', '\\x00')",
        serial,
        fingerprint,
        root,
        system,
    )


def test_cli_load_and_list(pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HUB_PG_DSN", pg_dsn)
    assert main(["directory", "load", str(DEMO), "--no-provision"]) == 0
    out = capsys.readouterr().out
    assert "directory loaded as version" in out and "skipped (--no-provision)" in out
    assert main(["directory", "list"]) == 0
    listing = capsys.readouterr().out
    for text in (
        "吉林省林业和草原局",
        "延边朝鲜族自治州林业局",
        "city-220100-oa",
        "政务内网",
        "互联网",
        "机密",
        "fire-command",
    ):
        assert text in listing


def test_cli_load_refuses_a_directory_the_routes_cannot_be_loaded_against(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A directory without a system the routes name (prov-220000-data, of data.routes.xml) was stored (exit 0) and
    then refused by every worker and the process engine on every look, and taken by the gateway's identification
    alone. Now nothing is stored, and the routes' problem is printed."""
    monkeypatch.setenv("HUB_PG_DSN", pg_dsn)
    assert main(["directory", "load", str(DEMO), "--no-provision"]) == 0
    capsys.readouterr()
    text = DEMO.read_text(encoding="utf-8")
    start = text.index('<System id="prov-220000-data"')
    bad = tmp_path / "directory.xml"
    bad.write_text(text[:start] + text[text.index("/>", start) + 2 :], encoding="utf-8")
    assert main(["directory", "load", str(bad), "--no-provision"]) == 1
    captured = capsys.readouterr()
    assert "ROUTES_UNKNOWN_REF" in captured.out and "prov-220000-data" in captured.out
    assert "目录未加载" in captured.err and "directory loaded" not in captured.out
    assert main(["directory", "list"]) == 0
    assert "prov-220000-data" in capsys.readouterr().out  # the stored directory is the one before
