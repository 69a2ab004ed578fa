"""What operators did: ``record_operator_action`` and ``operator_actions`` (issue 15).

Every action an operator takes — on the ops page or with a ``hub`` command — is recorded twice, in one transaction:
a row of ``operator_actions`` with the reason in full (the auditor reads it), and an ``operator_action`` record in
the evidence chain with the row's id, the action, the target and the SHA-256 of the reason (the chain carries no
free text, as for quarantine decisions). Call it inside the transaction of what the action changed, so that the
change and its record commit together; an action that was refused or failed is recorded with that outcome.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from hub import clock
from hub.store.db import acquired, transaction, translated
from hub.store.evidence import append
from hub.store.records import EvidenceEntry

__all__ = ["EVIDENCE_KIND", "Actor", "OperatorAction", "operator_actions", "record_operator_action", "role_of"]

EVIDENCE_KIND: Final[str] = "operator_action"

Via = Literal["web", "cli"]
Outcome = Literal["done", "refused", "failed"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, handed to a store function that records the action inside the transaction of its change (a
    quarantine decision, a revocation): the change and its record commit together or not at all."""

    operator: str
    role: str
    via: Via

    async def record(self, executor: Any, action: str, *, reason: str, **kw: Any) -> int:
        return await record_operator_action(
            executor, operator=self.operator, role=self.role, action=action, via=self.via, reason=reason, **kw
        )


async def role_of(executor: Any, name: str) -> str:
    """The role of operator ``name`` for a command-line action: the account's role when it is an active operator,
    else ``console`` (someone at the hub's console who has no ops-page account)."""
    async with translated("reading an operator's role"), acquired(executor) as conn:
        role = await conn.fetchval("SELECT role FROM operators WHERE name = $1 AND NOT disabled", name)
    return str(role) if role is not None else "console"


@dataclass(frozen=True)
class OperatorAction:
    id: int
    at: datetime
    operator: str
    role: str
    action: str
    via: str
    target: str | None
    message_id: str | None
    reason: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)


async def record_operator_action(
    executor: Any,
    *,
    operator: str,
    role: str,
    action: str,
    via: Via,
    reason: str,
    target: str | None = None,
    message_id: str | uuid.UUID | None = None,
    outcome: Outcome = "done",
    detail: dict[str, Any] | None = None,
) -> int:
    """Record one operator action (row + evidence) in ``executor``'s transaction (or a new one); returns its id.
    ``detail`` holds ids, codes and counts only (no payloads). Raises ``ValueError`` without an operator or a
    reason: every action has both."""
    if not operator.strip() or not reason.strip():
        raise ValueError("an operator action needs the operator and a reason")
    mid = None if message_id is None else uuid.UUID(str(message_id))
    extra = dict(detail or {})
    async with translated("recording an operator action"), transaction(executor) as conn:
        action_id: int = await conn.fetchval(
            "INSERT INTO operator_actions (at, operator, role, action, via, target, message_id, reason, outcome,"
            " detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb) RETURNING id",
            clock.now(),
            operator,
            role,
            action,
            via,
            target,
            mid,
            reason,
            outcome,
            json.dumps(extra, ensure_ascii=False, sort_keys=True),
        )
        evidence = {
            "action_id": action_id,
            "action": action,
            "role": role,
            "via": via,
            "outcome": outcome,
            "reason_sha256": hashlib.sha256(reason.encode("utf-8")).hexdigest(),
        }
        if target is not None:
            evidence["target"] = target
        await append(conn, [EvidenceEntry(EVIDENCE_KIND, operator, mid, evidence)])
    return action_id


async def operator_actions(
    executor: Any, *, operator: str | None = None, before_id: int | None = None, limit: int = 200
) -> list[OperatorAction]:
    """The newest actions first (``before_id`` pages on), of one operator or of all."""
    async with translated("reading operator actions"), acquired(executor) as conn:
        rows = await conn.fetch(
            "SELECT id, at, operator, role, action, via, target, message_id, reason, outcome, detail::text AS detail"
            " FROM operator_actions WHERE ($1::text IS NULL OR operator = $1) AND ($2::bigint IS NULL OR id < $2)"
            " ORDER BY id DESC LIMIT $3",
            operator,
            before_id,
            limit,
        )
    return [
        OperatorAction(
            r["id"],
            r["at"],
            r["operator"],
            r["role"],
            r["action"],
            r["via"],
            r["target"],
            None if r["message_id"] is None else str(r["message_id"]),
            r["reason"],
            r["outcome"],
            json.loads(r["detail"]),
        )
        for r in rows
    ]
