"""The fault scenarios of issue 16, shared by the tests (``tests/faults/test_faults.py``, a reduced form in
``make test``) and ``make faults`` (``scripts/faults/run.py``: every fault in full, with the table).

Each scenario runs on a ``Lab`` — a PostgreSQL instance and RabbitMQ node(s) of the tests' own
(``tests/faults/instances.py``) — with an installation of its own (database, namespace, state directory, the demo
directory, enrolled systems: ``tests/integration/harness.py``'s ``Hub``), ``hub run --workers 2`` as processes, a
real sender (signed ``document.official`` messages from ``county-220122-oa`` to the group ``county-bureaus:220100``:
two recipients, so two deliveries and one receipt a message) publishing with confirms and publishing again what
was not confirmed (at-least-once, as an agency's client does), and a collector that reads both recipients' queues
and verifies every delivery's hub signature. While the traffic flows the scenario does its harm; afterwards it
waits until every message the sender published has reached every recipient, or an operator-visible state (a
refusal or quarantine answered to the sender, a dead letter in ``<ns>.dead``), stops the hub with SIGTERM and runs
``hub evidence verify``.

A ``Row`` is what the table prints: fault, messages sent, delivered (reached every recipient), duplicates (extra
copies at a recipient — each carries a message id the sender sent), lost (neither delivered nor visible to an
operator), the evidence chain's verdict.

``recipient_offline(..., expiring=k)`` also has the sender send ``k`` messages to the offline recipient alone whose
envelope ``Expires`` falls while it is away: none may reach it, and for each the sender must get exactly one
hub-signed ``hub.error`` ``DELIVERY_EXPIRED`` naming it (``hub/pipeline/expired.py``). They count in ``sent``; one
answered so is operator-visible (its letter waits in ``<ns>.dead``, the sender was told), not lost; the row says
``k expired → m signed DELIVERY_EXPIRED`` (``Row.expired``, ``Row.expired_told``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent / "integration"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from harness import SYSTEMS, Hub, document, now  # noqa: E402
from instances import PgInstance, RabbitNode  # noqa: E402

from hub.envelope import Envelope, Recipient, parse  # noqa: E402
from hub.errors import HubError  # noqa: E402
from hub.settings import Settings  # noqa: E402

SENDER = "county-220122-oa"
PEERS = ("county-220182-oa", "county-220183-oa")
GROUP = "county-bureaus:220100"


@dataclass
class Row:
    fault: str
    sent: int
    delivered: int
    duplicates: int
    lost: int
    visible: int
    evidence: str
    seconds: float
    fast: bool = True
    notes: str = ""
    #: Messages sent to a recipient while it was away, expiring before it came back (``recipient_offline``).
    expired: int = 0
    #: Of those, how many never reached it and were answered with exactly one hub-signed ``DELIVERY_EXPIRED``.
    expired_told: int = 0

    def line(self) -> str:
        visible = str(self.visible)
        if self.expired:
            visible += f" ({self.expired} expired → {self.expired_told} signed DELIVERY_EXPIRED)"
        return (
            f"| {self.fault} | {'on' if self.fast else 'off'} | {self.sent} | {self.delivered} | {self.duplicates} | "
            f"{visible} | {self.lost} | {self.evidence} | {self.seconds:.0f} |"
        )


TABLE_HEAD = (
    "| fault 故障 | HUB_AMQP_FAST | sent 发送 | delivered 送达 | duplicates 重复 | operator-visible 待处理 | lost 丢失 | "
    "evidence chain 证据链 | s |\n|---|---|---:|---:|---:|---:|---:|---|---:|"
)


# --------------------------------------------------------------------------------------------- the lab


class Lab:
    """A PostgreSQL instance and one RabbitMQ node of our own (more nodes: ``cluster``), under ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pg = PgInstance(base / "pg")
        self.node = RabbitNode(base, f"hubfault{uuid.uuid4().hex[:6]}")
        self.mount: Path | None = None

    def start(self) -> None:
        """Both at once (each takes seconds to boot)."""
        import threading

        failed: list[BaseException] = []

        def pg() -> None:
            try:
                self.pg.init()
                self.pg.start()
            except BaseException as exc:
                failed.append(exc)

        t = threading.Thread(target=pg)
        t.start()
        try:
            self.node.start()
        finally:
            t.join()
        if failed:
            raise failed[0]

    def close(self) -> None:
        self.node.destroy()
        if self.mount is not None:
            subprocess.run(["umount", "-l", str(self.mount)], check=False, capture_output=True)
        self.pg.destroy()

    def settings(self, tag: str, *, tablespace: str | None = None, **overrides: Any) -> Settings:
        db = f"hub_{tag}_{uuid.uuid4().hex[:6]}"
        self.pg.psql(f'CREATE DATABASE "{db}"' + (f" TABLESPACE {tablespace}" if tablespace else ""))
        state = self.base / "state" / db
        state.mkdir(parents=True)
        values: dict[str, Any] = {
            "amqp_url": self.node.amqp_url,
            "amqp_management_url": self.node.management_url,
            "pg_dsn": self.pg.dsn(db),
            "namespace": f"fault-{tag}-{uuid.uuid4().hex[:6]}",
            "state_dir": state,
        }
        values.update(overrides)
        return Settings.from_env(**values)

    def small_tablespace(self, megabytes: int = 160) -> Path:
        """A tmpfs of ``megabytes`` mounted under the lab, owned by postgres, as the tablespace ``small``."""
        import pwd

        mount = self.base / "small-disk"
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700", "tmpfs", str(mount)], check=True)
        self.mount = mount
        pg = pwd.getpwnam("postgres")
        (mount / "ts").mkdir()
        os.chown(mount, pg.pw_uid, pg.pw_gid)
        os.chown(mount / "ts", pg.pw_uid, pg.pw_gid)
        self.pg.psql(f"CREATE TABLESPACE small LOCATION '{mount / 'ts'}'")
        return mount


# --------------------------------------------------------------------------------------------- traffic


def workers_of(pid: int) -> list[int]:
    """The pipeline worker processes under a ``hub run`` supervisor (multiprocessing's spawn children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@dataclass
class Traffic:
    """The sender's messages (signed before anything starts), what was confirmed, and what arrived where."""

    hub: Hub
    n: int
    payloads: list[tuple[Envelope, bytes]] = field(default_factory=list)
    confirmed: set[str] = field(default_factory=set)
    publishes: int = 0
    delivered: dict[str, Counter[str]] = field(default_factory=lambda: {p: Counter() for p in PEERS})
    answers: dict[str, str] = field(default_factory=dict)
    reading: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PEERS, True))
    sending_done: bool = False
    broker_errors: int = 0
    #: Messages sent to ``PEERS[1]`` alone, expiring while it is away (``send_expiring``): ids.
    expiring: set[str] = field(default_factory=set)
    #: The hub's verified (hub-signed) hub.error answers the sender got: original message id → {the error's own
    #: message id: code} (a copy read twice — a get whose ack was lost — is one answer; a second answer has its own id).
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Set to end the sending early (a run whose harms set the pace): what was confirmed by then is what was sent.
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def sign(self, k: int | None = None) -> None:
        """Sign ``k`` more messages (default: all ``n``)."""
        for _ in range(min(self.n - len(self.payloads), self.n if k is None else k)):
            data = self.hub.sign(SENDER, document(SENDER, [Recipient.to_group(GROUP)]))
            self.payloads.append((Envelope.from_tree(parse(data)), data))

    @property
    def ids(self) -> set[str]:
        return {env.message_id for env, _ in self.payloads} | self.expiring

    async def send_expiring(self, k: int, expires_s: float) -> float:
        """Send ``k`` signed messages to ``PEERS[1]`` alone whose envelope expires ``expires_s`` from now (published
        with confirms on the hub's test connection, again until confirmed); the monotonic time they expire at."""
        to = [Recipient.to(SYSTEMS[PEERS[1]])]
        expires = now() + timedelta(seconds=expires_s)
        at = time.monotonic() + expires_s
        part = []
        for _ in range(k):
            data = self.hub.sign(SENDER, document(SENDER, to, expires=expires))
            part.append((Envelope.from_tree(parse(data)), data))
        while True:
            try:
                await self.hub.publish(part)
                break
            except HubError:
                self.broker_errors += 1
                await asyncio.sleep(0.5)
        self.expiring.update(env.message_id for env, _ in part)
        return at

    def seen(self) -> set[str]:
        """Message ids that reached any recipient."""
        return set().union(*(set(c) for c in self.delivered.values()))

    def expiring_settled(self) -> bool:
        """Every expiring message was answered by the hub, or (wrongly) reached a recipient: nothing more to wait for."""
        reached = self.seen()
        return all(mid in self.errors or mid in reached for mid in self.expiring)

    def expired_told(self) -> set[str]:
        """The expiring messages that reached no recipient and whose sender got exactly one hub-signed hub.error, with
        the code DELIVERY_EXPIRED."""
        reached = self.seen()
        return {
            mid for mid in self.expiring - reached if list(self.errors.get(mid, {}).values()) == ["DELIVERY_EXPIRED"]
        }

    async def send(self, *, transport: Any = None, rate: float = 200.0, chunk: int = 20) -> None:
        """Publish every message at about ``rate`` a second in chunks; a chunk the broker did not confirm (broker
        gone, link stalled) is published again until it is — at-least-once, as an agency's client does."""
        from hub.pipeline.client import outgoing

        transport = transport or self.hub.transport
        start = time.monotonic()
        for i in range(0, self.n, chunk):
            if self.enough.is_set():
                break
            if len(self.payloads) < i + chunk:  # signed as it goes (a run whose harms set the pace)
                self.sign(i + chunk - len(self.payloads))
            part = self.payloads[i : i + chunk]
            due = start + i / rate
            if (pause := due - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            while True:
                try:
                    self.publishes += 1
                    await transport.publish_many(
                        [outgoing(transport, env, body, as_system=False) for env, body in part]
                    )
                    break
                except HubError:
                    self.broker_errors += 1
                    await asyncio.sleep(0.5)
            self.confirmed.update(env.message_id for env, _ in part)
        self.sending_done = True

    async def collect(self, stop: asyncio.Event) -> None:
        """Read both recipients' queues (each delivery's hub signature verified) and the sender's answers."""
        from hub.pipeline.client import read_reply

        hub = self.hub
        boxes = {s: hub.inbox(s) for s in (*PEERS, SENDER)}
        while not stop.is_set():
            got = 0
            for system, box in boxes.items():
                if system in self.reading and not self.reading[system]:
                    continue
                try:
                    batch = await box.take(max_messages=500)
                    if batch and system in self.reading and not self.reading[system]:
                        # It went away while this take was under way: what the take got goes back, unread.
                        await hub.transport.nack(batch, requeue=True)
                        continue
                    for m in batch:
                        opened = box.open_delivery(m.body)  # the hub's signature (and the originator's) verified
                        env = opened.envelope
                        if system == SENDER:
                            reply = read_reply(env)
                            if reply is not None and (reply.about not in self.answers or reply.kind == "error"):
                                self.answers[reply.about] = reply.outcome
                            if reply is not None and reply.kind == "error" and opened.originator is None:
                                self.errors.setdefault(reply.about, {})[env.message_id] = reply.outcome
                        else:
                            self.delivered[system][env.message_id] += 1
                    if batch:
                        await hub.transport.ack(batch)
                    got += len(batch)
                except HubError:
                    self.broker_errors += 1
                    await asyncio.sleep(0.5)
            if not got:
                await asyncio.sleep(0.1)

    def everywhere(self) -> set[str]:
        """Message ids that reached every recipient."""
        ids = set(self.delivered[PEERS[0]])
        for p in PEERS[1:]:
            ids &= set(self.delivered[p])
        return ids

    def done(self) -> bool:
        return self.sending_done and self.everywhere() >= self.confirmed and self.expiring_settled()


async def dead_letter_ids(hub: Hub) -> set[str]:
    """Message ids parked in ``<ns>.dead`` (looked at, put back for the operator)."""
    t = hub.transport
    seen: set[str] = set()
    held = []
    while batch := await t.fetch(t.names.dead_letter_queue, max_messages=500):
        held += batch
        seen.update(m.message_id or "" for m in batch)
    if held:
        await t.nack(held, requeue=True)
    return seen


# --------------------------------------------------------------------------------------------- one run


Harm = Callable[["Run"], Awaitable[str]]


@dataclass
class Run:
    """One scenario: an installation, ``hub run`` as processes, the traffic, the harm, the verdict."""

    lab: Lab
    fault: str
    n: int
    rate: float = 200.0
    workers: int = 2
    settle_s: float = 240.0
    #: End the sending once the harm is done (``sequence`` of harms that set the pace).
    until_harm_done: bool = False
    #: Messages that must arrive before a harm (and between two of ``kill_workers``); default a quarter of ``n``.
    step: int | None = None
    cleanups: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    hub: Hub = field(init=False)
    traffic: Traffic = field(init=False)
    proc: subprocess.Popen[bytes] | None = None
    settings: Settings | None = None

    async def __call__(self, harm: Harm, *, sender: Any = None) -> Row:
        started = time.monotonic()
        self.timings: dict[str, float] = {}
        settings = self.settings or self.lab.settings(self.fault.split(" ")[0].replace("_", "-")[:20])
        self.hub = hub = Hub(settings)
        await hub.setup()
        self.traffic = traffic = Traffic(hub, self.n)
        self.timings["setup"] = time.monotonic() - started
        traffic.sign(None if not self.until_harm_done else 200)  # the rest as the sending goes
        self.timings["signed"] = time.monotonic() - started
        stop = asyncio.Event()
        collector: asyncio.Task[None] | None = None
        notes = ""
        try:
            self.proc = hub.run_hub(workers=self.workers)
            collector = asyncio.create_task(traffic.collect(stop))
            sending = asyncio.create_task(
                traffic.send(transport=await sender(self) if sender else None, rate=self.rate)
            )
            notes = await harm(self)
            if self.until_harm_done:
                traffic.enough.set()
            self.timings["harmed"] = time.monotonic() - started
            await sending
            self.timings["sent"] = time.monotonic() - started
            deadline = time.monotonic() + self.settle_s
            while time.monotonic() < deadline and not traffic.done():
                await asyncio.sleep(0.5)
                if self.proc.poll() is not None:
                    raise AssertionError(f"hub run exited with {self.proc.returncode}: {self.log_tail()}")
            await asyncio.sleep(1.0)  # a late duplicate, if any, is counted too
            stop.set()
            await collector
            collector = None
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=120)
            self.proc = None
            if code != 0:
                notes += f" hub run exited with {code}"
            self.timings["settled"] = time.monotonic() - started
            verify = await hub.cli("evidence", "verify", timeout=300)
            self.timings["verified"] = time.monotonic() - started
            evidence = "ok 完整" if verify.returncode == 0 else "BROKEN " + (verify.stdout + verify.stderr)[-300:]
            missing = traffic.confirmed - traffic.everywhere()
            seen = traffic.seen()
            # An expiring message (one recipient, away past its Expires) that reached it counts as delivered; one
            # that did not is operator-visible when its sender was told (a hub-signed hub.error) or it is in ns.dead.
            reached = traffic.expiring & seen
            unanswered = traffic.expiring - reached
            visible: set[str] = set()
            if missing or unanswered:
                refused = {mid for mid, outcome in traffic.answers.items() if outcome not in ("accepted", "duplicate")}
                dead = await dead_letter_ids(hub)
                visible = (missing & (refused | dead)) | (unanswered & (set(traffic.errors) | dead))
            duplicates = sum(c - 1 for counts in traffic.delivered.values() for c in counts.values() if c > 1)
            stray = seen - traffic.ids
            if stray:
                notes += f" {len(stray)} deliveries with ids nobody sent"
            told = traffic.expired_told()
            if traffic.expiring and told != traffic.expiring:
                twice = sum(1 for mid in unanswered if len(traffic.errors.get(mid, {})) > 1)
                codes = Counter(
                    c for mid in unanswered for c in traffic.errors.get(mid, {}).values() if c != "DELIVERY_EXPIRED"
                )
                notes += (
                    f"; of the {len(traffic.expiring)} expiring messages {len(reached)} reached {PEERS[1]},"
                    f" {len(unanswered - set(traffic.errors))} unanswered, {twice} answered more than once,"
                    f" other codes {dict(codes)}"
                )
            return Row(
                fault=self.fault,
                sent=len(traffic.confirmed) + len(traffic.expiring),
                delivered=len(traffic.everywhere() & traffic.confirmed) + len(reached),
                duplicates=duplicates,
                lost=len(missing - visible) + len(unanswered - visible) + len(stray),
                visible=len(visible),
                evidence=evidence,
                seconds=time.monotonic() - started,
                fast=settings.amqp_fast,
                notes=notes.strip(),
                expired=len(traffic.expiring),
                expired_told=len(told),
            )
        finally:
            stop.set()
            for cleanup in self.cleanups:
                with contextlib.suppress(Exception):
                    await cleanup()
            if collector is not None:
                collector.cancel()
                with contextlib.suppress(BaseException):
                    await collector
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
            with contextlib.suppress(Exception):
                await hub.close()

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.hub.settings.state_dir / "hub.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return (self.hub.settings.state_dir / "hub.log").read_text(errors="replace")
        except OSError:
            return ""

    async def until(self, what: str, cond: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.fault}: {what} did not happen within {timeout:.0f} s: {self.log_tail()}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"hub run exited with {self.proc.returncode}: {self.log_tail()}")
            await asyncio.sleep(0.1)

    def arrived(self) -> int:
        return len(self.traffic.delivered[PEERS[0]])

    async def progress(self, k: int | None = None) -> None:
        """Wait until ``k`` (default ``step`` or a quarter of the run) more messages reached the first recipient, or
        the sender is done."""
        mark, k = self.arrived(), k or self.step or self.n // 4
        await self.until("progress", lambda: self.arrived() >= mark + k or self.traffic.sending_done)


# --------------------------------------------------------------------------------------------- the harms


def kill_workers(times: int) -> Harm:
    """SIGKILL a worker ``times`` times while the traffic flows, each time once the replacement is up and more
    messages arrived."""

    async def harm(run: Run) -> str:
        assert run.proc is not None
        hub_pid = run.proc.pid
        killed: list[int] = []
        step = run.step or max(1, run.n // (times + 2))
        seen: list[int] = []

        def two_workers() -> bool:  # one read of /proc, kept: a second read may catch a replacement mid-spawn
            seen[:] = workers_of(hub_pid)
            return len(seen) == 2

        for k in range(times):
            await run.progress(step)
            await run.until("two workers", two_workers)
            victim = seen[k % 2]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        await run.until(
            "replacement", lambda: len(workers_of(hub_pid)) == 2 and not set(killed) & set(workers_of(hub_pid))
        )
        return f"{times} workers killed"

    return harm


def restart_broker(down_s: float = 3.0, *, kill: bool = False) -> Harm:
    """Stop the RabbitMQ node mid-run — gracefully, or with SIGKILL (``kill``) — wait, start it again on the same
    data."""

    async def harm(run: Run) -> str:
        await run.progress()
        await asyncio.to_thread(run.lab.node.kill if kill else run.lab.node.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(run.lab.node.start)
        return "broker killed and started" if kill else "broker stopped and started"

    return harm


def restart_postgres(down_s: float = 3.0) -> Harm:
    async def harm(run: Run) -> str:
        await run.progress()
        await asyncio.to_thread(run.lab.pg.stop, "fast")
        await asyncio.sleep(down_s)
        await asyncio.to_thread(run.lab.pg.start)
        return "PostgreSQL stopped and started"

    return harm


def recipient_offline(
    offline_s: float, *, after_sending: bool = True, expiring: int = 0, expires_s: float | None = None
) -> Harm:
    """One recipient reads nothing from a quarter of the run until ``offline_s`` after the sender finished (or, not
    ``after_sending``, for ``offline_s`` while the traffic flows).

    ``expiring``: as it goes away, the sender also sends it (alone) that many messages whose envelope expires
    ``expires_s`` later (default half of ``offline_s``); it stays away at least until then (and a second more), and
    once it is back the harm waits (up to 60 s) until the sender has an answer for each — the hub-signed hub.error
    ``DELIVERY_EXPIRED`` the run's verdict checks (``Traffic.expired_told``)."""
    ttl = offline_s / 2 if expires_s is None else expires_s

    async def harm(run: Run) -> str:
        traffic = run.traffic
        await run.progress()
        traffic.reading[PEERS[1]] = False
        expire_at = await traffic.send_expiring(expiring, ttl) if expiring else None
        if after_sending:
            await run.until("sending done", lambda: traffic.sending_done, timeout=600)
        else:
            await asyncio.sleep(offline_s / 2)
        waiting = await run.hub.depth(PEERS[1])
        await asyncio.sleep(offline_s if after_sending else offline_s / 2)
        if expire_at is not None and (left := expire_at + 1.0 - time.monotonic()) > 0:
            await asyncio.sleep(left)
        told_while_away = sum(1 for mid in traffic.expiring if mid in traffic.errors)
        traffic.reading[PEERS[1]] = True
        note = f"{PEERS[1]} offline; {waiting}+ deliveries waited"
        if expiring:
            back = time.monotonic()
            while time.monotonic() < back + 60.0 and not traffic.expiring_settled():
                await asyncio.sleep(0.1)
            answered = sum(1 for mid in traffic.expiring if mid in traffic.errors)
            note += (
                f"; {expiring} sent to it expiring {ttl:.0f} s later: {answered} answered ({told_while_away} while it"
                f" was away, the rest {time.monotonic() - back:.1f} s after it came back)"
            )
        return note

    return harm


def disk_full(full_s: float = 8.0) -> Harm:
    """Fill the tmpfs holding the database's tablespace; once the hub meets the full disk (PostgreSQL may first use
    pages it added to a table in advance), leave it full for ``full_s``, then free it."""

    async def harm(run: Run) -> str:
        mount = run.lab.mount
        assert mount is not None
        await run.progress()
        log = run.hub.settings.state_dir / "hub.log"
        offset = log.stat().st_size
        filler = mount / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (1 << 20))

        def said() -> bool:
            with open(log, "rb") as f:
                f.seek(offset)
                seen = f.read()
                return b"DiskFull" in seen or b"disk is full" in seen

        try:
            await run.until("the hub meeting the full disk", said, timeout=60)
        except AssertionError:
            filler.unlink()
            return "disk full: the hub never met it within 60 s; hub log names it: False"
        before = run.arrived()
        await asyncio.sleep(full_s)
        during = run.arrived() - before
        filler.unlink()
        return f"disk full {full_s:.0f} s after the hub met it: {during} delivered meanwhile; hub log names it: True"

    return harm


def sequence(*harms: Harm) -> Harm:
    """The harms one after the other, each once more messages arrived."""

    async def harm(run: Run) -> str:
        notes = []
        for h in harms:
            t = time.monotonic()
            note = await h(run)
            if note:
                notes.append(f"{note} [{time.monotonic() - t:.0f} s]")
        return "; ".join(n for n in notes if n)

    return harm


def caught_up() -> Harm:
    """No harm: wait until everything confirmed so far reached every recipient (the messages a fault deferred are
    back from the retry queues), so that the next fault does not meet them on their retry and send them on to the
    next, longer back-off."""

    async def harm(run: Run) -> str:
        sent = set(run.traffic.confirmed)
        await run.until("catching up", lambda: run.traffic.everywhere() >= sent, timeout=180)
        return ""

    return harm


def nothing() -> Harm:
    async def harm(run: Run) -> str:
        return ""

    return harm


# --------------------------------------------------------------------------------------------- a slow link


class SlowLink:
    """A TCP proxy between a sender and the broker: every chunk is delayed by ``delay_s``; ``stall(s)`` holds all
    data for a while (the link is up, nothing moves); ``cut()`` closes every connection (the sender's client
    reconnects through the proxy)."""

    def __init__(self, target_port: int, delay_s: float = 0.02) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.server: asyncio.Server | None = None
        self.port = 0
        self.resume = asyncio.Event()
        self.resume.set()
        self.writers: list[asyncio.StreamWriter] = []
        self.bytes = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.delay_s)
                await self.resume.wait()
                writer.write(data)
                self.bytes += len(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def stall(self) -> None:
        self.resume.clear()

    def go(self) -> None:
        self.resume.set()

    def cut(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()


def slow_link(stall_s: float = 5.0) -> tuple[Callable[[Run], Awaitable[Any]], Harm]:
    """(the sender's transport through a SlowLink, the harm: stall the link, let it go, cut it)."""
    link: dict[str, Any] = {}

    async def sender(run: Run) -> Any:
        from hub.transport import Transport

        proxy = SlowLink(run.lab.node.port)
        await proxy.start()
        link["proxy"] = proxy
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?heartbeat=10"
        t = await Transport.connect(run.hub.settings, url=url, client_name="slow-sender")
        run.cleanups += [t.close, proxy.close]  # after the sending (and the whole run)
        return t

    async def harm(run: Run) -> str:
        proxy: SlowLink = link["proxy"]
        await run.progress()
        proxy.stall()
        await asyncio.sleep(stall_s)
        proxy.go()
        await run.progress()
        proxy.cut()
        await run.progress()
        return f"the sender's link stalled {stall_s:.0f} s, then cut"

    return sender, harm


__all__ = [
    "GROUP",
    "PEERS",
    "SENDER",
    "TABLE_HEAD",
    "Lab",
    "Row",
    "Run",
    "SlowLink",
    "caught_up",
    "disk_full",
    "kill_workers",
    "nothing",
    "recipient_offline",
    "restart_broker",
    "restart_postgres",
    "sequence",
    "slow_link",
    "workers_of",
]
