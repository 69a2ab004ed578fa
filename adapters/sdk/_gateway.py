"""The adapter over the HTTPS gateway: the same ``Adapter``, its handlers and its store, for a system whose network
lets only HTTPS out (``AdapterSettings.gateway_url``).

``GatewayTransport`` is the transport the ``Adapter`` is given instead of RabbitMQ's (``hub.transport.abc``); the
adapter's code does not change. Each operation is one of the gateway's endpoints (docs/gateway.md), over mutual TLS
with the system's own key and certificate (``home/key.pem``, ``home/cert.pem``), trusting only the hub root
(``home/hub-root.pem``), host names checked:

    publish (a send, a reply, a delivery.refusal)  POST /v1/messages; the hub's signed receipt or error in the
                                                   response goes through the adapter's own verification, as if it
                                                   had come from the queue, and settles the ``send``
    consume                                        ``gateway_polls`` long polls GET /v1/inbox?wait=``gateway_wait``
                                                   &max=<a batch>: each takes up to a batch (multipart/mixed)
    ack                                            POST /v1/inbox/ack {"tags": [...]}: a batch in one request
    nack (a handler's ``Retry``, a stop)           POST /v1/inbox/{tag}/release: back at once
    dead-letter (a delivery that failed the        POST /v1/inbox/{tag}/refuse {code, reason}: parked in the hub's
    adapter's checks)                              dead-letter queue with the reason, as over AMQP

What can go wrong, and what the adapter then does:

- the gateway is unreachable, busy (429) or the hub unavailable (503): a submission is sent again after
  ``Retry-After`` (within ``request_timeout``; a resend is safe: the hub recognises the message id and finishes what
  was begun), then ``HubUnavailable``; acknowledgements, put-backs and refusals are sent again the same way; polls
  back off from ``reconnect_initial`` to ``reconnect_max``;
- the gateway refuses a submission before the hub examines it (413 too large, 415, 401/403 the certificate): JSON
  over the authenticated TLS connection, not signed: ``HubRefused`` with ``error=None`` and the gateway's code;
- an acknowledgement that does not arrive (the connection broke, or the visibility timeout passed): the gateway
  hands the delivery out again and the adapter's store recognises it as handled (step 3 of ``Adapter``).

Deliveries wait at most ``prefetch`` in the adapter's hands (taken, not yet settled), as the AMQP prefetch. A batch a
poll and an acknowledgement a batch: ``bench/sdk_https.py`` measured 898–1,183 deliveries a second over HTTPS against
1,643–1,656 over RabbitMQ on this machine (one a poll and one acknowledgement each: 539).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
import re
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from adapters.sdk._errors import ConfigurationError, HubRefused, HubUnavailable
from hub.errors import DeliveryError, title_of
from hub.transport.names import Names
from hub.transport.topology import Handler, Incoming, Outgoing

if TYPE_CHECKING:
    from adapters.sdk._settings import AdapterSettings

__all__ = ["GatewayTransport", "client_ssl_context", "connect_gateway"]

log = logging.getLogger("adapters.sdk")

XML = "application/xml"
_XML_TYPES = frozenset({XML, "text/xml"})
#: Queue name the gateway's deliveries carry (there is one inbox per system over HTTPS).
INBOX = "https:inbox"
#: A status after which the same request may succeed later.
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
#: A refusal code the gateway takes (the shape of the hub's own codes); anything else is sent as SDK_REFUSED.
_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
#: The certificate or the directory refused the system: waiting does not help, an operator must act.
_REFUSED_IDENTITY = frozenset({401, 403})


def client_ssl_context(settings: AdapterSettings) -> ssl.SSLContext:
    """Mutual TLS as the system: its key and certificate chain; only the hub root trusted; host names checked."""
    for path, what in (
        (settings.key_path, "the system's key"),
        (settings.cert_path, "the system's certificate"),
        (settings.root_cert_path, "the hub root certificate"),
    ):
        if not path.is_file():
            raise ConfigurationError(
                f"{what} is missing at {path}: finish the enrolment (hub adapter enrol --accept)",
                code="SDK_NOT_ENROLLED",
            )
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.root_cert_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(settings.cert_path), str(settings.key_path))
    except ssl.SSLError as exc:
        raise ConfigurationError(f"the key and certificate in {settings.home} do not go together: {exc}") from None
    return ctx


@dataclass(slots=True)
class _Held:
    """A delivery in the adapter's hands: the gateway's tag for it, the consumer whose room it takes."""

    msg: Incoming
    token: str
    consumer: _Consumer


class _NoConsumer:
    """The adapter's second queue (the urgent lane with quorum queues): the gateway's one inbox serves both."""

    async def stop(self, *, drain: bool = True) -> None:
        return None


class _Consumer:
    """``polls`` long polls feeding ``concurrency`` batch loops, at most ``prefetch`` deliveries in hand."""

    def __init__(
        self,
        transport: GatewayTransport,
        handler: Handler,
        *,
        prefetch: int,
        max_batch: int,
        linger: float,
        concurrency: int,
    ) -> None:
        self.transport = transport
        self.handler = handler
        self.max_batch = max_batch
        self.linger = linger
        #: Deliveries in hand (taken by a poll and not settled) and reserved for polls under way: at most ``limit``.
        self.limit = prefetch
        self.in_hand = 0
        self.freed = asyncio.Event()
        self.ready: asyncio.Queue[Incoming] = asyncio.Queue()
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()
        #: Batches the handler failed on in a row (their deliveries go back after a growing pause), and those pauses.
        self.failures = 0
        self.held_back: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.polls = [loop.create_task(self._poll_loop()) for _ in range(transport.polls)]
        self.batches = [loop.create_task(self._batch_loop()) for _ in range(concurrency)]

    async def _reserve(self) -> int:
        """Room for one poll: waits until fewer than ``limit`` deliveries are in hand, then reserves up to a batch."""
        while self.in_hand >= self.limit:
            self.freed.clear()
            await self.freed.wait()
        k = min(self.max_batch, self.limit - self.in_hand, MAX_POLL)
        self.in_hand += k
        return k

    def release_room(self, k: int = 1) -> None:
        self.in_hand -= k
        self.freed.set()

    async def _poll_loop(self) -> None:
        delay = self.transport.reconnect[0]
        while True:
            k = await self._reserve()
            try:
                got = await self.transport.poll(self, k)
            except asyncio.CancelledError:
                self.release_room(k)
                raise
            except _Unavailable as exc:
                self.release_room(k)
                pause = max(delay, exc.after or 0.0)  # at least what the gateway's Retry-After asks for
                log.warning("the gateway's inbox: %s; next poll in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, self.transport.reconnect[1])
                continue
            delay = self.transport.reconnect[0]
            self.release_room(k - len(got))  # what was reserved and did not come
            for m in got:
                self.ready.put_nowait(m)

    async def _batch_loop(self) -> None:
        while True:
            batch = [await self.ready.get()]
            self.running += 1
            self.idle.clear()
            try:
                if self.linger and self.ready.empty():
                    await asyncio.sleep(self.linger)
                while len(batch) < self.max_batch and not self.ready.empty():
                    batch.append(self.ready.get_nowait())
                try:
                    await self.handler(batch)
                except Exception:
                    self.failures += 1
                    first, most = self.transport.reconnect
                    pause = min(first * 2.0 ** min(self.failures - 1, 32), most)  # no OverflowError past 1024
                    log.exception(
                        "the adapter failed on a batch of %d deliveries; they go back in %.1f s", len(batch), pause
                    )
                    self._release_later([m for m in batch if not m.settled], pause)
                else:
                    self.failures = 0
            finally:
                self.running -= 1
                if not self.running and self.ready.empty():
                    self.idle.set()

    def _release_later(self, batch: list[Incoming], pause: float) -> None:
        """Put ``batch`` back after ``pause`` (held until then): a batch the adapter fails on (a bug, its store away)
        does not come straight back to fail again without end; at ``stop`` it goes back at once."""

        async def release() -> None:
            with contextlib.suppress(TimeoutError):  # the pause, cut short by ``stop``
                await asyncio.wait_for(self.stopping.wait(), pause)
            await self.transport.nack([m for m in batch if not m.settled], requeue=True)

        task = asyncio.get_running_loop().create_task(release())
        self.held_back.add(task)
        task.add_done_callback(self.held_back.discard)

    async def stop(self, *, drain: bool = True) -> None:
        """No new polls; with ``drain`` the deliveries taken are handled first, else they go back at once."""
        for task in self.polls:
            task.cancel()
        await asyncio.gather(*self.polls, return_exceptions=True)
        self.stopping.set()  # what a failed batch holds back goes back now (and what fails while draining, at once)
        if drain:
            while not self.ready.empty() or self.running:
                self.idle.clear()
                await self.idle.wait()
        for task in self.batches:
            task.cancel()
        await asyncio.gather(*self.batches, return_exceptions=True)
        await asyncio.gather(*self.held_back, return_exceptions=True)
        left = []
        while not self.ready.empty():
            left.append(self.ready.get_nowait())
        if left:
            await self.transport.nack(left, requeue=True)
        self.transport.forget_consumer(self)


class _Unavailable(Exception):
    """The gateway did not answer a poll usefully now (unreachable, busy, the certificate refused); ``after``: the
    seconds its Retry-After asked for."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


#: How long past ``request_timeout`` a submission in flight may wait for the gateway's answer: the gateway's own
#: ``answer_timeout_s`` (30 s by default), after which it answers 503 GATEWAY_TIMEOUT itself.
SUBMIT_GRACE_S = 30.0

#: The most deliveries one poll asks for (the gateway's ``MAX_POLL_ITEMS``; tests/unit pins the two equal): a
#: ``max_batch`` and ``prefetch`` above it asked for more, and every poll was refused 400.
MAX_POLL = 64


class GatewayTransport:
    """``hub.transport.abc.AbstractTransport`` over the HTTPS gateway, for ``adapters.sdk.Adapter`` (module docstring).
    Build it with ``connect_gateway``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        system: str,
        *,
        names: Names,
        polls: int = 2,
        wait: int = 20,
        request_timeout: float = 30.0,
        reconnect: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.system = system
        self.names = names
        self.user = names.user(system)
        self.polls = polls
        self.wait = wait
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self._consumer: _Consumer | None = None
        self._tags = itertools.count(1)
        self._held: dict[int, _Held] = {}

    # ------------------------------------------------------------------------------------------ publishing

    async def declare_topology(self, system_ids: Iterable[str] = ()) -> None:
        return None  # the hub's topology is the hub's: an HTTPS system declares nothing

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        """Each envelope to POST /v1/messages (the hub's signed answer then goes to the consumer's handler); each
        dead-letter copy (``hub.pipeline.client.park_refused``) to POST /v1/inbox/{tag}/refuse."""
        await asyncio.gather(
            *(
                self._refuse(item) if item.exchange == self.names.dead_letter_exchange else self._submit(item)
                for item in items
            )
        )

    async def _post(
        self,
        path: str,
        what: str,
        final: Callable[[int, str], bool],
        *,
        data: bytes | None = None,
        json_body: bool = False,
        attempt_s: float = 1.0,
    ) -> tuple[int, str, bytes, Any]:
        """POST until the gateway gives an answer ``final(status, content type)`` accepts (``exchange``)."""
        headers = {"Content-Type": "application/json" if json_body else XML} if data is not None else None
        return await exchange(
            self.session,
            "POST",
            f"{self.base_url}{path}",
            what,
            final,
            data=data,
            headers=headers,
            request_timeout=self.request_timeout,
            reconnect=self.reconnect,
            attempt_s=attempt_s,
        )

    async def _submit(self, item: Outgoing) -> None:
        mid = item.message_id or ""

        def final(status: int, kind: str) -> bool:
            return status not in _TRANSIENT or (kind in _XML_TYPES and status == 500)  # the hub's signed INTERNAL

        try:
            # A submission in flight may take the gateway's own answer time (30 s by default) past the deadline: a
            # receipt the hub made, or its 503 GATEWAY_TIMEOUT, must not be cut off (the message would then look lost).
            status, kind, body, headers = await self._post(
                "/v1/messages", mid, final, data=item.body, attempt_s=self.request_timeout + SUBMIT_GRACE_S
            )
        except _Unavailable as exc:
            raise HubUnavailable(f"the gateway did not take {mid}: {exc}") from None
        if kind in _XML_TYPES:
            await self._answer(body, headers.get("X-Hub-Message-Id") or mid)
            return
        code = headers.get("X-Hub-Code") or f"HTTP_{status}"
        raise HubRefused(code=code, title=title_of(code), reason=_detail(body) or f"HTTP {status}", message_id=mid)

    async def _answer(self, body: bytes, message_id: str) -> None:
        """The hub's answer in a response: through the adapter's own verification, as a delivery from the queue."""
        consumer = self._consumer
        if consumer is None:
            raise ConfigurationError("the adapter is not consuming: the hub's answers could not be read")
        answer = Incoming(
            body=body,
            routing_key="",
            exchange="",
            headers={},
            message_id=message_id,
            user_id=None,
            priority=0,
            redelivered=False,
            queue="https:answer",
            delivery_tag=0,
            settled=True,  # nothing to acknowledge: it came in the response
        )
        await consumer.handler([answer])

    async def _refuse(self, item: Outgoing) -> None:
        """A delivery the adapter refused (its checks failed): parked by the gateway with the reason."""
        h = next(  # a delivery without a message id is parked under "" (park_refused): it matches None here
            (h for h in self._held.values() if (h.msg.message_id or "") == item.message_id and h.msg.body == item.body),
            None,
        )
        if h is None:
            log.error(
                "could not park %s: it did not come from the gateway's inbox (an answer in a response fails the "
                "adapter's checks: the send it belongs to times out)",
                item.message_id,
            )
            return
        m = h.msg
        code = str(item.headers.get("x-refused-code") or "")
        reason = json.dumps(
            {"code": code if _CODE.fullmatch(code) else "SDK_REFUSED", "reason": _reason(item)}, ensure_ascii=False
        ).encode()
        try:
            status, _, body, _ = await self._post(
                f"/v1/inbox/{h.token}/refuse", f"the refusal of {m.message_id}", _settled, data=reason, json_body=True
            )
        except _Unavailable as exc:
            raise DeliveryError(f"the gateway did not park {m.message_id}: {exc}") from None
        if status == 404:
            log.warning("%s went back before its refusal arrived: it comes again and is refused then", m.message_id)
        elif status != 204:
            raise DeliveryError(f"the gateway did not park {m.message_id}: {_detail(body) or f'HTTP {status}'}")
        self._settle(m)

    # ------------------------------------------------------------------------------------------ receiving

    async def consume(
        self,
        queue_name: str | Sequence[str],
        handler: Handler,
        *,
        prefetch: int,
        max_batch: int = 64,
        linger: float = 0.002,
        concurrency: int = 4,
        priority: int | None = None,
        share: Callable[[str], int] | None = None,
    ) -> _Consumer | _NoConsumer:
        """The system's inbox (whatever queue is named: over HTTPS there is one)."""
        if self._consumer is not None:
            return _NoConsumer()
        self._consumer = _Consumer(
            self, handler, prefetch=prefetch, max_batch=max_batch, linger=linger, concurrency=concurrency
        )
        return self._consumer

    def forget_consumer(self, consumer: _Consumer) -> None:
        if self._consumer is consumer:
            self._consumer = None

    async def poll(self, consumer: _Consumer, limit: int = 1) -> list[Incoming]:
        """One long poll for up to ``limit`` deliveries (``max``: one ``multipart/mixed`` response), each registered as
        in hand; none after the wait."""
        got: list[tuple[bytes, Any]] = []
        try:
            async with self.session.get(
                f"{self.base_url}/v1/inbox",
                params={"wait": str(self.wait), "max": str(limit)},
                timeout=aiohttp.ClientTimeout(total=self.wait + 30),
            ) as resp:
                status, headers = resp.status, resp.headers
                if status == 200 and resp.content_type.startswith("multipart/"):
                    reader = aiohttp.MultipartReader.from_response(resp)
                    while (part := await reader.next()) is not None:
                        assert isinstance(part, aiohttp.BodyPartReader)
                        got.append((bytes(await part.read(decode=False)), part.headers))
                    body = b""
                else:
                    body = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, AssertionError) as exc:
            raise _Unavailable(f"unreachable or garbled ({_describe(exc)})") from None
        if status == 204:
            return []
        if status != 200 or not got or not all(h.get("X-Hub-Delivery-Tag") for _, h in got):
            code = headers.get("X-Hub-Code") or f"HTTP_{status}"
            if status in _REFUSED_IDENTITY or code == "GATEWAY_LINK_CONFLICT":  # an operator must act
                log.error("the gateway refuses %s (%s): %s", self.system, code, _detail(body))
            raise _Unavailable(f"{code}: {_detail(body) or f'HTTP {status}'}", _seconds(headers.get("Retry-After")))
        out = []
        for data, h in got:
            tag = next(self._tags)
            kind = h.get("X-Hub-Kind", "delivery")
            m = Incoming(
                body=data,
                routing_key="",
                exchange="",
                headers={"x-hub-kind": kind} if kind != "delivery" else {},
                message_id=h.get("X-Hub-Message-Id") or None,
                user_id=None,
                priority=0,
                redelivered=False,
                queue=INBOX,
                delivery_tag=tag,
            )
            self._held[tag] = _Held(m, h["X-Hub-Delivery-Tag"], consumer)
            out.append(m)
        return out

    def _settle(self, m: Incoming) -> _Held | None:
        m.settled = True
        h = self._held.pop(m.delivery_tag, None)
        if h is not None:
            h.consumer.release_room()
        return h

    async def ack(self, batch: Iterable[Incoming]) -> None:
        """One POST /v1/inbox/ack for the batch (up to 256 tags a request)."""
        held = [h for h in (self._settle(m) for m in batch if not m.settled and m.delivery_tag in self._held) if h]
        for i in range(0, len(held), 256):
            part = held[i : i + 256]
            tags = json.dumps({"tags": [h.token for h in part]}).encode()
            what = f"the acknowledgement of {len(part)} deliveries"
            try:
                status, _, body, _ = await self._post("/v1/inbox/ack", what, _settled, data=tags, json_body=True)
            except _Unavailable as exc:
                log.warning(
                    "the gateway did not hear %s (%s); it hands them out again after its visibility timeout and the "
                    "adapter recognises them",
                    what,
                    exc,
                )
                continue
            try:
                answer = json.loads(body) if status == 200 else {}
                unknown, elsewhere = set(answer.get("unknown", [])), set(answer.get("elsewhere", []))
            except (ValueError, AttributeError, TypeError):
                unknown, elsewhere = set(), set()
            for h in part:
                if h.token in unknown:
                    log.info("ack of %s: it had gone back already; it comes again and is recognised", h.msg.message_id)
                elif h.token in elsewhere:
                    log.warning(
                        "ack of %s: GATEWAY_TAG_ELSEWHERE — its tag is another gateway's, or this one's before it "
                        "restarted; it comes again and is recognised (behind a load balancer: keep a client on one "
                        "gateway)",
                        h.msg.message_id,
                    )
            if status != 200:
                log.warning("%s: %s", what, _detail(body) or f"HTTP {status}")

    async def nack(self, batch: Iterable[Incoming], *, requeue: bool = True) -> None:
        """Back to the gateway at once (``requeue=False`` too: the adapter asks for it only when parking failed,
        and over HTTPS parking is the gateway's own refusal endpoint: the delivery comes again and is refused then)."""
        await asyncio.gather(
            *(self._tell(m, "release") for m in batch if not m.settled and m.delivery_tag in self._held)
        )

    async def _tell(self, m: Incoming, verb: str) -> None:
        h = self._settle(m)
        assert h is not None
        try:
            status, _, body, _ = await self._post(
                f"/v1/inbox/{h.token}/{verb}", f"the {verb} of {m.message_id}", _settled
            )
        except _Unavailable as exc:
            log.warning(
                "the gateway did not hear the %s of %s (%s); it hands the delivery out again after its visibility "
                "timeout and the adapter recognises it",
                verb,
                m.message_id,
                exc,
            )
            return
        if status == 404:
            log.info("%s of %s: it had gone back already; it comes again and is recognised", verb, m.message_id)
        elif status != 204:
            log.warning("%s of %s: %s", verb, m.message_id, _detail(body) or f"HTTP {status}")

    async def put_off(self, m: Incoming, delay: float) -> None:
        """Have a delivery in hand back after ``delay`` seconds without holding it: ``POST /v1/inbox/{tag}/release
        ?after=<s>`` (the gateway puts a copy in the broker's ``ns.later`` and acknowledges the delivery; ``after``
        rounded up to the next of ``LATER_DELAYS_S``). Settled once the gateway answered: 204, or 404 (it had gone
        back), or 503 (the broker did not take the copy: the gateway put the delivery back at once). A gateway older
        than ``after`` ignores it and puts the delivery back at once (204): its copy then waits in the adapter for
        the rest of the delay (``Adapter._not_before``). ``ValueError`` for a delivery not in hand;
        ``BrokerUnavailable`` when the gateway did not answer (still in hand: the caller holds it); ``ConfigError``
        when the gateway refuses ``after`` with 400 (still in hand)."""
        from hub.errors import BrokerUnavailable, ConfigError
        from hub.transport.names import later_delay

        h = self._held.get(m.delivery_tag)
        if h is None or m.settled:
            raise ValueError("not a delivery in hand")
        after = later_delay(delay)
        try:
            status, _, body, headers = await self._post(
                f"/v1/inbox/{h.token}/release?after={after}", f"the put-off of {m.message_id}", _settled
            )
        except _Unavailable as exc:
            raise BrokerUnavailable(f"the gateway did not hear the put-off of {m.message_id}: {exc}") from None
        if status == 400:
            code = headers.get("X-Hub-Code") or "HTTP_400"
            raise ConfigError(f"the gateway refused ?after={after} ({code}: {_detail(body)})")
        self._settle(m)
        if status == 404:
            log.info("put-off of %s: it had gone back already; it comes again and is recognised", m.message_id)
        elif status != 204:  # 503: the broker did not take the copy, the gateway put the delivery back at once
            log.warning("put-off of %s: %s", m.message_id, _detail(body) or f"HTTP {status}")

    async def fetch(self, queue_name: str, *, max_messages: int = 100) -> list[Incoming]:
        raise NotImplementedError("over the HTTPS gateway deliveries come by the adapter's long polls only")

    async def queue_depth(self, queue: str) -> int:
        raise NotImplementedError("the HTTPS gateway does not show queue depths")

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop(drain=False)
        left = [h.msg for h in self._held.values()]
        if left:
            await self.nack(left)
        await self.session.close()


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    what: str,
    final: Callable[[int, str], bool],
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    request_timeout: float,
    reconnect: tuple[float, float],
    attempt_s: float = 1.0,
) -> tuple[int, str, bytes, Any]:
    """Send one request until the gateway gives an answer ``final(status, content type)`` accepts: (status, content
    type, body, headers). Anything else — no connection, 429, 503 … — is sent again after the gateway's Retry-After
    when it names one (with up to a quarter of jitter, so requests held back together do not come back in the same
    instant), else after a back-off, within ``request_timeout``; then ``_Unavailable``. Resending is safe for every
    request the SDK makes: the hub recognises a message id, a tag acknowledged, put back or refused once is unknown
    the second time (404), and the reads change nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request_timeout
    delay = reconnect[0]
    while True:
        if session.closed:
            raise _Unavailable(f"not sent: the adapter is stopping (its connection to the gateway is closed): {what}")
        # One attempt lasts what is left of request_timeout, or ``attempt_s`` if that is longer (a gateway that took
        # a read or an acknowledgement and never answered held it for the session's whole timeout past the deadline).
        left = aiohttp.ClientTimeout(total=max(attempt_s, deadline - loop.time()))
        try:
            async with session.request(method, url, data=data, headers=headers, params=params, timeout=left) as resp:
                body = await resp.read()
                status, kind, got = resp.status, resp.content_type, resp.headers
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why, after = f"the gateway is unreachable ({_describe(exc)})", None
        except RuntimeError:  # aiohttp's "Session is closed": the adapter stopped while this was sent
            if not session.closed:
                raise
            raise _Unavailable(f"not sent: the adapter stopped while it was sent: {what}") from None
        else:
            if final(status, kind):
                return status, kind, body, got
            why = f"{got.get('X-Hub-Code') or f'HTTP_{status}'}: {_detail(body) or f'HTTP {status}'}"
            after = _seconds(got.get("Retry-After"))
        # Retry-After as the gateway asks, but never less than the first back-off: a 0 from a proxy in front of it
        # would have the request sent again without a pause.
        pause = max(after, reconnect[0]) if after is not None else delay
        pause += random.uniform(0.0, min(1.0, pause / 4))
        if loop.time() + pause > deadline:
            raise _Unavailable(f"not within {request_timeout:g} s: {why}")
        log.warning(
            "the gateway did not %s %s (%s); asking again in %.1f s",
            "give" if method == "GET" else "take",
            what,
            why,
            pause,
        )
        await asyncio.sleep(pause)
        if after is None:
            delay = min(delay * 2, reconnect[1])


def _settled(status: int, kind: str) -> bool:
    """An answer to an acknowledgement, a put-back or a refusal that is final (204, 404, 400 …), not to be resent."""
    return status not in _TRANSIENT


#: A login in a URL (``//user:password@``), as aiohttp's proxy errors print the proxy's address.
_LOGIN_IN_URL = re.compile(r"//[^/@\s'\"]+@")


def _describe(exc: BaseException) -> str:
    """An exception for a log line or an error: never the proxy's password (aiohttp's proxy errors name the proxy's
    URL with its login)."""
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy answered HTTP {exc.status} {exc.message}".strip()
    return _LOGIN_IN_URL.sub("//", str(exc)) or type(exc).__name__


def _detail(body: bytes) -> str:
    """The ``detail`` of the gateway's JSON refusal (or the start of whatever came)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    return str(data.get("detail") or "") if isinstance(data, dict) else ""


def _seconds(raw: str | None) -> float | None:
    """A Retry-After in seconds (at most an hour; None for nothing usable: nan, inf, a date)."""
    try:
        value = float(raw) if raw else None
    except ValueError:
        return None
    return None if value is None or not math.isfinite(value) else min(3600.0, max(0.0, value))


def _proxy_name(settings: AdapterSettings) -> str:
    """The proxy's address for a log line or an error: never its password."""
    from yarl import URL

    url = URL(settings.gateway_proxy)
    return str(url.with_user(None)) if url.user else str(url)


def _reason(item: Outgoing) -> str:
    from hub.pipeline.client import refusal_text

    return refusal_text(str(item.headers.get("x-refused-reason") or "")) or "refused by the adapter's checks"


def _session(settings: AdapterSettings, ctx: ssl.SSLContext) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=settings.gateway_polls + 16),
        timeout=aiohttp.ClientTimeout(total=settings.request_timeout + 30, connect=10),
        proxy=settings.gateway_proxy or None,  # CONNECT through the agency's proxy; the TLS inside is ours
    )


async def _probe(
    session: aiohttp.ClientSession, settings: AdapterSettings, system: str, *, base: str | None = None
) -> tuple[int | None, str]:
    """One look at who the gateway takes this certificate for: (status, the gateway's words) — 200 or 404 for a
    message id nobody sent is the answer to a system it knows — or (None, why) when it was not reached. A refusal
    that waiting does not help (a certificate, a proxy, a gateway not of this hub) is a ``ConfigurationError``.
    ``base``: the gateway's address when it is not ``gateway_url`` (``tracking_url``)."""
    base = (base or settings.gateway_url).rstrip("/")
    try:
        async with session.get(f"{base}/v1/messages/00000000-0000-4000-8000-000000000000") as resp:
            body = await resp.read()
            status, code = resp.status, resp.headers.get("X-Hub-Code") or f"HTTP_{resp.status}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status in (403, 407):
            raise ConfigurationError(
                f"the proxy {_proxy_name(settings)} refused the way to the gateway at {base}: "
                + (
                    "it asks for a login (gateway_proxy = http://user:password@host:port)"
                    if exc.status == 407
                    else "ask the agency's network administrators to allow CONNECT to the gateway's host and port"
                )
                + f" (HTTP {exc.status})",
                code="SDK_GATEWAY_PROXY",
            ) from None
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            raise ConfigurationError(
                f"the gateway at {base} is not the hub's (its certificate does not chain to hub-root.pem or "
                f"does not name this host): {exc}",
                code="SDK_GATEWAY_CERTIFICATE",
            ) from None
        if isinstance(exc, aiohttp.ClientConnectorSSLError):  # the handshake failed: our certificate, mostly
            raise ConfigurationError(
                f"the TLS handshake with the gateway at {base} failed ({_describe(exc)}): is cert.pem a "
                "certificate of this system issued by the hub CA, with clientAuth?",
                code="SDK_GATEWAY_TLS",
            ) from None
        via = f" through the proxy {_proxy_name(settings)}" if settings.gateway_proxy else ""
        return None, f"unreachable{via} ({_describe(exc)})"
    if status in _REFUSED_IDENTITY:
        raise ConfigurationError(f"the gateway refused {system}'s certificate: {_detail(body)}", code=code)
    return status, _detail(body)


async def probe_gateway(settings: AdapterSettings, system: str, *, base: str | None = None) -> tuple[int | None, str]:
    """``_probe`` once, on a session of its own (the adapter's self-check)."""
    async with _session(settings, client_ssl_context(settings)) as session:
        return await _probe(session, settings, system, base=base)


async def connect_gateway(settings: AdapterSettings, system: str) -> GatewayTransport:
    """A ``GatewayTransport`` for ``system``, once the gateway took its certificate (retrying with back-off while the
    gateway is unreachable; a certificate the gateway refuses is a ``ConfigurationError``: waiting does not help)."""
    ctx = client_ssl_context(settings)
    base = settings.gateway_url.rstrip("/")
    delay = settings.reconnect_initial
    while True:
        session = _session(settings, ctx)
        try:
            status, said = await _probe(session, settings, system)
        except BaseException:
            await session.close()
            raise
        if status in (200, 404):
            return GatewayTransport(
                session,
                base,
                system,
                names=Names(settings.namespace or "hub"),
                polls=settings.gateway_polls,
                wait=settings.gateway_wait,
                request_timeout=settings.request_timeout,
                reconnect=(settings.reconnect_initial, settings.reconnect_max),
            )
        await session.close()
        if status is None:
            log.warning("gateway %s; next attempt in %.1f s", said, delay)
        else:
            log.warning("the gateway answered %s (%s); next attempt in %.1f s", status, said, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, settings.reconnect_max)
