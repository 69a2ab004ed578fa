"""Every ``hub`` command the documents show is one the ``hub`` command takes: each command line in a code block of the
README, docs/, the adapters' READMEs, hub/trust/USAGE.md and bench/README.md goes through the command's own parser
(``hub.cli.build_parser``). A line written as a synopsis (``[--days N]``, ``list|show ID``, ``<cores>``) is checked for
its command words (``hub quarantine list``); every other line must parse whole, options and all. The commands the
prose names in backquotes (`` `hub directory load` ``) must exist too. A reader who copies a line gets the command it
shows, not ``invalid choice`` (an adapter's README once said ``hub enrol``)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex

import pytest

from hub.cli import build_parser
from hub.settings import PROJECT_ROOT

DOCUMENTS = [
    PROJECT_ROOT / "README.md",
    *sorted((PROJECT_ROOT / "docs").glob("*.md")),
    *sorted(PROJECT_ROOT.glob("adapters/*/README.md")),
    PROJECT_ROOT / "hub" / "trust" / "USAGE.md",
    PROJECT_ROOT / "bench" / "README.md",
]
#: What marks a line as a synopsis rather than a command to copy.
SYNOPSIS = re.compile(r"[\[\]|<>]|…")


def _code_lines(text: str) -> list[str]:
    """The lines of fenced code blocks and of 4-space indented blocks, continuation lines joined."""
    raw = [line for m in re.finditer(r"```[a-z]*\n(.*?)```", text, re.S) for line in m.group(1).splitlines()]
    raw += [line for line in text.splitlines() if line.startswith("    hub ")]
    joined, pending = [], ""
    for line in raw:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return joined


def documented_commands() -> list[tuple[str, str]]:
    """(document, command) for every line that runs ``hub``, its comment cut off."""
    found = []
    for doc in DOCUMENTS:
        for line in _code_lines(doc.read_text(encoding="utf-8")):
            line = line.strip().removeprefix(".venv/bin/")
            if not line.startswith("hub ") or line.startswith("hub run:"):  # "hub run:" heads a diagram
                continue
            command = re.split(r"\s#\s?|\s+&&\s+|\s+\|\s+(?=[a-z])", line)[0].strip()
            found.append((str(doc.relative_to(PROJECT_ROOT)), command))
    return found


COMMANDS = documented_commands()
PARSER = build_parser()  # parse_args leaves a parser as it was: one for every line


def _parse(argv: list[str]) -> str | None:
    """None when ``hub``'s parser takes ``argv``, else its complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            PARSER.parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def test_the_documents_show_many_commands() -> None:
    # not vacuous: the walkthroughs, the operator's and the agency's commands are all found
    assert len(COMMANDS) >= 60, COMMANDS
    assert {doc for doc, _ in COMMANDS} >= {"README.md", "docs/gateway.md", "hub/trust/USAGE.md"}


def _command_words(argv: list[str]) -> list[str]:
    """``hub``'s command words at the head of ``argv`` (up to the first option, placeholder or alternative)."""
    words = []
    for word in argv:
        if word.startswith("-") or SYNOPSIS.search(word) or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        words.append(word)
    return words


def _words_complaint(argv: list[str]) -> str | None:
    """None when every command word exists (``hub quarantine list --help`` is taken), else the parser's complaint."""
    words = _command_words(argv)
    for depth in range(1, len(words) + 1):
        complaint = _parse([*words[:depth], "--help"])
        if complaint is not None:
            return complaint
    return None


def test_the_commands_named_in_the_text_exist() -> None:
    """The prose names commands too (`hub directory load`, `hub pki renew 序列号`): their command words must exist."""
    named, wrong = 0, []
    for doc in DOCUMENTS:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for span in {m.group(1) for m in re.finditer(r"`(hub [^`]+)`", text)}:
            named += 1
            complaint = _words_complaint(shlex.split(re.sub(r"\$\([^)]*\)", "X", span), posix=True)[1:])
            if complaint is not None:
                wrong.append(f"{doc.relative_to(PROJECT_ROOT)}: `{span}`: {complaint}")
    assert named >= 150 and not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_a_documented_command_is_one_hub_takes(doc: str, command: str) -> None:
    argv = shlex.split(re.sub(r"\$\([^)]*\)", "X", command))[1:]  # $(date +%F): one word to the command
    # a synopsis: its command words (up to the first placeholder, option or alternative) must exist
    complaint = _words_complaint(argv) if SYNOPSIS.search(command) else _parse(argv)
    assert complaint is None, f"{doc}: `{command}`: {complaint}"
