"""`hub directory check|load|list` without a database: problem lines, the table, and the guarded call that
provisions RabbitMQ users."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from hub.cli import main
from hub.commands.directory import _provision, render
from hub.directory import load_directory
from hub.settings import PROJECT_ROOT, Settings

DEMO = PROJECT_ROOT / "routes" / "directory.xml"
LINE = re.compile(r"^(.+?):(\d+): ([A-Z_]+): (.+?) — (.+)$")


def test_check_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["directory", "check", str(DEMO)]) == 0
    assert "21 agencies, 34 systems, 3 named groups" in capsys.readouterr().out


def test_check_and_load_print_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "directory.xml"
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace('<System id="city-220400-oa"', '<System id="city-220300-oa"')
    text = text.replace('hub-ceiling="机密"', 'hub-ceiling="绝密"')
    bad.write_text(text, encoding="utf-8")
    for command in ("check", "load"):
        assert main(["directory", command, str(bad)]) == 1
        lines = capsys.readouterr().out.splitlines()
        parsed = [LINE.match(line) for line in lines]
        assert all(parsed), lines
        codes = [m.group(3) for m in parsed if m]
        assert "DIR_DUPLICATE" in codes and "DIR_INCONSISTENT" in codes
        assert all(m.group(1) == str(bad) and int(m.group(2)) > 0 for m in parsed if m)


def test_list_from_file_shows_chinese_names_zones_and_ceilings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["directory", "list", "--file", str(DEMO)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "prov-220000-portal" in line)
    assert "互联网" in row and "公开" in row
    row = next(line for line in out.splitlines() if "prov-220000-secure" in line)
    assert "政务内网" in row and "机密" in row
    assert "国家林业和草原局" in out and "county-bureaus" in out


def test_render_aligns_wide_characters() -> None:
    table = render(load_directory(DEMO)).splitlines()
    rows = [line for line in table if line.startswith("  city-") and line.endswith("data.response")]
    assert rows
    # the zone column starts at the same display column in every system row
    from hub.commands.directory import _width

    starts = {_width(r[: r.index("政务")]) for r in rows}
    assert len(starts) == 1


def test_provision_is_called_with_every_system_but_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.transport.users as users

    calls: list[tuple[Settings, list[tuple[str, str | None]]]] = []

    async def fake(settings: Settings, systems):  # type: ignore[no-untyped-def]
        calls.append((settings, list(systems)))
        return [f"user-{s}" for s, _ in systems]

    monkeypatch.setattr(users, "provision", fake)
    directory = load_directory(DEMO)
    note = asyncio.run(_provision(Settings(), directory))
    assert note == "RabbitMQ users: 33 provisioned"
    [(_, systems)] = calls
    ids = [s for s, _ in systems]
    assert "hub" not in ids and "city-220100-oa" in ids and len(ids) == 33
    assert all(password is None for _, password in systems)
