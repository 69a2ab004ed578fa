"""A minimal agency-side client, used by ``hub send`` / ``hub receive``, the tests, the benchmarks and the demo
(the adapter SDK will grow from it).

A system's credentials live in ``<state_dir>/systems/<system>/``: ``<system>.key`` (its private key, made on the
agency's side and never sent anywhere), ``<system>.pem`` (its certificate followed by the issuing CA). Its
RabbitMQ password is in ``<state_dir>/amqp-users/<system>.password`` once ``hub directory load`` provisioned it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.envelope import Envelope, parse, to_bytes
from hub.envelope.model import ERROR_NS, RECEIPT_NS
from hub.errors import ConfigError, HubError
from hub.settings import Settings


def system_dir(settings: Settings, system: str) -> Path:
    return settings.state_dir / "systems" / system


def credential_paths(settings: Settings, system: str) -> tuple[Path, Path]:
    d = system_dir(settings, system)
    return d / f"{system}.key", d / f"{system}.pem"


async def enroll(settings: Settings, system: str, agency: str, *, algorithm: str = "ec-p256") -> tuple[Path, Path]:
    """Make a key and CSR for a system (agency side) and have the hub CA issue its certificate (hub side).
    Idempotent: an existing key and certificate are kept."""
    from hub.commands import trust_admin as admin
    from hub.trust import keys, pki

    key_path, cert_path = credential_paths(settings, system)
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key = keys.generate_private_key(algorithm)
    csr = pki.make_csr(key, agency, system)
    from cryptography.hazmat.primitives import serialization

    issued = await admin.issue(settings, settings.state_dir / "pki", csr.public_bytes(serialization.Encoding.PEM))
    keys.write_private_file(key_path, keys.private_key_pem(key, None))
    chain = [issued.certificate] + ([issued.issuer] if issued.issuer is not None else [])
    cert_path.write_bytes(pki.certificate_pem(*chain))
    return key_path, cert_path


def load_signer(settings: Settings, system: str) -> Any:
    from hub.trust import Signer

    key_path, cert_path = credential_paths(settings, system)
    if not key_path.exists():
        d = key_path.parent
        raise ConfigError(
            f"no key for system {system!r} at {key_path}; hub send and hub receive read a system's key and certificate "
            f"from {d}: hub keygen --system {system} --agency <its agency code> --out {d}, then "
            f"hub pki issue --csr {d / (system + '.csr')} --out {cert_path}"
        )
    return Signer.load(key_path, cert_path)


def sign_envelope(signer: Any, data: bytes, *, max_bytes: int, registry: Any = None) -> tuple[Envelope, bytes]:
    """Parse an unsigned envelope file safely, validate it (when given the schema ``registry``: a sender learns of
    a mistake before anything leaves), sign it, and return its model and the bytes to send."""
    root = parse(data, max_bytes=max_bytes)
    if registry is not None:
        registry.validate(root)
    if root.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is None:
        signer.sign(root)
    return Envelope.from_tree(root), to_bytes(root)


async def connect_as(settings: Settings, system: str | None) -> Any:
    """A transport logged in as the system's own RabbitMQ user when it has one (the broker then vouches for the
    publisher), else as the hub's configured user."""
    from hub.transport import Transport
    from hub.transport.users import amqp_url_for, password_path

    if system is not None and password_path(settings, system).exists():
        return await Transport.connect(settings, url=amqp_url_for(settings, system), client_name=f"client-{system}")
    return await Transport.connect(settings, client_name=f"client-{system or 'hub'}")


def outgoing(transport: Any, env: Envelope, body: bytes, *, as_system: bool) -> Any:
    from hub.transport import Outgoing, lane_for, priority_for

    names, lane = transport.names, lane_for(env.service, env.urgency)
    system = names.system_of_user(transport.user) if as_system else None
    return Outgoing(
        # A system's own user publishes into its own inbound lane; the hub's user into the shared one.
        exchange=names.submit_exchange if system else names.inbound_exchange,
        routing_key=names.inbound_key(lane, system) if system else lane,
        body=body,
        headers={},
        priority=priority_for(env.urgency),
        message_id=env.message_id,
        user_id=transport.user if as_system else None,
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """A verified answer from the hub about one message."""

    kind: str  # "receipt" | "error"
    about: str
    outcome: str  # accepted / duplicate / quarantined, or the error code
    detail: str
    envelope: Envelope

    def line(self) -> str:
        if self.kind == "receipt":
            label = {"accepted": "已受理 accepted", "duplicate": "重复 duplicate", "quarantined": "已隔离 quarantined"}
            return f"{self.about}: {label.get(self.outcome, self.outcome)} {self.detail}".rstrip()
        return f"{self.about}: {self.outcome}: {self.detail}"


def read_reply(envelope: Envelope) -> Reply | None:
    body = envelope.body
    if body is None:
        return None
    if body.tag == f"{{{RECEIPT_NS}}}HubReceipt":
        about = body.findtext(f"{{{RECEIPT_NS}}}OriginalMessageId") or ""
        outcome = body.findtext(f"{{{RECEIPT_NS}}}Outcome") or ""
        n = len(body.findall(f"{{{RECEIPT_NS}}}Recipients/{{{RECEIPT_NS}}}Recipient"))
        return Reply("receipt", about, outcome, f"→ {n} 个收件系统 recipient system(s)", envelope)
    if body.tag == f"{{{ERROR_NS}}}HubError":
        about = body.findtext(f"{{{ERROR_NS}}}OriginalMessageId") or envelope.ref_to or ""
        code = body.findtext(f"{{{ERROR_NS}}}Code") or ""
        title = body.findtext(f"{{{ERROR_NS}}}Title") or ""
        reason = body.findtext(f"{{{ERROR_NS}}}Reason") or ""
        return Reply("error", about, code, f"{title} — {reason}", envelope)
    return None


def open_hub_signed(settings: Settings, verifier: Any, registry: Any, data: bytes) -> Any:
    """Parse, validate and verify bytes the hub signed — a delivery (both signatures) or the hub's own answer,
    from a queue or from the HTTPS gateway: a ``hub.trust.delivery.OpenedDelivery``, or ``HubError``."""
    from hub.trust.delivery import verify_delivery

    root = parse(data, max_bytes=settings.max_message_bytes)
    registry.validate(root)
    return verify_delivery(root, verifier, is_hub=lambda signer: _by_the_hub(verifier, signer))


def _by_the_hub(verifier: Any, signer: Any) -> bool:
    """The hub is recognised by its own certificates (current and earlier, in the PKI directory the verifier
    loaded), not by the name "hub"; a verifier without a PKI directory falls back to the name."""
    paths = getattr(getattr(verifier, "store", None), "paths", None)
    if paths is None:
        return bool(signer.system == "hub")
    from hub.trust.lifecycle import hub_fingerprints

    return signer.fingerprint in hub_fingerprints(paths.root)


class Inbox:
    """Reads a system's queue, verifying every delivery (``hub.trust.delivery.verify_delivery``: the hub's
    signature, and the originating system's beside it; default deny: an unverifiable message is reported, never
    acted on)."""

    def __init__(self, settings: Settings, transport: Any, system: str, *, verifier: Any, registry: Any) -> None:
        self.settings = settings
        self.transport = transport
        self.system = system
        self.queue = transport.names.system_queue(system)
        #: Every queue of the system, the urgent lane first (one queue with classic queues).
        self.queues = transport.names.system_queues(system)
        self.verifier = verifier
        self.registry = registry

    def open(self, data: bytes) -> Envelope:
        """Parse, validate and verify a delivery (both signatures); the envelope of what the originator signed."""
        return self.open_delivery(data).envelope

    def open_delivery(self, data: bytes) -> Any:
        """``open`` with the signers and digest: a ``hub.trust.delivery.OpenedDelivery``."""
        return open_hub_signed(self.settings, self.verifier, self.registry, data)

    async def take(self, max_messages: int = 100) -> list[Any]:
        out: list[Any] = []
        for queue in self.queues:  # the urgent lane first (quorum queues)
            out += await self.transport.fetch(queue, max_messages=max_messages - len(out))
            if len(out) >= max_messages:
                break
        return out

    async def replies_for(self, message_ids: Iterable[str], *, timeout: float) -> dict[str, Reply]:
        """Wait for the hub's receipt or error for each id; other messages in the queue are left for later."""
        wanted = set(message_ids)
        found: dict[str, Reply] = {}
        held: list[Any] = []
        deadline = time.monotonic() + timeout
        settle: float | None = None  # once every id has an answer, look a little longer for a trailing error
        try:
            while time.monotonic() < deadline:
                if not wanted - set(found):
                    settle = settle or time.monotonic() + 0.3
                    if time.monotonic() > settle:
                        break
                batch = await self.take()
                if not batch:
                    await asyncio.sleep(0.05)
                    continue
                mine = []
                for m in batch:
                    ref = m.correlation_id or ""
                    kind = (m.headers or {}).get("x-hub-kind")
                    if kind in ("receipt", "error") and ref in wanted:
                        env = self.open(m.body)
                        reply = read_reply(env)
                        if reply is not None:
                            # An error about blocked recipients may follow a receipt: keep the error.
                            if ref not in found or reply.kind == "error":
                                found[ref] = reply
                        mine.append(m)
                    else:
                        held.append(m)
                if mine:
                    await self.transport.ack(mine)
        finally:
            if held:
                await self.transport.nack(held, requeue=True)
        return found


#: What XML 1.0 does not allow in text (control characters, lone surrogates, U+FFFE/U+FFFF).
_NOT_XML_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def refusal_text(text: str, limit: int = 1000) -> str:
    """A refusal's reason as the broker's headers, the gateway's JSON and a signed XML refusal can all carry it:
    characters XML does not allow (control characters; a lone surrogate, as ``surrogateescape`` leaves for a file
    name that is not UTF-8) become U+FFFD, surrounding space goes, at most ``limit`` characters. (One they cannot
    carry made each of them fail, and the delivery came back to be refused again, without end.)"""
    return _NOT_XML_TEXT.sub("\ufffd", text).strip()[:limit]


async def park_refused(transport: Any, system: str, refused: Sequence[tuple[Any, str, str]]) -> list[Any]:
    """Park deliveries ``system`` refused — (incoming, code, reason) — in the dead-letter queue with the reason, never
    ack them away: each is published to the dead-letter exchange (``ns.dead``) with headers ``x-refused-by`` (the
    system), ``x-refused-code`` and ``x-refused-reason``, as the system's own AMQP user (``user_id``), confirmed; the
    caller then acks the originals. Returns the messages whose publish failed: the caller nacks them without requeue,
    so that the queue dead-letters them anyway (without the reason). Used by ``hub receive``, the demo and the SDK."""
    if not refused:
        return []
    from hub.transport import Outgoing

    items = [
        Outgoing(
            exchange=transport.names.dead_letter_exchange,
            routing_key=m.routing_key or "",
            body=m.body,
            headers={"x-refused-by": system, "x-refused-code": code, "x-refused-reason": refusal_text(reason)},
            priority=0,
            message_id=m.message_id or "",
            user_id=transport.user,
            correlation_id=m.correlation_id,
        )
        for m, code, reason in refused
    ]
    try:
        await transport.publish_many(items)
    except HubError:
        return [m for m, _, _ in refused]
    return []


async def put_off(transport: Any, m: Any, delay: float, *, for_system: str | None = None) -> int:
    """Have delivery ``m`` handed out again after ``delay`` seconds, without holding it: a copy is published to
    ``ns.later`` with ``Names.later_key`` (the delay rounded up to the next of ``hub.transport.names.LATER_DELAYS_S``;
    confirmed, on a channel of its own where the transport has one: a refusal closes only that), then ``m`` is
    acknowledged. A hub worker delivers the copy again once the delay is over, to the system RabbitMQ names as its
    publisher: the copy's ``user_id`` (the system's own user), or — ``for_system``, the gateway publishing as the
    hub's user for an HTTPS system — ``x-hub-origin-user`` beside the hub's user_id. Returns the delay it waits.

    Raises ``ValueError`` when ``m`` did not come from a system's queue, and the transport's ``HubError`` when the
    broker did not take the copy (``ConfigError``: ``ns.later`` missing or not granted to this user;
    ``BrokerUnavailable`` otherwise) — ``m`` is then not acknowledged, and the caller settles it. A crash between
    the publish and the acknowledgement leaves two copies, as any redelivery does (receivers deduplicate by message
    id). Used by the adapter SDK (``Retry``) and the gateway (``POST /v1/inbox/{tag}/release?after=``)."""
    from hub.transport import Outgoing
    from hub.transport.names import ORIGIN_USER_HEADER, later_delay

    names = transport.names
    wait = later_delay(delay)
    key = names.later_key(m.queue, wait)
    if not m.message_id:
        raise ValueError("a delivery without a message id is not put off")
    # The hub's own headers only, as the worker keeps only those on the re-delivery: not the broker's death history,
    # not a CC or BCC (they would put copies into other delay queues).
    headers = {k: v for k, v in m.headers.items() if k.startswith("x-hub-") and k != ORIGIN_USER_HEADER}
    if for_system is not None:
        headers[ORIGIN_USER_HEADER] = names.user(for_system)
    copy = Outgoing(
        exchange=names.later_exchange,
        routing_key=key,
        body=m.body,
        headers=headers,
        priority=m.priority,
        message_id=m.message_id,
        user_id=transport.user,
        correlation_id=m.correlation_id,
    )
    publish = getattr(transport, "publish_aside", None) or transport.publish_many
    await publish([copy])
    await transport.ack([m])
    return wait
