"""The pure part of the message path: bytes in, a decision out. No I/O here (the worker does RabbitMQ and
PostgreSQL around it), so every rule can be tested in milliseconds and the same code runs in every worker
process.

    examine(bytes, amqp_user)                      steps 1–5 of ARCHITECTURE.md
      1 parse safely        hub.envelope.parse
      2 validate            SchemaRegistry.validate (envelope + the declared service's XSD)
      3 verify              Verifier.verify → only the signed tree is used from here on; signer ↔ sender;
                            AMQP user (authenticated by the broker) ↔ sender
      - fresh               created not in the future beyond the skew, not expired
      5 authorize + gate    Router.decide (default deny) → classification gate per recipient
    → Accepted | Rejected

    render(plan, result)                           XML work of steps 7–8 that a plan asks for (hub.pipeline.decide):
                                                   the delivery (the signed content re-serialised, the hub's
                                                   signature and the sender's own after it: hub.trust.delivery),
                                                   the hub.receipt, a hub.error

Step 4 (deduplicate) and 6 (record) need the database: the worker records (I/O) between examine and the plan.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from lxml import etree

from hub.envelope import Envelope, Party, Recipient, build, parse, to_bytes
from hub.envelope.model import ERROR_NS as _ERROR_NS
from hub.envelope.model import ERROR_SERVICE, RECEIPT_SERVICE
from hub.errors import (
    CertificateUntrusted,
    ClassificationBlocked,
    HubError,
    MessageRejected,
    NoRoute,
    title_of,
)
from hub.pipeline.cpu_clock import install as install_cpu_clock
from hub.pipeline.cpu_clock import message_cpu_time
from hub.pipeline.plan import Delivery, Plan
from hub.pipeline.replies import canonical_receipt, countersigned_document, signed_document

if TYPE_CHECKING:
    from hub.directory import Directory
    from hub.routing import GateResult, Marking, Router, Target
    from hub.trust import Signer, SignerIdentity, Verifier
    from hub.validation import SchemaRegistry

__all__ = ["ERROR_SERVICE", "RECEIPT_SERVICE", "Accepted", "Delivery", "Processor", "Rejected", "Rendered"]

log = logging.getLogger("hub.pipeline")

CN_TZ = timezone(timedelta(hours=8))


@dataclass(slots=True)
class Accepted:
    """A message that passed steps 1–5. ``blocked`` recipients get nothing; the sender is told."""

    envelope: Envelope
    signed_root: etree._Element
    data: bytes
    #: SHA-256 of the bytes exactly as received (what hub.receipt attests).
    received_digest: str
    #: SHA-256 of the canonical signed content (what the sender's signature covers).
    digest: str
    signer_serial: int
    signer_fingerprint: str
    deliveries: list[Delivery]
    blocked: list[tuple[Delivery, HubError]]
    markings: list[Marking]
    received_at: datetime
    lane: str
    #: RabbitMQ priority of its deliveries, from the route's urgency rule (routes/*.xml).
    priority: int = 0
    #: The canonical signed content itself (exclusive C14N, the bytes ``digest`` covers): what is delivered.
    canonical: bytes = b""
    #: The sender's ds:Signature in exclusive-C14N form (``Verified.signature``): delivered beside the hub's.
    signature: bytes = b""

    @property
    def quarantined(self) -> bool:
        return bool(self.markings)


@dataclass(slots=True)
class Rejected:
    """A message refused in steps 1–5: ``reply_to`` is the system that gets the signed hub.error (the signed
    sender when the signature verified, else the broker-authenticated AMQP user's system, else nobody: the
    message is parked in the dead-letter queue)."""

    error: HubError
    data: bytes
    digest: str
    received_at: datetime
    envelope: Envelope | None = None
    reply_to: Party | None = None
    signer_serial: int | None = None
    #: True when the signature verified AND the signed sender is the one who published it: only then may the
    #: refusal occupy the message id (otherwise a replay by someone else could block the genuine message).
    sender_confirmed: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    #: The envelope as read before its signature was checked (the schema held, the signature did not): its claims
    #: are recorded with the refused intake for an operator to find it by — never acted on.
    claimed: Envelope | None = None

    @property
    def message_id(self) -> str | None:
        return self.envelope.message_id if self.envelope is not None else None


@dataclass(slots=True)
class Rendered:
    """The signed bytes a ``hub.pipeline.decide.Plan`` asks for: the hub-signed delivery (the same bytes for every
    recipient), the hub.receipt, and a hub.error (for the blocked recipients of an accepted message, or for a
    refused one)."""

    delivery: bytes = b""
    receipt_id: str = ""
    receipt: bytes = b""
    error_id: str = ""
    error: bytes = b""


class Processor:
    """Steps 1–5 and the XML work of 7–8, for one worker process. Build once; keys and schemas load once."""

    def __init__(
        self,
        *,
        registry: SchemaRegistry,
        verifier: Verifier,
        signer: Signer,  # the hub's own identity
        directory: Directory,
        router: Router,
        gate: Callable[..., GateResult],
        hub_ceiling: int,
        max_bytes: int,
        clock_skew: timedelta = timedelta(minutes=5),
        amqp_admin_user: str | None = None,
        user_to_system: Callable[[str], str | None] = lambda user: None,
        now: Callable[[], datetime] = lambda: datetime.now(CN_TZ),
        check_signer_binding: Callable | None = None,
        cost_budget_s: float | None = None,
        cpu_clock: Callable[[], float] = message_cpu_time,
    ) -> None:
        self.registry = registry
        self.verifier = verifier
        self.signer = signer
        self.directory = directory
        self.router = router
        self.gate = gate
        self.hub_ceiling = hub_ceiling
        self.max_bytes = max_bytes
        self.clock_skew = clock_skew
        self.amqp_admin_user = amqp_admin_user
        self.user_to_system = user_to_system
        self.now = now
        if check_signer_binding is None:
            from hub.trust import check_signer_binding as _csb

            check_signer_binding = _csb
        self.check_signer_binding = check_signer_binding
        #: CPU seconds one examination may take, checked between its steps (None: no budget). Each step is bounded
        #: by the intake's limits, so a message overruns the budget by at most one step.
        self.cost_budget_s = cost_budget_s
        #: The thread's CPU time without the collector's full passes (``hub.pipeline.cpu_clock``: what a full pass
        #: costs depends on the process's heap, not on the message that happened to trigger it).
        self.cpu_clock = cpu_clock
        if cost_budget_s is not None and cpu_clock is message_cpu_time:
            install_cpu_clock()
        ident = signer.identity
        self.hub_party = Party(ident.agency, ident.system)
        #: (service, version, urgency) → may a route grant it the emergency lane (``_may_be_entitled``).
        self._lane_grants: dict[tuple[str, int, str], bool] = {}

    # ------------------------------------------------------------------ steps 1–5

    def examine(self, data: bytes, *, amqp_user: str | None = None, lane: str = "normal") -> Accepted | Rejected:
        received_at = self.now()
        digest = hashlib.sha256(data).hexdigest()
        # Until the signature verifies, the only trustworthy identity is the broker-authenticated AMQP user.
        user_system = self.user_to_system(amqp_user) if amqp_user else None
        fallback = self._party_of_system(user_system)
        envelope: Envelope | None = None
        unverified: Envelope | None = None
        confirmed = False
        budget = self.cost_budget_s
        started = self.cpu_clock() if budget is not None else 0.0
        try:
            root = parse(data, max_bytes=self.max_bytes)
            if budget is not None:
                self._within_budget(started, budget, "parsing")
            unverified = self.registry.validate(root)
            if budget is not None:
                self._within_budget(started, budget, "validation")
            if lane == "emergency" and not self._may_be_entitled(unverified):
                # Before the signature check: what no route could entitle is refused without spending the emergency
                # lane's time on verification (a flood of ordinary traffic there costs less). The refusal goes to the
                # broker-authenticated publisher, acts on nothing and occupies no message id.
                raise self._lane_refusal(unverified)
            verified = self.verifier.verify(root)
            # From here on only the signed tree exists for the hub. The verifier returns the parsed tree itself
            # minus its Signature when (as the hub's intake guarantees: no comments, no PIs) it canonicalises to
            # exactly what was signed; the model read during validation is then the signed one.
            envelope = unverified if verified.root is root else Envelope.from_tree(verified.root)
            self.check_signer_binding(verified, envelope)
            # The publisher first: a system that publishes another's message is answered itself
            # (CERT_SIGNER_MISMATCH), whatever the other's registered certificates say.
            self._check_amqp_user(amqp_user, user_system, envelope)
            self.check_registered(verified.signer, envelope)
            confirmed = True
            if budget is not None:
                self._within_budget(started, budget, "signature verification")
            self._check_fresh(envelope, received_at)
            decision = self.router.decide(envelope)
            if lane == "emergency" and not self._entitled(envelope, decision):
                raise self._lane_refusal(envelope)
            targets = list(decision.targets)
            result = self.gate(
                envelope, verified.root, targets, self.hub_ceiling, signed_bytes=verified.canonical or None
            )
            if budget is not None:
                self._within_budget(started, budget, "routing and the classification gate")
        except HubError as exc:
            sender = envelope.sender if envelope is not None and exc.code not in ("CERT_SIGNER_MISMATCH",) else fallback
            return Rejected(
                exc,
                data,
                digest,
                received_at,
                envelope=envelope,
                reply_to=sender,
                # An over-budget refusal says nothing about the message: it must not occupy its id (a replay by an
                # operator, or a resend when the hub is less loaded, is then a first copy).
                # Nor must a refusal of its lane: the same message resent in the normal lane is then a first copy.
                sender_confirmed=confirmed and exc.code not in ("MSG_COST_EXCEEDED", "LANE_NOT_ENTITLED"),
                claimed=unverified if envelope is None else None,
            )
        except Exception as exc:  # a bug must not turn one message into a poison loop: refuse it, keep the bytes
            log.exception("internal error while examining a message (%s)", type(exc).__name__)
            err = HubError(f"the hub could not process the message ({type(exc).__name__})", code="INTERNAL")
            return Rejected(err, data, digest, received_at, envelope=envelope, reply_to=fallback)
        deliveries = [self._delivery(t) for t in result.allowed]
        blocked: list[tuple[Delivery, HubError]] = [(self._delivery(b.target), b.error) for b in result.blocked]
        if not deliveries and not result.markings:
            # Nothing may be delivered anywhere: the whole message is refused.
            first = blocked[0][1] if blocked else NoRoute("the message has no deliverable recipient")
            return Rejected(
                first,
                data,
                digest,
                received_at,
                envelope=envelope,
                reply_to=envelope.sender,
                signer_serial=verified.signer.serial,
                sender_confirmed=True,
            )
        return Accepted(
            envelope=envelope,
            signed_root=verified.root,
            data=data,
            received_digest=digest,
            digest=verified.digest,
            signer_serial=verified.signer.serial,
            signer_fingerprint=verified.signer.fingerprint,
            deliveries=deliveries,
            blocked=blocked,
            markings=list(result.markings),
            received_at=received_at,
            lane=lane,
            priority=getattr(decision, "priority", 0),
            canonical=verified.canonical,
            signature=verified.signature,
        )

    def forget_lane_grants(self) -> None:
        """Forget what the routes granted the emergency lane (``_may_be_entitled``): the router was replaced."""
        self._lane_grants = {}

    @staticmethod
    def _lane_refusal(envelope: Envelope) -> MessageRejected:
        return MessageRejected(
            f"{envelope.service} at urgency {envelope.urgency} is not entitled to the emergency lane (only "
            'emergency.* services, 特急 messages and urgencies a route grants lane="emergency" are); '
            "send it again in the normal lane",
            code="LANE_NOT_ENTITLED",
        )

    def _may_be_entitled(self, envelope: Envelope) -> bool:
        """Could any route entitle this (not yet verified) message to the emergency lane? ``lane_for``, or a route of
        its service granting its urgency ``lane="emergency"`` (cached per service, version and urgency)."""
        if envelope.urgency == "特急" or envelope.service.startswith("emergency."):
            return True
        key = (envelope.service, envelope.version, envelope.urgency)
        cache = self._lane_grants
        hit = cache.get(key)
        if hit is None:
            routes = getattr(self.router, "routes", None)
            found = routes.for_service(envelope.service, envelope.version) if routes is not None else ()
            hit = any(r.policy.grants_emergency_lane(envelope.urgency) for r in found)
            if len(cache) > 10_000:  # service names come from messages: keep the cache bounded
                cache.clear()
            cache[key] = hit
        return bool(hit)

    @staticmethod
    def _entitled(envelope: Envelope, decision: object) -> bool:
        """May this signed message ride the emergency lane? ``lane_for`` (emergency.* services, 特急), or its route's
        ``Urgency lane="emergency"`` (hub.routing.routes). Called for emergency-lane messages only."""
        if envelope.urgency == "特急" or envelope.service.startswith("emergency."):  # hub.transport.lane_for
            return True
        policy = getattr(decision, "policy", None)
        return policy is not None and bool(policy.grants_emergency_lane(envelope.urgency))

    def _within_budget(self, started: float, budget: float, step: str) -> None:
        spent = self.cpu_clock() - started
        if spent > budget:
            raise MessageRejected(
                f"examining the message took {spent * 1000:.0f} ms of CPU by the end of {step}, over the budget of "
                f"{budget * 1000:.0f} ms per message; it is parked for an operator",
                code="MSG_COST_EXCEEDED",
            )

    def _party_of_system(self, system_id: str | None) -> Party | None:
        if system_id is None:
            return None
        try:
            system = self.directory.system(system_id)
        except HubError:
            return None
        return Party(system.agency, system.id)

    def check_registered(self, signer: SignerIdentity, env: Envelope) -> None:
        """A system the directory registers certificates for (``cert-sha256``) signs with one of them only: another
        certificate of its, even valid and issued by the hub CA, is refused ``CERT_NOT_REGISTERED`` (none for the
        hub's own system: its loader refuses it there). Also before a quarantined message is
        released (``hub.pipeline.release``)."""
        if env.sender.system == self.directory.hub_system:
            return  # the hub's own certificates are its CA's (a directory stored before the loader refused that)
        try:
            system = self.directory.system(env.sender.system)
        except HubError:
            return  # not an agency system: the router refuses the sender
        if not system.registers(signer.fingerprint):
            raise CertificateUntrusted(
                f"the message is signed with certificate {signer.serial_hex} (sha256 {signer.fingerprint}), which is "
                f"not one the directory registers for system {system.id} (cert-sha256): the hub's operators add its "
                "fingerprint to the directory, or the system signs with a registered certificate",
                code="CERT_NOT_REGISTERED",
            )

    def _check_amqp_user(self, amqp_user: str | None, user_system: str | None, env: Envelope) -> None:
        """The broker authenticated the connection; if it was a system's own user it must be the signed sender."""
        if amqp_user is None or amqp_user == self.amqp_admin_user:
            return
        if user_system != env.sender.system:
            raise CertificateUntrusted(
                f"the message was published by RabbitMQ user {amqp_user!r} but is signed as sent by "
                f"{env.sender.system!r}",
                code="CERT_SIGNER_MISMATCH",
            )

    def _check_fresh(self, env: Envelope, now: datetime) -> None:
        if env.expires <= now:
            raise MessageRejected(f"the message expired at {env.expires.isoformat()}", code="MSG_EXPIRED")
        if env.created > now + self.clock_skew:
            raise MessageRejected(
                f"the message is dated {env.created.isoformat()}, more than "
                f"{int(self.clock_skew.total_seconds())} s ahead of the hub's clock",
                code="MSG_FUTURE",
            )
        if env.expires <= env.created:
            raise MessageRejected("the message expires before it was created", code="MSG_EXPIRED")

    @staticmethod
    def _delivery(target: Target) -> Delivery:
        return Delivery(target.system, target.agency, target.role, target.zone, target.ceiling)

    # ------------------------------------------------------------------ steps 7–8 (XML work)

    def render(self, plan: Plan, result: Accepted | Rejected) -> Rendered:
        """The signed bytes ``plan`` asks for (``hub.pipeline.decide.plan_of``): the delivery — the signed content
        re-serialised and re-signed — the sender's receipt, a hub.error. A quarantined message gets no delivery
        bytes (they are made when an operator releases it): its plan delivers to nobody."""
        out = Rendered()
        if isinstance(result, Accepted):
            env = result.envelope
            if plan.deliver:
                out.delivery = self.sign_delivery(result.canonical, result.signature)
            if plan.receipt is not None:
                out.receipt_id, out.receipt = self.receipt_for(
                    env, result.received_digest, result.received_at, plan.deliver, plan.receipt
                )
            if plan.blocked_error and result.blocked:
                first = result.blocked[0][1]
                names = ", ".join(d.system for d, _ in result.blocked)
                err = ClassificationBlocked(f"not delivered to {names}: {first.detail}", code=first.code)
                out.error_id, out.error = self.error(err, env, env.sender, result.received_digest)
        elif plan.error and result.reply_to is not None:
            out.error_id, out.error = self.error(result.error, result.envelope, result.reply_to, result.digest)
        return out

    def sign_delivery(self, canonical: bytes, origin: bytes) -> bytes:
        """The delivery (format: ``hub.trust.delivery``): the signed content re-serialised — its exclusive-C14N
        bytes, exactly what the sender's signature covers, as the verifier produced them (``Verified.canonical``) —
        followed by the hub's signature and the sender's own (``origin``: ``Verified.signature``) as the last two
        children of the root. The hub's covers the content with the sender's signature in it. No tree is copied or
        serialised: one SHA-256, one ECDSA signature and a byte join."""
        if not origin:
            raise ValueError("a delivery carries the originator's signature (Verified.signature)")
        return countersigned_document(canonical, origin, self.signer.signature_for_canonical)

    def receipt_for(
        self,
        env: Envelope,
        received_digest: str,
        received_at: datetime,
        deliveries: Sequence[Delivery],
        outcome: str,
        first_received_at: datetime | None = None,
    ) -> tuple[str, bytes]:
        """The receipt, written directly in canonical form, signed with a pre-cut signature (pipeline.replies)."""
        now = self.now()
        message_id = str(uuid.uuid4())
        canonical = canonical_receipt(
            message_id=message_id,
            conversation_id=env.conversation_id,
            ref_to=env.message_id,
            request_hash=received_digest,
            sender=self.hub_party,
            to=env.sender,
            created=now,
            expires=now + timedelta(days=30),
            urgency=env.urgency,
            outcome=outcome,
            received_at=received_at,
            recipients=[(d.agency, d.system, d.role) for d in deliveries],
            first_received_at=first_received_at,
        )
        return message_id, signed_document(canonical, self.signer.signature_for_canonical(canonical))

    def error(self, err: HubError, env: Envelope | None, to: Party, digest: str) -> tuple[str, bytes]:
        """The hub-signed hub.error: stable code, Chinese title, English reason; never payload content."""
        S = etree.SubElement
        q = f"{{{_ERROR_NS}}}"
        body = etree.Element(q + "HubError", nsmap={None: _ERROR_NS})
        if env is not None:
            S(body, q + "OriginalMessageId").text = env.message_id
        S(body, q + "ReceivedDigest").text = digest
        S(body, q + "Code").text = err.code
        S(body, q + "Title").text = title_of(err.code)[:200]
        S(body, q + "Reason").text = _clean(err.detail)[:1000] or err.code
        if err.line:
            S(body, q + "Line").text = str(min(max(err.line, 1), 10_000_000))
        if err.path:
            S(body, q + "Path").text = _clean(err.path)[:500]
        S(body, q + "At").text = self.now().isoformat(timespec="seconds")
        return self._sign_reply(ERROR_SERVICE, body, to, env, digest)

    def _sign_reply(
        self, service: str, body: etree._Element, to: Party, about: Envelope | None, digest: str
    ) -> tuple[str, bytes]:
        now = self.now()
        message_id = str(uuid.uuid4())
        root = build(
            service=service,
            version=1,
            sender=self.hub_party,
            recipients=[Recipient.to(to.agency, to.system)],
            body=body,
            classification="公开",
            urgency=about.urgency if about is not None else "平件",
            created=now,
            expires=now + timedelta(days=30),
            message_id=message_id,
            conversation_id=about.conversation_id if about is not None else message_id,
            ref_to=about.message_id if about is not None else None,
            request_hash=digest,
        )
        self.signer.sign(root)
        return message_id, to_bytes(root)


def _clean(text: str) -> str:
    """Text safe for an XML element: no control characters that XML 1.0 forbids."""
    return "".join(ch for ch in text if ch >= " " or ch in "\t\n").strip()
