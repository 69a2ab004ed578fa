"""``hub directory check|load|list``.

``load`` checks the file (every problem printed as ``FILE:LINE: CODE: 标题 — message``, exit 1), stores it in
PostgreSQL (``hub.store.directory``), then provisions one RabbitMQ user per system through
``hub.transport.users.provision`` (``--no-provision`` skips it). Wiring: it lives in ``hub.commands``, not in the
pure ``hub.directory``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import unicodedata
from pathlib import Path
from typing import Any

from hub.directory.load import Problem, check_directory
from hub.directory.model import LEVEL_NAMES, ZONE_NAMES, Directory
from hub.envelope.model import CLASSIFICATIONS
from hub.settings import Settings


def _print_problems(problems: list[Problem]) -> None:
    from hub.cli import problem

    for p in sorted(problems, key=lambda p: (p.file, p.line)):
        print(problem(p.file, p.line, p.code, p.message))


def _default_file(settings: Settings) -> Path:
    return settings.routes_dir / "directory.xml"


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.file) if args.file else _default_file(settings)
    directory, problems = check_directory(path)
    if directory is None:
        _print_problems(problems)
        return 1
    print(f"{path}: ok — {_summary(directory)}")
    return 0


def _summary(d: Directory) -> str:
    agencies = sum(1 for _ in d.agencies())
    systems = sum(1 for _ in d.systems())
    groups = sum(1 for _ in d.groups())
    return (
        f"{agencies} agencies, {systems} systems, {groups} named groups; hub {d.hub_system} ceiling "
        + (CLASSIFICATIONS[d.hub_ceiling])
    )


async def _provision(settings: Settings, directory: Directory) -> str:
    """One RabbitMQ user per system (``hub.transport.users.provision``); the hub itself connects with the
    operator's credentials, not a system user."""
    from hub.transport import users

    wanted = [(s.id, None) for s in directory.systems() if s.id != directory.hub_system]
    made = await users.provision(settings, wanted)
    return f"RabbitMQ users: {len(made)} provisioned"


async def unusable_registrations(conn: Any, directory: Directory) -> list[str]:
    """A warning for each registered certificate (``cert-sha256``) that is no valid, unrevoked certificate the hub CA
    issued to its system (by the certificate register): a system whose registered certificates are all such is
    refused whatever it presents (CERT_NOT_REGISTERED)."""
    registered = [(s.id, fp) for s in directory.systems() for fp in s.cert_sha256]
    if not registered:
        return []
    rows = await conn.fetch(
        "SELECT c.system, c.fingerprint FROM trust_certificates c WHERE c.fingerprint = ANY($1::text[])"
        " AND c.not_after > now() AND c.not_before <= now()"
        " AND NOT EXISTS (SELECT 1 FROM trust_revocations r WHERE r.serial = c.serial)",
        [fp for _, fp in registered],
    )
    usable = {(r["system"], r["fingerprint"]) for r in rows}
    return [
        f"注意：系统 {system} 登记的证书 sha256 {fp[:16]}… 不是枢纽 CA 为它签发的有效证书（未知、已过期、已吊销或属于"
        f"其他系统）· note: system {system}'s registered certificate sha256 {fp[:16]}… is no valid certificate the "
        "hub CA issued to it (unknown, expired, revoked or another system's)"
        for system, fp in registered
        if (system, fp) not in usable
    ]


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from hub.routing.routes import check_routes, known_services, route_files

    path = Path(args.file)
    directory, problems = check_directory(path)
    if directory is None:
        _print_problems(problems)
        return 1
    # The routes must load against it too: a running hub takes a stored directory only with its routes
    # (hub.pipeline.follow), so one they cannot be loaded against would be stored and refused by every worker and the
    # process engine on every look (and a restarted hub run could not start). Nothing is stored then.
    services = known_services(settings.schemas_dir) if settings.schemas_dir.is_dir() else None
    _, route_problems = check_routes(route_files(settings.routes_dir), directory, services=services)
    if route_problems:
        _print_problems(route_problems)
        print(
            "目录未加载：路由文件不能按此目录载入（先改路由或目录，hub routes check --directory 文件 可先查）"
            " · directory not loaded: the routes files cannot be loaded against it (hub routes check --directory FILE"
            " checks first)",
            file=sys.stderr,
        )
        return 1
    source_xml = path.read_text(encoding="utf-8")

    async def run() -> tuple[int, str]:
        from hub.store.db import connection, migrate
        from hub.store.directory import DirectoryRepository

        await migrate(settings.pg_dsn)
        async with connection(settings.pg_dsn) as conn:
            version = await DirectoryRepository(conn).save(directory, source_xml=source_xml)
            for line in await unusable_registrations(conn, directory):
                print(line, file=sys.stderr)
        if args.no_provision:
            return version, "RabbitMQ users: skipped (--no-provision)"
        note = await _provision(settings, directory)
        # Every system's queue exists from now on, so nothing addressed to it is ever unroutable.
        from hub.transport import Transport

        transport = await Transport.connect(settings, client_name="hub-directory-load")
        try:
            await transport.declare_topology(s.id for s in directory.systems())
        finally:
            await transport.close()
        return version, note + f"; queues declared for {len(list(directory.systems()))} systems"

    version, note = asyncio.run(run())
    print(f"目录已加载 directory loaded as version {version}: {_summary(directory)}")
    print(note)
    return 0


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(width - _width(text), 0)


def render(directory: Directory) -> str:
    """The directory as a table: each agency, then its systems indented (zone, ceiling, accepted services)."""
    agencies = list(directory.agencies())
    systems = list(directory.systems())
    name_w = max([_width(a.name) for a in agencies] + [_width(s.name) for s in systems] + [8]) + 2
    lines = [
        _pad("代码 / 系统", 24) + _pad("名称", name_w) + _pad("层级/区域", 12) + _pad("区划/上限", 12) + "接收 accepts",
    ]
    lines.append("-" * (24 + name_w + 24 + 24))
    for a in agencies:
        lines.append(_pad(a.code, 24) + _pad(a.name, name_w) + _pad(LEVEL_NAMES[a.level], 12) + a.division)
        for s in directory.systems_of(a.code):
            mark = " (枢纽 hub)" if s.id == directory.hub_system else ""
            limits = [f"{s.rate}/s" if s.rate is not None else "", f"×{s.concurrency}" if s.concurrency else ""]
            if any(limits):
                mark += f"  [网关 gateway {' '.join(x for x in limits if x)}]"
            if s.cert_sha256:
                mark += f"  [登记证书 certificates {' '.join(fp[:12] + '…' for fp in s.cert_sha256)}]"
            lines.append(
                _pad("  " + s.id, 24)
                + _pad(s.name, name_w)
                + _pad(ZONE_NAMES[s.zone], 12)
                + _pad(s.ceiling_label, 12)
                + (" ".join(s.accepts) or "—")
                + mark
            )
    groups = list(directory.groups())
    if groups:
        lines.append("")
        lines.append("命名群组 named groups")
        for g in groups:
            members = ", ".join(m.group or (f"{m.agency}/{m.system}" if m.system else str(m.agency)) for m in g.members)
            lines.append(f"  {g.name}  {g.title}: {members}")
    lines.append("")
    lines.append(
        "计算群组 computed groups: city-bureaus, county-bureaus, local-bureaus[:division]; "
        f"hub {directory.hub_system} in {ZONE_NAMES[directory.hub_zone]}, ceiling "
        f"{CLASSIFICATIONS[directory.hub_ceiling]}"
    )
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.file:
        directory, problems = check_directory(Path(args.file))
        if directory is None:
            _print_problems(problems)
            return 1
    else:

        async def run() -> Directory:
            from hub.store.db import connection
            from hub.store.directory import DirectoryRepository

            async with connection(settings.pg_dsn) as conn:
                return await DirectoryRepository(conn).load()

        directory = asyncio.run(run())
    print(render(directory))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("directory", help="agencies, systems and groups (目录)")
    dsub = d.add_subparsers(dest="directory_command", metavar="ACTION", required=True)
    p = dsub.add_parser("check", help="check a directory file and print every problem (default routes/directory.xml)")
    p.add_argument("file", nargs="?", metavar="FILE")
    p.set_defaults(handler=cmd_check)
    p = dsub.add_parser("load", help="check a directory file, store it in PostgreSQL, provision RabbitMQ users")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--no-provision", action="store_true", help="do not create or update RabbitMQ users")
    p.set_defaults(handler=cmd_load)
    p = dsub.add_parser("list", help="list agencies and their systems (from PostgreSQL, or from --file)")
    p.add_argument("--file", metavar="FILE", help="list a directory file instead of the stored directory")
    p.set_defaults(handler=cmd_list)
