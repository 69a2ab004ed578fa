"""``Adapter``: an agency system's side of the exchange, in one object.

    adapter = Adapter("county-220182-oa", settings=AdapterSettings.from_file("adapter.toml"))

    @adapter.handles("document.official", version=1)
    async def on_document(doc: DocumentOfficial, ctx: Context) -> DocumentReceipt | None:
        ...                                   # doc is typed, validated and verified; ctx has the signed facts

    async with adapter:                       # connect, consume (push), and on exit drain and stop
        receipt = await adapter.send(notice, to=[to(AGENCY, "city-220100-oa")])

What happens to one delivery, in order (nothing reaches a handler that failed a step):

1. safe parse, XSD, the hub's signature and the originator's (``_trust.AgencyTrust.open``). A delivery that fails
   is dead-lettered **with its reason** (published to the installation's dead-letter exchange with
   ``x-refused-code`` / ``x-refused-reason`` headers, then acknowledged) — never acknowledged away.
2. the hub's own answers (hub.receipt, hub.error) settle the ``send``/``request`` waiting for them; replies and
   refusals settle a waiting ``request``.
3. a message id this adapter has handled before (the local store, across restarts) is acknowledged without
   reaching the handler again.
4. the handler runs inside the batch's store transaction (a savepoint each). Returning a message sends it as the
   reply (RefToMessageId and RequestHash bind it to the request; its message id is derived from the request's,
   so a resend after a crash is a duplicate the hub recognises); ``Retry(delay)`` hands the delivery back after
   ``delay``: over RabbitMQ (and in TestHub's memory) it is put off in the broker (``_put_off``: published to
   ``ns.later`` with a key of the system's own, acknowledged; after ``delay`` rounded up to the next of
   ``LATER_DELAYS_S`` the hub delivers it again to this system), so it takes no room in the prefetch window and a
   restart does not cut the delay short (through the gateway: ``release?after=``); where the broker refuses that, it
   is held unacknowledged meanwhile (``Incoming.held``) and nacked with requeue then or at ``stop``;
   ``Reject(code, reason)`` sends the sender a signed ``delivery.refusal``.
5. replies and refusals are published with publisher confirms, the handled ids are committed, and only then are
   the deliveries acknowledged (manual acks, one per batch). A batch that fails in the adapter itself (its store
   away, the publish refused) is held the same way and goes back after a growing pause (``_on_batch``).

Start-up retries the broker with exponential back-off; later connection losses are healed by the robust
connection (deliveries not yet acknowledged come back and are recognised in step 3). ``run()`` stops gracefully
on SIGTERM or SIGINT: no new deliveries, the batches in hand finish and are acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import itertools
import logging
import signal
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from lxml import etree

from adapters.sdk._context import Context, Receipt, Reply
from adapters.sdk._errors import (
    ConfigurationError,
    HubRefused,
    HubUnavailable,
    MessageInvalid,
    Refused,
    Reject,
    RequestTimeout,
    Retry,
    SdkError,
)
from adapters.sdk._settings import AdapterSettings
from adapters.sdk._store import HandledStore, Tx, open_store
from adapters.sdk._tracking import SentMessage, Tracking
from adapters.sdk._trust import AgencyTrust, Opened, load_signer, warn_if_expiring
from hub.directory.model import REFUSAL_SERVICE
from hub.envelope.model import NOTICE_NS, NOTICE_SERVICE

if TYPE_CHECKING:
    from hub.envelope import Recipient
    from hub.transport.abc import AbstractConsumer, AbstractTransport
    from hub.transport.topology import Incoming, Outgoing
    from hub.trust import Signer

__all__ = ["Adapter", "group", "to"]

log = logging.getLogger("adapters.sdk")

CN_TZ = timezone(timedelta(hours=8))
_HUB_ANSWERS = ("hub.receipt", "hub.error")
#: Seconds a delivery refused for this adapter's missing or stale CRLs waits before it is opened again (the CRL
#: refresher fetches at once meanwhile: adapters.sdk._crl.HintedTrust).
CRL_WAIT_S = 15.0

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def to(agency: str, system: str | None = None) -> Recipient:
    """A 主送 recipient: an agency (by its unified social credit code), optionally one system of it."""
    from hub.envelope import Recipient

    return Recipient.to(agency, system)


def group(name: str) -> Recipient:
    """A named group of the hub's directory (e.g. ``city-bureaus``), expanded by the hub."""
    from hub.envelope import Recipient

    return Recipient.to_group(name)


def _cc(r: Recipient) -> Recipient:
    return r._replace(role="cc")


class _ReplyInvalid(Exception):
    def __init__(self, outcome: tuple[str, Any, Any]) -> None:
        super().__init__(outcome[2])
        self.outcome = outcome


@dataclass(slots=True)
class _Handler:
    service: str
    version: int
    fn: Callable[[Any, Context], Awaitable[Any]]
    cls: Any  # the typed message class, or None: the handler gets the body element


@dataclass(slots=True)
class _Pending:
    receipt: asyncio.Future[Receipt]
    #: For ``request``: the reply (or a Refused) and the digest the reply's RequestHash must name.
    reply: asyncio.Future[tuple[Opened, Any]] | None = None
    digest: str = ""
    recipients: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Wiring:
    transport: AbstractTransport
    signer: Signer
    trust: AgencyTrust
    store: HandledStore
    #: Whether stop() closes the transport (it does when the adapter connected it itself).
    own_transport: bool = True


class Adapter:
    """One agency system. Build it at import time, register handlers with ``@adapter.handles``, then ``run()`` it
    (or ``async with adapter:``). ``adapters.sdk.testing.TestHub`` runs the same object in memory."""

    def __init__(self, system: str | None = None, settings: AdapterSettings | None = None) -> None:
        if system is None and settings is None:
            raise ConfigurationError("an Adapter needs its system id (and settings to run against a hub)")
        if system is not None and settings is not None and settings.system != system:
            raise ConfigurationError(f"settings are for {settings.system!r}, not {system!r}")
        self.system: str = system or settings.system  # type: ignore[union-attr]
        self.settings = settings
        self._handlers: dict[tuple[str, int], _Handler] = {}
        self._pending: dict[str, _Pending] = {}
        self._wiring: _Wiring | None = None
        #: One consumer per queue of the system (one with classic queues; the urgent lane first with quorum queues).
        self._consumers: list[AbstractConsumer] = []
        self._attempts: OrderedDict[str, int] = OrderedDict()
        #: Message ids a batch of this adapter is handling now: a copy arriving meanwhile waits for it (``_handle``).
        self._in_progress: dict[str, asyncio.Event] = {}
        #: Deliveries taken over from the consumer (``Incoming.held``) and the timers that hand them back (nack with
        #: requeue): those waiting for a ``Retry`` delay, and the batches the adapter failed on (``_hold_back``).
        self._timers: dict[int, tuple[asyncio.TimerHandle, list[Incoming]]] = {}
        #: Message id → the loop time before which it is not handled (a Retry's delay): copies of it wait too.
        self._not_before: dict[str, float] = {}
        #: When deliveries waiting for fresh CRLs were last logged (once a minute).
        self._crl_warned = -1e9
        self._timer_keys = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Batches the adapter itself failed on in a row (each goes back after a growing pause; reset by a success).
        self._failures = 0
        self._running = False
        #: Set by ``stop``: from then on what would be held back goes back at once.
        self._stopping = False
        #: False once the broker refused a put-off (a hub older than ``ns.later``, or this system's user not granted
        #: it yet): Retry holds deliveries for the rest of the process.
        self._later_ok = True
        #: Called with each hub answer (Receipt or HubRefused) that no ``send`` waits for (e.g. after a restart);
        #: a coroutine function is awaited before the answer is acknowledged (slow I/O belongs in one: a plain
        #: function runs on the event loop and holds up every delivery and the broker's heartbeats while it runs).
        self.on_answer: Callable[[Receipt | HubRefused], Any] | None = None
        #: What handles a delivery no handler is registered for (TestHub's recording clients); None: refuse it.
        self._fallback: Callable[[Any, Context], Awaitable[Any]] | None = None
        self._on_startup: list[Callable[[], Awaitable[None]]] = []
        self._on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self._tracker: Tracking | None = None

    # ------------------------------------------------------------------------------------------ handlers

    def handles(self, service: str | type, version: int = 1) -> Callable[[H], H]:
        """Register ``async def handler(message, ctx)`` for a service (``"document.official"`` and ``version``, or
        a typed message class). One handler per service and version."""
        cls: Any = None
        if isinstance(service, type):
            cls = service
            service, version = cls.SERVICE, cls.VERSION
        else:
            cls = _message_class(service, version)
        key = (str(service), int(version))

        def register(fn: H) -> H:
            checked: Any = fn  # (checking narrows the type of what it checks)
            if not inspect.iscoroutinefunction(checked):
                raise ConfigurationError(f"the handler for {key[0]}/{key[1]} must be an async function")
            if key in self._handlers:
                raise ConfigurationError(f"{key[0]}/{key[1]} already has a handler ({self._handlers[key].fn.__name__})")
            self._handlers[key] = _Handler(key[0], key[1], fn, cls)
            return fn

        return register

    def on_startup(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Register ``async def fn()`` to run once the adapter is connected and consuming (in ``start``, in the
        order registered): where an adapter opens its side towards the agency's own system (an HTTP listener, a
        folder watcher, a database listener), which may then ``send``. If one fails, the adapter stops again and
        ``start`` raises its error."""
        self._check_hook(fn)
        self._on_startup.append(fn)
        return fn

    def on_shutdown(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Register ``async def fn()`` to run first in ``stop`` (in reverse order of registration), while the
        adapter can still send and receive: close the agency-side listeners so that nothing new comes in, then the
        SDK drains its deliveries. An error is logged and the stop goes on."""
        self._check_hook(fn)
        self._on_shutdown.append(fn)
        return fn

    def _check_hook(self, fn: Any) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"{getattr(fn, '__name__', fn)!r}: a start-up or shut-down hook must be async")

    @property
    def services(self) -> list[str]:
        return sorted(f"{s}/{v}" for s, v in self._handlers)

    # ------------------------------------------------------------------------------------------ lifetime

    def attach(self, *, transport: AbstractTransport, signer: Signer, trust: AgencyTrust, store: HandledStore) -> None:
        """Give the adapter its transport, key, trust and store instead of connecting from its settings (how
        ``TestHub`` runs it on the in-memory broker). The caller closes the transport."""
        if self._running:
            raise ConfigurationError("the adapter is running")
        self._wiring = _Wiring(transport, signer, trust, store, own_transport=False)

    async def start(self) -> None:
        """Connect (retrying with back-off while the broker is unreachable), open the store and start consuming
        the system's queue."""
        if self._running:
            return
        # Started again: like a new process, it knows no Retry delays (stop handed their deliveries back).
        self._not_before.clear()
        if self._wiring is None:
            self._wiring = await self._connect()
        w = self._wiring
        if w.signer.identity.system != self.system:
            raise ConfigurationError(
                f"the key's certificate is for system {w.signer.identity.system!r}, not {self.system!r}"
            )
        warn_if_expiring(self.system, w.signer.certificates[0])
        await w.store.open()
        await self._crls_at_start(w)
        self._stopping = False
        self._failures = 0
        s = self.settings
        names = w.transport.names
        for queue in names.system_queues(self.system):
            self._consumers.append(
                await w.transport.consume(
                    queue,
                    self._on_batch,
                    prefetch=s.prefetch if s else 64,
                    max_batch=s.max_batch if s else 32,
                    linger=0.003,
                    concurrency=s.concurrency if s else 1,
                )
            )
        self._running = True
        if self._crls is not None:
            self._crls.start(now=self._crls_first_later)
        for hook in self._on_startup:
            try:
                await hook()
            except BaseException:
                await self.stop()
                raise
        log.info(
            "adapter %s ready: handles %s",
            self.system,
            ", ".join(self.services) or "nothing (send only)",
            extra={"system": self.system, "store": w.store.kind},
        )

    async def stop(self) -> None:
        """Graceful stop: no new deliveries; the batches in hand finish, are committed and acknowledged; deliveries
        waiting for a Retry (or held back after a failed batch) go back to the queue now."""
        if not self._running:
            return
        for hook in reversed(self._on_shutdown):
            try:
                await hook()
            except Exception:
                log.exception("adapter %s: shut-down hook %s failed", self.system, getattr(hook, "__name__", hook))
        self._running = False
        self._stopping = True  # what the draining batches would hold back goes back at once
        w = self._wiring
        assert w is not None
        while self._consumers:
            await self._consumers.pop(0).stop(drain=True)
        held = [m for _, msgs in self._timers.values() for m in msgs]
        for handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if held:  # (over RabbitMQ the closed consumer channel gave them back already: then a no-op)
            await self._hand_back(w, held)
        if self._tasks:  # hand-backs whose delay ended just now
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for p in self._pending.values():
            for fut in (p.receipt, p.reply):
                if fut is not None and not fut.done():
                    fut.set_exception(RequestTimeout("the adapter stopped before the hub answered"))
                    fut.exception()  # retrieved: no "never retrieved" warning when nobody awaits it any more
        self._pending.clear()
        if self._tracker is not None:
            await self._tracker.close()
            self._tracker = None
        if self._crls is not None:
            await self._crls.stop()
        await w.store.close()
        if w.own_transport:
            await w.transport.close()
            self._wiring = None
        log.info("adapter %s stopped", self.system, extra={"system": self.system})

    async def _crls_at_start(self, w: _Wiring) -> None:
        """Fresh CRLs before the first delivery (``adapters.sdk._crl``): with a gateway URL they are fetched now (a
        failure is one WARNING, never a failed start) — in the background, as soon as the adapter runs, when the
        CRLs it has are good for another hour (a gateway that did not answer held the start for 30 s) — and, once
        running, every ``crl_refresh_s``; either way a ``CERT_CRL_UNAVAILABLE`` says what the agency does about it."""
        from adapters.sdk._crl import CrlRefresher, hint_for

        self._crls: CrlRefresher | None = CrlRefresher.of(self.settings, w.trust)
        w.trust = self._crls.hinted(w.trust) if self._crls is not None else hint_for(self.settings, w.trust)
        self._crls_first_later = self._crls is not None and self._crls.fresh_for(3600)
        if self._crls is not None and not self._crls_first_later:
            await self._crls.refresh()

    async def __aenter__(self) -> Adapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Start, then serve until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _connect(self) -> _Wiring:
        s = self.settings
        if s is None:
            raise ConfigurationError(f"adapter {self.system}: no settings to connect with (AdapterSettings)")
        signer = load_signer(s.key_path, s.cert_path)
        trust = AgencyTrust.from_files(s.root_cert_path, s.crl_dir, max_bytes=s.max_message_bytes)
        kind, target = s.store_target()
        transport: AbstractTransport
        if s.gateway_url:
            from adapters.sdk._gateway import connect_gateway

            transport = await connect_gateway(s, self.system)
        else:
            url, namespace = s.broker()
            transport = await _connect_with_backoff(s, url, namespace, self.system)
        return _Wiring(transport, signer, trust, open_store(kind, target))

    # ------------------------------------------------------------------------------------------ sending

    async def send(
        self,
        message: Any,
        *,
        to: Sequence[Recipient] | Recipient,
        cc: Sequence[Recipient] = (),
        urgency: str = "平件",
        classification: str = "公开",
        period: str | None = None,
        business_ref: str | None = None,
        ttl: timedelta | None = None,
        conversation_id: str | None = None,
        ref_to: str | None = None,
        request_hash: str | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
        service: str | None = None,
        version: int | None = None,
    ) -> Receipt:
        """Build, validate (the hub's XSDs) and sign ``message`` with the system's key, publish it (confirmed by
        the broker) and return the hub's signed receipt. Raise ``HubRefused`` with the hub's stable code when the
        hub refused it, ``MessageInvalid`` before anything left when it breaks its XSD, ``RequestTimeout`` when
        the hub did not answer in ``timeout`` seconds."""
        pending, _ = await self._publish(
            message,
            to=to,
            cc=cc,
            urgency=urgency,
            classification=classification,
            period=period,
            business_ref=business_ref,
            ttl=ttl,
            conversation_id=conversation_id,
            ref_to=ref_to,
            request_hash=request_hash,
            message_id=message_id,
            service=service,
            version=version,
            want_reply=False,
        )
        mid, p = pending
        try:
            return await self._wait(p.receipt, timeout, f"the hub's receipt for {mid}")
        finally:
            self._pending.pop(mid, None)

    async def request(
        self,
        message: Any,
        *,
        to: Sequence[Recipient] | Recipient,
        timeout: float | None = None,
        **options: Any,
    ) -> Reply:
        """Send ``message`` and wait for the recipient's reply (bound to it by RefToMessageId and RequestHash).
        Raise ``HubRefused`` (the hub refused the request), ``Refused`` (the recipient did), ``RequestTimeout``."""
        (mid, p), _ = await self._publish(message, to=to, want_reply=True, **options)
        limit = timeout if timeout is not None else (self.settings.request_timeout if self.settings else 30.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        try:
            receipt = await self._wait(p.receipt, limit, f"the hub's receipt for {mid}")
            p.recipients = {system for _, system, _ in receipt.recipients}
            assert p.reply is not None
            opened, msg = await self._wait(p.reply, max(0.0, deadline - loop.time()), f"a reply to {mid}")
        finally:
            self._pending.pop(mid, None)
        return Reply(msg, self._context(opened, None, None), receipt)

    async def _wait(self, fut: asyncio.Future[Any], timeout: float | None, what: str) -> Any:
        limit = timeout if timeout is not None else (self.settings.request_timeout if self.settings else 30.0)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), limit)
        except TimeoutError:
            raise RequestTimeout(f"no answer within {limit:g} s: {what} (is the hub running?)") from None

    async def _publish(
        self,
        message: Any,
        *,
        to: Sequence[Recipient] | Recipient,
        cc: Sequence[Recipient] = (),
        want_reply: bool,
        **options: Any,
    ) -> tuple[tuple[str, _Pending], bytes]:
        w = self._require_running()
        from hub.envelope import Recipient

        recipients = [to] if isinstance(to, Recipient) else list(to)
        recipients += [_cc(r) for r in cc]
        if not recipients:
            raise MessageInvalid("a message needs at least one recipient", code="SDK_NO_RECIPIENT")
        mid, data, digest, env = self.build(message, recipients=recipients, **options)
        loop = asyncio.get_running_loop()
        p = _Pending(loop.create_future(), loop.create_future() if want_reply else None, digest)
        self._pending[mid] = p
        try:
            await self._publish_items(w, [self._outgoing(w, env, data)])
        except BaseException:
            self._pending.pop(mid, None)
            raise
        log.info(
            "sent %s",
            env.service_id,
            extra={
                "message_id": mid,
                "conversation_id": env.conversation_id,
                "service": env.service_id,
                "sender": self.system,
                "recipients": [str(r) for r in recipients][:20],
            },
        )
        return (mid, p), data

    def build(
        self,
        message: Any,
        *,
        recipients: Sequence[Recipient],
        urgency: str = "平件",
        classification: str = "公开",
        period: str | None = None,
        business_ref: str | None = None,
        ttl: timedelta | None = None,
        conversation_id: str | None = None,
        ref_to: str | None = None,
        request_hash: str | None = None,
        message_id: str | None = None,
        service: str | None = None,
        version: int | None = None,
    ) -> tuple[str, bytes, str, Any]:
        """The signed bytes of an envelope (message id, bytes, content digest, envelope model). ``message`` is a
        typed message, or a body element with ``service`` and ``version``. Validated before it is signed."""
        from hub.envelope import Envelope, Party, build, to_bytes
        from hub.errors import HubError
        from hub.trust.signature import c14n

        w = self._require_wiring()
        if isinstance(message, etree._Element):
            if not service or not version:
                raise MessageInvalid("a body element needs service= and version=", code="SDK_NO_SERVICE")
            body, svc, ver = message, service, version
        else:
            cls = type(message)
            svc, ver = str(getattr(cls, "SERVICE", "")), int(getattr(cls, "VERSION", 0))
            if not svc or not ver:
                raise MessageInvalid(
                    f"{cls.__name__} is not a typed message (no SERVICE/VERSION)", code="SDK_NO_SERVICE"
                )
            try:  # a value XML cannot carry (Word's U+000B …) is MessageInvalid SDK_INVALID_FIELD, naming the field
                body = message.to_element()
            except (ValueError, TypeError) as exc:  # a value of the wrong kind for its field's codec
                raise MessageInvalid(
                    f"{cls.__name__} 的字段值无法写成 XML，报文无法生成 — a value of {cls.__name__} cannot be "
                    f"written as XML ({type(exc).__name__}: {exc}); the message cannot be built",
                    code="SDK_INVALID_FIELD",
                ) from None
        ident = w.signer.identity
        mid = message_id or str(uuid.uuid4())
        ttl = ttl if ttl is not None else default_ttl(svc)
        try:
            root = build(
                service=svc,
                version=ver,
                sender=Party(ident.agency, ident.system),
                recipients=recipients,
                body=body,
                classification=classification,
                period=period,
                urgency=urgency,
                ttl=ttl,
                message_id=mid,
                conversation_id=conversation_id,
                ref_to=ref_to,
                request_hash=request_hash,
                business_ref=business_ref,
            )
            env = w.trust.registry.validate(root)
        except HubError as exc:
            raise MessageInvalid(exc.detail, code=exc.code, path=exc.path) from None
        except ValueError as exc:
            detail = str(exc)
            if "XML compatible" in detail:  # lxml's words for a control character in an envelope value
                detail = (
                    "信封字段（如文号 business_ref）含有 XML 不允许的字符（如 Word 的手动换行符），报文无法生成 — an "
                    "envelope value (e.g. business_ref) holds a character XML does not allow (a control character "
                    "such as Word's manual line break); the message cannot be built"
                )
            raise MessageInvalid(detail, code="SDK_INVALID_FIELD") from None
        digest = hashlib.sha256(c14n(root)).hexdigest()
        w.signer.sign(root)
        env = env if env is not None else Envelope.from_tree(root)
        return mid, to_bytes(root), digest, env

    def _outgoing(self, w: _Wiring, env: Any, data: bytes) -> Outgoing:
        from hub.pipeline.client import outgoing

        return outgoing(w.transport, env, data, as_system=True)

    async def _publish_items(self, w: _Wiring, items: list[Outgoing]) -> None:
        from hub.errors import HubError

        try:
            await w.transport.publish_many(items)
        except HubError as exc:
            raise HubUnavailable(f"the broker did not take the message: {exc.detail}", code=exc.code) from None

    def _require_wiring(self) -> _Wiring:
        if self._wiring is None:
            raise ConfigurationError(f"adapter {self.system} is not started (await adapter.start())")
        return self._wiring

    def _require_running(self) -> _Wiring:
        w = self._require_wiring()
        if not self._running:
            raise ConfigurationError(
                f"adapter {self.system} is not running: start it first, the hub's receipts come back through it"
            )
        return w

    # ------------------------------------------------------------------------------------------ document tracking

    async def message_state(self, message_id: str) -> SentMessage | None:
        """Where a message this system sent stands: every recipient's copy (``DeliveryState``: 已送达, 已签收, 已办结 …,
        with when) and the hub's answers about it; None when the hub holds no such message from this system. Read
        from the hub's HTTPS gateway (``adapters.sdk._tracking``: ``gateway_url``, or ``tracking_url`` on RabbitMQ)."""
        return await self._tracking().message_state(message_id)

    def sent_messages(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        delivery: Collection[str] | None = None,
        service: Collection[str] | None = None,
        page: int = 50,
    ) -> AsyncIterator[SentMessage]:
        """发文跟踪: the messages this system sent that the hub received from ``since`` (default a day before
        ``until``) to ``until`` (default now), oldest first, each with every recipient's copy; ``delivery=
        NOT_SIGNED_FOR`` keeps those some recipient has not yet signed for, ``service=["document.official"]`` the
        公文 alone. ``async for sent in adapter.sent_messages(…)``; a window longer than the gateway's 31 days is read
        in parts."""
        return self._tracking().sent_messages(since=since, until=until, delivery=delivery, service=service, page=page)

    def _tracking(self) -> Tracking:
        if self._tracker is None:
            from adapters.sdk._gateway import GatewayTransport

            w = self._require_wiring()
            if isinstance(w.transport, GatewayTransport):  # the adapter's own connection, its certificate checked
                t = w.transport
                self._tracker = Tracking(
                    t.session, t.base_url, request_timeout=t.request_timeout, reconnect=t.reconnect
                )
            elif self.settings is None or not w.own_transport:  # attached: TestHub's broker in memory
                raise ConfigurationError(
                    f"adapter {self.system} runs without the hub's HTTPS gateway, where document tracking is read "
                    "(TestHub in memory has none, whatever the settings name: use TestHub(https=True))",
                    code="SDK_TRACKING_UNSET",
                )
            else:
                self._tracker = Tracking.connect(self.settings)
        return self._tracker

    # ------------------------------------------------------------------------------------------ receiving

    async def _on_batch(self, batch: list[Incoming]) -> None:
        """The consumers' batch handler. When the adapter itself fails on a batch (its store away, its replies not
        published, a bug), what the batch left unsettled is held and goes back after a growing pause
        (``reconnect_initial`` doubled with each failed batch in a row, at most ``reconnect_max``; a batch that goes
        through starts the count again), not at once to fail again: the consumer would requeue it at once."""
        w = self._require_wiring()
        try:
            await self._take_batch(w, batch)
        except Exception:
            self._failures += 1
            s = self.settings
            first, most = (s.reconnect_initial, s.reconnect_max) if s else (0.5, 30.0)
            pause = min(first * 2.0 ** min(self._failures - 1, 32), most)
            left = [m for m in batch if not m.settled and not m.held]
            log.exception(
                "the adapter failed on a batch of %d deliveries; %d go back in %.1f s",
                len(batch),
                len(left),
                pause,
                extra={"system": self.system},
            )
            await self._hold_back(w, left, pause)
        else:
            self._failures = 0

    async def _take_batch(self, w: _Wiring, batch: list[Incoming]) -> None:
        from hub.errors import HubError

        bad: list[tuple[Incoming, str, str]] = []
        todo: list[tuple[Incoming, Opened]] = []
        acks: list[Incoming] = []
        stale: list[Incoming] = []
        early: list[tuple[Incoming, float]] = []
        now = asyncio.get_running_loop().time()
        for m in batch:
            try:
                opened = w.trust.open(m.body)
            except HubError as exc:
                if exc.code == "CERT_CRL_UNAVAILABLE":
                    # Not the delivery's fault: this adapter's CRLs are missing or stale (a fetch from the gateway
                    # has been started: HintedTrust). It waits for them here instead of in the dead-letter queue.
                    stale.append(m)
                    if now - self._crl_warned > 60:
                        self._crl_warned = now
                        log.warning(
                            "deliveries wait for fresh CRLs (%s): %s",
                            exc.code,
                            exc.detail,
                            extra={"system": self.system},
                        )
                    continue
                bad.append((m, exc.code, exc.detail))
                continue
            except Exception as exc:  # a bug must not loop a delivery forever: park it with the reason
                log.exception("could not open a delivery", extra={"system": self.system})
                bad.append((m, "SDK_INTERNAL", f"{type(exc).__name__} while opening the delivery"))
                continue
            env = opened.envelope
            if env.service in _HUB_ANSWERS:
                if opened.originator is not None:
                    bad.append((m, "CERT_SIGNER_MISMATCH", f"{env.service} signed by a system, not by the hub"))
                else:
                    await self._hub_answer(opened)
                    acks.append(m)
                continue
            due = self._not_before.get(env.message_id)
            if due is not None:
                if due - now > 0.05:
                    # A copy of a delivery waiting for its Retry delay (the gateway serves it again after its
                    # visibility timeout; a broker after a lost channel): it waits for what is left of the delay too.
                    early.append((m, due - now))
                    continue
                del self._not_before[env.message_id]
            todo.append((m, opened))
        if stale:
            await self._hold_back(w, stale, CRL_WAIT_S)
        for m, left in early:
            await self._hold_back(w, [m], left)
        if bad:
            await self._dead_letter(w, bad)
        if todo:
            acks += await self._handle(w, todo)
        if acks:
            await w.transport.ack(acks)

    async def _handle(self, w: _Wiring, todo: list[tuple[Incoming, Opened]]) -> list[Incoming]:
        """Steps 3–5 for verified deliveries; returns what to acknowledge (after the commit). A copy of a message
        another batch of this adapter is handling now (the gateway hands a delivery out again after its visibility
        timeout, a broker redelivers) waits for that batch to end, then is seen as handled — or handled, if that
        batch rolled back — never handed to the handler beside it (the store's check alone came before either
        batch had committed)."""
        busy = [(m, o) for m, o in todo if o.envelope.message_id in self._in_progress]
        free = [(m, o) for m, o in todo if o.envelope.message_id not in self._in_progress]
        acks: list[Incoming] = []
        if free:  # first: one of them may be the reply the busy copy's handler waits for (``request``)
            ids = [o.envelope.message_id for _, o in free]
            mine = {mid: asyncio.Event() for mid in ids}  # nothing awaited since the check: no other batch took one
            self._in_progress.update(mine)
            try:
                acks += await self._handle_now(w, free, ids)
            finally:
                for mid, done in mine.items():
                    del self._in_progress[mid]
                    done.set()
        if busy:
            while waiting := {
                self._in_progress[o.envelope.message_id] for _, o in busy if o.envelope.message_id in self._in_progress
            }:
                await asyncio.gather(*(done.wait() for done in waiting))
            acks += await self._handle(w, busy)
        return acks

    async def _handle_now(self, w: _Wiring, todo: list[tuple[Incoming, Opened]], ids: list[str]) -> list[Incoming]:
        seen = await w.store.seen(ids)
        acks: list[Incoming] = []
        retry: list[tuple[Incoming, float, str]] = []
        dead: list[tuple[Incoming, str, str]] = []
        outgoing: list[Outgoing] = []
        in_batch: set[str] = set()
        async with w.store.transaction() as tx:
            for m, o in todo:
                env = o.envelope
                mid = env.message_id
                if mid in seen or mid in in_batch:
                    log.info("duplicate delivery not handed over again", extra=self._fields(env, "duplicate"))
                    acks.append(m)
                    continue
                outcome = await self._one(w, tx, m, o, outgoing)
                if isinstance(outcome, tuple):
                    kind, *rest = outcome
                    if kind == "retry":
                        retry.append((m, float(rest[0]), str(rest[1])))
                        self._not_before_set(mid, float(rest[0]))
                    else:
                        dead.append((m, str(rest[0]), str(rest[1])))
                    continue
                in_batch.add(mid)
                tx.record(mid, env.service_id, str(env.sender), outcome)
                acks.append(m)
            if outgoing:  # inside the transaction: a publish that fails rolls the batch back (redelivered)
                await self._publish_items(w, outgoing)
        for m, delay, why in retry:
            await self._retry_later(w, m, delay, why)
        if dead:
            await self._dead_letter(w, dead)
        return acks

    async def _one(
        self, w: _Wiring, tx: Tx, m: Incoming, o: Opened, outgoing: list[Outgoing]
    ) -> str | tuple[str, Any, Any]:
        """Hand one delivery over. Returns the outcome to record (handled, refused, reply), or ("retry", delay,
        reason) / ("dead", code, reason)."""
        env = o.envelope
        mid = env.message_id
        pending = self._pending.get(env.ref_to or "") if env.ref_to else None
        # A reply or refusal a ``request`` waits for.
        if pending is not None and pending.reply is not None and not pending.reply.done():
            if env.service == REFUSAL_SERVICE:
                pending.reply.set_exception(self._refused(o))
                return "refusal"
            if env.request_hash != pending.digest:
                return ("dead", "SDK_REPLY_MISMATCH", f"reply to {env.ref_to} names another request (RequestHash)")
            if pending.recipients and env.sender.system not in pending.recipients:
                return ("dead", "SDK_REPLY_MISMATCH", f"reply to {env.ref_to} from {env.sender}, not a recipient")
            pending.reply.set_result((o, self._decode(o)))
            return "reply"
        handler = self._handlers.get((env.service, env.version))
        if handler is None and self._fallback is not None:
            handler = _Handler(env.service, env.version, self._fallback, _message_class(env.service, env.version))
        if handler is None:
            if env.service == NOTICE_SERVICE:  # the hub's process notices: every system gets them, none must handle
                kind = env.body.findtext(f"{{{NOTICE_NS}}}Kind") if env.body is not None else None
                log.info("hub notice (no handler): %s", kind, extra=self._fields(env, "notice"))
                return "notice"
            if env.service == REFUSAL_SERVICE:
                log.warning("refusal of a message no request waits for", extra=self._fields(env, "refusal"))
                return "refusal"
            if env.ref_to:
                return ("dead", "SDK_UNCLAIMED_REPLY", f"{env.service_id} answers {env.ref_to}, which nothing awaits")
            return self._refuse(
                w, o, "SDK_NO_HANDLER", f"系统 {self.system} 不处理 {env.service_id} 类报文 (no handler)", outgoing
            )
        attempt = self._attempts.get(mid, 0)
        ctx = self._context(o, m, tx, attempt)
        try:
            msg = handler.cls.from_element(env.body) if handler.cls is not None else env.body
        except Exception as exc:  # the XSD held, so this is a bug in a message class: park it
            return ("dead", "SDK_DECODE", f"{type(exc).__name__} while reading the {env.service_id} body")
        try:
            async with tx.savepoint():
                result = await handler.fn(msg, ctx)
                if result is not None:
                    reply = self._checked_reply(w, o, result)
        except _ReplyInvalid as bad:
            return bad.outcome
        except Retry as r:
            return self._next_attempt(mid, r.delay, r.reason or "the handler asked to retry")
        except Reject as r:
            return self._refuse(w, o, r.code, r.reason, outgoing)
        except SdkError as exc:
            return self._next_attempt(mid, 5.0, f"{exc.code}: {exc.detail}")
        except Exception as exc:
            log.exception("handler %s failed", handler.fn.__name__, extra=self._fields(env, "failed"))
            return self._next_attempt(mid, 2.0 ** min(attempt, 6), f"{type(exc).__name__} in {handler.fn.__name__}")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the adapter is stopping: the delivery goes back unsettled
            # Raised inside the handler (a timeout of its own, a cancelled call it awaited), not a cancellation of
            # the adapter: a failure like any other. Let through, it ended the batch loop for good and the
            # deliveries it held waited in vain.
            log.error("handler %s raised CancelledError", handler.fn.__name__, extra=self._fields(env, "failed"))
            return self._next_attempt(mid, 2.0 ** min(attempt, 6), f"CancelledError in {handler.fn.__name__}")
        self._attempts.pop(mid, None)
        if result is not None:
            outgoing.append(reply)
            log.info("handled, replied", extra=self._fields(env, "replied"))
            return "replied"
        log.info("handled", extra=self._fields(env, "handled"))
        return "handled"

    def _refuse(
        self, w: _Wiring, o: Opened, code: str, reason: str, outgoing: list[Outgoing]
    ) -> str | tuple[str, Any, Any]:
        if o.envelope.service.startswith("hub."):  # the hub takes no refusals (routes: nothing goes back to it)
            log.warning("refused a hub message: %s", code, extra=self._fields(o.envelope, "refused"))
            return "refused"
        try:
            outgoing.append(self._refusal(w, o, code, reason))
        except SdkError as exc:
            return ("dead", code, f"{reason} (the refusal could not be built: {exc})")
        log.info("refused: %s", code, extra=self._fields(o.envelope, "refused"))
        return "refused"

    def _next_attempt(self, mid: str, delay: float, reason: str) -> tuple[str, Any, Any]:
        n = self._attempts.get(mid, 0) + 1
        self._attempts[mid] = n
        self._attempts.move_to_end(mid)
        while len(self._attempts) > 10_000:
            self._attempts.popitem(last=False)
        limit = self.settings.retry_limit if self.settings else 5
        if n > limit:
            self._attempts.pop(mid, None)
            return ("dead", "SDK_RETRIES_EXHAUSTED", f"{n - 1} retries, last: {reason}")
        return ("retry", min(delay, 300.0), reason)

    def _not_before_set(self, message_id: str, delay: float) -> None:
        """Remember that ``message_id`` is not to be handled before ``delay`` seconds from now (its copies wait)."""
        now = asyncio.get_running_loop().time()
        if len(self._not_before) >= 10_000:
            self._not_before = {k: v for k, v in self._not_before.items() if v > now}
        self._not_before[message_id] = now + delay

    async def _retry_later(self, w: _Wiring, m: Incoming, delay: float, why: str) -> None:
        log.info("retry in %.1f s: %s", delay, why, extra={"system": self.system, "message_id": m.message_id})
        if not await self._put_off(w, m, delay):
            await self._hold_back(w, [m], delay)

    async def _put_off(self, w: _Wiring, m: Incoming, delay: float) -> bool:
        """Hand ``m`` to the broker to have it back after ``delay`` (``hub.pipeline.client.put_off``: a copy in
        ``ns.later``, ``m`` acknowledged; through the gateway ``POST /v1/inbox/{tag}/release?after=``). Returns
        False when it is not put off, and ``m`` is still to be settled: a delay under half a second, a stopping
        adapter (stop hands back what is held), a delivery not from this system's queue, a broker or gateway
        unreachable now (held this once), or one that refused (``ns.later`` missing or not granted to this
        system, a gateway without ``after``: held from then on, with one warning that says what to do).

        A crash between the publish and the ack leaves two copies; the later one waits for the first
        (``_not_before``) or is recognised as handled (the store), as any redelivery."""
        from adapters.sdk._gateway import GatewayTransport
        from hub.errors import ConfigError, HubError
        from hub.pipeline.client import put_off

        if not self._later_ok or self._stopping or delay < 0.5:
            return False
        try:
            if isinstance(w.transport, GatewayTransport):
                await w.transport.put_off(m, delay)
            else:
                await put_off(w.transport, m, delay)
        except ValueError:  # not delivered from this system's queue (a test's own consumer): nothing to come back to
            return False
        except HubError as exc:
            if not isinstance(exc, ConfigError) and exc.code != "DELIVERY_UNROUTABLE":
                return False  # the broker is away: held (and redelivered by the broker if the channel is gone)
            self._later_ok = False
            log.warning(
                "the hub refused to put a delivery off (%s: %s): deliveries waiting for a Retry are held "
                "unacknowledged from now on and take room in the prefetch window; on the hub, `hub directory load` "
                "grants ns.later to this system (once `hub run` of this version declared it); then restart the "
                "adapter",
                exc.code,
                exc.detail,
                extra={"system": self.system},
            )
            return False
        return True

    async def _hold_back(self, w: _Wiring, msgs: list[Incoming], delay: float) -> None:
        """Take ``msgs`` over from the consumer and hand them back to the queue (nack with requeue) after ``delay``
        seconds; at once while the adapter stops (``stop`` hands back the others then).

        They stay unacknowledged meanwhile, marked ``Incoming.held`` so that the consumer does not requeue them when
        the batch handler returns; over RabbitMQ they count against the prefetch window. There is no delay queue
        the adapter could use instead: a system's AMQP user may publish only to its own submit lanes and the
        dead-letter exchange."""
        msgs = [m for m in msgs if not m.settled]
        if not msgs:
            return
        if self._stopping:
            await self._hand_back(w, msgs)
            return
        loop = asyncio.get_running_loop()
        key = next(self._timer_keys)

        def fire() -> None:
            self._timers.pop(key, None)
            task = loop.create_task(self._hand_back(w, msgs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        for m in msgs:
            m.held = True
        self._timers[key] = (loop.call_later(delay, fire), msgs)

    async def _hand_back(self, w: _Wiring, msgs: list[Incoming]) -> None:
        """Nack with requeue what was held. Never raises: a delivery whose channel was lost meanwhile is redelivered
        by the broker anyway (the transport's nack is then a no-op), and a failure here must not end the adapter."""
        try:
            await w.transport.nack([m for m in msgs if not m.settled], requeue=True)
        except Exception as exc:
            log.warning(
                "could not hand %d held deliveries back (%s: %s); the broker gives them out again when their channel "
                "closes",
                len(msgs),
                type(exc).__name__,
                exc,
                extra={"system": self.system},
            )

    async def _dead_letter(self, w: _Wiring, items: Sequence[tuple[Incoming, str, str]]) -> None:
        """Park deliveries with their reason (``hub.pipeline.client.park_refused``), then acknowledge them; what could
        not be published is rejected without requeue (the queue's own dead-lettering parks it, without the reason).
        Never acknowledged away."""
        from hub.pipeline.client import park_refused

        for m, code, reason in items:
            log.warning(
                "delivery refused and dead-lettered: %s",
                code,
                extra={"system": self.system, "message_id": m.message_id, "code": code, "reason": reason[:300]},
            )
        failed = await park_refused(w.transport, self.system, items)
        if failed:
            log.warning("could not publish the dead-letter copies; rejecting instead", extra={"system": self.system})
            await w.transport.nack(failed, requeue=False)
        await w.transport.ack([m for m, _, _ in items if m not in failed])

    # ------------------------------------------------------------------------------------------ answers

    async def _hub_answer(self, o: Opened) -> None:
        """Settle the ``send``/``request`` a hub.receipt or hub.error is about; hand any other to ``on_answer``
        (awaited when it returns an awaitable: before the answer is acknowledged, without holding the event loop)."""
        answer: Receipt | HubRefused
        answer = _receipt_of(o) if o.envelope.service == "hub.receipt" else _hub_error_of(o)
        ref = answer.message_id or (o.envelope.ref_to or "")
        p = self._pending.get(ref)
        if p is not None:
            if isinstance(answer, Receipt):
                if not p.receipt.done():
                    p.receipt.set_result(answer)
                    return
            elif not p.receipt.done():
                p.receipt.set_exception(answer)
                return
            elif p.reply is not None and not p.reply.done():  # e.g. blocked recipients, after the receipt
                p.reply.set_exception(answer)
                return
        log.info("hub answer for %s: %s", ref, getattr(answer, "outcome", None) or getattr(answer, "code", ""))
        if self.on_answer is not None:
            done = self.on_answer(answer)
            if inspect.isawaitable(done):
                await done

    def _refused(self, o: Opened) -> Refused:
        from adapters.sdk.messages import DeliveryRefusal

        refusal = DeliveryRefusal.from_element(o.envelope.body)
        return Refused(
            code=refusal.code,
            reason=refusal.reason,
            message_id=refusal.original_message_id,
            by=o.envelope.sender,
            refusal=o,
        )

    def _refusal(self, w: _Wiring, o: Opened, code: str, reason: str) -> Outgoing:
        from adapters.sdk.messages import DeliveryRefusal
        from hub.pipeline.client import refusal_text

        refusal = DeliveryRefusal(
            original_message_id=o.envelope.message_id,
            received_digest=o.digest,
            code=code,
            reason=refusal_text(reason) or "refused by the adapter",
            refused_at=datetime.now(CN_TZ).replace(microsecond=0),
        )
        body = refusal.to_element()
        return self._answer(w, o, body, REFUSAL_SERVICE, 1, "refusal")

    def _checked_reply(self, w: _Wiring, o: Opened, result: Any) -> Outgoing:
        """The reply, built inside the handler's savepoint: one that breaks its XSD rolls the handler back."""
        try:
            return self._reply(w, o, result)
        except SdkError as exc:
            raise _ReplyInvalid(self._next_attempt(o.envelope.message_id, 5.0, f"invalid reply: {exc}")) from None

    def _reply(self, w: _Wiring, o: Opened, result: Any) -> Outgoing:
        if isinstance(result, etree._Element):
            raise ConfigurationError("a handler returns a typed message (or None), not an XML element")
        cls = type(result)
        return self._answer(w, o, result.to_element(), cls.SERVICE, cls.VERSION, "reply")

    def _answer(self, w: _Wiring, o: Opened, body: Any, service: str, version: int, kind: str) -> Outgoing:
        """A reply or refusal to ``o``: addressed to its signed sender, bound to it (RefToMessageId, RequestHash),
        with a message id derived from it (a resend after a crash is a duplicate to the hub)."""
        from hub.envelope import Recipient

        env = o.envelope
        _, data, _, answer_env = self.build(
            body,
            service=service,
            version=version,
            recipients=[Recipient.to(env.sender.agency, env.sender.system)],
            urgency=env.urgency,
            classification=env.classification if kind == "reply" else "公开",
            period=env.period if kind == "reply" else None,
            conversation_id=env.conversation_id,
            ref_to=env.message_id,
            request_hash=o.digest,
            message_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}:{self.system}:{env.message_id}")),
        )
        return self._outgoing(w, answer_env, data)

    # ------------------------------------------------------------------------------------------ helpers

    def _decode(self, o: Opened) -> Any:
        env = o.envelope
        cls = _message_class(env.service, env.version)
        return cls.from_element(env.body) if cls is not None else env.body

    def _context(self, o: Opened, m: Incoming | None, tx: Tx | None, attempt: int = 0) -> Context:
        env = o.envelope
        return Context(
            message_id=env.message_id,
            conversation_id=env.conversation_id,
            service=env.service,
            version=env.version,
            sender=env.sender,
            recipients=env.recipients,
            classification=env.classification,
            period=env.period,
            urgency=env.urgency,
            created=env.created,
            expires=env.expires,
            ref_to=env.ref_to,
            request_hash=env.request_hash,
            business_ref=env.business_ref,
            digest=o.digest,
            originator=o.originator,
            hub=o.hub,
            envelope=env,
            body=env.body,
            raw=o.data,
            redelivered=bool(m.redelivered) if m is not None else False,
            attempt=attempt,
            db=tx.db if tx is not None else None,
            originator_certificate=o.originator_certificate,
        )

    def _fields(self, env: Any, outcome: str) -> dict[str, Any]:
        if not log.isEnabledFor(logging.INFO):
            return {}
        return {
            "message_id": env.message_id,
            "conversation_id": env.conversation_id,
            "service": env.service_id,
            "sender": str(env.sender),
            "recipient": self.system,
            "outcome": outcome,
        }


# ---------------------------------------------------------------------------------------------- module helpers


def _message_class(service: str, version: int) -> Any:
    try:
        from adapters.sdk.messages import message_class
    except ImportError:  # pragma: no cover - the typed messages ship with the SDK
        return None
    try:
        return message_class(service, version)
    except (KeyError, LookupError, SdkError):
        return None


#: How long a message stays valid unless the sender says otherwise (``ttl=``): within every route's max-ttl of
#: the demo routes (a query is worth nothing after its asker gave up; an alert is followed by updates).
_DEFAULT_TTL: tuple[tuple[str, timedelta], ...] = (
    ("data.", timedelta(minutes=30)),
    ("emergency.", timedelta(hours=24)),
)


def default_ttl(service: str) -> timedelta:
    for prefix, ttl in _DEFAULT_TTL:
        if service.startswith(prefix):
            return ttl
    return timedelta(days=7)


def _receipt_of(o: Opened) -> Receipt:
    from adapters.sdk.messages import HubReceipt

    r = HubReceipt.from_element(o.envelope.body)
    return Receipt(
        message_id=r.original_message_id,
        outcome=r.outcome,
        recipients=tuple((x.agency_code, x.system, x.role) for x in r.recipients.recipient),
        received_digest=r.received_digest,
        received_at=r.received_at,
        receipt_id=o.envelope.message_id,
        envelope=o.envelope,
        raw=o.data,
    )


def _hub_error_of(o: Opened) -> HubRefused:
    from adapters.sdk.messages import HubError

    e = HubError.from_element(o.envelope.body)
    return HubRefused(
        code=e.code,
        title=e.title,
        reason=e.reason,
        message_id=e.original_message_id or (o.envelope.ref_to or ""),
        error=o,
    )


async def _connect_with_backoff(s: AdapterSettings, url: str, namespace: str, system: str) -> AbstractTransport:
    from hub.errors import ConfigError, HubError
    from hub.settings import Settings
    from hub.transport import Transport

    hub_settings = Settings(amqp_url=url, namespace=namespace)
    delay = s.reconnect_initial
    while True:
        try:
            return await Transport.connect(hub_settings, url=url, client_name=f"adapter-{system}")
        except ConfigError as exc:  # wrong credentials or permissions: waiting will not help
            raise ConfigurationError(f"the broker refused {system}: {exc.detail}", code=exc.code) from None
        except HubError as exc:
            log.warning("broker unreachable (%s); next attempt in %.1f s", exc.code, delay, extra={"system": system})
        await asyncio.sleep(delay)
        delay = min(delay * 2, s.reconnect_max)
