"""The demo's scenario (演示场景): a morning of real traffic between Jilin's forestry agencies, played through a
running hub by the agency systems themselves, and checked as it goes.

The envelopes are the XML files next to this module (``NN-*.xml``): readable examples of what agencies send, valid
as they stand (``hub validate hub/demo_scenario/*.xml``). Before sending, :func:`stamp` gives each one a fresh
MessageId and moves Created/Expires — and every other date in it, by the same amount — to now, so the hub's
freshness check passes on any day; a reference to an earlier file's MessageId (a receipt's RefToMessageId,
ConversationId, DocumentMessageId) is pointed at what that file was actually sent as.

Every system signs with its own key and publishes as its own RabbitMQ user (``connect_as``), so the broker vouches
for the publisher; every recipient reads its own queue and verifies the hub's signature on what it got
(``Inbox``). Each step checks what the hub did — who received what, which receipt or error came back, what
PostgreSQL recorded — so the demo is also a self-test: a step that does not behave prints ``✘`` and why, and
:meth:`Scenario.run` reports it.

Messages addressed to ``city-220100-oa`` (长春市林业局办公系统) are put back in its queue after they were checked,
so that ``hub receive --system city-220100-oa`` has something to show afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Any

from lxml import etree

from hub.demo_scenario.adapters import ADAPTER_STEPS
from hub.demo_scenario.processes import PROCESS_STEPS
from hub.envelope import Envelope, parse, qn, to_bytes
from hub.errors import HubError, title_of
from hub.pipeline.client import (
    ERROR_NS,
    RECEIPT_NS,
    Inbox,
    Reply,
    connect_as,
    enroll,
    load_signer,
    open_hub_signed,
    outgoing,
    park_refused,
    read_reply,
)
from hub.settings import Settings

__all__ = [
    "CHANGCHUN",
    "KEEP_FOR_OPERATOR",
    "PROVINCE",
    "TEMPLATES",
    "Outcome",
    "Scenario",
    "load_template",
    "stamp",
    "systems_used",
]

TEMPLATES = Path(__file__).resolve().parent
CN_TZ = timezone(timedelta(hours=8))

PROVINCE = "11220000013544357T"  # 吉林省林业和草原局
CHANGCHUN = "11220100013544550M"  # 长春市林业局

#: The system whose deliveries stay in its queue for the operator to read after the demo.
KEEP_FOR_OPERATOR = "city-220100-oa"
CHANGCHUN_CODE = "11220100013544550M"  # 长春市林业局
#: 九台区林业局 and its system, added to the directory while the hub runs (step l2) and taken out again.
JIUTAI, JIUTAI_CODE = "county-220113-oa", "11220113013551234U"
JIUTAI_AGENCY_XML = f"""  <Agency code="{JIUTAI_CODE}" name="九台区林业局" name-en="Jiutai District Forestry Bureau"
          division="220113" level="county" kind="bureau" parent="{CHANGCHUN_CODE}" zone="extranet">
    <System id="{JIUTAI}" name="九台区林业局办公系统" name-en="Jiutai bureau office system"
            accepts="document.* info.* emergency.* meeting.notice approval.status approval.supervision data.response"/>
  </Agency>

"""


def with_jiutai(directory_xml: str, certificates: tuple[str, ...] = ()) -> str:
    """The directory file's text with 九台区林业局 added among 长春's counties (before 榆树市林业局), its system's
    registered ``certificates`` (``cert-sha256``) when given; ValueError when the file has no 榆树市林业局 to put it
    beside."""
    anchor = '  <Agency code="11220182013552847D"'  # 榆树市林业局
    if anchor not in directory_xml:
        raise ValueError("routes/directory.xml has no 榆树市林业局 to add 九台区林业局 beside")
    agency = JIUTAI_AGENCY_XML
    if certificates:
        agency = agency.replace(
            f'<System id="{JIUTAI}" ', f'<System id="{JIUTAI}" cert-sha256="{" ".join(certificates)}" '
        )
    return directory_xml.replace(anchor, agency + anchor, 1)


#: After how long without a poll the demo's gateway lets an HTTPS system's queue go (``HUB_GATEWAY_IDLE_S``; the
#: gateway's own default is 120 s): short enough for step l to show it.
GATEWAY_IDLE_S = 3


def gateway_idle_s() -> float:
    """The demo gateway's idle time: ``HUB_GATEWAY_IDLE_S`` when the caller set it, else ``GATEWAY_IDLE_S``."""
    given = os.environ.get("HUB_GATEWAY_IDLE_S", "").strip()
    return float(given) if (given.isascii() and given.isdigit()) else float(GATEWAY_IDLE_S)


#: Copies of a tampered report one compromised system floods the hub with (step w, issue 16).
FLOOD_COPIES = 200

#: Senders and named recipients of the scenario (the city bureaus of step 1 come from the directory).
_FIXED_SYSTEMS = (
    "prov-220000-oa",
    "prov-220000-secure",
    "prov-220000-duty",
    "county-220122-oa",
    "county-220182-oa",
    "county-220183-oa",
    "county-220281-oa",
    "city-220100-oa",
    "city-220100-secure",
    "city-220200-oa",
)

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

OK, FAIL = "✔", "✘"


# ---------------------------------------------------------------------------------------------------- envelopes


def load_template(name: str) -> etree._Element:
    """Parse one scenario file safely (the same intake the hub uses)."""
    return parse((TEMPLATES / name).read_bytes())


def stamp(root: etree._Element, *, now: datetime, ids: dict[str, str]) -> str:
    """Make a template sendable now, in place; returns the new MessageId.

    ``ids`` maps template MessageIds to the ids they were sent as: references to an earlier file are rewritten to
    the real id, and this file's own id is added to it. Dates and timestamps all move by (now − Created), so the
    message stays internally consistent (a report's ReportedAt stays five minutes before it was created)."""
    header = root[0]
    created = header.find(qn("Created"))
    own = header.find(qn("MessageId"))
    if created is None or created.text is None or own is None or own.text is None:
        raise ValueError("a scenario envelope needs MessageId and Created")
    delta = now - datetime.fromisoformat(created.text)
    template_id = own.text
    new_id = str(uuid.uuid4())
    ids[template_id] = new_id
    for el in root.iter():
        if not isinstance(el.tag, str) or el.text is None:
            continue  # comments and processing instructions
        text = el.text.strip()
        if _UUID.match(text) and text in ids:
            el.text = ids[text]
        elif _DATETIME.match(text):
            el.text = (datetime.fromisoformat(text) + delta).isoformat(timespec="seconds")
        elif _DATE.match(text):
            noon = datetime.combine(date.fromisoformat(text), dtime(12), CN_TZ)
            el.text = (noon + delta).date().isoformat()
    return new_id


def systems_used(directory: Any) -> dict[str, str]:
    """Every system the scenario sends from or delivers to → its agency code (what gets enrolled)."""
    found = {s: directory.system(s).agency for s in _FIXED_SYSTEMS}
    for s in _city_systems(directory, "document.official"):
        found[s.id] = s.agency
    return found


def _city_systems(directory: Any, service: str) -> list[Any]:
    """What step 1 must reach, from the directory model itself (not the router): every system of every city-level
    agency that accepts ``service``."""
    return [
        s
        for a in directory.agencies()
        if a.level == "city"
        for s in directory.systems_of(a.code)
        if s.accepts_service(service)
    ]


# ---------------------------------------------------------------------------------------------------- mailboxes


@dataclass(slots=True)
class Got:
    """One message taken from a queue and verified as hub-signed."""

    incoming: Any
    envelope: Envelope

    @property
    def kind(self) -> str:
        return str((self.incoming.headers or {}).get("x-hub-kind", ""))


class Mailboxes:
    """The agency side: one connection per system, logged in as that system's own RabbitMQ user."""

    def __init__(self, settings: Settings, *, verifier: Any, registry: Any) -> None:
        self.settings = settings
        self.verifier = verifier
        self.registry = registry
        self._transports: dict[str, Any] = {}
        self._signers: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        #: Messages that failed the hub-signature check (must stay empty).
        self.unverified: list[str] = []

    async def transport(self, system: str) -> Any:
        async with self._lock:
            t = self._transports.get(system)
            if t is None:
                t = await connect_as(self.settings, system)
                self._transports[system] = t
            return t

    async def close(self) -> None:
        for t in self._transports.values():
            await t.close()
        self._transports.clear()

    def signer(self, system: str) -> Any:
        s = self._signers.get(system)
        if s is None:
            s = self._signers[system] = load_signer(self.settings, system)
        return s

    def sign(self, system: str, root: etree._Element) -> tuple[Envelope, bytes]:
        self.signer(system).sign(root)
        data = to_bytes(root)
        return Envelope.from_tree(parse(data, max_bytes=self.settings.max_message_bytes)), data

    def open(self, data: bytes) -> Any:
        """Verify bytes the hub signed that came another way (the HTTPS gateway's responses)."""
        return open_hub_signed(self.settings, self.verifier, self.registry, data)

    async def publish(self, system: str, env: Envelope, data: bytes) -> None:
        t = await self.transport(system)
        await t.publish_many([outgoing(t, env, data, as_system=True)])

    async def collect(
        self,
        system: str,
        want: Callable[[Got], bool],
        *,
        expect: int | None,
        timeout: float = 10.0,
        keep: bool = False,
    ) -> list[Got]:
        """Take what ``want`` selects from ``system``'s queue: wait until ``expect`` such messages arrived (or the
        timeout), or with ``expect=None`` read what is there now. Everything else goes back to the queue; the
        selected ones are acknowledged, or also put back when ``keep``."""
        t = await self.transport(system)
        inbox = Inbox(self.settings, t, system, verifier=self.verifier, registry=self.registry)
        got: list[Got] = []
        mine: list[Any] = []
        held: list[Any] = []
        bad: list[tuple[Any, HubError]] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                batch = await inbox.take()
                for m in batch:
                    try:
                        g = Got(m, inbox.open(m.body))
                    except HubError as exc:
                        self.unverified.append(f"{system}: {m.message_id}: {exc.describe()}")
                        bad.append((m, exc))
                        continue
                    if want(g):
                        got.append(g)
                        mine.append(m)
                    else:
                        held.append(m)
                if expect is None:
                    if not batch:
                        break
                    continue
                if len(got) >= expect or time.monotonic() >= deadline:
                    break
                if not batch:
                    await asyncio.sleep(0.03)
            if mine:
                await (t.nack(mine, requeue=True) if keep else t.ack(mine))
            if bad:  # never acted on, never acknowledged away: parked with the reason (counted in self.unverified)
                failed = await park_refused(t, system, [(m, exc.code, exc.detail) for m, exc in bad])
                await t.ack([m for m, _ in bad if m not in failed])
                if failed:
                    await t.nack(failed, requeue=False)
        finally:
            if held:
                await t.nack(held, requeue=True)
        return got

    async def deliveries(
        self, system: str, message_id: str, *, expect: int | None = 1, timeout: float = 10.0, keep: bool = False
    ) -> list[Got]:
        return await self.collect(
            system,
            lambda g: g.kind == "delivery" and g.envelope.message_id == message_id,
            expect=expect,
            timeout=timeout,
            keep=keep,
        )

    async def replies(self, system: str, message_id: str, *, expect: int = 1, timeout: float = 20.0) -> list[Reply]:
        """The hub's receipts and errors about ``message_id``, in arrival order."""
        got = await self.collect(
            system,
            lambda g: g.kind in ("receipt", "error") and g.incoming.correlation_id == message_id,
            expect=expect,
            timeout=timeout,
        )
        return [r for r in (read_reply(g.envelope) for g in got) if r is not None]

    async def error_for_digest(self, system: str, digest: str, *, timeout: float = 20.0) -> list[Reply]:
        """A hub.error about bytes whose signature could not be trusted carries no message id, only the SHA-256 of
        what the hub received: match on that."""
        return await self.errors_for_digests(system, {digest}, timeout=timeout)

    async def errors_for_digests(self, system: str, digests: set[str], *, timeout: float = 20.0) -> list[Reply]:
        """The hub.errors about any of ``digests`` (hex SHA-256 of what the hub received), one each awaited."""

        def want(g: Got) -> bool:
            body = g.envelope.body
            return g.kind == "error" and body is not None and body.findtext(f"{{{ERROR_NS}}}ReceivedDigest") in digests

        got = await self.collect(system, want, expect=len(digests), timeout=timeout)
        return [r for r in (read_reply(g.envelope) for g in got) if r is not None]

    async def drain(self, system: str) -> int:
        """Acknowledge whatever is waiting in a system's queue, unread: leftovers of an earlier, interrupted run (or
        of an earlier CA, which nothing here would verify any more)."""
        t = await self.transport(system)
        queue = t.names.system_queue(system)
        total = 0
        while batch := await t.fetch(queue, max_messages=500):
            await t.ack(batch)
            total += len(batch)
        return total


def _tampered(report: bytes) -> bytes:
    """The signed statistics report (08) with one byte changed after signing: 1.2万亩 → 7.2万亩 (SIG_DIGEST)."""
    return report.replace("完成秋季造林1.2万亩".encode(), "完成秋季造林7.2万亩".encode(), 1)


def _diff(what: str, states: Mapping[str, str], expected: Iterable[str]) -> str:
    """A short account of how recorded delivery states differ from "delivered to exactly ``expected``"."""
    expected = set(expected)
    parts = []
    if missing := sorted(expected - set(states)):
        parts.append(f"no delivery for {', '.join(missing)}")
    if extra := sorted(set(states) - expected):
        parts.append(f"unexpected deliveries to {', '.join(extra)}")
    if odd := sorted(f"{s}={st}" for s, st in states.items() if s in expected and st != "delivered"):
        parts.append(f"not delivered: {', '.join(odd)}")
    return f"{what} " + "; ".join(parts)


def receipt_systems(reply: Reply) -> list[str]:
    body = reply.envelope.body
    if body is None:
        return []
    q = f"{{{RECEIPT_NS}}}"
    return [r.findtext(q + "System") or "" for r in body.iter(q + "Recipient")]


# ---------------------------------------------------------------------------------------------------- steps


@dataclass(slots=True)
class Outcome:
    """One step: the lines it printed and what did not behave (empty when it passed)."""

    key: str
    title: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def expect(self, condition: bool, problem: str) -> bool:
        if not condition:
            self.problems.append(problem)
        return condition


CliRunner = Callable[[Sequence[str]], Awaitable[tuple[int, str]]]


class Scenario:
    """Plays the steps against a running hub. Build it, ``await prepare()``, ``await run()``, ``await close()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        directory: Any,
        pool: Any,
        run_cli: CliRunner,
        hub_alive: Callable[[], bool] = lambda: True,
        out: Callable[[str], None] = print,
        timeout: float = 20.0,
        hub_log: Path | None = None,
        workers: int = 1,
        gateway_url: str = "",
        ops_url: str = "",
        operators: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        from hub.trust import TrustStore, Verifier
        from hub.validation import SchemaRegistry

        self.settings = settings
        self.directory = directory
        self.pool = pool
        self.run_cli = run_cli
        self.hub_alive = hub_alive
        self.out = out
        self.timeout = timeout
        #: The hub's JSON log and its number of workers (the key-rotation step waits until each switched).
        self.hub_log = hub_log
        self.workers = workers
        #: The HTTPS gateway ``hub run --gateway`` serves (the portal's step takes part through it only).
        self.gateway_url = gateway_url
        #: The ops page ``hub ops`` serves, and the demo's account of each role there: role → (name, password).
        self.ops_url = ops_url
        self.operators = operators or {}
        store = TrustStore.load(settings.state_dir / "pki")
        self.mail = Mailboxes(settings, verifier=Verifier(store), registry=SchemaRegistry(settings.schemas_dir))
        self.ids: dict[str, str] = {}
        self.sent: dict[str, Envelope] = {}
        self.outcomes: list[Outcome] = []

    # -- set-up ------------------------------------------------------------------------------------------------

    async def enroll_all(self) -> tuple[int, int]:
        """Key + certificate for every system the scenario uses (kept from earlier runs); (new, total)."""
        from hub.pipeline.client import credential_paths

        used = systems_used(self.directory)
        new = 0
        for system, agency in used.items():
            key, cert = credential_paths(self.settings, system)
            if not (key.exists() and cert.exists()):
                new += 1
            await enroll(self.settings, system, agency)
        return new, len(used)

    async def clear_queues(self) -> int:
        """Empty the queues of every system used: leftovers of an interrupted run would confuse the checks."""
        counts = await asyncio.gather(*(self.mail.drain(s) for s in systems_used(self.directory)))
        return sum(counts)

    async def close(self) -> None:
        await self.mail.close()

    # -- helpers -----------------------------------------------------------------------------------------------

    def name(self, system: str) -> str:
        return str(self.directory.system(system).name)

    def agency_name(self, code: str) -> str:
        return str(self.directory.agency(code).name)

    def _prepare(self, template: str, *, now: datetime | None = None) -> etree._Element:
        root = load_template(template)
        stamp(root, now=now or datetime.now(CN_TZ), ids=self.ids)
        return root

    async def send(self, system: str, template: str) -> tuple[Envelope, bytes]:
        env, data = self.mail.sign(system, self._prepare(template))
        await self.mail.publish(system, env, data)
        self.sent[template] = env
        return env, data

    async def _db(self, sql: str, *args: Any) -> list[Any]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    async def delivery_states(self, message_id: str, *, settle_s: float = 10.0) -> dict[str, str]:
        """The recorded state of each delivery of ``message_id``. A recipient can hold its delivery (and the sender
        its receipt) a moment before the worker has recorded it as delivered: the worker publishes first and
        records the broker's confirmation in the same batch right after. So a ``pending`` state is read again
        until it settles, for up to ``settle_s``; what is still pending then is returned as it is."""
        deadline = time.monotonic() + settle_s
        while True:
            rows = await self._db(
                "SELECT recipient_system, state FROM deliveries WHERE message_id = $1", uuid.UUID(message_id)
            )
            states = {r["recipient_system"]: r["state"] for r in rows}
            if "pending" not in states.values() or time.monotonic() >= deadline:
                return states
            await asyncio.sleep(0.05)

    async def message_state(self, message_id: str) -> tuple[str | None, str | None]:
        rows = await self._db("SELECT state, error_code FROM messages WHERE message_id = $1", uuid.UUID(message_id))
        return (rows[0]["state"], rows[0]["error_code"]) if rows else (None, None)

    def _expect_reply(self, o: Outcome, replies: list[Reply], kind: str, outcome: str) -> Reply | None:
        match = [r for r in replies if r.kind == kind and r.outcome == outcome]
        if not match:
            seen = ", ".join(f"{r.kind} {r.outcome}" for r in replies) or "nothing"
            o.problems.append(f"expected a hub-signed {kind} '{outcome}', got {seen}")
            return None
        return match[0]

    async def _gather_deliveries(self, systems: Iterable[str], message_id: str) -> dict[str, list[Got]]:
        systems = list(systems)
        found = await asyncio.gather(
            *(
                self.mail.deliveries(s, message_id, expect=1, timeout=self.timeout, keep=s == KEEP_FOR_OPERATOR)
                for s in systems
            )
        )
        return dict(zip(systems, found, strict=True))

    def _check_deliveries(self, o: Outcome, got: Mapping[str, list[Got]], sender: str) -> None:
        for system, items in got.items():
            if not o.expect(len(items) == 1, f"{system} received {len(items)} copies, expected 1"):
                continue
            env = items[0].envelope
            o.expect(env.sender.system == sender, f"{system} got a message signed as {env.sender.system}")

    def _print(self, o: Outcome) -> None:
        if o.ok:
            for i, line in enumerate(o.lines):
                self.out(f"  {OK if i == 0 else ' '} {line}")
        else:
            self.out(f"  {FAIL} {o.title}")
            for p in o.problems:
                self.out(f"      {p}")

    # -- the steps ---------------------------------------------------------------------------------------------

    async def run(self) -> list[Outcome]:
        steps: list[tuple[str, str, Callable[[Outcome], Awaitable[None]]]] = [
            ("a", "省林草局向各市（州）林业局发通知 notice to every city bureau", self.step_notice),
            ("b", "县局之间的函 letter between county bureaus", self.step_letter),
            ("c", "签收回执 document receipt back up", self.step_receipt),
            ("d", "应急预警 emergency alert", self.step_alert),
            ("e", "密级闸门 classification gate", self.step_gate),
            ("f", "信息审核：隔离与放行 content audit: quarantine and release", self.step_quarantine),
            ("g", "防篡改 tampering", self.step_tamper),
            ("h", "去重 deduplication", self.step_duplicate),
            ("i", "一条报文的开销有界 what one message can cost", self.step_costly),
            ("j", "枢纽签名密钥轮换 hub key rotation", self.step_rotate),
            ("k", "SDK 适配器：共享数据查询 an adapter written on the SDK answers a data query", self.step_sdk),
            ("l", "HTTPS 网关：只通 HTTPS 的政务服务网 a system over HTTPS only", self.step_gateway),
            ("l1", "SDK 适配器经 HTTPS 网关收文签收 an adapter on the SDK over HTTPS only", self.step_sdk_https),
            (
                "l2",
                "运行中载入目录：新增的九台区林业局无需重启即可接入 a system added while the hub runs",
                self.step_directory,
            ),
            ("m", "运维监控页面 the ops page: health, metrics, search, trace, audit", self.step_ops),
            *((key, title, self._adapter_step(name)) for key, name, title in ADAPTER_STEPS),
            *((key, title, self._process_step(name)) for key, name, title in PROCESS_STEPS),
            ("w", "一个系统的洪泛不挡别人 one system's flood does not hold up the others", self.step_flood),
            ("x", "证据链 evidence chain", self.step_evidence),
        ]
        for key, title, fn in steps:
            o = Outcome(key, title)
            try:
                await fn(o)
            except HubError as exc:
                o.problems.append(exc.describe())
            except TimeoutError:
                o.problems.append("timed out waiting for the hub")
            except (OSError, RuntimeError, ValueError) as exc:  # a page or a connection that misbehaved: say so
                o.problems.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            self.outcomes.append(o)
            self._print(o)
            if not o.ok and not self.hub_alive():
                self.out(
                    f"  {FAIL} 枢纽进程已退出，后续步骤不再执行 the hub process has exited: the remaining "
                    "steps are skipped"
                )
                self.outcomes.append(Outcome("hub", "the hub process exited", problems=["the hub exited"]))
                break
        if self.mail.unverified:
            o = Outcome("verify", "收到未经枢纽签名验证的报文 messages that failed the hub-signature check")
            o.problems.extend(self.mail.unverified)
            self.outcomes.append(o)
            self._print(o)
        return self.outcomes

    async def step_notice(self, o: Outcome) -> None:
        sender = "prov-220000-oa"
        targets = [s.id for s in _city_systems(self.directory, "document.official")]
        bureaus = {self.directory.system(s).agency for s in targets}
        started = time.perf_counter()
        env, _ = await self.send(sender, "01-notice-winter-fire-prevention.xml")
        replies = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        ms = (time.perf_counter() - started) * 1000
        receipt = self._expect_reply(o, replies, "receipt", "accepted")
        if receipt is not None:
            listed = receipt_systems(receipt)
            o.expect(sorted(listed) == sorted(targets), f"the receipt lists {len(listed)} systems, not {len(targets)}")
        got = await self._gather_deliveries(targets, env.message_id)
        self._check_deliveries(o, got, sender)
        for system, items in got.items():
            if items:
                o.expect(
                    items[0].incoming.priority == 6,
                    f"{system}: 加急 should arrive with priority 6 (routes/documents.routes.xml)",
                )
        states = await self.delivery_states(env.message_id)
        o.expect(states == dict.fromkeys(targets, "delivered"), _diff("PostgreSQL records", states, targets))
        o.lines.append(
            f"省林草局 → 各市（州）林业局：{len(bureaus)} 个局的 {len(targets)} 个系统收到"
            f"《冬春季森林草原防火工作的通知》（加急、公开），回执已由枢纽签名，用时 {ms:.0f} ms"
        )
        o.lines.append(
            f"province → every city bureau: {len(targets)} deliveries to {len(bureaus)} bureaus, hub-signed receipt "
            f"back to the sender in {ms:.0f} ms"
        )

    async def step_letter(self, o: Outcome) -> None:
        sender = "county-220122-oa"
        targets = ["county-220182-oa", "county-220183-oa"]
        env, _ = await self.send(sender, "02-letter-cross-county-fire-watch.xml")
        replies = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        self._expect_reply(o, replies, "receipt", "accepted")
        got = await self._gather_deliveries(targets, env.message_id)
        self._check_deliveries(o, got, sender)
        own = await self.mail.deliveries(sender, env.message_id, expect=None)
        o.expect(not own, "the sender received its own letter through the group")
        o.lines.append(
            f"农安县林业局 → 长春市所辖县（市）局（county-bureaus:220100）：榆树、德惠 {len(targets)} 个系统收到函，"
            "发文单位自己不在收件之列"
        )
        o.lines.append(f"county → its sibling counties under Changchun: {len(targets)} deliveries, the sender left out")

    async def step_receipt(self, o: Outcome) -> None:
        notice = self.sent.get("01-notice-winter-fire-prevention.xml")
        if not o.expect(notice is not None, "step a did not send the notice"):
            return
        sender, target = "city-220100-oa", "prov-220000-oa"
        env, _ = await self.send(sender, "03-receipt-signed-for.xml")
        replies = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        self._expect_reply(o, replies, "receipt", "accepted")
        got = await self._gather_deliveries([target], env.message_id)
        self._check_deliveries(o, got, sender)
        if got[target]:
            d = got[target][0].envelope
            assert notice is not None
            o.expect(d.ref_to == notice.message_id, "the receipt does not refer to the notice")
            body = d.body
            status = body.findtext("{urn:forestry-hub:document.receipt:1}Status") if body is not None else None
            o.expect(status == "received", f"the receipt's status is {status!r}, not 'received'")
        o.lines.append("长春市林业局签收省林草局通知：签收回执（document.receipt）送达省林草局办公系统")
        o.lines.append("Changchun signs for the notice: the document.receipt reaches the province's office system")

    async def step_alert(self, o: Outcome) -> None:
        sender = "county-220281-oa"
        targets = ["prov-220000-duty", "city-220200-oa"]
        started = time.perf_counter()
        env, _ = await self.send(sender, "04-alert-forest-fire.xml")
        replies = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        ms = (time.perf_counter() - started) * 1000
        self._expect_reply(o, replies, "receipt", "accepted")
        got = await self._gather_deliveries(targets, env.message_id)
        self._check_deliveries(o, got, sender)
        for system, items in got.items():
            if items:
                o.expect(items[0].incoming.priority == 9, f"{system}: 特急 should arrive with priority 9")
        rows = await self._db(  # chained, or still staged (the workers chain every 250 ms)
            "SELECT detail FROM evidence WHERE message_id = $1 AND kind = 'received'"
            " UNION ALL SELECT detail FROM evidence_pending WHERE message_id = $1 AND kind = 'received'",
            uuid.UUID(env.message_id),
        )
        lane = None
        if rows:
            import json

            lane = json.loads(rows[0]["detail"]).get("lane")
        o.expect(lane == "emergency", f"the hub took it from the {lane!r} lane, not the emergency lane")
        o.lines.append(
            f"蛟河市林业局 Ⅱ级森林火情（特急，北纬43.6284°、东经127.1853°）→ 省防火应急值守平台、吉林市林业局："
            f"{len(targets)} 个系统收到，经应急通道，优先级 9，用时 {ms:.0f} ms"
        )
        o.lines.append(f"level II forest-fire alert: 2 deliveries via the emergency lane at priority 9 in {ms:.0f} ms")

    async def step_gate(self, o: Outcome) -> None:
        sender = "prov-220000-secure"
        oa, secure = "city-220100-oa", "city-220100-secure"
        # 机密: neither of Changchun's systems may hold it → refused as a whole.
        env, _ = await self.send(sender, "05-secret-deployment-plan.xml")
        replies = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        self._expect_reply(o, replies, "error", "GATE_CLASSIFICATION")
        for system in (oa, secure):
            leaked = await self.mail.deliveries(system, env.message_id, expect=None)
            o.expect(not leaked, f"the 机密 document reached {system}")
        o.expect(
            await self.message_state(env.message_id) == ("rejected", "GATE_CLASSIFICATION"),
            "PostgreSQL does not record the 机密 document as rejected with GATE_CLASSIFICATION",
        )
        # 秘密: only the classified system accredited to 秘密 may hold it.
        env2, _ = await self.send(sender, "06-confidential-firebreak-survey.xml")
        replies2 = await self.mail.replies(sender, env2.message_id, expect=2, timeout=self.timeout)
        receipt = self._expect_reply(o, replies2, "receipt", "accepted")
        error = self._expect_reply(o, replies2, "error", "GATE_CLASSIFICATION")
        if receipt is not None:
            o.expect(receipt_systems(receipt) == [secure], f"the receipt lists {receipt_systems(receipt)}")
        if error is not None:
            o.expect(oa in error.detail, "the error does not name the blocked system")
        got = await self._gather_deliveries([secure], env2.message_id)
        self._check_deliveries(o, got, sender)
        leaked = await self.mail.deliveries(oa, env2.message_id, expect=None)
        o.expect(not leaked, f"the 秘密 document reached {oa} in the extranet")
        states = await self.delivery_states(env2.message_id)
        o.expect(states == {secure: "delivered", oa: "blocked"}, f"PostgreSQL records the deliveries as {states}")
        o.lines.append(
            "机密公文发往长春市林业局：外网办公系统（上限“内部”）和涉密系统（仅“秘密”资质）都不予送达，"
            f"发送方收到签名错误 GATE_CLASSIFICATION（{title_of('GATE_CLASSIFICATION')}）"
        )
        o.lines.append(
            "秘密公文：只送达长春市林业局涉密办公系统，外网办公系统被拦下并记录 "
            "(secret: refused everywhere; confidential: reaches only the accredited classified system)"
        )

    async def step_quarantine(self, o: Outcome) -> None:
        sender, target = "county-220183-oa", "city-220100-oa"
        env, _ = await self.send(sender, "07-report-quoting-a-marking.xml")
        replies = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        self._expect_reply(o, replies, "receipt", "quarantined")
        early = await self.mail.deliveries(target, env.message_id, expect=None, keep=True)
        o.expect(not early, "the quarantined report was delivered before anyone released it")
        # On the ops page: the duty operator may see the quarantine but not decide (三员分立); the security officer
        # releases it with a reason, through the page's form (its CSRF token, her session).
        reason = "经审核，正文仅引用文件名称及其密级标志，未涉及涉密内容，同意放行"
        form = {"message_id": env.message_id, "decision": "release", "reason": reason}
        async with self._ops() as duty:
            await duty.login(*self.operators["duty"])
            status, _, _ = await duty.post("/quarantine/decide", form, form_page="/quarantine")
        o.expect(status == 403, f"the duty operator's release was answered {status}, not 403 (security officer only)")
        officer = self.operators["security"][0]
        async with self._ops() as security:
            await security.login(*self.operators["security"])
            status, location, _ = await security.post("/quarantine/decide", form, form_page="/quarantine")
        o.expect(status == 303 and "done=released" in location, f"the security officer's release: {status} {location}")
        after = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        self._expect_reply(o, after, "receipt", "accepted")
        got = await self._gather_deliveries([target], env.message_id)
        self._check_deliveries(o, got, sender)
        rows = await self._db(
            "SELECT q.status, q.reviewer, m.state FROM quarantine q JOIN messages m USING (message_id)"
            " WHERE message_id = $1",
            uuid.UUID(env.message_id),
        )
        o.expect(
            bool(rows)
            and (rows[0]["status"], rows[0]["reviewer"], rows[0]["state"]) == ("released", officer, "released"),
            f"PostgreSQL does not record the release by {officer}",
        )
        o.lines.append(
            "德惠市林业局报送的“公开”信息正文含“秘密★5年”→ 枢纽隔离，未送达；值班员在运维页面上放行被拒（403，"
            f"仅保密员可审核）；保密员李岩（{officer}）在运维页面上填写理由放行 {env.message_id[:8]}…，"
            "随后送达长春市林业局"
        )
        o.lines.append(
            "a public report carrying 秘密★ was quarantined; on the ops page the duty operator was refused (403) and "
            "the security officer released it with a reason, then it was delivered"
        )

    async def step_tamper(self, o: Outcome) -> None:
        sender, target = "county-220182-oa", "city-220100-oa"
        env, data = self.mail.sign(sender, self._prepare("08-statistics-report.xml"))
        tampered = _tampered(data)
        changed = sum(a != b for a, b in zip(data, tampered, strict=True))
        o.expect(changed == 1, f"the tampering changed {changed} bytes, not 1")
        await self.mail.publish(sender, env, tampered)
        digest = hashlib.sha256(tampered).hexdigest()
        replies = await self.mail.error_for_digest(sender, digest, timeout=self.timeout)
        self._expect_reply(o, replies, "error", "SIG_DIGEST")
        leaked = await self.mail.deliveries(target, env.message_id, expect=None)
        o.expect(not leaked, f"the tampered report reached {target}")
        rows = await self._db("SELECT error_code FROM intake_rejections WHERE raw_sha256 = $1", bytes.fromhex(digest))
        o.expect([r["error_code"] for r in rows] == ["SIG_DIGEST"], "PostgreSQL does not record the refusal")
        o.lines.append(
            "榆树市林业局的统计信息签名后被改了 1 个字节（1.2万亩 → 7.2万亩）→ 拒收 SIG_DIGEST"
            f"（{title_of('SIG_DIGEST')}），发送方收到签名错误，长春市林业局没有收到"
        )
        o.lines.append("one byte changed after signing: refused with SIG_DIGEST, recorded, nothing delivered")

    async def step_duplicate(self, o: Outcome) -> None:
        sender, target = "county-220182-oa", "city-220100-oa"
        env, data = self.mail.sign(sender, self._prepare("09-report-fire-inspection.xml"))
        await self.mail.publish(sender, env, data)
        first = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        self._expect_reply(o, first, "receipt", "accepted")
        await self.mail.publish(sender, env, data)  # a client retry: the very same signed bytes
        second = await self.mail.replies(sender, env.message_id, timeout=self.timeout)
        self._expect_reply(o, second, "receipt", "duplicate")
        got = await self.mail.deliveries(target, env.message_id, expect=None, keep=True)
        o.expect(len(got) == 1, f"{target} holds {len(got)} copies of the report, expected exactly 1")
        o.lines.append("榆树市林业局同一份报告发送两次：长春市林业局只收到一次，第二次得到“重复”回执")
        o.lines.append("the same signed report sent twice: delivered once, the second copy answered 'duplicate'")

    async def step_costly(self, o: Outcome) -> None:
        """The attack of issue 17: a genuinely signed report with 60,000 unused namespace declarations added after
        signing (8 s of CPU before the intake's bounds), then at once a 特急 alert on the emergency lane."""
        sender, target = "county-220182-oa", "city-220100-oa"
        env, data = self.mail.sign(sender, self._prepare("08-statistics-report.xml"))
        at = data.index(b"<env:Envelope") + len(b"<env:Envelope")
        costly = data[:at] + b"".join(b' xmlns:n%d="urn:x-demo:%d"' % (i, i) for i in range(60_000)) + data[at:]
        await self.mail.publish(sender, env, costly)
        started = time.perf_counter()
        alert, _ = await self.send("county-220281-oa", "04-alert-forest-fire.xml")
        got = await self._gather_deliveries(["prov-220000-duty", "city-220200-oa"], alert.message_id)
        alert_ms = (time.perf_counter() - started) * 1000
        self._check_deliveries(o, got, "county-220281-oa")
        self._expect_reply(o, await self.mail.replies("county-220281-oa", alert.message_id), "receipt", "accepted")
        replies = await self.mail.error_for_digest(sender, hashlib.sha256(costly).hexdigest(), timeout=self.timeout)
        self._expect_reply(o, replies, "error", "ENV_LIMIT")
        leaked = await self.mail.deliveries(target, env.message_id, expect=None)
        o.expect(not leaked, f"the costly report reached {target}")
        o.lines.append(
            f"榆树市林业局的报告签名后被加上 6 万个无用的命名空间声明（{len(costly) // 1024} KB，"
            f"曾耗 8 秒 CPU）→ 拒收 ENV_LIMIT（{title_of('ENV_LIMIT')}），发送方收到签名错误；"
            f"紧随其后的特急火情 {alert_ms:.0f} ms 送达"
        )
        o.lines.append(
            "a signed report with 60,000 namespace declarations added after signing: refused with ENV_LIMIT at the "
            f"byte gate; the 特急 alert sent right after it was delivered in {alert_ms:.0f} ms"
        )

    async def step_flood(self, o: Outcome) -> None:
        """Issue 16: 榆树's system, compromised, floods the hub with reports altered after signing (each costs a
        signature check before it is refused); 农安's letter sent right after is not behind them. Every system has its
        own inbound lane, the workers read the lanes in turn, and a system whose messages the hub refuses is read at
        its refusal rate: the flood waits, kept, in its own queue, and each copy is answered in its turn."""
        flooder, sender = "county-220182-oa", "county-220122-oa"
        targets = ["county-220182-oa", "county-220183-oa"]
        flood: list[tuple[Envelope, bytes]] = []
        for _ in range(FLOOD_COPIES):
            env, data = self.mail.sign(flooder, self._prepare("08-statistics-report.xml"))
            flood.append((env, _tampered(data)))
        digests = [hashlib.sha256(data).digest() for _, data in flood]
        t = await self.mail.transport(flooder)
        await t.publish_many([outgoing(t, env, data, as_system=True) for env, data in flood])
        started = time.perf_counter()
        letter, data = self.mail.sign(sender, self._prepare("02-letter-cross-county-fire-watch.xml"))
        await self.mail.publish(sender, letter, data)
        got = await self._gather_deliveries(targets, letter.message_id)
        letter_ms = (time.perf_counter() - started) * 1000
        self._check_deliveries(o, got, sender)
        refused_then = await self._refused_count(digests)
        self._expect_reply(o, await self.mail.replies(sender, letter.message_id), "receipt", "accepted")
        o.expect(
            refused_then <= FLOOD_COPIES // 2,
            f"农安's letter was delivered only after {refused_then} of the {FLOOD_COPIES} flooding copies were refused",
        )
        deadline = time.monotonic() + FLOOD_COPIES / 10 + self.timeout  # at least 20 a second per worker
        while (refused := await self._refused_count(digests)) < FLOOD_COPIES and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        took = time.perf_counter() - started
        o.expect(refused == FLOOD_COPIES, f"{refused} of the {FLOOD_COPIES} flooding copies were refused")
        codes = await self._db(
            "SELECT DISTINCT error_code FROM intake_rejections WHERE raw_sha256 = ANY($1::bytea[])", digests
        )
        o.expect([r["error_code"] for r in codes] == ["SIG_DIGEST"], f"the flood was refused with {codes}")
        answers = await self.mail.errors_for_digests(flooder, {d.hex() for d in digests}, timeout=self.timeout)
        o.expect(len(answers) == FLOOD_COPIES, f"{flooder} got {len(answers)} signed errors for its flood")
        o.lines.append(
            f"榆树市林业局系统失陷，{FLOOD_COPIES} 份签名后被篡改的报告灌入枢纽；农安县林业局随后发出的函 "
            f"{letter_ms:.0f} ms 送达（此时洪泛只处理了 {refused_then} 份：其余在榆树自己的入站队列里排队）；"
            f"洪泛按每个工作进程每秒约 20 份逐一拒收 SIG_DIGEST，{took:.1f} s 内全部答复，一份不丢"
        )
        o.lines.append(
            f"{FLOOD_COPIES} tampered copies from one system; another system's letter sent right after was delivered "
            f"in {letter_ms:.0f} ms ({refused_then} of the flood refused by then: the rest waited in the flooder's own "
            f"lane); each copy answered SIG_DIGEST at the flooder's refusal rate, all in {took:.1f} s"
        )

    async def _refused_count(self, digests: list[bytes]) -> int:
        rows = await self._db(
            "SELECT count(*) AS n FROM intake_rejections WHERE raw_sha256 = ANY($1::bytea[])", digests
        )
        return int(rows[0]["n"])

    async def step_rotate(self, o: Outcome) -> None:
        """``hub pki rotate`` while the hub runs: its workers sign with the new key within seconds, no restart;
        the evidence step after this verifies checkpoints made with either key."""
        from hub.trust.pki import PkiPaths, fingerprint, load_certificates, serial_hex

        hub_cert = PkiPaths(self.settings.state_dir / "pki").hub_cert
        before = fingerprint(load_certificates(hub_cert)[0])
        rc, text = await self.run_cli(["pki", "rotate"])
        o.expect(rc == 0, f"hub pki rotate exited {rc}: {text.strip()[-300:]}")
        after = fingerprint(load_certificates(hub_cert)[0])
        o.expect(after != before, "hub pki rotate left the hub's certificate as it was")
        serial = serial_hex(load_certificates(hub_cert)[0].serial_number)
        started = time.monotonic()
        switched = 0
        while time.monotonic() - started < 15:  # each worker looks at the key files every 2 s
            switched = self._switched_workers(serial)
            if switched >= self.workers:
                break
            await asyncio.sleep(0.2)
        took = time.monotonic() - started
        o.expect(switched >= self.workers, f"{switched} of {self.workers} workers switched to the new key in 15 s")
        sender, target = "county-220182-oa", "city-220100-oa"
        env, _ = await self.send(sender, "09-report-fire-inspection.xml")
        self._expect_reply(o, await self.mail.replies(sender, env.message_id), "receipt", "accepted")
        got = await self.mail.deliveries(target, env.message_id, timeout=self.timeout)
        signed_by = _hub_signer_fingerprint(got[0].incoming.body) if got else ""
        o.expect(signed_by == after, "the next delivery is not signed with the new hub certificate")
        o.lines.append(
            f"hub pki rotate：新的枢纽签名证书 {serial}，{self.workers} 个工作进程 {took:.1f} s 内改用新密钥"
            "（无需重启），随后的报告由新证书签名送达；旧证书留档，旧检查点照常可验"
        )
        o.lines.append(f"the running hub's {self.workers} workers sign with the rotated key after {took:.1f} s")

    def _switched_workers(self, serial: str) -> int:
        """How many workers logged that they now sign with the hub certificate ``serial``."""
        import json

        if self.hub_log is None:
            return self.workers
        try:
            text = self.hub_log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return 0
        count = 0
        for line in text.splitlines():
            if serial not in line:
                continue
            try:
                msg = str(json.loads(line).get("msg", ""))
            except ValueError:
                continue
            if re.match(r"worker \d+ now signs with hub certificate " + re.escape(serial), msg):
                count += 1  # a worker's line (the process engine and the gateway follow the key too)
        return count

    async def _enrol_adapter(self, o: Outcome, system: str) -> Path:
        """An adapter's enrolment directory, made as an agency and the hub's operator make it: ``hub adapter enrol``
        (key + CSR on the agency's side) → ``hub adapter approve`` (the operator: certificate, broker user, one
        enrolment file) → ``hub adapter enrol --accept``. Kept across runs; the CRLs are refreshed each run (the
        demo plays the CRL distribution)."""
        home = self.settings.state_dir / "adapters" / system
        if not (home / "broker.json").exists():
            agency = self.directory.system(system).agency
            bundle = home.parent / f"{system}.enrolment.json"
            for argv in (
                ["adapter", "enrol", "--system", system, "--agency", agency, "--home", str(home)],
                ["adapter", "approve", str(home / "request.csr"), "--out", str(bundle)],
                ["adapter", "enrol", "--accept", str(bundle), "--home", str(home)],
            ):
                rc, text = await self.run_cli(argv)
                if not o.expect(rc == 0, f"hub {' '.join(argv[:2])} exited {rc}: {text.strip()[-300:]}"):
                    return home
            bundle.unlink(missing_ok=True)
        from hub.trust.pki import PkiPaths

        crl_dir = PkiPaths(self.settings.state_dir / "pki").crl_dir
        for crl in crl_dir.glob("*.crl"):
            (home / "crl" / crl.name).write_bytes(crl.read_bytes())
        (home / "settings.toml").write_text(f'system = "{system}"\nhome = "."\n', encoding="utf-8")
        return home

    async def step_sdk(self, o: Outcome) -> None:
        """The province's forest-resources database (adapters/forest_data, written on adapters.sdk only) runs as an
        agency runs its adapter — its own process, ``hub adapter run``, its own enrolment directory and broker user —
        and 敦化市林业局, through the SDK's ``request``, asks it for the larch sub-compartments: the typed answer
        comes back bound to the query, signed by the database system and by the hub."""
        from adapters.sdk import Adapter, AdapterSettings, SdkError, to
        from adapters.sdk.messages import DataQuery, DataResponse
        from adapters.sdk.messages.data_query_v1 import Condition, Fields, Filter, OrderBy, Paging

        server_home = await self._enrol_adapter(o, "prov-220000-data")
        asker_home = await self._enrol_adapter(o, "county-222403-oa")
        if not o.ok:
            return
        log_path = self.settings.state_dir / "adapter-forest-data.log"
        log_path.unlink(missing_ok=True)
        log = open(log_path, "ab")  # the child's standard error
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub.cli",
            "adapter",
            "run",
            "adapters.forest_data.adapter",
            "--config",
            str(server_home / "settings.toml"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        asker = Adapter("county-222403-oa", AdapterSettings(system="county-222403-oa", home=asker_home))
        query = DataQuery(
            dataset="forest-resources",
            purpose="编制2027年度敦化市森林抚育作业计划",
            fields=Fields(field=["xiaoban_no", "dominant_species", "age_class", "area_ha"]),
            filter=Filter(condition=[Condition(field="dominant_species", operator="eq", value="落叶松")]),
            order_by=[OrderBy(field="area_ha", direction="desc")],
            paging=Paging(offset=0, limit=50),
        )
        try:
            # Ready when its log says so (it connected with its own broker user and consumes its queue).
            deadline = time.monotonic() + self.timeout
            while b"adapter prov-220000-data ready" not in log_path.read_bytes():
                if proc.returncode is not None or time.monotonic() > deadline:
                    o.problems.append(f"hub adapter run did not become ready: {log_path.read_text()[-300:]}")
                    return
                await asyncio.sleep(0.05)
            async with asker:
                started = time.perf_counter()
                reply = await asker.request(query, to=[to(PROVINCE, "prov-220000-data")], timeout=self.timeout)
                ms = (time.perf_counter() - started) * 1000
        except SdkError as exc:
            o.problems.append(f"the SDK request failed: {exc}")
            return
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
            log.close()
        answer = reply.message
        o.expect(isinstance(answer, DataResponse), f"the reply is {type(answer).__name__}, not a data.response")
        o.expect(answer.outcome == "ok", f"the database answered {answer.outcome}: {answer.reason}")
        o.expect(reply.context.ref_to == reply.receipt.message_id, "the reply does not name the query it answers")
        originator = reply.context.originator
        o.expect(
            originator is not None and originator.system == "prov-220000-data",
            "the reply does not carry the database system's own signature",
        )
        o.expect(code == 0, f"hub adapter run exited {code} on SIGTERM (log adapter-forest-data.log)")
        if not o.ok:
            return
        rows = len(answer.rows.row) if answer.rows else 0
        serial = originator.serial_hex if originator is not None else "?"
        o.lines.append(
            f"敦化市林业局经 SDK 查询省森林资源库（独立进程 hub adapter run，SDK 编写）：{rows} 个落叶松小班，"
            f"{ms:.0f} ms；答复同时带数据库系统签名（证书 {serial}）与枢纽签名，均已验证"
        )
        o.lines.append(
            f"a county bureau's request() through the SDK answered by adapters/forest_data (its own process): {rows} "
            f"rows in {ms:.0f} ms, typed, bound to the query, signed by the database system and the hub"
        )

    def _sample(self, service: str, name: str) -> etree._Element:
        """A valid sample of ``schemas/services`` made sendable now (dates moved, a fresh message id)."""
        root = parse((self.settings.schemas_dir / "services" / service / "1" / "samples" / "valid" / name).read_bytes())
        stamp(root, now=datetime.now(CN_TZ), ids=self.ids)
        return root

    def _client_tls(self, system: str) -> Any:
        """The TLS context a system's HTTPS client presents to the gateway: its signing key and certificate (which
        carries clientAuth too), trusting only the hub root."""
        from hub.pipeline.client import credential_paths
        from hub.trust.pki import PkiPaths

        key, cert = credential_paths(self.settings, system)
        tls = ssl.create_default_context(cafile=str(PkiPaths(self.settings.state_dir / "pki").root_cert))
        tls.load_cert_chain(str(cert), str(key))
        return tls

    async def step_gateway(self, o: Outcome) -> None:
        """吉林省政务服务网 (the provincial portal, a Java web application behind a firewall that lets only HTTPS out)
        takes part through the HTTPS gateway only: it submits a tree-felling licence application with its system
        certificate (mutual TLS) and gets the hub's signed receipt in the response; the approval system (AMQP) asks
        for more material; the portal long-polls its inbox, gets the hub-signed status and acknowledges it."""
        import aiohttp

        portal, approval = "prov-220000-portal", "prov-220000-approval"
        for system in (portal, approval):
            await enroll(self.settings, system, self.directory.system(system).agency)
        tls = self._client_tls(portal)
        env, data = self.mail.sign(portal, self._sample("approval.application", "tree-felling-licence.xml"))
        xml = {"Content-Type": "application/xml"}
        async with aiohttp.ClientSession(self.gateway_url, connector=aiohttp.TCPConnector(ssl=tls)) as http:
            # What the load balancer in front of the gateways asks (no client certificate needed).
            async with http.get("/ready") as r:
                probe = await r.json() if r.status in (200, 503) else {}
            if not o.expect(
                r.status == 200 and probe.get("ready") is True,
                f"GET /ready: {r.status} {[c for c in probe.get('checks', []) if not c.get('ok')]}",
            ):
                return
            # What an earlier run left in the portal's inbox (the gateway holds its queue for HTTPS polls, so the
            # scenario's start-up drain cannot take it): the portal reads and acknowledges it first, as it would.
            leftovers = 0
            while leftovers < 500:
                async with http.get("/v1/inbox", params={"wait": "0"}) as r:
                    if r.status != 200:
                        break
                    tag = r.headers.get("X-Hub-Delivery-Tag", "")
                    await r.read()
                async with http.post(f"/v1/inbox/{tag}/ack") as r:
                    leftovers += 1
            since = datetime.now(UTC) - timedelta(seconds=1)  # for the portal's 发文跟踪 below
            started = time.perf_counter()
            async with http.post("/v1/messages", data=data, headers=xml) as r:
                status, outcome, answer = r.status, r.headers.get("X-Hub-Outcome"), await r.read()
            ms = (time.perf_counter() - started) * 1000
            if not o.expect(status == 202 and outcome == "accepted", f"POST /v1/messages: {status} {outcome}"):
                return
            receipt = self.mail.open(answer).envelope  # the hub's signature on the receipt verifies
            o.expect(receipt.ref_to == env.message_id, "the receipt in the response is not about the application")
            got = await self.mail.deliveries(approval, env.message_id, expect=1, timeout=self.timeout)
            self._check_deliveries(o, {approval: got}, portal)
            senv, sdata = self._status_to_portal(approval)
            await self.mail.publish(approval, senv, sdata)
            self._expect_reply(o, await self.mail.replies(approval, senv.message_id), "receipt", "accepted")
            # The portal's inbox: the approval system's status, and the approvals process's feedback to the
            # applicant's channel (hub.notice approval-feedback, hub-signed) whenever the engine got to it.
            found, notices, other = False, 0, []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (found and notices):
                async with http.get("/v1/inbox", params={"wait": "5" if found else "20"}) as r:
                    polled, tag, delivered = r.status, r.headers.get("X-Hub-Delivery-Tag", ""), await r.read()
                if polled == 204:
                    if found:
                        break
                    continue
                if not o.expect(polled == 200 and bool(tag), f"GET /v1/inbox answered {polled}"):
                    return
                opened = self.mail.open(delivered)  # both signatures: the sender's (if not the hub) and the hub's
                if opened.envelope.message_id == senv.message_id:
                    found = True
                elif opened.envelope.service == "hub.notice":
                    notices += 1
                else:
                    other.append(opened.envelope.service_id)
                async with http.post(f"/v1/inbox/{tag}/ack") as r:
                    o.expect(r.status == 204, f"POST /v1/inbox/{{tag}}/ack answered {r.status}")
            o.expect(found, "the approval system's status did not reach the portal's inbox")
            o.expect(not other, f"the portal's inbox held something else: {', '.join(other)}")
            async with http.get(f"/v1/messages/{env.message_id}") as r:
                state = await r.json() if r.status == 200 else {}
            o.expect(state.get("state") == "accepted", f"GET /v1/messages/{{id}}: {state}")
            # 发文跟踪: what the portal sent since the step began, with each recipient's delivery — what it would
            # reconcile its own records with after restoring a backup
            async with http.get("/v1/messages", params={"since": since.isoformat()}) as r:
                listing = await r.json() if r.status == 200 else {}
            tracked = [
                (m.get("message_id"), [(d.get("recipient_system"), d.get("state")) for d in m.get("deliveries", [])])
                for m in listing.get("messages", [])
            ]
            o.expect(
                tracked == [(env.message_id, [(approval, "delivered")])] and listing.get("next") is None,
                f"GET /v1/messages?since=…: {r.status} {tracked}",
            )
            if not o.ok:
                return
            idle = await self._stops_polling(o, http, portal, approval)
        if not o.ok:
            return
        o.lines.append(
            f"吉林省政务服务网仅经 HTTPS 网关（双向 TLS，系统证书）提交林木采伐许可申请：{ms:.0f} ms 内在响应中"
            "拿到枢纽签名回执；审批系统要求补正，门户长轮询收件箱取到枢纽签名的进度通知并确认；"
            "发文跟踪（GET /v1/messages）列出这份申请、审批系统“已投递”"
            "（负载均衡的就绪探测 GET /ready：200，RabbitMQ、PostgreSQL、审验进程、吊销列表均正常）"
            + (f"；另收到枢纽审批流程的受理反馈 {notices} 条" if notices else "")
        )
        o.lines.append(
            f"the provincial portal over HTTPS only: submit → 202 with the hub-signed receipt in {ms:.0f} ms → the "
            "approval system's status reached its inbox (long poll) → acknowledged; its document tracking (GET "
            "/v1/messages) lists the application, delivered to the approval system (the load balancer's GET /ready: "
            "200)"
        )
        if idle is not None:
            idle_s, page = idle
            page_zh = "运维页面显示门户“间歇轮询”、近 1 小时经网关的请求数并计入待取，" if page else ""
            page_en = "the ops page: polls from time to time, one waiting, its requests counted; " if page else ""
            o.lines.append(
                f"门户停止轮询 {idle_s:g} 秒后网关放开其队列：审批系统的下一条进度在 RabbitMQ 中待取"
                f"（{page_zh}投递可照常过期），门户再次轮询（wait=0）即取到"
            )
            o.lines.append(
                f"the portal stopped polling: {idle_s:g} s later the gateway let its queue go, the approval system's "
                f"next status waited ready in RabbitMQ ({page_en}it can expire there), and the portal's next poll "
                "(wait=0) got it"
            )
        await self._refused_certificates(o, portal)

    async def _refused_certificates(self, o: Outcome, portal: str) -> None:
        """The portal's administrator tries last year's TLS certificate (``hub pki issue --tls``, expired a month ago;
        the renewed one is in use): the gateway completes the handshake and answers 403 ``CERT_EXPIRED`` as JSON with
        the date, so the administrator reads why; a client with a certificate of a CA of its own fails the TLS
        handshake (nothing it presents can be trusted). The people on duty see both on the ops page's 网关拒绝 rows:
        the first under the portal, the second under TLS handshakes (hub.gateway.tls)."""
        import tempfile

        import aiohttp

        from hub.trust import pki

        agency = self.directory.system(portal).agency
        with tempfile.TemporaryDirectory(prefix="hub-demo-tls-") as tmp:
            lapsed = self._issued_tls(
                self.settings.state_dir / "pki",
                self.settings.ca_passphrase,
                agency,
                portal,
                now=datetime.now(UTC) - timedelta(days=395),
                days=365,
            )[0]
            status, code, detail = await self._inbox_with(lapsed)
            if not o.expect(
                (status, code) == (403, "CERT_EXPIRED") and "expired on" in detail,
                f"the portal's expired TLS certificate: {status} {code} {detail}",
            ):
                return
            pki.init_ca(Path(tmp) / "own-ca", "own-ca-passphrase", hub_agency=agency)
            foreign = self._issued_tls(Path(tmp) / "own-ca", "own-ca-passphrase", agency, portal)[0]
            refused = False
            try:
                async with (
                    aiohttp.ClientSession(self.gateway_url, connector=aiohttp.TCPConnector(ssl=foreign)) as http,
                    http.get("/v1/inbox", params={"wait": "0"}) as r,
                ):
                    await r.read()
            except aiohttp.ClientError:
                refused = True
            if not o.expect(refused, "a certificate of another CA did not fail the TLS handshake"):
                return
        shown = await self._refusals_on_the_page(o, {(portal, "CERT_EXPIRED"), ("-", "TLS_CERT_UNTRUSTED")})
        if shown is None:
            return
        came_from = "、".join((shown.get("- TLS_CERT_UNTRUSTED") or {}).get("peers") or [])
        o.lines.append(
            f"门户管理员误用去年的 TLS 证书（{detail.split('expired on ', 1)[1][:10]} 已过期）：网关完成握手后答复 "
            "403 CERT_EXPIRED，JSON 中写明过期日期；自建 CA 签发的证书在 TLS 握手即被拒"
            + (f"；运维页面“网关拒绝”分别列在门户与“TLS 握手（系统未识别）”下，并写明来自 {came_from}" if shown else "")
        )
        o.lines.append(
            "the portal's expired TLS certificate was answered 403 CERT_EXPIRED with its date; a certificate of "
            "another CA failed the TLS handshake"
            + (
                f"; the ops page listed both (under the portal, and under TLS handshakes from {came_from})"
                if shown
                else ""
            )
        )

    def _status_to_portal(self, approval: str) -> tuple[Envelope, bytes]:
        """The approval system's 补正 status of the sample application, to the portal only (the city's inbox is kept
        for the operator), signed."""
        status_root = self._sample("approval.status", "supplement-required.xml")
        recipients = status_root[0].find(qn("Recipients"))
        for cc in [el for el in recipients if el.get("role") == "cc"] if recipients is not None else []:
            recipients.remove(cc)
        return self.mail.sign(approval, status_root)

    async def _stops_polling(self, o: Outcome, http: Any, portal: str, approval: str) -> tuple[float, bool] | None:
        """The portal stops polling (hub.gateway.mailbox, ``idle_s``): the approval system sends it another status;
        once the gateway has not heard from the portal for its idle time it stops reading the portal's queue and puts
        the status back, where RabbitMQ shows it ready with no consumer; the ops overview shows the portal 间歇轮询
        (it polled a moment ago: ``HUB_POLL_GRACE_S``) with the status counted as waiting; the portal's next poll,
        without waiting, reads the queue again and gets it. (The idle time, whether the ops page was read), or None
        when something did not behave."""
        from hub.transport.users import queue_stats

        idle = gateway_idle_s()
        senv, sdata = self._status_to_portal(approval)
        await self.mail.publish(approval, senv, sdata)
        self._expect_reply(o, await self.mail.replies(approval, senv.message_id), "receipt", "accepted")
        queue = (await self.mail.transport(approval)).names.system_queue(portal)
        deadline = time.monotonic() + idle + 30  # the idle time, the sweep, the management API's statistics
        while True:
            stats = {q.name: q for q in await queue_stats(self.settings)}.get(queue)
            if stats is not None and stats.consumers == 0 and stats.ready >= 1:
                break
            if not o.expect(
                time.monotonic() < deadline,
                f"the gateway did not let the idle portal's queue go within {idle:g} s (RabbitMQ: {stats})",
            ):
                return None
            await asyncio.sleep(0.3)
        page = bool(self.ops_url)
        if page:  # what the people on duty see: not 未连接, and the status counted
            row = await self._adapter_on_the_page(portal, "polling")
            if not o.expect(
                row.get("state") == "polling" and (row.get("ready") or 0) >= 1 and row.get("last_poll_s") is not None,
                f"the ops overview's row of the portal between its polls: {row}",
            ):
                return None
            # its submission, polls and acknowledgements counted through the gateways (hub.store.gateway_activity)
            if not o.expect(
                ((row.get("gateway_requests") or {}).get("hour") or 0) >= 3,
                f"the ops overview's count of the portal's requests through the gateway: {row}",
            ):
                return None
        got = False
        for _ in range(20):  # the approvals process's hub.notice may come first
            async with http.get("/v1/inbox", params={"wait": "0"}) as r:
                polled, tag, delivered = r.status, r.headers.get("X-Hub-Delivery-Tag", ""), await r.read()
            if polled != 200:
                break
            opened = self.mail.open(delivered).envelope  # both signatures verified
            async with http.post(f"/v1/inbox/{tag}/ack") as r:
                o.expect(r.status == 204, f"POST /v1/inbox/{{tag}}/ack answered {r.status}")
            if opened.message_id == senv.message_id:
                got = True
                break
            if not o.expect(opened.service == "hub.notice", f"the portal's inbox held {opened.service_id}"):
                return None
        o.expect(got, "the portal's next poll (wait=0) did not get the status that waited in its queue")
        return (idle, page) if o.ok else None

    async def step_sdk_https(self, o: Outcome) -> None:
        """桦甸市林业局's office system sits on a county network that lets only HTTPS out: its adapter, written on
        adapters.sdk, takes part over the HTTPS gateway (``gateway_url`` in its settings; mutual TLS with the key and
        certificate of its enrolment directory) with the same handler code as over RabbitMQ. 吉林市林业局 sends it a
        notice (AMQP); the handler gets it verified (the sender's and the hub's signatures) from a long poll and
        returns its 签收 receipt, which the SDK submits over HTTPS; the receipt reaches 吉林市 and the hub records the
        delivery as signed for."""
        from adapters.sdk import AdapterSettings
        from adapters.sdk._check import check
        from hub.demo_scenario.proxy import ConnectProxy

        county, city = "county-220282-oa", "city-220200-oa"
        home = await self._enrol_adapter(o, county)
        if not o.ok:
            return
        agency, city_agency = self.directory.system(county).agency, self.directory.system(city).agency
        async with ConnectProxy() as proxy:  # the county network's outbound proxy: the only way out
            settings = AdapterSettings(
                system=county,
                home=home,
                gateway_url=self.gateway_url,
                gateway_proxy=proxy.url,
                gateway_wait=5,
                request_timeout=self.timeout,
            )
            # what the county's administrator runs after enrolment (hub adapter check): every step passes
            findings = await check(settings)
            if not o.expect(
                bool(findings) and all(f.ok and not f.warning for f in findings),
                "桦甸's self-check: " + "; ".join(f.line() for f in findings if not f.ok or f.warning),
            ):
                return
            await self._sdk_https(o, settings, county, city, agency, city_agency, proxy)
        if o.ok:
            await self._one_link(o, city)

    async def _sdk_https(
        self, o: Outcome, settings: Any, county: str, city: str, agency: str, city_agency: str, proxy: Any
    ) -> None:
        """step_sdk_https's exchange, through the county's proxy."""
        from adapters.sdk import Adapter, Context, SdkError
        from adapters.sdk.messages import DocumentOfficial
        from adapters.sdk.messages.document_receipt_v1 import DocumentReceiptV1
        from hub.envelope import Party, Recipient, build

        adapter = Adapter(county, settings)
        seen: list[Context] = []
        #: What this run signs for: the notice below. Whatever an earlier run left in 桦甸's inbox (the provincial
        #: OA's notice of step n, say) is taken and acknowledged without a receipt, so each run sends the same.
        ours: set[str] = set()

        @adapter.handles(DocumentOfficial)
        async def on_document(doc: DocumentOfficial, ctx: Context) -> DocumentReceiptV1 | None:
            seen.append(ctx)
            if ctx.message_id not in ours:
                return None
            return DocumentReceiptV1(
                document_message_id=ctx.message_id,
                recipient_agency_code=agency,
                status="received",
                at=datetime.now(CN_TZ).replace(microsecond=0),
                handler="桦甸市林业局办公室",
            )

        body = self._sample("document.official", "typical-notice.xml")[1][0]
        notice = build(
            service="document.official",
            sender=Party(city_agency, city),
            recipients=[Recipient.to(agency, county)],
            body=body,
            classification="公开",
            urgency="平件",
        )
        env, data = self.mail.sign(city, notice)
        ours.add(env.message_id)
        try:
            async with adapter:
                started, since = time.perf_counter(), datetime.now(UTC) - timedelta(seconds=1)
                await self.mail.publish(city, env, data)
                self._expect_reply(o, await self.mail.replies(city, env.message_id), "receipt", "accepted")
                deadline = time.monotonic() + self.timeout
                while not any(c.message_id == env.message_id for c in seen) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                signed_for = await self.mail.collect(
                    city,
                    lambda g: (
                        g.kind == "delivery"
                        and g.envelope.service == "document.receipt"
                        and g.envelope.ref_to == env.message_id
                    ),
                    expect=1,
                    timeout=self.timeout,
                )
                ms = (time.perf_counter() - started) * 1000
                tracked = await self._tracked_receipt(adapter, since)
        except SdkError as exc:
            o.problems.append(f"the adapter over HTTPS failed: {exc}")
            return
        ctx = next((c for c in seen if c.message_id == env.message_id), None)
        if not o.expect(ctx is not None, "the notice did not reach 桦甸's handler over HTTPS"):
            return
        assert ctx is not None
        o.expect(
            ctx.originator is not None and ctx.originator.system == city,
            "the delivery did not carry 吉林市's own signature, verified",
        )
        o.expect(len(signed_for) == 1, f"吉林市 got {len(signed_for)} 签收 receipts from 桦甸, not 1")
        # The 签收 receipt is applied to the delivery by the documents process (off the message path): wait for it.
        deadline = time.monotonic() + self.timeout
        while (states := await self.delivery_states(env.message_id)) != {county: "received"}:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        o.expect(states == {county: "received"}, f"the hub records 桦甸's delivery as {states}, not signed for")
        if not o.ok:
            return
        if not o.expect(bool(proxy.targets), "桦甸's adapter did not go through the county's proxy"):
            return
        # 桦甸's own 发文跟踪 (adapter.sent_messages, read from the gateway): the receipt it sent, delivered to 吉林市
        copies = [(d.system, d.state) for d in tracked.deliveries] if tracked is not None else None
        if not o.expect(
            copies == [(city, "delivered")],
            f"桦甸's document tracking (adapter.sent_messages) shows its 签收 receipt as {copies}, not delivered "
            "to 吉林市",
        ):
            return
        o.lines.append(
            "桦甸市林业局办公系统只能经县里的出口代理访问外网：适配器自检（hub adapter check）各项通过，"
            f"SDK 适配器经代理隧道、经网关长轮询收到吉林市林业局的通知（两个签名均已验证），"
            f"处理函数返回签收回执经 HTTPS 提交，{ms:.0f} ms 内送达吉林市林业局，枢纽记为已签收；"
            "桦甸的发文跟踪（adapter.sent_messages，经网关查询）显示这份签收回执“已送达”吉林市林业局"
        )
        o.lines.append(
            f"an adapter on the SDK over HTTPS only (gateway_url), through the county's proxy (gateway_proxy; its "
            f"self-check passed every step): 桦甸 received 吉林市's notice by long poll, its "
            f"handler's 签收 receipt went back over HTTPS and reached 吉林市 in {ms:.0f} ms; the delivery is recorded "
            "as signed for; 桦甸's own document tracking (adapter.sent_messages, from the gateway) shows that receipt "
            "delivered to 吉林市"
        )

    async def _tracked_receipt(self, adapter: Any, since: datetime) -> Any:
        """The 签收 receipt 桦甸's adapter sent since ``since``, as its document tracking reads it from the gateway,
        once its copy left the pending state (the hub marks it delivered after the broker's confirm; the receipt can
        reach 吉林市 a moment before that is recorded); None when there is none within the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            sent = [m async for m in adapter.sent_messages(since=since, service=["document.receipt"])]
            if (sent and all(d.state != "pending" for d in sent[-1].deliveries)) or time.monotonic() > deadline:
                return sent[-1] if sent else None
            await asyncio.sleep(0.2)

    async def _one_link(self, o: Outcome, system: str) -> None:
        """A system takes part one way (hub.gateway.links): 吉林市's office system subscribes to its queue over
        RabbitMQ as its own broker user; a poll over HTTPS with its certificate is then refused with 409
        GATEWAY_LINK_CONFLICT, and the gateway does not start reading the queue (which would split its deliveries
        and take its receipts). Whatever the subscription is handed meanwhile goes back to the queue."""
        import aiohttp

        from hub.gateway.links import CONFLICT
        from hub.transport.users import consumers_by_queue

        t = await self.mail.transport(system)
        queue, user = t.names.system_queue(system), t.names.user(system)
        done = asyncio.Event()

        async def hold(batch: list[Any]) -> None:
            await done.wait()
            await t.nack(batch, requeue=True)

        consumer = await t.consume(queue, hold, prefetch=1, max_batch=1, concurrency=1)
        try:
            # The management API lists a new consumer after a moment; the gateway's guard keeps a listing 2 s.
            deadline = time.monotonic() + 10
            while user not in (await consumers_by_queue(self.settings)).get(queue, ()):
                if not o.expect(time.monotonic() < deadline, "RabbitMQ does not list 吉林市's subscription"):
                    return
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.1)
            tls = self._client_tls(system)
            async with (
                aiohttp.ClientSession(self.gateway_url, connector=aiohttp.TCPConnector(ssl=tls)) as http,
                http.get("/v1/inbox", params={"wait": "0"}) as r,
            ):
                status, code = r.status, r.headers.get("X-Hub-Code", "")
        finally:
            done.set()
            await consumer.stop()
        if not o.expect((status, code) == (409, CONFLICT), f"吉林市's HTTPS poll beside AMQP: {status} {code}"):
            return
        # What the people on duty see: the overview's 网关拒绝 rows name the system and the code.
        shown = await self._refusals_on_the_page(o, {(system, CONFLICT)})
        if shown is None:
            return
        o.lines.append(
            "吉林市林业局已经 AMQP 订阅自己的队列，再经 HTTPS 轮询即被拒绝"
            "（409 GATEWAY_LINK_CONFLICT：一个系统只走一条链路）"
            + ("，运维页面“网关拒绝”一行列出吉林市及原因" if shown else "")
        )
        o.lines.append(
            "one way per system: 吉林市, subscribed to its queue over RabbitMQ, polled over HTTPS and was refused "
            "(409 GATEWAY_LINK_CONFLICT); the gateway did not start reading its queue"
            + ("; the ops page listed the refusal under 吉林市" if shown else "")
        )

    async def step_directory(self, o: Outcome) -> None:
        """``hub directory load`` while the hub runs (hub.pipeline.follow): the operator adds 九台区林业局 and its
        system, registering the certificate the hub CA just issued it (``cert-sha256``); without a restart the
        workers, the gateway's examination and the process engine take the new directory, and the new system sends an
        information report to 长春 over HTTPS. A second certificate issued for 九台 (from a copied request) is refused
        at the gateway: it is not the registered one. The operator then loads the usual directory again (a rerun of
        the demo starts from it)."""
        import aiohttp

        from hub.pipeline.client import credential_paths
        from hub.trust import pki

        await enroll(self.settings, JIUTAI, JIUTAI_CODE)
        registered = pki.fingerprint(pki.load_certificates(credential_paths(self.settings, JIUTAI)[1])[0])
        usual = self.settings.routes_dir / "directory.xml"
        added = self.settings.state_dir / "directory-jiutai.xml"
        # ValueError: the step says
        added.write_text(with_jiutai(usual.read_text(encoding="utf-8"), (registered,)), encoding="utf-8")
        started = time.monotonic()
        rc, out = await self.run_cli(["directory", "load", str(added)])
        if not o.expect(rc == 0, f"hub directory load exited {rc}: {out.strip()[-300:]}"):
            return
        version = (await self._db("SELECT max(version) AS v FROM directory_versions"))[0]["v"]
        followed = await self._until_followed(version)
        o.expect(followed, f"the hub's workers, examiners and engine did not take directory version {version} in 20 s")
        # What the people on duty see of it: the overview's 目录 row, every process of hub run on the new version.
        shown = await self._directory_on_the_page(version) if self.ops_url else None
        if shown is not None:
            o.expect(
                shown.get("state") == "ok" and shown.get("stored") == version,
                f"the ops overview's directory row says {shown.get('state')} for version {shown.get('stored')}",
            )
        tls = self._client_tls(JIUTAI)
        root = self._sample("info.report", "work-progress.xml")
        header = root[0]
        sender = header.find(qn("Sender"))
        sender.set("agency", JIUTAI_CODE)
        sender.set("system", JIUTAI)
        recipients = header.find(qn("Recipients"))
        for el in list(recipients):
            recipients.remove(el)
        etree.SubElement(recipients, qn("Agency"), role="to", code=CHANGCHUN_CODE, system=KEEP_FOR_OPERATOR)
        ns = {"i": "urn:forestry-hub:info.report:1"}
        root.find(".//i:Title", ns).text = "九台区林业局秋季造林工作进展"
        root.find(".//i:ReportingUnit/i:Name", ns).text = "九台区林业局"
        root.find(".//i:ReportingUnit/i:AgencyCode", ns).text = JIUTAI_CODE
        env, data = self.mail.sign(JIUTAI, root)
        status, outcome, answer = 0, None, b""
        async with aiohttp.ClientSession(self.gateway_url, connector=aiohttp.TCPConnector(ssl=tls)) as http:
            deadline = time.monotonic() + 15
            while True:  # the client identification reads the directory again every few seconds (not logged)
                async with http.post("/v1/messages", data=data, headers={"Content-Type": "application/xml"}) as r:
                    status, outcome, answer = r.status, r.headers.get("X-Hub-Outcome"), await r.read()
                    code = r.headers.get("X-Hub-Code")
                if code != "GATEWAY_UNKNOWN_SYSTEM" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        took = time.monotonic() - started
        if not o.expect(status == 202 and outcome == "accepted", f"POST /v1/messages by {JIUTAI}: {status} {outcome}"):
            return
        receipt = self.mail.open(answer).envelope  # the hub's signature on the receipt verifies
        o.expect(receipt.ref_to == env.message_id, "the receipt in the response is not about the report")
        got = await self.mail.deliveries(KEEP_FOR_OPERATOR, env.message_id, timeout=self.timeout)
        self._check_deliveries(o, {KEEP_FOR_OPERATOR: got}, JIUTAI)
        unregistered = await self._unregistered_certificate(o)
        if unregistered is None:
            return
        # The usual directory again: 九台 leaves it, the hub follows (a rerun of the demo starts from it).
        rc, out = await self.run_cli(["directory", "load", str(usual)])
        if not o.expect(rc == 0, f"hub directory load (the usual directory) exited {rc}: {out.strip()[-300:]}"):
            return
        version = (await self._db("SELECT max(version) AS v FROM directory_versions"))[0]["v"]
        o.expect(await self._until_followed(version), f"the hub did not take directory version {version} in 20 s")
        if not o.ok:
            return
        page_zh = page_en = ""
        if shown is not None:
            n = len(shown.get("processes") or [])
            page_zh = f"（运维页面概览“目录”一行：第 {version} 版，{n} 个进程均已采用）"
            page_en = f" (the ops overview's Directory row: version {version}, all {n} processes on it)"
        o.lines.append(
            "hub directory load 载入新增九台区林业局的目录（登记其证书指纹 cert-sha256），枢纽不重启："
            f"工作进程、网关审验进程和流程引擎随即改用新目录{page_zh}，"
            f"九台区林业局凭刚签发的证书经 HTTPS 向长春市林业局报送信息，{took:.1f} s 内受理并送达；"
            f"用复制的证书请求另签的一张九台证书（{unregistered}）未经登记，网关答复 403 CERT_NOT_REGISTERED；"
            "随后恢复原目录"
        )
        o.lines.append(
            "a directory adding 九台区林业局 with its certificate registered (cert-sha256) loaded while the hub runs: "
            f"no restart{page_en}, the new system's report over HTTPS accepted and delivered {took:.1f} s after the "
            f"load; a second certificate issued for 九台 ({unregistered}) was refused 403 CERT_NOT_REGISTERED; the "
            "usual directory loaded back"
        )

    async def _unregistered_certificate(self, o: Outcome) -> str | None:
        """A TLS certificate the hub CA issued for 九台 from a copied request, valid and not revoked, but not the one
        the directory registers for it: the gateway answers 403 ``CERT_NOT_REGISTERED`` naming it. Its serial, or
        None (the problem recorded in ``o``)."""
        tls, serial = self._issued_tls(
            self.settings.state_dir / "pki", self.settings.ca_passphrase, JIUTAI_CODE, JIUTAI
        )
        status, code, detail = await self._inbox_with(tls)
        if not o.expect(
            (status, code) == (403, "CERT_NOT_REGISTERED") and serial in detail,
            f"九台's unregistered certificate: {status} {code} {detail}",
        ):
            return None
        return serial[:12] + "…"

    def _issued_tls(
        self, pki_dir: Path, passphrase: str, agency: str, system: str, **issue: Any
    ) -> tuple[ssl.SSLContext, str]:
        """A TLS client context with a new certificate of ``system`` that the CA at ``pki_dir`` issued from a request
        (``issue``: ``now``/``days`` for one that lapsed), trusting the hub root; and the certificate's serial."""
        import tempfile

        from hub.trust import keys, pki

        key = keys.generate_private_key()
        issued = pki.issue_from_csr(pki_dir, passphrase, pki.make_csr(key, agency, system), tls=True, **issue)
        assert issued.issuer is not None
        with tempfile.TemporaryDirectory(prefix="hub-demo-tls-") as tmp:
            key_file, cert_file = Path(tmp) / "tls.key", Path(tmp) / "tls.pem"
            keys.write_private_file(key_file, keys.private_key_pem(key, None))
            keys.write_public_file(cert_file, pki.certificate_pem(issued.certificate, issued.issuer))
            tls = ssl.create_default_context(cafile=str(pki.PkiPaths(self.settings.state_dir / "pki").root_cert))
            tls.load_cert_chain(str(cert_file), str(key_file))
        return tls, issued.serial

    async def _inbox_with(self, tls: ssl.SSLContext) -> tuple[int, str, str]:
        """``GET /v1/inbox?wait=0`` at the gateway with ``tls``: the status, ``X-Hub-Code`` and the JSON ``detail``."""
        import aiohttp

        async with (
            aiohttp.ClientSession(self.gateway_url, connector=aiohttp.TCPConnector(ssl=tls)) as http,
            http.get("/v1/inbox", params={"wait": "0"}) as r,
        ):
            detail = str((await r.json()).get("detail", "")) if r.content_type == "application/json" else ""
            return r.status, r.headers.get("X-Hub-Code", ""), detail

    async def _until_followed(self, version: int, timeout: float = 20.0) -> bool:
        """Wait until every worker, every gateway examiner and the process engine logged that it works with directory
        ``version``."""
        import json

        if self.hub_log is None:
            await asyncio.sleep(3 * self.settings.directory_refresh_s)
            return True
        deadline = time.monotonic() + timeout
        while True:
            text = self.hub_log.read_text(encoding="utf-8", errors="replace")
            examiners = len(set(re.findall(r"gateway examiner (\d+) running", text)))
            engines = 1 if "processes ready: " in text else 0  # hub run's process engine, when it runs one
            workers = examined = engine = 0
            for line in text.splitlines():
                if f"directory version {version} " not in line:
                    continue
                try:
                    msg = str(json.loads(line).get("msg", ""))
                except ValueError:
                    continue
                if re.match(rf"worker \d+ now works with directory version {version} ", msg):
                    workers += 1
                elif msg.startswith(f"the gateway's examination now works with directory version {version} "):
                    examined += 1
                elif msg.startswith(f"the process engine now works with directory version {version} "):
                    engine += 1
            if workers >= self.workers and examined >= max(1, examiners) and engine >= engines:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)

    async def _on_the_page(
        self,
        pick: Callable[[dict[str, Any]], dict[str, Any]],
        done: Callable[[dict[str, Any]], bool],
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """What ``pick`` takes of the ops overview as the duty operator's page reads it (``/api/overview``), once
        ``done`` says it shows what is expected (or what it shows after ``timeout``: the management API's queue
        figures lag by a few seconds, the processes' metrics by a pass of their loops)."""
        async with self._ops() as page:
            await page.login(*self.operators["duty"])
            deadline = time.monotonic() + timeout
            while True:
                status, data = await page.json("/api/overview")
                shown = pick(data) if status == 200 and isinstance(data, dict) else {}
                if done(shown) or time.monotonic() > deadline:
                    return shown
                await asyncio.sleep(0.5)

    async def _refusals_on_the_page(self, o: Outcome, wanted: set[tuple[str, str]]) -> dict[str, Any] | None:
        """The overview's 网关拒绝 rows of each (system, code) of ``wanted`` ("system code" → row), once each shows a
        recent refusal with the address it came from; empty when the scenario has no ops page, None (the problem
        recorded in ``o``) when they do not."""
        if not self.ops_url:
            return {}

        def key(r: dict[str, Any]) -> str:
            return f"{r.get('system')} {r.get('code')}"

        keys = {f"{system} {code}" for system, code in wanted}

        def listed(got: dict[str, Any]) -> bool:
            return all((got.get(k) or {}).get("recent", 0) >= 1 and (got.get(k) or {}).get("peers") for k in keys)

        rows = await self._on_the_page(
            lambda d: {key(r): r for r in (d.get("gateway") or {}).get("refusals") or [] if key(r) in keys}, listed
        )
        if not o.expect(listed(rows), f"the ops overview's refusals of the gateway: {sorted(rows.items())}"):
            return None
        return rows

    async def _directory_on_the_page(self, version: int) -> dict[str, Any]:
        """The overview's directory row, once it shows ``version`` taken by every process."""
        return await self._on_the_page(
            lambda d: d.get("directory") or {}, lambda s: (s.get("state"), s.get("stored")) == ("ok", version), 10.0
        )

    async def _adapter_on_the_page(self, system: str, state: str) -> dict[str, Any]:
        """The overview's row of ``system`` (``adapters[]``), once it shows ``state`` with something waiting."""
        return await self._on_the_page(
            lambda d: next((a for a in d.get("adapters") or [] if a.get("system") == system), {}),
            lambda row: row.get("state") == state and (row.get("ready") or 0) >= 1,
        )

    def _ops(self) -> Any:
        from hub.demo_scenario.ops import OpsPage
        from hub.trust.pki import PkiPaths

        return OpsPage(self.ops_url, PkiPaths(self.settings.state_dir / "pki").root_cert)

    async def step_ops(self, o: Outcome) -> None:
        """The people on duty: the page is ready (RabbitMQ, PostgreSQL, a fresh CRL, the workers), /metrics counts
        what the workers accepted in this run and what a gateway started on its own answered, the duty operator finds
        the notice of step a and opens its trace (every city bureau's delivery), and the auditor sees the security
        officer's release of step f on record."""
        notice = self.sent.get("01-notice-winter-fire-prevention.xml")
        async with self._ops() as page:
            status, ready = await page.json("/ready")
            failing = [f"{c.get('name')}: {c.get('message')}" for c in ready.get("checks", []) if not c.get("ok")]
            o.expect(status == 200, f"/ready answered {status}: {', '.join(failing) or ready}")
            status, metrics = await page.get("/metrics")
            accepted = _metric_total(metrics, "hub_messages_total", 'outcome="accepted"')
            o.expect(status == 200 and accepted > 0, f"/metrics answered {status} with {accepted} accepted messages")
            standalone = await self._standalone_gateway_metrics(o, page)
            await page.login(*self.operators["duty"])
            status, found = await page.get("/messages", message_id=notice.message_id if notice else "")
            o.expect(status == 200 and notice is not None and notice.message_id in found, "search did not find it")
            status, trace = await page.get(f"/messages/{notice.message_id}" if notice else "/messages/-")
            cities = [s.id for s in _city_systems(self.directory, "document.official")]
            missing = [c for c in cities if c not in trace]
            o.expect(status == 200 and not missing, f"the trace ({status}) does not show the deliveries to {missing}")
        officer = self.operators["security"][0]
        async with self._ops() as auditor:
            await auditor.login(*self.operators["auditor"])
            status, audit = await auditor.get("/audit", operator=officer)
        o.expect(status == 200 and "quarantine.release" in audit, f"the auditor does not see {officer}'s release")
        if not o.ok:
            return
        o.lines.append(
            f"/ready 就绪（RabbitMQ、PostgreSQL、吊销列表、工作进程）；/metrics 本次运行受理 {accepted:.0f} 条；"
            f"值班员检索到步骤 a 的通知并打开其轨迹（{len(cities)} 个系统的投递）；审计员看到保密员的放行记录"
        )
        o.lines.append(
            f"/ready is ready; /metrics counts {accepted:.0f} accepted this run; the duty operator found step a's "
            f"notice and its trace ({len(cities)} deliveries); the auditor sees the security officer's release"
        )
        o.lines.append(
            f"另一台网关单独运行（hub gateway，端口 {standalone}）：它的心跳和请求数出现在本机运维页面的 /metrics 上，"
            "停止后心跳消失"
        )
        o.lines.append(
            f"a gateway started on its own (hub gateway, port {standalone}): its heartbeat and requests showed on this "
            "machine's ops /metrics, and its heartbeat went when it stopped"
        )

    async def _standalone_gateway_metrics(self, o: Outcome, page: Any) -> int | None:
        """A second gateway started on its own (``hub gateway``, as on a machine of its own but here beside the hub):
        answered a request, its heartbeat and that request are on this machine's ops ``/metrics``; stopped
        (SIGTERM), its heartbeat is gone. Its port, or None (the problem recorded in ``o``)."""
        import aiohttp

        port = free_port()
        log_path = self.settings.state_dir / "gateway-standalone.log"
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "hub.cli", "gateway", "--port", str(port), "--examiners", "0"),
                env=self.settings.to_env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        beat = f'pid="{proc.pid}"'
        try:
            url, tls = f"https://127.0.0.1:{port}", self._client_tls("prov-220000-portal")
            deadline = time.monotonic() + self.timeout
            async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=tls)) as http:
                while True:
                    try:
                        async with http.get("/openapi.json") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if proc.returncode is not None or time.monotonic() > deadline:
                        o.problems.append(f"hub gateway did not serve: {log_path.read_text()[-300:]}")
                        return None
                    await asyncio.sleep(0.1)
            while True:  # its heartbeat is written at start, every 2 s after
                status, metrics = await page.get("/metrics")
                shown = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("hub_process_heartbeat_timestamp_seconds{") and beat in line
                ]
                if status == 200 and shown and 'role="gateway"' in shown[0]:
                    break
                if time.monotonic() > deadline:
                    o.problems.append(f"the ops page's /metrics ({status}) does not show the gateway pid {proc.pid}")
                    return None
                await asyncio.sleep(0.2)
            requests = _metric_total(metrics, "hub_gateway_requests_total", 'endpoint="/openapi.json"')
            if not o.expect(requests >= 1, f"the ops page's /metrics counts {requests} of its /openapi.json requests"):
                return None
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code: int | None = await asyncio.wait_for(proc.wait(), self.timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                code = None
        status, metrics = await page.get("/metrics")
        if not o.expect(code == 0, f"hub gateway ended with {code}: {log_path.read_text()[-300:]}"):
            return None
        if not o.expect(status == 200 and beat not in metrics, "the stopped gateway's heartbeat is still shown"):
            return None
        return port

    def _adapter_step(self, name: str) -> Callable[[Outcome], Awaitable[None]]:
        """Adapter ``name``'s part (hub.demo_scenario.adapters): its simulated external system, the adapter in its
        own process, and the other systems of its part, against this running hub."""

        async def step(o: Outcome) -> None:
            from hub.demo_scenario.adapters import play, systems_to_drain

            async def drain() -> int:
                names = systems_to_drain(self.directory, [KEEP_FOR_OPERATOR])
                return sum(await asyncio.gather(*(self.mail.drain(s) for s in names)))

            try:
                problems = await play(self.settings, name, o.lines, drain=drain)
            except Exception as exc:  # an adapter's demo that broke: say which and how, and go on with the others
                problems = [f"{name}: {type(exc).__name__}: {str(exc)[:300]}"]
            o.problems.extend(problems)
            if o.ok and not o.lines:
                o.problems.append(f"{name}: its demo printed nothing")

        return step

    def _process_step(self, name: str) -> Callable[[Outcome], Awaitable[None]]:
        """Process ``name``'s part (hub.demo_scenario.processes) against this running hub. The parts act as
        长春市林业局 too; what waits in its queue for the operator (``KEEP_FOR_OPERATOR``) is held aside, unacknowledged
        on a connection of the scenario's own, from before the first part until after the last, then put back."""
        from hub.demo_scenario.processes import PROCESS_STEPS

        first, last = PROCESS_STEPS[0][1], PROCESS_STEPS[-1][1]

        async def step(o: Outcome) -> None:
            from hub.demo_scenario.adapters import systems_to_drain
            from hub.demo_scenario.processes import play

            async def drain() -> int:
                names = systems_to_drain(self.directory, [KEEP_FOR_OPERATOR])
                return sum(await asyncio.gather(*(self.mail.drain(s) for s in names)))

            if name == first:
                await self._hold_kept()
            try:
                problems = await play(self.settings, name, o.lines, drain=drain)
            except Exception as exc:  # a process's demo that broke: say which and how, and go on with the others
                problems = [f"{name}: {type(exc).__name__}: {str(exc)[:300]}"]
            finally:
                if name == last:
                    await self._release_kept()
            o.problems.extend(problems)
            if o.ok and not o.lines:
                o.problems.append(f"{name}: its demo printed nothing")

        return step

    async def _hold_kept(self) -> None:
        from hub.transport import Transport

        t = await Transport.connect(self.settings, client_name="demo-keeper")
        self._keeper: Any = t
        queue = t.names.system_queue(KEEP_FOR_OPERATOR)
        self._kept: list[Any] = []
        while batch := await t.fetch(queue, max_messages=500):
            self._kept += batch

    async def _release_kept(self) -> None:
        t = getattr(self, "_keeper", None)
        if t is None:
            return
        try:
            if self._kept:
                await t.nack(self._kept, requeue=True)
        finally:
            self._keeper = None
            await t.close()

    async def step_evidence(self, o: Outcome) -> None:
        rc, text = await self.run_cli(["evidence", "checkpoint"])
        o.expect(rc == 0, f"hub evidence checkpoint exited {rc}: {text.strip()[:300]}")
        checkpoint = text.strip().splitlines()[-1] if text.strip() else ""
        rc, text = await self.run_cli(["evidence", "verify"])
        verified = next((ln for ln in text.splitlines() if "证据链" in ln), text.strip()[:300])
        o.expect(rc == 0 and "证据链完整" in text, f"hub evidence verify exited {rc}: {verified}")
        # Each checkpoint is also written down outside the database (hub.store.anchors), and verify checked them.
        anchored = re.search(r"(\d+) anchored outside the database", text)
        o.expect(
            anchored is not None and int(anchored.group(1)) > 0,
            f"hub evidence verify checked no anchored checkpoint (evidence/anchors.log): {verified}",
        )
        o.lines.append(f"hub evidence checkpoint → {checkpoint}")
        o.lines.append(f"hub evidence verify → {verified}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the demo's ops page and gateway, step m's gateway on its own)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metric_total(text: str, name: str, label: str) -> float:
    """The sum of the samples of ``name`` carrying ``label`` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            total += float(line.rsplit(" ", 1)[-1])
    return total


def _hub_signer_fingerprint(delivery: bytes) -> str:
    """The fingerprint of the certificate in a delivery's (the hub's) signature."""
    import base64

    from cryptography import x509

    from hub.trust.pki import fingerprint

    root = parse(delivery, max_bytes=len(delivery) + 1)
    text = root.findtext(
        "{http://www.w3.org/2000/09/xmldsig#}Signature/{http://www.w3.org/2000/09/xmldsig#}KeyInfo/"
        "{http://www.w3.org/2000/09/xmldsig#}X509Data/{http://www.w3.org/2000/09/xmldsig#}X509Certificate"
    )
    return fingerprint(x509.load_der_x509_certificate(base64.b64decode("".join((text or "").split())))) if text else ""
