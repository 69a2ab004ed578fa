"""``hub db migrate``."""

from __future__ import annotations

import argparse
import asyncio

from hub.settings import Settings


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from hub.store.db import migrate

    applied = asyncio.run(migrate(settings.pg_dsn))
    print("数据库已是最新 database is up to date" if not applied else "\n".join(f"applied {n}" for n in applied))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = sub.add_parser("db", help="database administration (数据库)")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = dbsub.add_parser("migrate", help="apply pending SQL migrations")
    p.set_defaults(handler=cmd_migrate)
