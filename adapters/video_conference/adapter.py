"""视频会议系统适配器 The video-conference platform's adapter (system ``prov-220000-video``).

    hub adapter run video_conference --config settings.toml

- ``meeting.booking`` → ``POST /api/v1/meetings`` with ``Idempotency-Key: <hub message id>`` (a redelivery after a
  crash gets the platform's stored answer: never a second meeting). Booked → the booker gets ``meeting.notice``
  (the reply, ``BookingMessageId`` = the booking) and every other venue's agency gets a ``meeting.notice`` (from an
  outbox written in the same transaction as the handled-id record, sent after commit under deterministic message
  ids). Refused by the platform (``409 VC_SLOT_TAKEN``, ``422 VC_…``) → the booker gets a signed
  ``delivery.refusal`` with the platform's code and its Chinese reason.
- ``meeting.confirm`` (参会回执 of a participant) → ``POST /api/v1/meetings/{number}/attendance``, same key rule.
- The hub's ``hub.notice`` of kind ``meeting-refused`` about a booking (its register of rooms and terminals refused
  it: ``MEETING_SLOT_TAKEN``, hub/processes/meetings.py) → the platform never keeps that meeting: booked already →
  ``DELETE /api/v1/meetings/{number}`` and the venues' notices not yet sent are dropped; not handled yet → the
  booking, when it comes, is refused with the hub's code and reason without calling the platform (when an earlier
  POST of it may have reached the platform, ``_POSTED``: asked again with the same key, its meeting cancelled).
- Platform down (connection refused, timeout, 5xx, an answer that is not the contract's) → ``Retry`` with growing
  pauses: the delivery stays in the hub's queue, nothing is lost, and the key makes the later call safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import sqlite3
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from lxml import etree

from adapters.sdk import (
    Adapter,
    ConfigurationError,
    Context,
    HubRefused,
    HubUnavailable,
    MessageInvalid,
    Reject,
    RequestTimeout,
    Retry,
    SdkError,
    StoreConnection,
    to,
)
from adapters.sdk.messages import HubNoticeV1, MeetingBookingV1, MeetingConfirmV1, MeetingNoticeV1
from adapters.video_conference.mapping import (
    BadPlatformAnswer,
    attendance_request,
    booking_request,
    notice,
    notice_id,
    participants,
    refusal,
)

SYSTEM = "prov-220000-video"
#: The largest platform answer read (bytes); a longer one is not the contract's (retried like a broken answer).
MAX_ANSWER = 1024 * 1024
log = logging.getLogger("adapters.video_conference")

adapter = Adapter(SYSTEM)
_state: dict[str, Any] = {}

_OUTBOX = """
CREATE TABLE IF NOT EXISTS vc_notice_outbox (
    message_id      TEXT PRIMARY KEY,
    booking_id      TEXT NOT NULL,
    agency          TEXT NOT NULL,
    body            BLOB NOT NULL,
    conversation_id TEXT NOT NULL,
    urgency         TEXT NOT NULL,
    classification  TEXT NOT NULL DEFAULT '公开',
    period          TEXT,
    state           TEXT NOT NULL DEFAULT 'pending',
    detail          TEXT
)
"""


#: What the adapter booked on the platform (written with the booking's handled-id record), and the bookings the hub
#: refused (its meeting-refused notices), so a booking that arrives after its refusal is never booked.
_BOOKINGS = """
CREATE TABLE IF NOT EXISTS vc_bookings (
    booking_id     TEXT PRIMARY KEY,
    meeting_number TEXT NOT NULL
)
"""
_HUB_REFUSED = """
CREATE TABLE IF NOT EXISTS vc_hub_refused (
    booking_id TEXT PRIMARY KEY,
    code       TEXT NOT NULL,
    reason     TEXT NOT NULL
)
"""
_NOTICE_CODE = re.compile(r"^([A-Z][A-Z0-9_]{1,63}) ")
#: The bookings whose POST may have reached the platform, written and committed *before* the call in a file of its
#: own beside the store (``<store>.vc-posted``): neither a Retry's rollback of the handler's savepoint nor a SIGKILL
#: before the batch commits undoes it, and the batch's transaction, which holds the store's write lock, does not
#: stand in its way. A booking the hub refused that is marked here is withdrawn from the platform when it comes
#: again (its POST timed out, or the adapter died between the platform's 201 and the commit, so ``vc_bookings``
#: has no meeting number for the hub's notice). A mark is kept until a day after its booking expired.
_POSTED = """
CREATE TABLE IF NOT EXISTS vc_posted (
    booking_id TEXT PRIMARY KEY,
    expires    REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Config:
    platform_url: str
    token: str
    request_timeout: float = 10.0
    retry_initial: float = 0.5
    max_retry_delay: float = 60.0
    notice_poll_interval: float = 0.2
    ca_file: str = ""

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Config:
        def bad(what: str) -> ConfigurationError:
            return ConfigurationError(f"video_conference [adapter]: {what}", code="VC_CONFIG")

        url = str(extra.get("platform_url", "")).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise bad("platform_url must be an http:// or https:// URL of the platform's API")
        token = str(extra.get("token", ""))
        token_file = str(extra.get("token_file", ""))
        if token_file:
            try:
                token = Path(token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise bad(f"token_file cannot be read ({type(exc).__name__})") from None
        if not token:
            raise bad("token or token_file (the platform's bearer token) is required")
        values: dict[str, float] = {}
        for name in ("request_timeout", "retry_initial", "max_retry_delay", "notice_poll_interval"):
            if name in extra:
                try:
                    values[name] = float(extra[name])
                except (TypeError, ValueError):
                    raise bad(f"{name} must be a number of seconds") from None
                if not math.isfinite(values[name]) or values[name] <= 0:  # TOML has nan and inf
                    raise bad(f"{name} must be a positive number of seconds")
        ca_file = str(extra.get("ca_file", ""))
        if ca_file and not Path(ca_file).is_file():
            raise bad(f"ca_file {ca_file} does not exist")
        return cls(platform_url=url, token=token, ca_file=ca_file, **values)


def config() -> Config:
    c = _state.get("config")
    if c is None:
        if adapter.settings is None:
            raise ConfigurationError("video_conference: no settings", code="VC_CONFIG")
        c = _state["config"] = Config.from_extra(dict(adapter.settings.extra))
    return c  # type: ignore[no-any-return]


def _store_path() -> str:
    s = adapter.settings
    if s is None:
        raise ConfigurationError("video_conference: no settings", code="VC_CONFIG")
    kind, target = s.store_target()
    if kind != "sqlite" or target == ":memory:":
        raise ConfigurationError(
            "video_conference keeps its notice outbox in the SDK's SQLite store: leave store empty or sqlite:///PATH",
            code="VC_CONFIG",
        )
    return target


# ---------------------------------------------------------------------------------------------- start / stop


@adapter.on_startup
async def open_platform() -> None:
    c = config()
    path = _store_path()
    _state["session"] = _new_session(c)
    outbox = _state["outbox"] = NoticeOutbox(path, c.notice_poll_interval)
    await outbox.open()
    outbox.start()
    log.info("video-conference platform adapter open", extra={"system": SYSTEM, "platform": c.platform_url})


@adapter.on_shutdown
async def close_platform() -> None:
    outbox: NoticeOutbox | None = _state.pop("outbox", None)
    if outbox is not None:  # the start-up hook may never have run
        await outbox.stop()
    posted: sqlite3.Connection | None = _state.pop("posted", None)
    if posted is not None:  # a handler of the SDK's drain after this opens it again (_posted())
        posted.close()
    s: aiohttp.ClientSession | None = _state.pop("session", None)
    if s is not None:  # a handler of the SDK's drain after this opens a fresh one (session())
        await s.close()


def _new_session(c: Config) -> aiohttp.ClientSession:
    ssl_ctx: ssl.SSLContext | bool = True
    if c.ca_file:
        ssl_ctx = ssl.create_default_context(cafile=c.ca_file)
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=c.request_timeout),
        connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=32),
        headers={"Authorization": f"Bearer {c.token}", "User-Agent": "forestry-hub video_conference adapter"},
    )


def session() -> aiohttp.ClientSession:
    s = _state.get("session")
    if s is None or s.closed:
        s = _state["session"] = _new_session(config())
    return s  # type: ignore[no-any-return]


def _posted() -> sqlite3.Connection:
    """The marks of bookings that may have reached the platform (``_POSTED``), opened on first use."""
    conn: sqlite3.Connection | None = _state.get("posted")
    if conn is None:
        conn = sqlite3.connect(_store_path() + ".vc-posted", isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # on disk before the POST leaves
        conn.execute(_POSTED)
        conn.execute("DELETE FROM vc_posted WHERE expires < ?", (time.time() - 86400,))
        _state["posted"] = conn
    return conn


def _mark_posted(ctx: Context) -> None:
    _posted().execute(
        "INSERT OR IGNORE INTO vc_posted (booking_id, expires) VALUES (?, ?)",
        (ctx.message_id, ctx.expires.timestamp()),
    )


def _was_posted(booking_id: str) -> bool:
    return _posted().execute("SELECT 1 FROM vc_posted WHERE booking_id = ?", (booking_id,)).fetchone() is not None


# ---------------------------------------------------------------------------------------------- the platform


def _backoff(ctx: Context) -> float:
    c = config()
    return float(min(c.retry_initial * 2 ** min(ctx.attempt, 16), c.max_retry_delay))


async def call(method: str, path: str, body: dict[str, Any] | None, ctx: Context) -> tuple[int, Any]:
    """One write to the platform, keyed by the hub message id. Returns (status, JSON answer) for 2xx and for the
    4xx refusals of the contract; raises ``Retry`` for everything that may pass (down, timeout, 5xx, 408/429,
    an answer that is not JSON, our own token refused: an operator must fix that, nothing is lost meanwhile)."""
    c = config()
    headers = {"Idempotency-Key": ctx.message_id}
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    if data is not None:
        headers["Content-Type"] = "application/json; charset=utf-8"
    fields = {"system": SYSTEM, "message_id": ctx.message_id, "service": ctx.service_id}
    loop = asyncio.get_running_loop()
    quiet = _state.get("down_until", 0.0) - loop.time()
    if quiet > 0:  # the platform failed a moment ago: do not make every delivery of the batch wait for a timeout
        raise Retry(max(quiet, _backoff(ctx)), "视频会议系统刚才不可用 the platform was down a moment ago")
    try:
        async with session().request(method, c.platform_url + path, data=data, headers=headers) as resp:
            status = resp.status
            raw = await resp.content.read(MAX_ANSWER + 1)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        delay = _backoff(ctx)
        _state["down_until"] = loop.time() + min(delay, c.max_retry_delay, 5.0)
        log.warning("platform unreachable (%s), retry in %.1f s", type(exc).__name__, delay, extra=fields)
        raise Retry(delay, f"视频会议系统不可达 the platform is unreachable ({type(exc).__name__})") from None
    try:
        if len(raw) > MAX_ANSWER:
            raise ValueError("the answer is larger than MAX_ANSWER")
        answer = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep
        answer = BadPlatformAnswer
    if status >= 500 or status in (408, 429) or answer is BadPlatformAnswer:
        delay = _backoff(ctx)
        _state["down_until"] = loop.time() + min(delay, c.max_retry_delay, 5.0)
        log.warning("platform answered HTTP %s (not usable), retry in %.1f s", status, delay, extra=fields)
        raise Retry(delay, f"视频会议系统暂不可用 the platform answered HTTP {status}")
    if status in (401, 403):
        log.error("the platform refused our token (HTTP %s): check [adapter] token", status, extra=fields)
        raise Retry(c.max_retry_delay, f"视频会议系统拒绝了适配器的令牌 the platform refused the token (HTTP {status})")
    return status, answer


# ---------------------------------------------------------------------------------------------- handlers


@adapter.handles(MeetingBookingV1)
async def on_booking(msg: MeetingBookingV1, ctx: Context) -> MeetingNoticeV1:
    fields = {"system": SYSTEM, "message_id": ctx.message_id, "service": ctx.service_id}
    db: sqlite3.Connection = ctx.db
    db.execute(_HUB_REFUSED)
    refused = db.execute("SELECT code, reason FROM vc_hub_refused WHERE booking_id = ?", (ctx.message_id,)).fetchone()
    if refused is not None:  # the hub's register refused it before it was handled: never kept on the platform
        if _was_posted(ctx.message_id):  # ... but an earlier POST of it may have booked it there
            await _withdraw(msg, ctx, refused[0])
        log.info("booking refused by the hub before it was handled: %s", refused[0], extra=fields)
        raise Reject(refused[0], refused[1][:1000])
    _mark_posted(ctx)
    status, answer = await call("POST", "/api/v1/meetings", booking_request(msg), ctx)
    if status in (200, 201):
        try:
            reply = notice(answer, msg, ctx.message_id)
        except BadPlatformAnswer as exc:
            delay = _backoff(ctx)
            log.error("the platform's booking answer breaks the contract: %s", exc, extra=fields)
            raise Retry(delay, f"VC_BAD_ANSWER: {exc}") from None
        body = etree.tostring(reply.to_element())
        db.execute(_OUTBOX)
        db.execute(_BOOKINGS)
        db.execute(
            "INSERT OR IGNORE INTO vc_bookings (booking_id, meeting_number) VALUES (?, ?)",
            (ctx.message_id, reply.meeting_number),
        )
        for agency in participants(msg, ctx.sender.agency):
            db.execute(
                "INSERT OR IGNORE INTO vc_notice_outbox (message_id, booking_id, agency, body, conversation_id,"
                " urgency, classification, period) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    notice_id(ctx.message_id, agency),
                    ctx.message_id,
                    agency,
                    body,
                    ctx.conversation_id,
                    ctx.urgency,
                    ctx.classification,
                    ctx.period,
                ),
            )
        log.info("booked on the platform", extra={**fields, "meeting_number": reply.meeting_number})
        outbox: NoticeOutbox | None = _state.get("outbox")
        if outbox is not None:
            outbox.poke()
        return reply
    code, reason = refusal(status, answer)
    log.info("the platform refused the booking: %s", code, extra=fields)
    raise Reject(code, reason)


async def _withdraw(msg: MeetingBookingV1, ctx: Context, code: str) -> None:
    """A booking the hub refused whose earlier POST may have reached the platform (it timed out, or the adapter died
    before the commit): the same POST with the same key gets the platform's stored answer (a booking it made
    then, or its refusal); a meeting it made is cancelled. Anything that may pass raises Retry (``call``)."""
    fields = {"system": SYSTEM, "message_id": ctx.message_id, "service": ctx.service_id}
    status, answer = await call("POST", "/api/v1/meetings", booking_request(msg), ctx)
    if status not in (200, 201):
        return  # the platform refused it: nothing of it there
    try:
        number = notice(answer, msg, ctx.message_id).meeting_number
    except BadPlatformAnswer as exc:
        log.error("the platform's booking answer breaks the contract: %s", exc, extra=fields)
        raise Retry(_backoff(ctx), f"VC_BAD_ANSWER: {exc}") from None
    status, _answer = await call("DELETE", f"/api/v1/meetings/{quote(str(number), safe='')}", None, ctx)
    if status >= 300 and status != 404:
        log.error("the platform would not cancel a meeting the hub refused (HTTP %s)", status, extra=fields)
    else:
        log.info("meeting cancelled on the platform: the hub refused its booking (%s)", code, extra=fields)


@adapter.handles(MeetingConfirmV1)
async def on_confirm(msg: MeetingConfirmV1, ctx: Context) -> None:
    # The meeting number goes into the platform's URL path: quoted whole, so no "/", ".." or "?" can reach another
    # endpoint of the platform.
    number = quote(str(msg.meeting_number), safe="")
    status, answer = await call("POST", f"/api/v1/meetings/{number}/attendance", attendance_request(msg), ctx)
    if 200 <= status < 300:
        return None
    code, reason = refusal(status, answer)
    raise Reject(code, reason)


@adapter.handles(HubNoticeV1)
async def on_hub_notice(msg: HubNoticeV1, ctx: Context) -> None:
    """The hub refused a booking (its register of rooms and terminals: MEETING_SLOT_TAKEN): the platform must not
    keep it. Other hub notices are for people, not for the platform: recorded as handled."""
    if msg.kind != "meeting-refused" or not msg.refers_to:
        return None
    booking_id = str(msg.refers_to)
    fields = {"system": SYSTEM, "message_id": ctx.message_id, "service": ctx.service_id, "booking": booking_id}
    m = _NOTICE_CODE.match(msg.text)
    code = m.group(1) if m else "MEETING_REFUSED"
    db: sqlite3.Connection = ctx.db
    for ddl in (_HUB_REFUSED, _BOOKINGS, _OUTBOX):
        db.execute(ddl)
    booked = db.execute("SELECT meeting_number FROM vc_bookings WHERE booking_id = ?", (booking_id,)).fetchone()
    if booked is not None:
        number = quote(str(booked[0]), safe="")
        status, _answer = await call("DELETE", f"/api/v1/meetings/{number}", None, ctx)
        if status >= 300 and status != 404:
            log.error("the platform would not cancel a meeting the hub refused (HTTP %s)", status, extra=fields)
        else:
            log.info("meeting cancelled on the platform: the hub refused its booking (%s)", code, extra=fields)
        # The venues' notices not yet out are dropped: the meeting does not hold (the hub tells those already told).
        db.execute(
            "UPDATE vc_notice_outbox SET state = 'cancelled', detail = ? WHERE booking_id = ? AND state = 'pending'",
            (code, booking_id),
        )
    elif _was_posted(booking_id):  # its POST timed out or the adapter died before the commit: still in the queue
        log.info("the hub refused a booking still to be handled: withdrawn when it comes (%s)", code, extra=fields)
    db.execute(
        "INSERT OR IGNORE INTO vc_hub_refused (booking_id, code, reason) VALUES (?, ?, ?)",
        (booking_id, code, f"枢纽拒绝了该会议预约：{msg.text}"[:1000]),
    )
    return None


# ---------------------------------------------------------------------------------------------- notice outbox


class NoticeOutbox:
    """Sends the participants' notices the booking handler wrote (committed with the booking's handled-id record).
    Each has a deterministic message id: a resend after a crash is a hub duplicate. Its own SQLite connection to
    the store, used from a thread of its own (the SDK's connection holds the write lock during a batch;
    ``adapters.sdk.StoreConnection``)."""

    def __init__(self, path: str, interval: float, concurrency: int = 16) -> None:
        self.path, self.interval = path, interval
        self.sem = asyncio.Semaphore(concurrency)
        self.counts = {"sent": 0, "duplicate": 0, "failed": 0}
        self.db = StoreConnection(path, _OUTBOX, name="vc-notice-outbox-db")
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def open(self) -> None:
        await self.db.open()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vc-notice-outbox")

    def poke(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.db.close()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                rows = await self.db.sql(
                    "SELECT message_id, agency, body, conversation_id, urgency, classification, period"
                    " FROM vc_notice_outbox"
                    " WHERE state = 'pending' ORDER BY rowid LIMIT 256",
                )
                if rows:
                    await asyncio.gather(*(self._send(*r) for r in rows))
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notice outbox round failed", extra={"system": SYSTEM})
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def _send(
        self,
        mid: str,
        agency: str,
        body: bytes,
        conversation_id: str,
        urgency: str,
        classification: str,
        period: str | None,
    ) -> None:
        async with self.sem:
            fields = {"system": SYSTEM, "message_id": mid, "service": "meeting.notice/1", "recipient": agency}
            try:
                receipt = await adapter.send(
                    etree.fromstring(body),
                    service="meeting.notice",
                    version=1,
                    to=to(agency),
                    message_id=mid,
                    conversation_id=conversation_id,
                    urgency=urgency,
                    classification=classification,
                    period=period,
                    timeout=30.0,
                )
            except (RequestTimeout, HubUnavailable) as exc:
                log.warning("notice not sent yet (%s), again later", exc.code, extra=fields)
                await asyncio.sleep(min(self.interval * 10, 5.0))
                return
            except (HubRefused, MessageInvalid) as exc:  # refused (unknown agency …) or cannot be built: never again
                log.warning("notice refused by the hub: %s", exc.code, extra=fields)
                await self.db.sql(
                    "UPDATE vc_notice_outbox SET state = 'failed', detail = ? WHERE message_id = ?",
                    (f"{exc.code}: {exc.detail}"[:500], mid),
                )
                self.counts["failed"] += 1
                return
            except SdkError as exc:  # anything else may pass: the notice stays pending and is tried again
                log.warning("notice not sent yet (%s), again later", exc.code, extra=fields)
                await asyncio.sleep(min(self.interval * 10, 5.0))
                return
            await self.db.sql("UPDATE vc_notice_outbox SET state = ? WHERE message_id = ?", (receipt.outcome, mid))
            self.counts["duplicate" if receipt.outcome == "duplicate" else "sent"] += 1
