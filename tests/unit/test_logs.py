"""hub.logs: a worker's decision lines are written once per batch; every other line at once."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap

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
