"""A simulated video-conference platform (视频会议系统) following the contract in README.md.

    platform = VideoPlatform(token="…")
    await platform.start()            # 127.0.0.1, a free port; platform.url
    await platform.take_down()        # the port refuses connections ("the platform is down")
    await platform.bring_up()         # the same port again
    await platform.stop()

It keeps its meetings in memory: a booking whose room or terminal is taken in an overlapping slot is refused
(409 ``VC_SLOT_TAKEN``), every write is idempotent by its ``Idempotency-Key`` (the hub message id; a repeat gets the
stored answer again, with ``Idempotent-Replayed: true``, and is counted in ``replays``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

MAX_BODY = 256 * 1024
TITLE_MAX = 100  # the platform's own limit (the hub's schema allows 500)
ROOM_MAX = 64


@dataclass
class Meeting:
    number: str
    title: str
    start: datetime
    end: datetime
    organizer: dict[str, str]
    venues: list[dict[str, Any]]
    booking_key: str
    status: str = "booked"  # booked / cancelled
    attendance: dict[str, dict[str, Any]] = field(default_factory=dict)  # agency code → answer

    def public(self) -> dict[str, Any]:
        return {
            "meeting_number": self.number,
            "status": self.status,
            "title": self.title,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "duration_minutes": int((self.end - self.start).total_seconds() // 60),
            "organizer": self.organizer,
            "venues": self.venues,
            "dial_in": [
                {"protocol": "sip", "address": f"sip:{self.number}@vc.lyj.jl.gov.cn"},
                {"protocol": "h323", "address": f"{self.number}@10.22.0.8"},
            ],
            "attendance": list(self.attendance.values()),
        }


def _error(status: int, code: str, title: str, reason: str, **more: Any) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "title": title, "reason": reason, **more}


class VideoPlatform:
    """The platform's REST API (see README.md), with knobs for tests."""

    def __init__(
        self, token: str = "", host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.meetings: dict[str, Meeting] = {}
        #: Idempotency-Key → (status, body): the stored answer of every write.
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}
        #: How often a write came again with a key already answered (a redelivery / retry).
        self.replays = 0
        #: Writes that reached the handlers (after auth), per operation.
        self.calls: dict[str, int] = {}
        #: "ok" or "garbage" (answer 200 with a body that is not JSON: a broken platform, for tests).
        self.mode = "ok"
        self._next = 880200
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------ lifetime

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/api/v1/meetings", self._book)
        app.router.add_get("/api/v1/meetings/{number}", self._status)
        app.router.add_patch("/api/v1/meetings/{number}", self._change)
        app.router.add_delete("/api/v1/meetings/{number}", self._cancel)
        app.router.add_post("/api/v1/meetings/{number}/attendance", self._attendance)
        app.router.add_get("/api/v1/terminals", self._terminals)
        app.router.add_get("/api/v1/health", self._health)
        return app

    async def start(self) -> VideoPlatform:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await self.bring_up()
        return self

    async def bring_up(self) -> None:
        assert self._runner is not None
        if self._site is not None:
            return
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context)
        await self._site.start()
        if not self.port:
            self.port = int(self._runner.addresses[0][1])

    async def take_down(self) -> None:
        """Down as a crashed platform is: the port refuses connections, and the open keep-alive ones are closed
        (stopping the site alone stops only the listening socket; a client's pooled connection would go on working)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            for conn in self._runner.server.connections:
                conn.force_close()

    async def stop(self) -> None:
        await self.take_down()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------------------------------ views for tests

    def booked(self) -> list[Meeting]:
        return [m for m in self.meetings.values() if m.status == "booked"]

    def by_key(self, key: str) -> Meeting | None:
        return next((m for m in self.meetings.values() if m.booking_key == key), None)

    # ------------------------------------------------------------------------------------------ HTTP

    async def _guard(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return self._json(*_error(401, "VC_UNAUTHORIZED", "未授权", "missing or wrong bearer token"))
        if request.content_length is not None and request.content_length > MAX_BODY:
            return self._json(*_error(413, "VC_TOO_LARGE", "请求过大", f"the body exceeds {MAX_BODY} bytes"))
        return None

    def _json(self, status: int, body: dict[str, Any], replayed: bool = False) -> web.Response:
        if self.mode == "garbage" and status < 500:
            return web.Response(status=200, text="<html>502 upstream gone</html>", content_type="text/html")
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return web.json_response(
            body, status=status, headers=headers, dumps=lambda o: json.dumps(o, ensure_ascii=False)
        )

    async def _write(self, request: web.Request, op: str, fn: Any) -> web.Response:
        bad = await self._guard(request)
        if bad is not None:
            return bad
        key = request.headers.get("Idempotency-Key", "")
        if not key or len(key) > 100:
            return self._json(
                *_error(400, "VC_NO_IDEMPOTENCY_KEY", "缺少幂等键", "Idempotency-Key (1–100 chars) is required")
            )
        async with self._lock:
            self.calls[op] = self.calls.get(op, 0) + 1
            stored = self.answers.get(f"{op}:{key}")
            if stored is not None:
                self.replays += 1
                return self._json(*stored, replayed=True)
            try:
                data = {} if request.method == "DELETE" else await request.json()
            except (ValueError, UnicodeDecodeError):
                return self._json(*_error(400, "VC_BAD_JSON", "请求不是有效的 JSON", "the body is not JSON"))
            if not isinstance(data, dict):
                return self._json(*_error(400, "VC_BAD_JSON", "请求不是 JSON 对象", "the body is not a JSON object"))
            answer = fn(request, data, key)
            self.answers[f"{op}:{key}"] = answer
            return self._json(*answer)

    async def _book(self, request: web.Request) -> web.Response:
        return await self._write(request, "book", self._do_book)

    async def _change(self, request: web.Request) -> web.Response:
        return await self._write(request, "change", self._do_change)

    async def _cancel(self, request: web.Request) -> web.Response:
        return await self._write(request, "cancel", self._do_cancel)

    async def _attendance(self, request: web.Request) -> web.Response:
        return await self._write(request, "attendance", self._do_attendance)

    async def _status(self, request: web.Request) -> web.Response:
        bad = await self._guard(request)
        if bad is not None:
            return bad
        m = self.meetings.get(request.match_info["number"])
        if m is None:
            return self._json(*_error(404, "VC_UNKNOWN_MEETING", "会议不存在", "no such meeting"))
        return self._json(200, m.public())

    async def _terminals(self, request: web.Request) -> web.Response:
        bad = await self._guard(request)
        if bad is not None:
            return bad
        used: dict[str, list[dict[str, Any]]] = {}
        for m in self.booked():
            for v in m.venues:
                for res in _resources(v):
                    used.setdefault(res, []).append(
                        {"meeting_number": m.number, "start": m.start.isoformat(), "end": m.end.isoformat()}
                    )
        return self._json(200, {"resources": [{"resource": k, "booked": v} for k, v in sorted(used.items())]})

    async def _health(self, request: web.Request) -> web.Response:
        return self._json(200, {"status": "up"})

    # ------------------------------------------------------------------------------------------ operations

    def _checked(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]] | tuple[datetime, datetime]:
        try:
            title = str(data["title"])
            start = datetime.fromisoformat(str(data["start"]))
            minutes = int(data["duration_minutes"])
            venues = data["venues"]
            assert isinstance(venues, list) and venues
            for v in venues:
                assert isinstance(v, dict) and v.get("room") and v.get("agency_code")
        except (KeyError, ValueError, TypeError, AssertionError):
            return _error(
                422, "VC_BAD_BOOKING", "预约内容不完整", "title, start, duration_minutes and venues are required"
            )
        if start.tzinfo is None:
            return _error(422, "VC_BAD_BOOKING", "开始时间缺少时区", "start needs a UTC offset")
        if len(title) > TITLE_MAX:
            return _error(
                422,
                "VC_FIELD_TOO_LONG",
                f"会议名称超过平台上限 {TITLE_MAX} 个字符",
                f"title is {len(title)} characters; the platform takes at most {TITLE_MAX}",
                field="title",
            )
        for v in venues:
            if len(str(v["room"])) > ROOM_MAX:
                return _error(
                    422,
                    "VC_FIELD_TOO_LONG",
                    f"会议室名称超过平台上限 {ROOM_MAX} 个字符",
                    f"a room name is longer than {ROOM_MAX} characters",
                    field="venues.room",
                )
        if not 5 <= minutes <= 1440:
            return _error(422, "VC_BAD_BOOKING", "会议时长须为 5 至 1440 分钟", "duration_minutes must be 5..1440")
        return start, start + timedelta(minutes=minutes)

    def _conflicts(
        self, venues: list[dict[str, Any]], start: datetime, end: datetime, skip: str = ""
    ) -> list[dict[str, Any]]:
        wanted = {r for v in venues for r in _resources(v)}
        found = []
        for m in self.booked():
            if m.number == skip or not (m.start < end and start < m.end):
                continue
            for v in m.venues:
                for res in _resources(v):
                    if res in wanted:
                        found.append(
                            {
                                "resource": res,
                                "meeting_number": m.number,
                                "title": m.title,
                                "start": m.start.isoformat(),
                                "end": m.end.isoformat(),
                            }
                        )
        return found

    def _slot_taken(self, conflicts: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        c = conflicts[0]
        what = c["resource"].split(":", 1)
        label = f"终端 {what[1]}" if what[0] == "terminal" else f"会议室“{what[1].split('/', 1)[-1]}”"
        return _error(
            409,
            "VC_SLOT_TAKEN",
            "会场已被占用",
            f"{label}在 {c['start'][:16].replace('T', ' ')} 至 {c['end'][11:16]} 已被会议 {c['meeting_number']}"
            f"（{c['title'][:40]}）占用 — {c['resource']} is taken by meeting {c['meeting_number']} in that slot",
            conflicts=conflicts,
        )

    def _do_book(self, request: web.Request, data: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        checked = self._checked(data)
        if isinstance(checked[0], int):
            return checked  # type: ignore[return-value]
        start, end = checked  # type: ignore[misc]
        venues = [dict(v) for v in data["venues"]]
        conflicts = self._conflicts(venues, start, end)
        if conflicts:
            return self._slot_taken(conflicts)
        self._next += 1
        number = str(self._next)
        m = Meeting(
            number=number,
            title=str(data["title"]),
            start=start,
            end=end,
            organizer=dict(data.get("organizer") or {}),
            venues=venues,
            booking_key=key,
        )
        self.meetings[number] = m
        return 201, m.public()

    def _do_change(self, request: web.Request, data: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        m = self.meetings.get(request.match_info["number"])
        if m is None or m.status != "booked":
            return _error(404, "VC_UNKNOWN_MEETING", "会议不存在或已取消", "no such booked meeting")
        merged = {
            "title": data.get("title", m.title),
            "start": data.get("start", m.start.isoformat()),
            "duration_minutes": data.get("duration_minutes", int((m.end - m.start).total_seconds() // 60)),
            "venues": data.get("venues", m.venues),
        }
        checked = self._checked(merged)
        if isinstance(checked[0], int):
            return checked  # type: ignore[return-value]
        start, end = checked  # type: ignore[misc]
        conflicts = self._conflicts(list(merged["venues"]), start, end, skip=m.number)
        if conflicts:
            return self._slot_taken(conflicts)
        m.title, m.start, m.end, m.venues = str(merged["title"]), start, end, [dict(v) for v in merged["venues"]]
        return 200, m.public()

    def _do_cancel(self, request: web.Request, data: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        m = self.meetings.get(request.match_info["number"])
        if m is None:
            return _error(404, "VC_UNKNOWN_MEETING", "会议不存在", "no such meeting")
        m.status = "cancelled"
        return 200, m.public()

    def _do_attendance(self, request: web.Request, data: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        m = self.meetings.get(request.match_info["number"])
        if m is None or m.status != "booked":
            return _error(404, "VC_UNKNOWN_MEETING", "会议不存在或已取消", "no such booked meeting")
        code = str(data.get("agency_code", ""))
        if not code or data.get("attendance") not in ("attend", "decline"):
            return _error(422, "VC_BAD_ATTENDANCE", "参会回执不完整", "agency_code and attendance are required")
        m.attendance[code] = {**data, "key": key}
        return 200, {"meeting_number": m.number, "agency_code": code, "attendance": data["attendance"]}


def _resources(venue: dict[str, Any]) -> list[str]:
    """What a venue occupies: its room (per agency) and its terminal, if it names one."""
    out = [f"room:{venue.get('agency_code', '')}/{venue.get('room', '')}"]
    if venue.get("terminal_number"):
        out.append(f"terminal:{venue['terminal_number']}")
    return out
