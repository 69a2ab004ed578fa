"""hub.processes.runner.ProcessFiles: what the process engine follows of the processes' own files (the broadcast
plan, the documents' deadlines, the holiday calendar) — a fingerprint that moves with any of them, and the problems
that keep a process from using them as they are (then the running engine keeps what it has)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hub.processes.runner import ProcessFiles
from hub.settings import PROJECT_ROOT, Settings


def _files(tmp_path: Path) -> tuple[ProcessFiles, Path]:
    routes = tmp_path / "routes"
    shutil.copytree(PROJECT_ROOT / "routes", routes)
    return ProcessFiles(Settings().with_(routes_dir=routes)), routes


def test_the_shipped_files_have_no_problem_and_a_stable_fingerprint(tmp_path: Path) -> None:
    files, _ = _files(tmp_path)
    assert files.problems() == []
    assert files.fingerprint() == files.fingerprint()


def test_each_file_moves_the_fingerprint_and_a_broken_one_is_named(tmp_path: Path) -> None:
    files, routes = _files(tmp_path)
    broken = {
        "emergency-plan.toml": "EMERGENCY_PLAN_INVALID",
        "documents-deadlines.toml": "DOC_DEADLINES_INVALID",
        "calendar/cn-holidays.toml": "APPROVAL_CALENDAR_INVALID",
    }
    seen = {files.fingerprint()}
    for name, code in broken.items():
        path = routes / name
        good = path.read_text(encoding="utf-8")
        path.write_text(good + "\n[unclosed\n", encoding="utf-8")
        assert files.fingerprint() not in seen
        seen.add(files.fingerprint())
        problems = files.problems()
        assert len(problems) == 1 and problems[0].startswith(code) and name.split("/")[-1] in problems[0], problems
        path.write_text(good, encoding="utf-8")
        assert files.problems() == []


def test_a_file_removed_moves_the_fingerprint(tmp_path: Path) -> None:
    files, routes = _files(tmp_path)
    before = files.fingerprint()
    (routes / "documents-deadlines.toml").unlink()  # the built-in policy then applies: not a problem
    assert files.fingerprint() != before and files.problems() == []
    (routes / "emergency-plan.toml").unlink()  # the plan is required
    assert [p.split()[0] for p in files.problems()] == ["EMERGENCY_PLAN_INVALID"]
