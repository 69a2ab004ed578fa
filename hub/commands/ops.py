"""``hub ops`` (serve the ops monitoring page over HTTPS) and ``hub operators add|list|unlock|disable|role`` (its
accounts, for the first administrator and for scripts).

The CLI records every account change with ``hub.store.audit.record_operator_action`` (via ``cli``), in the name of
``--by`` or of the login user, with that operator's role when it is one (else ``console``). No one acts on their
own account here either (``OPS_SELF_ACTION``). Exit codes follow hub.cli: 0 done, 1 refused, 2 usage or
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

from hub.errors import ConfigError, DeliveryError
from hub.settings import Settings

__all__ = ["register"]


# ============================================================================================== hub ops


def cmd_ops(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from hub import logs
    from monitoring.server import default_cert_paths, start_ops

    logs.setup()
    cert, key = args.cert, args.key
    if (cert is None) != (key is None):
        raise ConfigError("give both --cert and --key, or neither (default: <state>/pki/ops/server.pem and .key)")

    async def main() -> None:
        from hub.store.db import migrate

        try:
            await migrate(settings.pg_dsn)  # the operators' tables (017) on an installation older than the page
        except DeliveryError as exc:  # PostgreSQL is down: serve anyway (503 OPS_STORE, /ready says why)
            print(f"hub: {exc.describe()}", file=sys.stderr)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        runner = await start_ops(
            settings, host=args.host, port=args.port, cert=cert, key=key, plain_http=args.plain_http
        )
        port = runner.addresses[0][1] if runner.addresses else args.port
        scheme = "http" if args.plain_http else "https"
        print(f"运维监控页面 · ops page: {scheme}://{args.host}:{port}/", flush=True)
        if not args.plain_http:
            from hub.trust.pki import PkiPaths

            root = PkiPaths(Path(settings.state_dir) / "pki").root_cert
            print(f"  certificate {cert or default_cert_paths(settings)[0]}; browsers trust the hub root {root}")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return 0


# ============================================================================================== hub operators


def _refused(exc: Any) -> int:
    print(f"hub: {exc.code}: {exc.zh} — {exc.en}", file=sys.stderr)
    return 1


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for the password: pass it on standard input with --password-stdin")
    first = getpass.getpass("口令 · password: ")
    if getpass.getpass("再输入一次 · again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def cmd_operators(args: argparse.Namespace, settings: Settings) -> int:
    from hub import clock
    from hub.store import operators as store
    from hub.store.audit import role_of
    from hub.store.db import connection, migrate

    by = args.by or getpass.getuser()
    password = _read_password(args) if args.action == "add" else ""

    async def run() -> int:
        await migrate(settings.pg_dsn)
        async with connection(settings.pg_dsn) as conn:
            if args.action == "list":
                rows = await store.list_operators(conn)
                now = clock.now()
                for o in rows:
                    state = "disabled" if o.disabled else ("locked" if o.locked(now) else "active")
                    last = f"{o.last_login_at:%Y-%m-%d %H:%M}" if o.last_login_at else "-"
                    print(f"{o.name:<20} {o.role:<9} {state:<8} last login {last:<16} {o.display_name}")
                if not rows:
                    print("no operators yet: hub operators add NAME --role admin")
                return 0
            role = await role_of(conn, by)
            reason = args.reason
            try:
                if args.action == "add":
                    op = await store.add_operator(
                        conn,
                        args.name,
                        role=args.role,
                        display_name=args.display_name or args.name,
                        password=password,
                        by=by,
                        by_role=role,
                        via="cli",
                        reason=reason or "new operator",
                    )
                    print(f"added {op.name} ({op.role}) by {by}")
                elif args.action == "unlock":
                    await store.unlock(conn, args.name, by=by, by_role=role, via="cli", reason=reason or "unlock")
                    print(f"unlocked {args.name}")
                elif args.action == "disable":
                    await store.disable(conn, args.name, by=by, by_role=role, via="cli", reason=reason or "disable")
                    print(f"disabled {args.name} (its sessions ended)")
                elif args.action == "role":
                    await store.set_role(
                        conn, args.name, args.role, by=by, by_role=role, via="cli", reason=reason or "role change"
                    )
                    print(f"{args.name} is now {args.role}")
            except store.OperatorError as exc:
                return _refused(exc)
            return 0

    return asyncio.run(run())


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ops", help="serve the ops monitoring page over HTTPS (运维监控页面)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port (default 8443)")
    p.add_argument("--cert", type=Path, default=None, help="server certificate (default <state>/pki/ops/server.pem)")
    p.add_argument("--key", type=Path, default=None, help="its key (default <state>/pki/ops/server.key)")
    p.add_argument(
        "--plain-http", action="store_true", help="serve plain HTTP (loopback addresses only; for a local console)"
    )
    p.set_defaults(handler=cmd_ops)

    p = sub.add_parser("operators", help="the ops page's operators: add, list, unlock, disable, role (操作员)")
    osub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    roles = ("admin", "security", "auditor", "duty")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--by", default=None, help="who does this (default: the login name); recorded")
        q.add_argument("--reason", default=None, help="why (recorded with the action)")
        q.set_defaults(handler=cmd_operators, password_stdin=False)

    q = osub.add_parser("add", help="add an operator (asks for the password, or reads it with --password-stdin)")
    q.add_argument("name", metavar="NAME")
    q.add_argument(
        "--role",
        required=True,
        choices=roles,
        help="admin 系统管理员, security 安全保密管理员, auditor 安全审计员, duty 值班员",
    )
    q.add_argument("--display-name", default=None, help="the name shown on the page (default NAME)")
    common(q)
    q.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    q = osub.add_parser("list", help="list the operators")
    common(q)
    for action, text in (("unlock", "unlock a locked account"), ("disable", "disable an account, ending its sessions")):
        q = osub.add_parser(action, help=text)
        q.add_argument("name", metavar="NAME")
        common(q)
    q = osub.add_parser("role", help="give an operator another role")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--role", required=True, choices=roles)
    common(q)
