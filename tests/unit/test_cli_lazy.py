"""``hub <command>`` builds only the subcommands of the module that has that command (``hub.cli.COMMANDS_OF``):
the table must say exactly what each module registers, and a command's parser must be the one the whole command line
has. ``hub``, ``hub --help`` and an unknown word still build everything."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from hub.cli import COMMAND_MODULES, COMMANDS_OF, build_parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_the_table_names_what_each_module_registers(module: str) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(module).register(sub)
    assert tuple(sorted(sub.choices)) == tuple(sorted(COMMANDS_OF[module]))


def test_every_module_is_in_the_table_and_no_command_in_two() -> None:
    assert tuple(COMMANDS_OF) == COMMAND_MODULES
    commands = [c for cs in COMMANDS_OF.values() for c in cs]
    assert len(commands) == len(set(commands))


def test_a_commands_parser_is_the_one_of_the_whole_command_line() -> None:
    whole = _commands(build_parser())
    for commands in COMMANDS_OF.values():
        for command in commands:
            alone = _commands(build_parser(command))
            assert set(alone) == {"validate", "schemas", *commands}
            assert alone[command].format_help() == whole[command].format_help()
    assert set(_commands(build_parser("validate"))) == {"validate", "schemas"}
    assert set(_commands(build_parser("no-such-command"))) == set(whole)  # argparse lists them all in its error


def test_a_command_imports_only_its_own_module() -> None:
    code = (
        "import sys, hub.cli; hub.cli.build_parser('db'); "
        "print(sorted(m for m in hub.cli.COMMAND_MODULES if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['hub.store.cli']"


def test_hub_help_still_lists_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "hub.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for commands in COMMANDS_OF.values():
        for command in commands:
            assert f"    {command}" in done.stdout, command
