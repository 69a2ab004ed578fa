"""Evidence anchors: every checkpoint of the evidence chain, written down outside the database.

The chain (``hub.store.evidence``) makes every record tamper-evident and the hub-signed checkpoints seal it. But
checkpoints are rows of the same database: someone with the database and no hub key can change a sealed record,
leave out every checkpoint after it, recompute the hashes and move the head — the chain then verifies, with fewer
checkpoints. An anchor is what the database cannot take back: when a worker (or ``hub evidence checkpoint``) has made
a checkpoint, it appends ``<seq> <hash> <at>`` of that checkpoint record to ``<state dir>/evidence/anchors.log``, a
file on the hub's machine (mode 0600, in its backups). ``hub evidence verify`` then requires each anchored checkpoint
to be in the chain with the same hash: a chain cut back or rewritten before an anchored checkpoint is reported.

The line is appended only after the checkpoint's transaction committed (an anchor never names a checkpoint that is
not there); one ``write`` of a short line to a file opened ``O_APPEND``, so workers appending at once do not
interleave, and a line is never rewritten. A process appends a checkpoint once (the workers' periodic call returns
the last checkpoint again while nothing new was chained). A line that does not parse is reported, not skipped: it
was not written by the hub.

``hub backup`` copies the file as it was *before* its database dump begins, so a restored store holds every
checkpoint its restored anchors name. (Anchors a hub on another machine would keep — a second ``hub run`` host —
cover that host's checkpoints: verify on each host, or gather the files.)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hub.store.db import acquired, translated
from hub.store.records import Problem

__all__ = ["ANCHORS", "Anchor", "anchor_checkpoint", "anchors_path", "read_anchors", "verify_anchors"]

#: The anchors file, under the state directory.
ANCHORS = Path("evidence") / "anchors.log"
_LINE = re.compile(r"^([1-9][0-9]{0,18}) ([0-9a-f]{64}) (\S{1,40})$")
#: The start of such a line: what a write cut short (a full disk) leaves; skipped, not reported as an edit.
_CUT_SHORT = re.compile(r"[0-9]{0,19}( [0-9a-f]{0,64}( [0-9T:.Z-]{0,40})?)?")
#: The last checkpoint this process anchored, per file (so that the periodic call adds a line only for a new one).
_anchored: dict[Path, int] = {}


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    hash: bytes
    at: str
    line: int


def anchors_path(state_dir: Path) -> Path:
    return Path(state_dir) / ANCHORS


async def anchor_checkpoint(executor: Any, state_dir: Path, seq: int | None) -> bool:
    """Append the checkpoint record ``seq`` (committed: what ``hub.store.evidence.checkpoint`` returned) to the
    anchors file, unless this process already anchored it. True when a line was written."""
    if seq is None:
        return False
    path = anchors_path(state_dir)
    if _anchored.get(path, 0) >= seq:
        return False
    async with translated("reading the checkpoint to anchor"), acquired(executor) as conn:
        row = await conn.fetchrow("SELECT seq, hash, at, kind FROM evidence WHERE seq = $1", seq)
    if row is None or row["kind"] != "checkpoint":
        return False
    at: datetime = row["at"]
    line = f"{int(row['seq'])} {bytes(row['hash']).hex()} {at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}\n".encode("ascii")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # after a write cut short: a line of its own, not joined onto the fragment
        # One short write to an O_APPEND file: whole, after every other process's lines. A short write (a full
        # disk) is an OSError here, and its partial line is read as unfinished (read_anchors), never as edited.
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(28, f"only {written} of {len(line)} bytes of the anchor written")
    finally:
        os.close(fd)
    _anchored[path] = seq
    return True


def read_anchors(path: Path) -> tuple[list[Anchor], list[Problem]]:
    """The anchors of ``path`` (none when it does not exist) and a problem for each line that does not parse."""
    anchors: list[Anchor] = []
    problems: list[Problem] = []
    try:
        text = path.read_bytes().decode("ascii", errors="replace")
    except FileNotFoundError:
        return [], []
    for n, line in enumerate(text.split("\n"), 1):
        m = _LINE.match(line)
        if m is None and _CUT_SHORT.fullmatch(line):
            continue  # "" after the last newline, or a write cut short (a full disk): the start of an anchor
        if m is None:
            problems.append(
                Problem(
                    "anchor",
                    None,
                    f"锚定文件第 {n} 行无法读取 line {n} of {path} is not an anchor the hub writes "
                    f"({line[:80]!r}): the file was edited",
                )
            )
            continue
        anchors.append(Anchor(int(m.group(1)), bytes.fromhex(m.group(2)), m.group(3), n))
    return anchors, problems


async def verify_anchors(executor: Any, path: Path) -> list[Problem]:
    """Each anchored checkpoint must be in the chain, at its seq, with its hash (one query)."""
    anchors, problems = read_anchors(path)
    if not anchors:
        return problems
    async with translated("comparing the chain with its anchors"), acquired(executor) as conn:
        rows = await conn.fetch(
            "SELECT seq, hash, kind FROM evidence WHERE seq = ANY($1::bigint[])", sorted({a.seq for a in anchors})
        )
    found = {int(r["seq"]): (bytes(r["hash"]), r["kind"]) for r in rows}
    seen: set[tuple[int, bytes]] = set()
    for a in anchors:
        if (a.seq, a.hash) in seen:
            continue
        seen.add((a.seq, a.hash))
        got = found.get(a.seq)
        if got is None:
            problems.append(
                Problem(
                    "removed",
                    a.seq,
                    f"锚定的检查点不在证据链中 the checkpoint anchored at seq {a.seq} (made {a.at}, hash "
                    f"{a.hash.hex()[:16]}…, {path} line {a.line}) is not in the chain: the log was cut back to "
                    "before it",
                )
            )
        elif got != (a.hash, "checkpoint"):
            problems.append(
                Problem(
                    "altered",
                    a.seq,
                    f"证据链与锚定的检查点不符 record {a.seq} is not the checkpoint anchored there (made {a.at}, hash "
                    f"{a.hash.hex()[:16]}…, {path} line {a.line}): the chain was rewritten up to it",
                )
            )
    return problems
