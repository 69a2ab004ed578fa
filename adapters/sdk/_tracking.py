"""Document tracking (发文跟踪) for an adapter: what its system sent, and where each recipient's copy stands — read
from the hub's HTTPS gateway (``GET /v1/messages``, ``GET /v1/messages/{id}``; docs/gateway.md).

    async with adapter:                                       # or: async with Tracking.open(settings) as tracking
        state = await adapter.message_state(receipt.message_id)          # SentMessage, or None
        async for sent in adapter.sent_messages(since=monday, delivery=NOT_SIGNED_FOR):
            for d in sent.not_signed_for:
                print(sent.message_id, d.system, d.label)                # 已送达未签收 delivered …

An adapter over the gateway (``gateway_url``) reads on its own connection. An adapter on RabbitMQ names the gateway
with ``tracking_url``: the certificate of its enrolment carries clientAuth, so the same key and certificate do the
mutual TLS, and reading touches neither its queue nor its AMQP link. ``Tracking.open(settings)`` reads without
starting the adapter (``hub adapter sent``: an agency's administrator looking at what is not yet signed for, while
the adapter runs elsewhere).

What comes back is the hub's record as JSON over the authenticated TLS connection, not signed: the evidence of a
delivery is the hub's signed receipts and the recipients' signed document.receipt, which the adapter already gets.

Windows longer than the gateway's 31 days are read in parts, each part a page at a time; ``since`` and ``until``
must carry their offset. Failures are the SDK's own: 429, 503 and an unreachable gateway are tried again within
``request_timeout`` (then ``HubUnavailable``); a refusal (400, 401, 403) and the gateway's own fault (500 ``INTERNAL``,
which asking again would only meet again) are ``HubRefused`` with the gateway's code; a
certificate the gateway refuses on first contact is a ``ConfigurationError``, as at an adapter's start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.sdk._errors import ConfigurationError, HubRefused, HubUnavailable, SdkError
from hub.errors import title_of
from hub.store.records import DELIVERY_STATE_ZH, DELIVERY_STATES

if TYPE_CHECKING:
    import aiohttp

    from adapters.sdk._settings import AdapterSettings

__all__ = [
    "NOT_SIGNED_FOR",
    "SIGNED_FOR",
    "DeliveryState",
    "HubAnswer",
    "SentMessage",
    "Tracking",
]

#: A recipient has signed for (签收) its copy, or gone further (阅读, 办结, 反馈).
SIGNED_FOR = frozenset({"received", "read", "handled", "feedback"})
#: ``delivery=NOT_SIGNED_FOR``: the messages some recipient has not yet signed for (waiting, failed, or delivered and
#: not signed for). A blocked copy (the classification gate) is not waiting for anyone: it is not among them.
NOT_SIGNED_FOR = ("pending", "failed", "delivered")
#: The gateway's limits (hub.gateway.openapi MAX_SENT_PAGE, MAX_SENT_WINDOW_DAYS, MAX_SENT_SERVICES; a unit test
#: keeps them equal).
MAX_PAGE = 200
MAX_WINDOW_DAYS = 31
MAX_SERVICES = 16
#: A service's name (document.official, info.report …): its version is not part of the filter.
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9]*(?:\.[a-z][a-z0-9-]*)+")
#: The part of a long window asked for at once: a day under the gateway's limit, so that neither clock's drift
#: makes the part longer than the gateway takes.
_PART = dt.timedelta(days=MAX_WINDOW_DAYS - 1)
#: How long the open last part of a window without ``until`` is at least (``_parts``): more than any clock skew.
_OPEN_TAIL = dt.timedelta(days=1)


class _BadAnswer(SdkError):
    default_code = "SDK_GATEWAY_ANSWER"


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """One recipient's copy of a sent message."""

    system: str
    agency: str
    #: ``to`` (主送) or ``cc`` (抄送).
    role: str
    #: pending, delivered, blocked, received (签收), read, handled (办结), feedback, failed.
    state: str
    #: Why it failed or was blocked (the hub's stable code), else None.
    error_code: str | None
    #: When the copy reached each state it has reached (aware datetimes).
    times: Mapping[str, dt.datetime] = field(default_factory=dict, hash=False)

    @property
    def signed_for(self) -> bool:
        return self.state in SIGNED_FOR

    @property
    def label(self) -> str:
        """The state as a person reads it: 已签收 signed for, 已送达未签收 delivered, …"""
        return DELIVERY_STATE_ZH.get(self.state, self.state)


@dataclass(frozen=True, slots=True)
class HubAnswer:
    """An answer the hub sent about a message (``SentMessage.answers``, from ``message_state`` only)."""

    receipt_id: str
    #: ``hub.receipt`` (accepted) or ``hub.error`` (refused).
    kind: str
    #: The system it went to (None when the hub recorded none).
    system: str | None
    code: str | None
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message the system sent, as the hub recorded it."""

    message_id: str
    #: ``name/version``, e.g. ``document.official/1``.
    service: str
    urgency: str
    classification: str
    #: accepted, rejected, quarantined, released, quarantine_rejected.
    state: str
    error_code: str | None
    received_at: dt.datetime
    deliveries: tuple[DeliveryState, ...]
    #: The hub's answers about it (``message_state``); None from ``sent_messages``, which does not list them.
    answers: tuple[HubAnswer, ...] | None = None

    @property
    def not_signed_for(self) -> tuple[DeliveryState, ...]:
        """The copies that are still waiting for their recipient's 签收 (blocked copies are not waiting)."""
        return tuple(d for d in self.deliveries if d.state in NOT_SIGNED_FOR)


class Tracking:
    """The gateway's document tracking for one system. ``Adapter.message_state`` and ``Adapter.sent_messages`` use
    it; ``Tracking.open(settings)`` gives one without an adapter."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        request_timeout: float = 30.0,
        reconnect: tuple[float, float] = (0.5, 30.0),
        settings: AdapterSettings | None = None,
    ) -> None:
        """On ``session`` to the gateway at ``base_url``. ``settings`` (given by ``connect``): the session is this
        object's own (``close`` closes it) and the gateway has not yet been seen to take the certificate, which the
        first request makes sure of; without them the session is an adapter's, its certificate checked at start."""
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self._settings = settings
        self._checked = settings is None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: AdapterSettings) -> AsyncIterator[Tracking]:
        """A ``Tracking`` on a connection of its own to ``settings.gateway_url`` or ``settings.tracking_url``."""
        tracking = cls.connect(settings)
        try:
            yield tracking
        finally:
            await tracking.close()

    @classmethod
    def connect(cls, settings: AdapterSettings) -> Tracking:
        """A ``Tracking`` on a session of its own (``close`` closes it); ``ConfigurationError`` when the
        settings name no gateway (``SDK_TRACKING_UNSET``) or the enrolment files are missing."""
        from adapters.sdk._gateway import _session, client_ssl_context

        url = settings.gateway_url or settings.tracking_url
        if not url:
            raise ConfigurationError(
                f"document tracking is read from the hub's HTTPS gateway, and the settings of {settings.system} name "
                'none: an adapter on RabbitMQ sets tracking_url = "https://<the gateway>:8443" (its enrolment '
                "certificate does the mutual TLS) — 未配置网关地址，无法查询发文跟踪",
                code="SDK_TRACKING_UNSET",
            )
        return cls(
            _session(settings, client_ssl_context(settings)),
            url,
            request_timeout=settings.request_timeout,
            reconnect=(settings.reconnect_initial, settings.reconnect_max),
            settings=settings,
        )

    async def close(self) -> None:
        """Close the connection, when it is this object's own (not an adapter's transport's)."""
        if self._settings is not None:
            await self.session.close()

    # ------------------------------------------------------------------------------------------ reading

    async def message_state(self, message_id: str) -> SentMessage | None:
        """The state of a message this system sent, with the hub's answers about it; None when the hub holds no
        such message from this system (another system's id, a mistyped one)."""
        data = await self._get(f"/v1/messages/{_path_part(message_id)}", None, f"the state of {message_id}")
        return None if data is None else _sent(data, answers=True)

    def sent_messages(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        delivery: Collection[str] | None = None,
        service: Collection[str] | None = None,
        page: int = 50,
    ) -> AsyncIterator[SentMessage]:
        """The messages this system sent that the hub received from ``since`` (default: a day before ``until``) to
        ``until`` (default: now), oldest first; with ``delivery`` only those with a copy in one of its states
        (``NOT_SIGNED_FOR``: some recipient has not yet signed for it), with ``service`` only those of these services
        (names, any version: ``["document.official"]``, the 公文 without the receipts the system sent). Read ``page``
        at a time (1 to 200), a window longer than 31 days in parts. The arguments are checked here (``ValueError``),
        before anything is read; a service name the hub does not know is the gateway's ``HubRefused``."""
        states = _states(delivery)
        services = _services(service)
        if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= MAX_PAGE:
            raise ValueError(f"page is a whole number from 1 to {MAX_PAGE}, not {page!r}")
        for name, value in (("since", since), ("until", until)):
            if value is not None and (not isinstance(value, dt.datetime) or value.utcoffset() is None):
                raise ValueError(f"{name} must be a datetime with its offset (tzinfo), not {value!r}")
        end = until or dt.datetime.now(dt.UTC)
        _within_years(end, "until")
        start = since or end - dt.timedelta(days=1)
        _within_years(start, "since")
        if not start < end:
            raise ValueError(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
        return self._pages(start, end, states, services, page, open_end=until is None)

    async def _pages(
        self,
        start: dt.datetime,
        end: dt.datetime,
        states: list[str],
        services: list[str],
        page: int,
        *,
        open_end: bool,
    ) -> AsyncIterator[SentMessage]:
        """Each part of the window (``_parts``), each a page at a time."""
        for part_start, stop in _parts(start, end, open_end=open_end):
            params = {"since": _utc(part_start), "limit": str(page)}
            if stop is not None:
                params["until"] = _utc(stop)
            if states:
                params["delivery"] = ",".join(states)
            if services:
                params["service"] = ",".join(services)
            while True:
                data = await self._get("/v1/messages", params, "the sent messages")
                if data is None or not isinstance(data.get("messages"), list):
                    raise _BadAnswer(f"the gateway's list of sent messages is not what it documents: {data!r:.200}")
                for item in data["messages"]:
                    yield _sent(item, answers=False)
                after = data.get("next")
                if not after:
                    break
                if not isinstance(after, str):
                    raise _BadAnswer(f"the gateway's next is not a string: {after!r:.100}")
                params["after"] = after

    # ------------------------------------------------------------------------------------------ the exchange

    async def _get(self, path: str, params: dict[str, str] | None, what: str) -> dict[str, Any] | None:
        """The JSON of a GET (None for a 404), ``HubRefused`` for a refusal, ``HubUnavailable`` when the gateway did
        not answer within ``request_timeout``."""
        from adapters.sdk._gateway import _detail, _Unavailable, exchange

        if not self._checked:
            await self._check()
        try:
            status, kind, body, headers = await exchange(
                self.session,
                "GET",
                f"{self.base_url}{path}",
                what,
                _read_settled,
                params=params,
                request_timeout=self.request_timeout,
                reconnect=self.reconnect,
            )
        except _Unavailable as exc:
            raise HubUnavailable(f"the gateway did not give {what}: {exc}") from None
        if status == 404 and (headers.get("X-Hub-Code") or "") == "GATEWAY_NOT_FOUND":
            return None
        if status != 200:
            code = headers.get("X-Hub-Code") or f"HTTP_{status}"
            raise HubRefused(code=code, title=title_of(code), reason=_detail(body) or f"HTTP {status}", message_id="")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        if kind != "application/json" or not isinstance(data, dict):
            raise _BadAnswer(f"the gateway's answer for {what} is not a JSON object ({kind})")
        return data

    async def _check(self) -> None:
        """First contact on a connection of its own: the gateway must be the hub's and take the certificate (a
        ``ConfigurationError`` otherwise, as at an adapter's start); unreachable is left to the request's retries."""
        from adapters.sdk._gateway import _probe

        assert self._settings is not None
        reached, _ = await _probe(self.session, self._settings, self._settings.system, base=self.base_url)
        self._checked = reached is not None  # unreachable: looked at again on the next read


def _parts(start: dt.datetime, end: dt.datetime, *, open_end: bool) -> Iterator[tuple[dt.datetime, dt.datetime | None]]:
    """The parts a window is read in: at most ``_PART`` each, meeting end to end. Without an ``until``
    (``open_end``) the last part has no end, so the gateway's clock ends it (a client clock behind the hub's would
    otherwise miss the latest messages), and it starts ``_OPEN_TAIL`` before the client's now: a gateway clock
    behind the client's would refuse an open part that starts after its own now (a window of exactly 30 days would
    otherwise leave one a few microseconds long)."""
    if open_end and end - start <= _PART:
        yield start, None
        return
    bounded = end - _OPEN_TAIL if open_end else end
    while start < bounded:
        stop = min(bounded, start + _PART)
        yield start, stop
        start = stop
    if open_end:
        yield start, None


def _read_settled(status: int, kind: str) -> bool:
    """A read's answer that is final: all but 408, 429, 502–504 and a 500 that is not the gateway's own JSON (those
    are asked again within ``request_timeout``). The gateway's 500 ``INTERNAL`` is a fault of its code that asking
    again would only meet again: it is the caller's ``HubRefused`` at once."""
    from adapters.sdk._gateway import _TRANSIENT

    return status not in _TRANSIENT or (status == 500 and kind == "application/json")


def _within_years(at: dt.datetime, name: str) -> None:
    """A time the window's arithmetic and the gateway can take: between the years 2 and 9998 in UTC."""
    try:
        year = at.astimezone(dt.UTC).year
    except OverflowError:
        year = 0
    if not 1 < year < 9999:
        raise ValueError(f"{name} must lie between the years 2 and 9998 in UTC, not {at.isoformat()}")


def _utc(at: dt.datetime) -> str:
    """A time for the query string in UTC with a Z (no + to be encoded)."""
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _path_part(message_id: str) -> str:
    from urllib.parse import quote

    if not isinstance(message_id, str) or not message_id.strip():
        raise ValueError(f"message_id is the id of a message this system sent, not {message_id!r}")
    return quote(message_id.strip(), safe="")


def _states(delivery: Collection[str] | None) -> list[str]:
    if delivery is None:
        return []
    if isinstance(delivery, str):
        delivery = [s.strip() for s in delivery.split(",")]
    states = [str(s) for s in delivery]
    unknown = [s for s in states if s not in DELIVERY_STATES]
    if unknown or not states:
        raise ValueError(f"delivery lists states among {', '.join(DELIVERY_STATES)}, not {unknown or states!r}")
    return states


def _services(service: Collection[str] | None) -> list[str]:
    if service is None:
        return []
    if isinstance(service, str):
        service = [s.strip() for s in service.split(",")]
    names = [str(s).strip() for s in service]
    if not 1 <= len(names) <= MAX_SERVICES or not all(_SERVICE_NAME.fullmatch(n) for n in names):
        raise ValueError(f"service lists 1 to {MAX_SERVICES} service names such as document.official, not {names!r}")
    return names


def _time(value: Any, what: str) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _BadAnswer(f"the gateway's {what} is not a date and time: {value!r:.60}") from None
    if at.utcoffset() is None:
        raise _BadAnswer(f"the gateway's {what} has no offset: {value!r:.60}")
    return at


def _sent(item: Any, *, answers: bool) -> SentMessage:
    """One message of the gateway's JSON (hub.gateway.openapi ``SentMessage`` / ``MessageState``)."""
    try:
        deliveries = tuple(
            DeliveryState(
                system=str(d["recipient_system"]),
                agency=str(d["recipient_agency"]),
                role=str(d["role"]),
                state=str(d["state"]),
                error_code=d["error_code"],
                times={str(k): _time(v, f"time of {k}") for k, v in dict(d["times"]).items()},
            )
            for d in item["deliveries"]
        )
        return SentMessage(
            message_id=str(item["message_id"]),
            service=str(item["service"]),
            urgency=str(item["urgency"]),
            classification=str(item["classification"]),
            state=str(item["state"]),
            error_code=item["error_code"],
            received_at=_time(item["received_at"], "received_at"),
            deliveries=deliveries,
            answers=tuple(
                HubAnswer(
                    receipt_id=str(r["receipt_id"]),
                    kind=str(r["kind"]),
                    system=None if r["recipient_system"] is None else str(r["recipient_system"]),
                    code=r["code"],
                    at=_time(r["at"], "time of an answer"),
                )
                for r in item["receipts"]
            )
            if answers
            else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _BadAnswer(f"a sent message in the gateway's answer is not what it documents ({exc!r:.120})") from None
