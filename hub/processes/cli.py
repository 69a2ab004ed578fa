"""``hub processes``: run the process engine, one pass of it, and the open alarms. Each process module may add its
own commands (``register(sub)``: ``hub documents status ID`` and the like)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from hub.settings import Settings


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from hub.processes.runner import processes_main
    from hub.store.db import migrate

    asyncio.run(migrate(settings.pg_dsn))
    processes_main(settings, args.clock_file)
    return 0


def cmd_tick(args: argparse.Namespace, settings: Settings) -> int:
    from hub.processes.engine import file_clock
    from hub.processes.runner import open_engine

    async def tick() -> dict[str, int]:
        engine, close = await open_engine(
            settings, clock=file_clock(args.clock_file) if args.clock_file else None, connect=not args.no_publish
        )
        try:
            return await engine.run_once()
        finally:
            await close()

    counts = asyncio.run(tick())
    print(f"处理报文 fed={counts['fed']} 到期提醒 fired={counts['fired']} 发出 published={counts['published']}")
    return 0


def cmd_alarms(args: argparse.Namespace, settings: Settings) -> int:
    from hub.store.db import connection

    async def read() -> list[dict[str, object]]:
        async with connection(settings.pg_dsn) as conn:
            rows = await conn.fetch(
                "SELECT id, process, code, ref, title, detail, raised_at, updated_at, cleared_at FROM process_alarms"
                " WHERE $2 OR cleared_at IS NULL ORDER BY raised_at DESC LIMIT $1",
                args.limit,
                args.all,
            )
        return [dict(r) for r in rows]

    rows = asyncio.run(read())
    if not rows:
        print("没有未处理的流程告警 no open process alarms")
        return 0
    for r in rows:
        state = "已解除 cleared" if r["cleared_at"] else "未解除 open"
        print(f"#{r['id']} [{state}] {r['process']} {r['code']} {r['ref']}: {r['title']} — {r['detail']}")
    return 1 if any(r["cleared_at"] is None for r in rows) else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from hub.processes.runner import process_modules

    p = sub.add_parser("processes", help="process management: documents, approvals, emergencies, meetings (流程管理)")
    ps = p.add_subparsers(dest="processes_command", metavar="ACTION", required=True)
    q = ps.add_parser("run", help="run the process engine in the foreground (hub run also starts it)")
    q.add_argument("--clock-file", type=Path, help="tests: read the engine's time from this file (ISO 8601)")
    q.set_defaults(handler=cmd_run)
    q = ps.add_parser("tick", help="one pass: hand new messages to the processes, fire due timers, publish")
    q.add_argument("--clock-file", type=Path, help="tests: read the engine's time from this file (ISO 8601)")
    q.add_argument("--no-publish", action="store_true", help="leave what the processes sent in the outbox")
    q.set_defaults(handler=cmd_tick)
    q = ps.add_parser("alarms", help="the open process alarms (exit 1 when there is one) (流程告警)")
    q.add_argument("--all", action="store_true", help="also cleared ones")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(handler=cmd_alarms)
    for module in process_modules():
        if hasattr(module, "register"):
            module.register(sub)
