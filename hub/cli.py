"""The ``hub`` command. Each area adds its own subcommands through a ``register(subparsers)`` function in its
``cli`` module (the directory and the routes: ``hub.commands``, so that those packages stay pure); this file only
wires them and guarantees that no traceback reaches the operator.

Exit codes: 0 success, 1 the input was rejected (one line per problem), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from hub.errors import HubError, title_of
from hub.settings import Settings

#: Modules that contribute subcommands, in the order they appear in ``hub --help``.
COMMAND_MODULES = (
    "hub.commands.pki",
    "hub.store.cli",
    "hub.commands.directory",
    "hub.commands.routes",
    "hub.pipeline.cli",
    "hub.backup",
    "hub.commands.adapter",
    "hub.commands.gateway",
    "hub.commands.dead",
    "hub.commands.ops",
    "hub.processes.cli",
)

#: The top-level commands each of ``COMMAND_MODULES`` registers: ``hub <command> …`` imports that one module, not
#: all eleven (building every subcommand imported most of the hub: 0.33 s of CPU before any command ran, paid by
#: every ``hub`` an operator, a systemd unit or a test starts; one module takes 0.04–0.12 s). ``hub``, ``hub
#: --help`` and a word not listed here build them all (``tests/unit/test_cli_lazy.py`` checks this table against
#: what the modules register).
COMMANDS_OF: dict[str, tuple[str, ...]] = {
    "hub.commands.pki": ("keygen", "pki", "sign", "verify"),
    "hub.store.cli": ("db",),
    "hub.commands.directory": ("directory",),
    "hub.commands.routes": ("routes",),
    "hub.pipeline.cli": ("evidence", "quarantine", "receive", "run", "send"),
    "hub.backup": ("backup", "restore"),
    "hub.commands.adapter": ("adapter",),
    "hub.commands.gateway": ("gateway",),
    "hub.commands.dead": ("dead",),
    "hub.commands.ops": ("operators", "ops"),
    "hub.processes.cli": ("approvals", "documents", "emergencies", "meetings", "processes"),
}
_MODULE_OF = {command: module for module, commands in COMMANDS_OF.items() for command in commands}

Handler = Callable[[argparse.Namespace, Settings], int]


def problem(name: str, line: int | None, code: str, message: str) -> str:
    """One problem line: ``FILE:LINE: CODE: 标题 — message``."""
    return f"{name}:{line or 0}: {code}: {title_of(code)} — {message}"


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from hub.envelope import parse
    from hub.validation import SchemaRegistry

    registry = SchemaRegistry(settings.schemas_dir)
    failed = False
    for name in args.files:
        label = "<stdin>" if name == "-" else name
        try:
            data = _read(name)
        except OSError as exc:
            print(problem(label, 0, "IO_READ", exc.strerror or "cannot read the file"))
            failed = True
            continue
        try:
            root = parse(data, max_bytes=settings.max_message_bytes)
        except HubError as exc:
            print(problem(label, exc.line, exc.code, exc.detail))
            failed = True
            continue
        found = registry.violations(root)
        if found:
            failed = True
            for v in found:
                print(problem(label, v.line, v.code, v.message))
        elif args.verbose:
            svc = root[0].find("{urn:forestry-hub:envelope:1}Service")
            ident = f"{svc.get('name')}/{svc.get('version')}" if svc is not None else "?"
            print(f"{label}: ok ({ident})")
    return 1 if failed else 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from hub.validation import SchemaRegistry

    registry = SchemaRegistry(settings.schemas_dir)
    rows = sorted(registry.all(), key=lambda s: (s.name, s.version))
    width = max(len(s.service_id) for s in rows)
    for s in rows:
        print(f"{s.service_id:<{width}}  {s.namespace:<48}  {s.doc_zh[:40]}")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command`` (the first word of one), only what that command needs when it is
    one of ``COMMANDS_OF``'s (the others are not registered, so ``hub --help`` must not be given one)."""
    parser = argparse.ArgumentParser(prog="hub", description="林业政务交换枢纽 Forestry Exchange Hub")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="validate envelope files against the hub's schemas (校验报文)")
    p.add_argument("files", nargs="+", metavar="FILE", help="envelope files; - reads standard input")
    p.add_argument("-v", "--verbose", action="store_true", help="also print a line for every valid file")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("schemas", help="list the known services and versions (报文类型)")
    p.set_defaults(handler=cmd_schemas)

    only = "" if command in ("validate", "schemas") else _MODULE_OF.get(command or "")
    for name in COMMAND_MODULES:
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that area has no commands yet
            raise
        module.register(sub)
    return parser


#: The long-running commands that read SIGHUP as "read your certificate again" (systemctl reload): until their own
#: handler is in place it must not end them (its default action; systemd does not restart a unit SIGHUP ended).
_RELOADABLE = ("run", "gateway")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] and words[0] in _RELOADABLE and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(words)
    try:
        settings = Settings.from_env()
        handler: Handler = args.handler
        return handler(args, settings)
    except HubError as exc:
        print(f"hub: {exc.describe()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do
        try:
            sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        except OSError:
            pass
        return 0
    except Exception as exc:  # the operator never sees a traceback
        print(f"hub: INTERNAL: {title_of('INTERNAL')} — {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
