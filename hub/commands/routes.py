"""``hub routes check [FILE...]`` and ``hub routes list``.

``check`` validates route files (default: every ``routes/*.xml`` except ``directory.xml``) against the routes
schema, the directory (default ``routes/directory.xml``) and the service schemas in ``schemas/services``; it
prints every problem (of the routes and of the directory) as ``FILE:LINE: CODE: 标题 — message`` in file and line
order, and exits 1 when there is any, 0 otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hub.directory.load import Problem, check_directory
from hub.routing.routes import Route, RouteTable, check_routes, format_duration, known_services, route_files
from hub.settings import Settings


def _files(args: argparse.Namespace, settings: Settings) -> tuple[list[Path], Path]:
    files = [Path(f) for f in args.files] if args.files else route_files(settings.routes_dir)
    directory = Path(args.directory) if args.directory else settings.routes_dir / "directory.xml"
    return files, directory


def _check(args: argparse.Namespace, settings: Settings) -> tuple[RouteTable | None, list[Problem], int]:
    files, directory_path = _files(args, settings)
    directory, problems = check_directory(directory_path)
    services = known_services(settings.schemas_dir) if settings.schemas_dir.is_dir() else None
    table, route_problems = check_routes(files, directory, services=services)
    return table, problems + route_problems, len(files)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from hub.cli import problem

    table, problems, nfiles = _check(args, settings)
    if problems:
        for p in sorted(problems, key=lambda p: (p.file, p.line)):
            print(problem(p.file, p.line, p.code, p.message))
        return 1
    assert table is not None
    print(f"ok: {len(table)} routes in {nfiles} files")
    return 0


def _describe(r: Route) -> str:
    p = r.policy
    service = r.service + (f"/{r.version}" if r.version else "")
    priorities = " ".join(f"{u}={rule.priority}" for u, rule in p.urgencies)
    ttl = format_duration(p.max_ttl)
    return (
        f"{r.name:<26} {service:<24} from {', '.join(map(str, r.senders))}\n"
        f"{'':<26} {'':<24} to   {', '.join(map(str, r.recipients))}\n"
        f"{'':<26} {'':<24} ttl≤{ttl} retry {p.retry.attempts}×{list(p.retry.backoff)} {priorities}"
    )


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from hub.cli import problem

    table, problems, _ = _check(args, settings)
    if table is None:
        for p in sorted(problems, key=lambda p: (p.file, p.line)):
            print(problem(p.file, p.line, p.code, p.message))
        return 1
    for r in table:
        print(_describe(r))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("routes", help="route files: who may send what to whom (路由)")
    rsub = r.add_subparsers(dest="routes_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("check", cmd_check, "check route files against the schema and the directory; print every problem"),
        ("list", cmd_list, "print the route table (senders, recipients, validity, retries, priority per urgency)"),
    ):
        p = rsub.add_parser(name, help=text)
        p.add_argument("files", nargs="*", metavar="FILE", help="route files (default: routes/*.xml)")
        p.add_argument("--directory", metavar="FILE", help="directory file (default: routes/directory.xml)")
        p.set_defaults(handler=handler)
