"""The folder side of the adapter: its settings, atomic writes, and the outbox watcher (files → ``adapter.send``).

Everything here is I/O on the national reporting system's folders; the formats are in ``mapping``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from adapters.national_forestry.mapping import (
    FileRefused,
    content_hash,
    hub_refusal,
    hub_transient,
    invalid,
    is_candidate,
    message_id_for,
    parse_submission,
    reason_text,
    refused,
)
from adapters.sdk import (
    Adapter,
    ConfigurationError,
    HubRefused,
    HubUnavailable,
    MessageInvalid,
    RequestTimeout,
    group,
    to,
)

log = logging.getLogger("adapters.national_forestry")
CST = timezone(timedelta(hours=8))


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Folders:
    """The ``[adapter]`` section of the adapter's TOML (see settings.example.toml)."""

    outbox: Path
    inbox: Path
    sent: Path
    failed: Path
    #: Seconds between two looks at an idle outbox.
    poll_interval: float = 1.0
    #: A file that does not parse is failed only once it is this old (a writer that ignored the rename rule).
    settle_seconds: float = 5.0
    max_file_bytes: int = 8 * 1024 * 1024
    #: Outbox files in flight to the hub at once.
    send_concurrency: int = 16
    #: Seconds to wait for the hub's receipt of one file before trying it again later.
    send_timeout: float = 30.0
    #: The longest pause between two attempts at an unwritable inbox or an unreachable hub.
    max_retry_delay: float = 60.0

    @classmethod
    def from_extra(cls, extra: dict[str, Any], base: Path | None = None) -> Folders:
        def path(key: str, default: Path | None = None) -> Path:
            raw = extra.get(key)
            if raw is None or str(raw).strip() == "":
                if default is None:
                    raise ConfigurationError(
                        f"[adapter] {key} 未配置 is required: the folder of the national reporting system",
                        code="NF_CONFIG",
                    )
                return default
            p = Path(str(raw)).expanduser()
            return p if p.is_absolute() or base is None else (base / p)

        def number(key: str, default: float, minimum: float) -> float:
            raw = extra.get(key, default)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"[adapter] {key} = {raw!r} 不是数字 is not a number", code="NF_CONFIG"
                ) from None
            if value < minimum:
                raise ConfigurationError(f"[adapter] {key} = {raw!r} 小于 is below {minimum:g}", code="NF_CONFIG")
            return value

        unknown = set(extra) - {
            "outbox", "inbox", "sent", "failed", "poll_interval", "settle_seconds", "max_file_bytes",
            "send_concurrency", "send_timeout", "max_retry_delay",
        }  # fmt: skip
        if unknown:
            raise ConfigurationError(
                f"[adapter] 未知设置 unknown settings: {', '.join(sorted(unknown))}", code="NF_CONFIG"
            )
        outbox = path("outbox")
        return cls(
            outbox=outbox,
            inbox=path("inbox"),
            sent=path("sent", outbox / "sent"),
            failed=path("failed", outbox / "failed"),
            poll_interval=number("poll_interval", 1.0, 0.01),
            settle_seconds=number("settle_seconds", 5.0, 0.0),
            max_file_bytes=int(number("max_file_bytes", 8 * 1024 * 1024, 1024)),
            send_concurrency=int(number("send_concurrency", 16, 1)),
            send_timeout=number("send_timeout", 30.0, 1.0),
            max_retry_delay=number("max_retry_delay", 60.0, 0.1),
        )

    def check(self) -> None:
        """At start-up: the shared folders must be there (the adapter never creates a missing share's mount point);
        ``sent/`` and ``failed/`` are made inside them when missing."""
        for label, p in (("outbox 发件目录", self.outbox), ("inbox 收件目录", self.inbox)):
            if not p.is_dir():
                raise ConfigurationError(
                    f"{label} {p} 不存在或不是目录 does not exist or is not a folder", code="NF_CONFIG"
                )
        for p in (self.sent, self.failed):
            p.mkdir(exist_ok=True)
            if p.stat().st_dev != self.outbox.stat().st_dev:  # a move must be a rename, never a copy
                raise ConfigurationError(
                    f"{p} 与发件目录不在同一文件系统 is not on the outbox's file system", code="NF_CONFIG"
                )


# ---------------------------------------------------------------------------------------------- atomic files


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(folder: Path, name: str, data: bytes, *, then: Callable[[], None] | None = None) -> Path:
    """``folder/name`` holds ``data`` completely or not at all: a dot-file ``.name.tmp`` is written and fsynced,
    renamed over ``name`` (``then()`` is called right after the rename), and the folder fsynced. Never creates
    ``folder`` (a missing share raises)."""
    final = folder / name
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    if then is not None:
        then()
    _fsync_dir(folder)
    return final


class InboxLedger:
    """The message ids whose inbox file is written, committed right after each file (not with the SDK's batch):
    a delivery redelivered after a crash — its batch not yet committed — is not written again, so a national system
    that imports and deletes its files does not see it twice. (SQLite in WAL mode: a committed row survives the
    process being killed.) Rows are needed only until the SDK has recorded the id; older ones are pruned."""

    def __init__(self, path: Path, keep: timedelta = timedelta(days=7)) -> None:
        import sqlite3
        import threading

        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS inbox_written"
            " (message_id TEXT PRIMARY KEY, name TEXT NOT NULL, at REAL NOT NULL)"
        )
        self._db.execute("DELETE FROM inbox_written WHERE at < ?", (time.time() - keep.total_seconds(),))
        # Files owed to the inbox that nothing will deliver again (a late hub refusal, acknowledged when it came):
        # kept here, never pruned, until written (``flush_pending``).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS inbox_pending"
            " (message_id TEXT PRIMARY KEY, name TEXT NOT NULL, data BLOB NOT NULL, at REAL NOT NULL)"
        )

    def written(self, message_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM inbox_written WHERE message_id = ?", (message_id,)).fetchone()
        return row is not None

    def add(self, message_id: str, name: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO inbox_written (message_id, name, at) VALUES (?, ?, ?)",
                (message_id, name, time.time()),
            )

    def keep(self, message_id: str, name: str, data: bytes) -> None:
        """Owe ``name`` to the inbox (committed before this returns): written by a later ``flush_pending``."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO inbox_pending (message_id, name, data, at) VALUES (?, ?, ?, ?)",
                (message_id, name, data, time.time()),
            )

    def pending(self) -> list[tuple[str, str, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT message_id, name, data FROM inbox_pending ORDER BY at").fetchall()
        return [(str(mid), str(name), bytes(data)) for mid, name, data in rows]

    def settled(self, message_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM inbox_pending WHERE message_id = ?", (message_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def deliver_to_inbox(folder: Path, name: str, data: bytes, message_id: str, ledger: InboxLedger | None) -> bool:
    """Write one delivery into the inbox unless the ledger says it is there already; True when written."""
    if ledger is None:
        write_atomic(folder, name, data)
        return True
    if ledger.written(message_id):
        return False
    write_atomic(folder, name, data, then=lambda: ledger.add(message_id, name))  # the row right after the rename
    return True


def flush_pending(folder: Path, ledger: InboxLedger) -> int:
    """Write what the ledger owes the inbox (``InboxLedger.keep``), oldest first; the number written. Stops at the
    first file the inbox cannot take (``OSError``: the share is still down), the rest kept for the next pass."""
    n = 0
    for mid, name, data in ledger.pending():
        deliver_to_inbox(folder, name, data, mid, ledger)
        ledger.settled(mid)
        n += 1
    return n


# ---------------------------------------------------------------------------------------------- the outbox


@dataclass(slots=True)
class _Read:
    name: str
    data: bytes  # empty when the file is larger than max_file_bytes (never read into memory)
    stat: os.stat_result
    sha256: str = ""  # of the whole file (computed from ``data`` when not given)
    too_large: bool = False

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = content_hash(self.data)


def read_outbox_file(path: Path, max_bytes: int) -> _Read:
    """An outbox file's bytes, stat and hash. A file over ``max_bytes`` (by its size, or by what could be read) is
    not held in memory: it is hashed in chunks for its reason file and marked ``too_large``."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        data = b"" if st.st_size > max_bytes else fh.read(max_bytes + 1)
        if st.st_size <= max_bytes and len(data) <= max_bytes:
            return _Read(path.name, data, st, content_hash(data))
        del data
        fh.seek(0)
        digest = hashlib.sha256()
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
        return _Read(path.name, b"", st, digest.hexdigest(), too_large=True)


class OutboxWatcher:
    """Takes complete files from the outbox, sends each as one message (its id derived from the file name and
    content), and moves it to ``sent/`` after the hub's receipt or to ``failed/`` with a reason file."""

    def __init__(self, adapter: Adapter, folders: Folders) -> None:
        self.adapter = adapter
        self.f = folders
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._not_before: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._share_down = False
        self._sem = asyncio.Semaphore(folders.send_concurrency)
        #: Counters for the log and the tests: sent (accepted), duplicate, failed, retried.
        self.counts = {"accepted": 0, "duplicate": 0, "quarantined": 0, "failed": 0, "retried": 0}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="national-forestry-outbox")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """No new files; the files in flight finish (their receipts come back) within ``send_timeout``."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.f.send_timeout + 5)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                names = await asyncio.to_thread(self._listing)
            except OSError as exc:
                if not self._share_down:
                    log.warning("outbox unavailable (%s); waiting for it", type(exc).__name__, extra=self._x())
                self._share_down = True
                await self._pause(min(self.f.max_retry_delay, max(self.f.poll_interval, 1.0)))
                continue
            if self._share_down:
                log.info("outbox available again", extra=self._x())
                self._share_down = False
            now = time.monotonic()
            todo = [n for n in names if self._not_before.get(n, 0.0) <= now]
            if not todo:
                await self._pause(self.f.poll_interval)
                continue
            await asyncio.gather(*(self._one(n) for n in todo[: self.f.send_concurrency * 8]))

    async def _one(self, name: str) -> None:
        async with self._sem:
            if self._stopping.is_set():
                return
            try:
                await self._take(name)
            except Exception as exc:  # a bug must not stop the watcher: the file stays and is tried again
                log.exception("outbox file %s: unexpected %s", name, type(exc).__name__, extra=self._x(file=name))
                self._later(name, type(exc).__name__)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _listing(self) -> list[str]:
        with os.scandir(self.f.outbox) as it:
            entries = [(e.stat().st_mtime_ns, e.name) for e in it if is_candidate(e.name) and e.is_file()]
        return [name for _, name in sorted(entries)]  # oldest first

    def _x(self, **more: Any) -> dict[str, Any]:
        return {"system": self.adapter.system, **more}

    def _later(self, name: str, why: str) -> None:
        delay = min(self._delay.get(name, 0.5) * 2, self.f.max_retry_delay)
        self._delay[name] = delay
        self._not_before[name] = time.monotonic() + delay
        self.counts["retried"] += 1
        log.warning("outbox file %s: %s; next attempt in %.1f s", name, why, delay, extra=self._x(file=name))

    def _forget(self, name: str) -> None:
        self._delay.pop(name, None)
        self._not_before.pop(name, None)

    async def _take(self, name: str) -> None:
        path = self.f.outbox / name
        try:
            read = await asyncio.to_thread(read_outbox_file, path, self.f.max_file_bytes)
        except FileNotFoundError:  # taken away by its writer
            self._forget(name)
            return
        except OSError as exc:
            self._later(name, f"unreadable ({type(exc).__name__})")
            return
        if read.too_large:  # refused by its size alone: never read into memory
            size = max(read.stat.st_size, self.f.max_file_bytes + 1)
            await self._fail(read, refused("NF_TOO_LARGE", f"{size} bytes, the limit is {self.f.max_file_bytes}"), None)
            return
        try:
            sub = parse_submission(read.data, max_bytes=self.f.max_file_bytes)
        except FileRefused as r:
            if r.code == "NF_NOT_XML" and time.time() - read.stat.st_mtime < self.f.settle_seconds:
                self._not_before[name] = time.monotonic() + self.f.settle_seconds / 4
                return  # perhaps still being written by a writer that ignored the rename rule: look again
            await self._fail(read, r, None)
            return
        mid = message_id_for(self.adapter.system, name, read.data)
        to_ = [to(a, s) for a, s in sub.to] + [group(g) for g in sub.groups]
        try:
            receipt = await self.adapter.send(
                sub.body,
                service=sub.service,
                version=sub.version,
                to=to_,
                cc=[to(a, s) for a, s in sub.cc],
                urgency=sub.urgency,
                classification=sub.classification,
                business_ref=sub.business_ref,
                ref_to=sub.reply_to,
                message_id=mid,
                timeout=self.f.send_timeout,
            )
        except MessageInvalid as exc:
            await self._fail(read, invalid(exc.code, exc.detail), mid)
        except HubRefused as exc:
            if exc.code == "MSG_DUPLICATE":  # the hub had this very file (same id = same name and content)
                await self._done(read, "duplicate", getattr(exc.error, "data", b"") or b"", mid)
            elif hub_transient(exc.code):
                self._later(name, f"the hub refused it for now ({exc.code})")
            else:
                await self._fail(read, hub_refusal(exc.code, exc.title, exc.reason), mid)
        except (RequestTimeout, HubUnavailable) as exc:
            self._later(name, f"no receipt from the hub ({exc.code})")
        except ValueError as exc:  # a recipient the envelope model refuses (e.g. both agency and group)
            await self._fail(read, invalid("SDK_INVALID_FIELD", str(exc)), mid)
        else:
            await self._done(read, receipt.outcome, receipt.raw, mid)

    async def _done(self, read: _Read, outcome: str, note: bytes, mid: str) -> None:
        self.counts[outcome if outcome in self.counts else "accepted"] += 1
        try:
            dest = await asyncio.to_thread(self._move, read, self.f.sent, note, "receipt.xml")
        except OSError as exc:
            self._later(read.name, f"could not move it to sent/ ({type(exc).__name__})")
            return
        self._forget(read.name)
        log.info(
            "outbox file sent: %s",
            outcome,
            extra=self._x(file=read.name, message_id=mid, outcome=outcome, moved_to=dest),
        )

    async def _fail(self, read: _Read, r: FileRefused, mid: str | None) -> None:
        self.counts["failed"] += 1
        text = reason_text(r, file=read.name, sha256=read.sha256, message_id=mid, at=datetime.now(CST))
        try:
            dest = await asyncio.to_thread(self._move, read, self.f.failed, text.encode("utf-8"), "reason.txt")
        except OSError as exc:
            self._later(read.name, f"could not move it to failed/ ({type(exc).__name__})")
            return
        self._forget(read.name)
        log.warning(
            "outbox file failed: %s", r.code, extra=self._x(file=read.name, message_id=mid, code=r.code, moved_to=dest)
        )

    def _move(self, read: _Read, folder: Path, note: bytes, suffix: str) -> str:
        """Write the note (receipt or reason) beside the file's new place, then move the file there — unless its
        writer replaced it meanwhile (then it is taken again on the next look)."""
        dest, stem, k = read.name, f"{read.name[:-4]}.{read.sha256[:12]}", 1
        while (folder / dest).exists():  # a file of that name was sent (or failed) before: keep both, and both notes
            dest = f"{stem}.xml" if k == 1 else f"{stem}.{k}.xml"
            k += 1
        write_atomic(folder, f"{dest}.{suffix}", note)
        src = self.f.outbox / read.name
        now = src.stat()
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (read.stat.st_ino, read.stat.st_size, read.stat.st_mtime_ns):
            raise FileChangedError(read.name)
        os.replace(src, folder / dest)
        _fsync_dir(folder)
        _fsync_dir(self.f.outbox)
        return dest


class FileChangedError(OSError):
    """The outbox file was replaced while it was being sent."""
