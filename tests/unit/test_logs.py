"""hub.logs: a worker's decision lines are written once per batch; every other line at once."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import textwrap

import pytest

from hub.settings import PROJECT_ROOT

CHILD = textwrap.dedent(
    """
    import logging, sys
    from hub import logs
    logs.setup(batched=True)
    logging.getLogger("hub.pipeline").info("worker 0 ready")
    for i in range(3):
        logging.getLogger("hub.decision").info("accepted", extra={"decision": "accepted", "message_id": f"m{i}"})
    print("logged", flush=True)
    sys.stdin.readline()
    logs.flush()
    print("flushed", flush=True)
    sys.stdin.readline()
    """
)


def _ready_lines(fd: int, timeout: float) -> list[dict]:
    data = b""
    while select.select([fd], [], [], timeout)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
        timeout = 0.2
    return [json.loads(line) for line in data.decode().splitlines()]


def test_decision_lines_wait_for_the_batch_flush_and_others_do_not() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=PROJECT_ROOT,
    ) as proc:
        assert proc.stdin and proc.stdout and proc.stderr
        assert proc.stdout.readline() == b"logged\n"
        first = _ready_lines(proc.stderr.fileno(), 2.0)
        assert [line["msg"] for line in first] == ["worker 0 ready"]  # written at once; the decisions wait
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"flushed\n"
        batch = _ready_lines(proc.stderr.fileno(), 2.0)
        assert [(line["decision"], line["message_id"]) for line in batch] == [
            ("accepted", "m0"),
            ("accepted", "m1"),
            ("accepted", "m2"),
        ]
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0


SAME_LINES = textwrap.dedent(
    """
    import logging, sys
    from hub import logs
    logs.setup(batched=True)
    log = logging.getLogger("hub.decision")
    items = [
        ("accepted", {"decision": "accepted", "batch_ms": 1.5, "message_id": "m0", "recipients": ["a", "b"]}),
        ("rejected", {"batch_ms": 1.5, "decision": "rejected", "code": "SIG_VALUE", "sender": "吉林/县"}),
    ]
    assert logs._batched_target(log) is not None  # the fast path is the one under test
    logs.log_decisions(log, items)
    logs.flush()
    for msg, extra in items:
        log.info(msg, extra=extra)
    logs.flush()
    """
)


def test_batched_decision_lines_are_the_lines_logging_writes() -> None:
    done = subprocess.run([sys.executable, "-c", SAME_LINES], capture_output=True, cwd=PROJECT_ROOT, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stderr.decode().splitlines()]
    assert len(lines) == 4
    fast, logged = lines[:2], lines[2:]
    for a, b in zip(fast, logged, strict=True):
        assert a["ts"][:16] == b["ts"][:16] and a["ts"].endswith("+00:00")
        assert {k: v for k, v in a.items() if k != "ts"} == {k: v for k, v in b.items() if k != "ts"}
        assert list(a) == list(b)  # same keys in the same order
    assert fast[1]["sender"] == "吉林/县" and fast[0]["recipients"] == ["a", "b"]


def test_decision_lines_go_through_logging_under_any_other_handler(caplog: pytest.LogCaptureFixture) -> None:
    from hub import logs

    caplog.set_level(logging.INFO, logger="hub.decision")
    log = logging.getLogger("hub.decision")
    assert logs._batched_target(log) is None
    logs.log_decisions(log, [("accepted", {"decision": "accepted", "message_id": "m9"})])
    assert [(r.getMessage(), r.message_id) for r in caplog.records] == [("accepted", "m9")]  # type: ignore[attr-defined]


def test_a_log_stream_that_cannot_be_written_never_fails_the_batch() -> None:
    """The worker flushes the logs after each batch: a closed stream (or a broken pipe) loses lines, not the batch."""
    from hub import logs

    class Gone:  # a reader that went away: every flush is a broken pipe
        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    handler = logging.StreamHandler(Gone())  # type: ignore[arg-type]
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        with pytest.raises(BrokenPipeError):
            handler.flush()  # what the flush met
        logs.flush()
    finally:
        root.handlers[:] = saved
