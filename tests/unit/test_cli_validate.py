"""``hub validate FILE...``: exit 0 when every file is valid, else exit 1 and one line per problem
(``FILE:LINE: CODE: 标题 — message``), never a traceback, also for hostile or binary input and for ``-``
(standard input).

Most cases call ``hub.cli.main`` in-process; a few run ``python -m hub.cli`` to check the real process: its
exit status, its standard input, and that nothing at all reaches standard error.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli import main
from hub.errors import CODES
from hub.settings import PROJECT_ROOT

SERVICES = PROJECT_ROOT / "schemas" / "services"
VALID = sorted(SERVICES.glob("*/*/samples/valid/*.xml"))
INVALID = sorted(SERVICES.glob("*/*/samples/invalid/*.xml"))
LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<code>[A-Z][A-Z0-9_]*): (?P<title>.+?) — (?P<message>.+)$")
SECRET = "CANARY-cli-3f9a1c0e7d"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    rc = main(["validate", *argv])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err


def problems(lines: list[str]) -> list[re.Match[str]]:
    """Every line parsed as a problem line; fails on any line that is not one."""
    found = []
    for line in lines:
        m = LINE.match(line)
        assert m is not None, f"not a problem line: {line!r}"
        assert m["code"] in CODES, line
        assert m["title"] == CODES[m["code"]], line
        found.append(m)
    return found


def write_canary(folder: Path) -> Path:
    path = folder / "secret.txt"
    path.write_text(f'<!ENTITY leak "{SECRET}">{SECRET}\n', encoding="utf-8")
    return path


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return write_canary(tmp_path)


def hostile_files(folder: Path, canary: Path) -> dict[str, tuple[Path, str]]:
    """Hostile inputs written to files, with the code each must be rejected with."""
    rng = random.Random(42)
    sample = VALID[0].read_bytes()
    lol = b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">' + b"".join(
        b'<!ENTITY %c "%s">' % (98 + i, b"&%c;" % (97 + i) * 10) for i in range(9)
    )
    cases: dict[str, tuple[bytes, str]] = {
        "external-dtd": (f'<!DOCTYPE r SYSTEM "{canary.as_uri()}"><r>&leak;</r>'.encode(), "ENV_DOCTYPE"),
        "external-entity": (
            f'<!DOCTYPE r [<!ENTITY e SYSTEM "{canary.as_uri()}">]><r>&e;</r>'.encode(),
            "ENV_DOCTYPE",
        ),
        "billion-laughs": (lol + b"]><r>&j;</r>", "ENV_DOCTYPE"),
        "utf16": ("<r>林业</r>".encode("utf-16"), "ENV_ENCODING"),
        "declared-gbk": ('<?xml version="1.0" encoding="GBK"?><r>林业</r>'.encode("gbk"), "ENV_ENCODING"),
        "random-binary": (b"\x80" + rng.randbytes(4096), "ENV_ENCODING"),
        "png": (b"\x89PNG\r\n\x1a\n" + rng.randbytes(512), "ENV_ENCODING"),
        "gzip": (gzip.compress(sample), "ENV_ENCODING"),
        "elf": (b"\x7fELF\x02\x01\x01" + bytes(64), "ENV_ENCODING"),
        "empty": (b"", "ENV_EMPTY"),
        "white-space": (b"\n\n   \n", "ENV_EMPTY"),
        "text": (b"just some words", "ENV_MALFORMED"),
        "truncated": (sample[: len(sample) // 2], "ENV_MALFORMED"),
        "deep": (b"<a>" * 30_000 + b"</a>" * 30_000, "ENV_TOO_DEEP"),
        "unclosed": (b"<a>" * 30_000, "ENV_TOO_DEEP"),
        "attributes": (b"<r " + b" ".join(b'a%x=""' % i for i in range(100_000)) + b"/>", "ENV_LIMIT"),
        "too-large": (b"<r>" + b"x" * (4 * 1024 * 1024) + b"</r>", "ENV_TOO_LARGE"),
        "not-an-envelope": (b"<r/>", "ENV_NOT_ENVELOPE"),
    }
    out = {}
    for name, (data, code) in cases.items():
        path = folder / f"{name}.xml"
        path.write_bytes(data)
        out[name] = (path, code)
    return out


HOSTILE = [
    "external-dtd",
    "external-entity",
    "billion-laughs",
    "utf16",
    "declared-gbk",
    "random-binary",
    "png",
    "gzip",
    "elf",
    "empty",
    "white-space",
    "text",
    "truncated",
    "deep",
    "unclosed",
    "attributes",
    "too-large",
    "not-an-envelope",
]


# ---------------------------------------------------------------------------------------------- valid


def test_valid_files_exit_0_silently(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines, err = run([str(p) for p in VALID], capsys)
    assert (rc, lines, err) == (0, [], "")


def test_verbose_names_each_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines, _ = run(["-v", str(VALID[0])], capsys)
    service = VALID[0].parts[-5]
    assert rc == 0
    assert lines == [f"{VALID[0]}: ok ({service}/1)"]


# ---------------------------------------------------------------------------------------------- hostile


def test_hostile_cases_are_all_listed(tmp_path: Path, canary: Path) -> None:
    assert set(hostile_files(tmp_path, canary)) == set(HOSTILE)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, tuple[Path, str]], list[str], str]:
    """All hostile files in one ``hub validate`` run (the registry compiles once)."""
    folder = tmp_path_factory.mktemp("hostile")
    files = hostile_files(folder, write_canary(folder))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["validate", *(str(path) for path, _ in files.values())])
    return rc, files, out.getvalue().splitlines(), err.getvalue()


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_file_gives_one_problem_line(
    case: str, hostile_run: tuple[int, dict[str, tuple[Path, str]], list[str], str]
) -> None:
    rc, files, lines, err = hostile_run
    path, code = files[case]
    assert rc == 1
    assert err == ""
    mine = [m for m in problems(lines) if m["file"] == str(path)]
    assert len(mine) == 1, lines
    assert mine[0]["code"] == code, mine[0].group(0)
    assert SECRET not in "\n".join(lines)
    assert "Traceback" not in "\n".join(lines)


def test_hostile_run_prints_nothing_but_problem_lines(
    hostile_run: tuple[int, dict[str, tuple[Path, str]], list[str], str],
) -> None:
    _, files, lines, _ = hostile_run
    assert len(problems(lines)) == len(files)


def test_invalid_samples_give_one_line_per_problem(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines, err = run([str(p) for p in INVALID], capsys)
    assert rc == 1 and err == ""
    by_file: dict[str, set[str]] = {}
    for m in problems(lines):
        by_file.setdefault(m["file"], set()).add(m["code"])
    assert set(by_file) == {str(p) for p in INVALID}
    for path in INVALID:
        expected = path.name.split("__", 1)[0]
        assert expected in by_file[str(path)], (path.name, by_file[str(path)])


def test_several_problems_in_one_file_give_several_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = VALID[0].read_bytes()
    broken = data.replace(b"<env:Urgency>", b"<env:Urgency>X", 1).replace(
        b"<env:Classification>", b"<env:Classification>Y", 1
    )
    path = tmp_path / "two-problems.xml"
    path.write_bytes(broken)
    rc, lines, _ = run([str(path)], capsys)
    found = problems(lines)
    assert rc == 1
    assert len(found) >= 2
    assert [int(m["line"]) for m in found] == sorted(int(m["line"]) for m in found)


def test_missing_file_and_directory_are_read_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines, err = run([str(tmp_path / "nope.xml"), str(tmp_path)], capsys)
    found = problems(lines)
    assert rc == 1 and err == ""
    assert [(m["file"], m["code"]) for m in found] == [
        (str(tmp_path / "nope.xml"), "IO_READ"),
        (str(tmp_path), "IO_READ"),
    ]


def test_mixed_files_report_only_the_bad_ones_in_order(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = hostile_files(tmp_path, canary)
    argv = [str(VALID[0]), str(files["utf16"][0]), str(VALID[-1]), str(files["external-dtd"][0])]
    rc, lines, _ = run(argv, capsys)
    found = problems(lines)
    assert rc == 1
    assert [(m["file"], m["code"]) for m in found] == [
        (argv[1], "ENV_ENCODING"),
        (argv[3], "ENV_DOCTYPE"),
    ]


# -------------------------------------------------------------------------------------- real processes


def hub_validate(args: list[str], stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "validate", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_stdin_hostile_binary_and_valid() -> None:
    hostile = b"\xff\xfe" + "<r>林业</r>".encode("utf-16-le")
    proc = hub_validate(["-"], stdin=hostile)
    assert proc.returncode == 1
    assert proc.stderr == b""
    (m,) = problems(proc.stdout.decode().splitlines())
    assert (m["file"], m["code"]) == ("<stdin>", "ENV_ENCODING")

    proc = hub_validate(["-", str(VALID[0])], stdin=VALID[0].read_bytes())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_binary_file_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(random.Random(3).randbytes(65536))
    proc = hub_validate([str(path)])
    assert proc.returncode == 1
    assert proc.stderr == b""
    assert b"Traceback" not in proc.stdout
    (m,) = problems(proc.stdout.decode().splitlines())
    assert m["code"] == "ENV_ENCODING"


def test_size_cap_comes_from_settings() -> None:
    """HUB_MAX_MESSAGE_BYTES reaches the intake: the same valid file is too large under a smaller cap."""
    proc = hub_validate([str(VALID[0])], env={"HUB_MAX_MESSAGE_BYTES": "100"})
    assert proc.returncode == 1 and proc.stderr == b""
    (m,) = problems(proc.stdout.decode().splitlines())
    assert m["code"] == "ENV_TOO_LARGE"
    assert "the limit is 100 bytes" in m["message"]
