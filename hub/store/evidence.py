"""The evidence log: hash-chained, append-only, periodically signed.

Every record ``r`` has a gapless ``seq`` and::

    r.hash = SHA-256( "forestry-hub/evidence/1\\n" ‖ JSON[seq, at, kind, message_id, actor, detail, prev_hash] )

where ``at`` is UTC with microseconds (``2025-01-02T03:04:05.123456Z``), ``message_id`` the lowercase UUID or
null, ``detail`` the canonical JSON text of the detail object (sorted keys, no whitespace, UTF-8) exactly as stored,
``prev_hash`` the hex hash of record ``seq - 1`` (64 zeros for the first) and the outer JSON array is written
the same canonical way. A JSON array of strings and integers has exactly one encoding, so the hash is
unambiguous. Changing, removing, inserting or reordering any record breaks the hash of that record or the link of
the next one; rewriting the tail *and* recomputing every later hash is caught by the signed checkpoints.

Two steps, so that no transaction on the message path ever holds the chain's lock. ``append`` *stages* records in
``evidence_pending`` inside the caller's transaction (a plain insert: atomic with the messages it describes, no
lock). ``chain_pending`` moves staged records into the chain in large batches under the single-row
``evidence_head`` lock (``SELECT … FOR UPDATE``), so seq is gapless and the chain linear across processes; the
workers run it every ``CHAIN_EVERY_S``, and checkpoints and ``verify_chain`` run it first. The staged event time is
kept in the detail as ``"t"``; the chained ``at`` is the time of chaining (it never goes backwards). A record is
therefore tamper-evident from the moment it is chained — a fraction of a second after it is written — and
signed with the next checkpoint. (Measured on the e2e bench: appending under the lock in every batch transaction
made the batches of all workers queue behind one another, hundreds of milliseconds at 300 msg/s.)

A checkpoint is itself a record (kind ``checkpoint``) that signs ``checkpoint_payload(seq, hash)`` of the record
before it; the trust layer supplies ``sign`` and ``verify_signature`` (this module never imports hub.trust).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from hub import clock
from hub.errors import CheckpointRefused
from hub.store.db import acquired, translated
from hub.store.records import DELIVERY_RANK, EvidenceEntry, Problem

__all__ = [
    "GENESIS",
    "ChainRow",
    "ChainVerifier",
    "CheckpointRefused",
    "Sign",
    "VerifySignature",
    "append",
    "canonical_detail",
    "chain",
    "chain_pending",
    "checkpoint",
    "checkpoint_payload",
    "entry_hash",
    "format_at",
    "head",
    "verify_chain",
    "verify_messages",
    "verify_rows",
]

GENESIS: Final[bytes] = bytes(32)
_DOMAIN: Final[bytes] = b"forestry-hub/evidence/1\n"
_CHECKPOINT_DOMAIN: Final[bytes] = b"forestry-hub/evidence-checkpoint/1\n"

#: ``sign(payload) -> signature`` with the hub's key.
Sign = Callable[[bytes], bytes]
#: ``verify_signature(payload, signature, signer_fingerprint) -> bool``: True only if the signature is valid and
#: the fingerprint names a certificate the hub trusts for checkpoints (raising counts as invalid). A verifier with
#: an attribute ``takes_time = True`` is called with a fourth argument, the checkpoint's time (``at``), and may raise
#: ``CheckpointRefused`` to say why it refuses (e.g. the certificate is unknown, or was not valid then).
VerifySignature = Callable[..., bool]


# -- the pure part ---------------------------------------------------------------------------------------------------


def format_at(at: datetime) -> str:
    """The canonical text of a timestamp: UTC, microseconds, ``Z``. Naive datetimes are refused."""
    if at.tzinfo is None:
        raise ValueError("evidence timestamps must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Encoders made once: json.dumps with non-default options makes a new JSONEncoder on every call.
_encode_detail = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_encode_fields = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def canonical_detail(detail: Mapping[str, Any]) -> str:
    """The canonical JSON text of a detail object (what is stored and hashed)."""
    return _encode_detail(detail)


def _norm_id(message_id: str | uuid.UUID | None) -> str | None:
    if message_id is None:
        return None
    return str(message_id if isinstance(message_id, uuid.UUID) else uuid.UUID(message_id))


def _hash(seq: int, at_text: str, kind: str, message_id: str | None, actor: str, detail: str, prev: bytes) -> bytes:
    encoded = _encode_fields([seq, at_text, kind, message_id, actor, detail, prev.hex()])
    return hashlib.sha256(_DOMAIN + encoded.encode("utf-8")).digest()


def entry_hash(
    seq: int, at: datetime, kind: str, message_id: str | None, actor: str, detail: str, prev_hash: bytes
) -> bytes:
    """The hash of one record (see the module docstring for the encoding)."""
    return _hash(seq, format_at(at), kind, _norm_id(message_id), actor, detail, prev_hash)


def checkpoint_payload(seq: int, head_hash: bytes) -> bytes:
    """The bytes a checkpoint signs: the seq and hash of the record it seals."""
    return _CHECKPOINT_DOMAIN + f"{seq}\n{head_hash.hex()}\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One stored record."""

    seq: int
    at: datetime
    kind: str
    message_id: str | None
    actor: str
    detail: str
    prev_hash: bytes
    hash: bytes

    def computed_hash(self, seq: int | None = None) -> bytes:
        return entry_hash(
            self.seq if seq is None else seq,
            self.at,
            self.kind,
            self.message_id,
            self.actor,
            self.detail,
            self.prev_hash,
        )


def chain(
    entries: Iterable[EvidenceEntry],
    *,
    head_seq: int,
    head_hash: bytes,
    at: datetime,
    details: Sequence[str] | None = None,
) -> list[ChainRow]:
    """The records that append ``entries`` after the head ``(head_seq, head_hash)``, all stamped ``at``.
    ``details`` are the entries' canonical detail texts when already encoded (staged records)."""
    rows: list[ChainRow] = []
    seq, prev = head_seq, head_hash
    at_text = format_at(at)
    for i, e in enumerate(entries):
        seq += 1
        detail = details[i] if details is not None else _encode_detail(e.detail)
        mid = _norm_id(e.message_id)
        digest = _hash(seq, at_text, e.kind, mid, e.actor, detail, prev)
        rows.append(ChainRow(seq, at, e.kind, mid, e.actor, detail, prev, digest))
        prev = digest
    return rows


#: Hashes remembered to explain *where* a moved record came from (detection never depends on it).
_ORIGIN_WINDOW: Final[int] = 1_000_000


class ChainVerifier:
    """Checks a chain fed record by record in seq order; memory does not grow with the chain beyond a bounded
    window of hashes (used only to say where a moved record came from) and the problems found.

    Finds: a record whose content does not match its hash (``altered``), or that hashes correctly only at another
    position (``reordered``); a gap in seq (``removed``); a self-consistent record that is not the one its successor
    was chained to (``altered``: rewritten with a recomputed hash, or inserted); a head that does not match the
    last record (``removed`` at the end, or ``head``); a checkpoint that does not seal its predecessor or whose
    signature does not verify (``checkpoint``)."""

    def __init__(self, verify_signature: VerifySignature | None = None) -> None:
        self._verify_signature = verify_signature
        self._problems: list[Problem] = []
        self._expected_prev = GENESIS
        self._prev_seq = 0
        self._prev_suspect = False
        self._origin: dict[bytes, int] = {}  # stored hash → seq the record was written at
        self._suspects: list[ChainRow] = []
        self._last: ChainRow | None = None
        #: Records fed so far.
        self.count = 0

    def feed(self, row: ChainRow) -> None:
        self.count += 1
        problems = self._problems
        gap = row.seq != self._prev_seq + 1
        if gap:
            first, last = self._prev_seq + 1, row.seq - 1
            text = f"record {first} is missing" if first == last else f"records {first}–{last} are missing"
            problems.append(Problem("removed", first, text))
        if row.computed_hash() == row.hash:
            self._remember(row.hash, row.seq)
            if row.prev_hash != self._expected_prev and not gap and not self._prev_suspect:
                came_from = self._origin.get(row.prev_hash)
                if came_from is not None:
                    problems.append(
                        Problem("reordered", row.seq, f"record {row.seq} follows record {came_from}, not {row.seq - 1}")
                    )
                else:
                    problems.append(
                        Problem(
                            "altered",
                            row.seq - 1,
                            f"record {row.seq - 1} is not the record that record {row.seq} was chained to "
                            "(rewritten with a recomputed hash, or inserted)",
                        )
                    )
            self._prev_suspect = False
        else:
            self._suspects.append(row)
            self._prev_suspect = True
        if row.kind == "checkpoint":
            problems.extend(_check_checkpoint(row, self._verify_signature))
        self._expected_prev = row.hash
        self._prev_seq = row.seq
        self._last = row

    def _remember(self, digest: bytes, seq: int) -> None:
        self._origin[digest] = seq
        if len(self._origin) > _ORIGIN_WINDOW:
            self._origin.pop(next(iter(self._origin)))

    def finish(self, head: tuple[int, bytes] | None = None) -> list[Problem]:
        """The problems found, in seq order (``head``: the stored chain head, to catch removals at the end)."""
        problems = list(self._problems)
        # A suspect that hashes correctly right after the record its prev_hash names was moved; anything else was
        # altered. Resolving one can explain another (two swapped records), hence the loop.
        unresolved = self._suspects
        while unresolved:
            still: list[ChainRow] = []
            for row in unresolved:
                came_after = self._origin.get(row.prev_hash)
                if came_after is not None and row.computed_hash(came_after + 1) == row.hash:
                    self._remember(row.hash, came_after + 1)
                    problems.append(
                        Problem("reordered", row.seq, f"record {row.seq} was written as record {came_after + 1}")
                    )
                else:
                    still.append(row)
            if len(still) == len(unresolved):
                break
            unresolved = still
        for row in unresolved:
            problems.append(Problem("altered", row.seq, f"record {row.seq} does not match its hash"))
        if head is not None:
            head_seq, head_hash = head
            last_seq = self._last.seq if self._last is not None else 0
            last_hash = self._last.hash if self._last is not None else GENESIS
            if head_seq > last_seq:
                text = (
                    f"record {head_seq} is missing"
                    if head_seq == last_seq + 1
                    else (f"records {last_seq + 1}–{head_seq} are missing")
                )
                problems.append(Problem("removed", last_seq + 1, text))
            elif head_seq != last_seq or head_hash != last_hash:
                problems.append(Problem("head", None, f"the chain head ({head_seq}) does not match the last record"))
        problems.sort(key=lambda p: (p.seq if p.seq is not None else 1 << 62, p.kind))
        return problems


def verify_rows(
    rows: Iterable[ChainRow],
    *,
    head: tuple[int, bytes] | None = None,
    verify_signature: VerifySignature | None = None,
) -> list[Problem]:
    """Check a chain given in seq order (see ``ChainVerifier``); an empty list means intact."""
    verifier = ChainVerifier(verify_signature)
    for row in rows:
        verifier.feed(row)
    return verifier.finish(head)


def _check_checkpoint(row: ChainRow, verify_signature: VerifySignature | None) -> list[Problem]:
    try:
        detail = json.loads(row.detail)
        covers = int(detail["covers"])
        sealed = bytes.fromhex(detail["head"])
        signature = base64.b64decode(detail["signature"], validate=True)
        signer = str(detail["signer"])
    except (ValueError, KeyError, TypeError):
        return [Problem("checkpoint", row.seq, f"checkpoint {row.seq} is malformed")]
    if covers != row.seq - 1 or sealed != row.prev_hash:
        return [Problem("checkpoint", row.seq, f"checkpoint {row.seq} does not seal the record before it")]
    if verify_signature is None:
        return []
    payload = checkpoint_payload(covers, sealed)
    try:
        if getattr(verify_signature, "takes_time", False):
            valid = bool(verify_signature(payload, signature, signer, row.at))
        else:
            valid = bool(verify_signature(payload, signature, signer))
    except CheckpointRefused as exc:
        return [Problem("checkpoint", row.seq, f"checkpoint {row.seq}: {exc}")]
    except Exception:  # the verifier's own errors mean "not valid"
        valid = False
    if not valid:
        return [
            Problem(
                "checkpoint",
                row.seq,
                f"the signature of checkpoint {row.seq} does not verify with its certificate {signer[:16]}… "
                "(签名错误 the signature is wrong: the checkpoint or the record it seals was changed)",
            )
        ]
    return []


# -- the database part -----------------------------------------------------------------------------------------------

_INSERT = """
INSERT INTO evidence (seq, at, kind, message_id, actor, detail, prev_hash, hash)
SELECT r.seq, r.at, r.kind, r.message_id, r.actor, r.detail, r.prev_hash, r.hash
FROM unnest($1::hub_chain_row[]) AS r
"""


_STAGE = """
INSERT INTO evidence_pending (at, kind, message_id, actor, detail)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], $5::text[])
"""

#: How often the workers chain staged records.
CHAIN_EVERY_S: Final[float] = 0.25


async def append(conn: Any, entries: Sequence[EvidenceEntry]) -> None:
    """Stage ``entries`` inside the caller's transaction (atomic with what they describe; no lock taken). They are
    chained by ``chain_pending``."""
    if not entries:
        return
    now = clock.now()
    t = format_at(now)
    await conn.execute(
        _STAGE,
        [now] * len(entries),
        [e.kind for e in entries],
        [_norm_id(e.message_id) for e in entries],
        [e.actor for e in entries],
        [_encode_detail({**e.detail, "t": t}) for e in entries],
    )


async def _append_chained(
    conn: Any, entries: Sequence[EvidenceEntry], *, details: Sequence[str] | None = None, head_row: Any = None
) -> list[ChainRow]:
    """Append to the chain itself; the caller holds the head lock (``head_row`` from ``SELECT … FOR UPDATE``) or
    this takes it. ``details``, when given, are the already-canonical detail texts of ``entries``."""
    if not entries:
        return []
    if head_row is None:
        head_row = await conn.fetchrow("SELECT seq, hash FROM evidence_head WHERE id FOR UPDATE")
    # Stamp after taking the lock, so ``at`` never goes backwards along the chain (same clock).
    rows = chain(entries, head_seq=head_row["seq"], head_hash=bytes(head_row["hash"]), at=clock.now(), details=details)
    await conn.execute(  # one array of hub_chain_row (migration 012)
        _INSERT, [(r.seq, r.at, r.kind, r.message_id, r.actor, r.detail, r.prev_hash, r.hash) for r in rows]
    )
    await conn.execute("UPDATE evidence_head SET seq = $1, hash = $2 WHERE id", rows[-1].seq, rows[-1].hash)
    return rows


#: The next ``$1`` staged records, taken off the staging table. Written without a join, so that no plan can make it
#: quadratic: the pipeline workers plan it once (``plan_cache_mode = force_generic_plan``), while this queue table
#: is near empty at every ANALYZE, and the form ``WHERE id IN (SELECT … LIMIT $1)`` was then planned as a nested
#: loop that ran the LIMIT subquery again for every row it deleted (2 s for 500 records on a table that had been
#: analyzed empty; 30 ms calls in bench/gateway.py). Here the subquery runs once and the delete is one range.
_CLAIM = """
DELETE FROM evidence_pending
WHERE id <= (SELECT max(id) FROM (SELECT id FROM evidence_pending ORDER BY id LIMIT $1) AS first)
RETURNING id, kind, message_id, actor, detail
"""


async def _chain_pending_locked(conn: Any, head_row: Any, limit: int) -> tuple[int, Any]:
    staged = await conn.fetch(_CLAIM, limit)
    if not staged:
        return 0, head_row
    staged = sorted(staged, key=lambda r: r["id"])
    # The message ids stay UUID objects: chain() writes their text without parsing it again (half its cost).
    entries = [EvidenceEntry(r["kind"], r["actor"], r["message_id"], {}) for r in staged]
    rows = await _append_chained(conn, entries, details=[r["detail"] for r in staged], head_row=head_row)
    return len(rows), {"seq": rows[-1].seq, "hash": rows[-1].hash}


async def chain_pending(executor: Any, *, limit: int = 20_000, wait: bool = False) -> int:
    """Move staged records into the chain (in staging order), ``limit`` at most per transaction, until none are
    left; returns how many were chained. When another process is chaining, returns 0 at once (``wait=False``) or
    waits for it and then chains what is left (``wait=True``)."""
    total = 0
    async with translated("chaining evidence"), acquired(executor) as conn:
        while True:
            async with conn.transaction():
                lock = "FOR UPDATE" if wait else "FOR UPDATE SKIP LOCKED"
                head_row = await conn.fetchrow(f"SELECT seq, hash FROM evidence_head WHERE id {lock}")  # noqa: S608
                if head_row is None:
                    return total
                n, _ = await _chain_pending_locked(conn, head_row, limit)
            total += n
            if n < limit:
                return total


async def head(executor: Any) -> tuple[int, bytes]:
    """The ``(seq, hash)`` of the chain once everything staged is chained (0 and 32 zero bytes when empty)."""
    await chain_pending(executor, wait=True)
    async with translated("reading the evidence head"), acquired(executor) as conn:
        row = await conn.fetchrow("SELECT seq, hash FROM evidence_head WHERE id")
    return int(row["seq"]), bytes(row["hash"])


async def checkpoint(executor: Any, sign: Sign, signer_fingerprint: str) -> int | None:
    """Seal the chain: chain what is staged, then append a ``checkpoint`` record signing the current head. Returns
    its seq; when the chain is empty or already ends with a checkpoint, appends nothing and returns the existing
    head's seq (or None)."""
    async with translated("writing an evidence checkpoint"), acquired(executor) as conn, conn.transaction():
        head_row = await conn.fetchrow("SELECT seq, hash FROM evidence_head WHERE id FOR UPDATE")
        while True:
            n, head_row = await _chain_pending_locked(conn, head_row, 20_000)
            if n < 20_000:
                break
        seq, sealed = int(head_row["seq"]), bytes(head_row["hash"])
        if seq == 0:
            return None
        last_kind = await conn.fetchval("SELECT kind FROM evidence WHERE seq = $1", seq)
        if last_kind == "checkpoint":
            return seq
        signature = sign(checkpoint_payload(seq, sealed))
        detail = {
            "covers": seq,
            "head": sealed.hex(),
            "signer": signer_fingerprint,
            "signature": base64.b64encode(signature).decode("ascii"),
        }
        rows = await _append_chained(conn, [EvidenceEntry("checkpoint", "hub", None, detail)], head_row=head_row)
        return rows[0].seq


async def verify_chain(
    executor: Any, verify_signature: VerifySignature | None = None, *, fetch_size: int = 5000
) -> list[Problem]:
    """Chain what is staged (waiting for a running chainer), then stream the whole chain in one consistent snapshot
    through ``ChainVerifier``. An empty list means the log is intact. Without ``verify_signature``, checkpoints are
    checked for what they seal but not for who signed them."""
    verifier = ChainVerifier(verify_signature)
    await chain_pending(executor, wait=True)
    async with translated("verifying the evidence chain"), acquired(executor) as conn:
        # A snapshot of its own, unless the caller already holds a transaction (then a savepoint inside it).
        tx = (
            conn.transaction()
            if conn.is_in_transaction()
            else conn.transaction(isolation="repeatable_read", readonly=True)
        )
        async with tx:
            head_row = await conn.fetchrow("SELECT seq, hash FROM evidence_head WHERE id")
            cursor = conn.cursor(
                "SELECT seq, at, kind, message_id, actor, detail, prev_hash, hash FROM evidence ORDER BY seq",
                prefetch=fetch_size,
            )
            async for r in cursor:
                verifier.feed(
                    ChainRow(
                        r["seq"],
                        r["at"],
                        r["kind"],
                        None if r["message_id"] is None else str(r["message_id"]),
                        r["actor"],
                        r["detail"],
                        bytes(r["prev_hash"]),
                        bytes(r["hash"]),
                    )
                )
    return verifier.finish((int(head_row["seq"]), bytes(head_row["hash"])))


# -- what the records describe -----------------------------------------------------------------------------------------

#: Rows each verification query hands over at a time: what ``verify_messages`` holds in memory (a row is 1.5 to
#: 2.5 KB of Python objects; 100 rows and the socket's buffers peak near 0.5 MB, measured with tracemalloc, and a
#: larger batch saves no time on a local server) and how often it gives the event loop back (the ops page runs it
#: in the web process).
_VERIFY_FETCH: Final[int] = 100

#: Rows of ``_DELIVERIES_AS_RECORDED`` at a time: a row holds a message's whole delivery history (a group fan-out to
#: 200 systems with a few reports each is 100 KB or more), so fewer at once.
_VERIFY_HISTORIES: Final[int] = 10

#: Every evidence record of a message's receipt (chained or still staged) with the message as it is stored now, its
#: quarantine entry and the first quarantine decision recorded for it (``released`` / ``quarantine_rejected``,
#: written by ``hub.store.messages._decide`` in the transaction that changes the state; there is never more than one).
#: LEFT joins: a record whose message row is gone comes back with ``present`` false. A staged record has no seq and
#: its ``staged`` id instead; chaining moves a record in one transaction, so one snapshot sees each record once.
_MESSAGES_AS_RECORDED = """
WITH receipt AS (
    SELECT e.seq, NULL::bigint AS staged, e.message_id, e.kind, e.actor, e.detail FROM evidence e
    WHERE e.kind IN ('received', 'quarantined', 'rejected') AND e.message_id IS NOT NULL
    UNION ALL
    SELECT NULL, p.id, p.message_id, p.kind, p.actor, p.detail FROM evidence_pending p
    WHERE p.kind IN ('received', 'quarantined', 'rejected') AND p.message_id IS NOT NULL
), decision AS (
    SELECT DISTINCT ON (d.message_id) d.message_id, d.kind, d.seq, d.actor, d.detail
    FROM (SELECT e.seq, NULL::bigint AS staged, e.message_id, e.kind, e.actor, e.detail FROM evidence e
          WHERE e.kind IN ('released', 'quarantine_rejected') AND e.message_id IS NOT NULL
          UNION ALL
          SELECT NULL, p.id, p.message_id, p.kind, p.actor, p.detail FROM evidence_pending p
          WHERE p.kind IN ('released', 'quarantine_rejected') AND p.message_id IS NOT NULL) AS d
    ORDER BY d.message_id, d.seq NULLS LAST, d.staged
)
SELECT r.seq, r.message_id, r.kind, r.actor, r.detail, m.message_id IS NOT NULL AS present, m.state,
       m.sender_agency || '/' || m.sender_system AS sender, m.service || '/' || m.version AS service,
       m.classification, m.urgency, encode(m.raw_sha256, 'hex') AS raw_sha256, encode(sha256(m.raw), 'hex') AS actual,
       q.status AS held, q.reviewer, encode(sha256(convert_to(q.reason, 'UTF8')), 'hex') AS reason_sha256,
       dc.kind AS decision, dc.seq AS decision_seq, dc.actor AS decided_by, dc.detail AS decision_detail
FROM receipt r
LEFT JOIN messages m ON m.message_id = r.message_id
LEFT JOIN quarantine q ON q.message_id = r.message_id
LEFT JOIN decision dc ON dc.message_id = r.message_id
ORDER BY r.seq NULLS LAST, r.staged
"""


#: Every message is recorded with the evidence of its receipt in the same statement (``record_batch``: kind
#: ``received``, ``quarantined`` or ``rejected`` by its state), staged in ``evidence_pending`` until the chainer moves
#: it into the chain (one transaction). A message with neither was cut off with the end of the log — checkpoints
#: included, the head moved back — or its record was removed. One anti-join, one snapshot.
_MESSAGES_WITHOUT_EVIDENCE = """
SELECT m.message_id, m.received_at FROM messages m
WHERE NOT EXISTS (SELECT 1 FROM evidence e WHERE e.message_id = m.message_id
                  AND e.kind IN ('received', 'quarantined', 'rejected'))
  AND NOT EXISTS (SELECT 1 FROM evidence_pending p WHERE p.message_id = m.message_id
                  AND p.kind IN ('received', 'quarantined', 'rejected'))
ORDER BY m.received_at, m.message_id
"""

#: Every ``operator_action`` record (chained or staged) next to the ``operator_actions`` row it names, and every row
#: next to its record: ``hub.store.audit.record_operator_action`` writes both in one transaction, the record carrying
#: the row's id (``action_id``, its bigserial key) — one record per row, so the pairing is exact. The id is read from
#: the canonical detail text with a pattern rather than a jsonb cast, so that a malformed detail (``verify_chain``
#: reports its hash) cannot abort the query: an unescaped ``"action_id":`` occurs in canonical JSON only as a key.
_ACTIONS_AS_RECORDED = """
WITH recorded AS (
    SELECT e.seq, NULL::bigint AS staged, e.message_id, e.actor, e.detail,
           substring(e.detail FROM '"action_id":([0-9]{1,18})[,}]')::bigint AS action_id
    FROM evidence e WHERE e.kind = 'operator_action'
    UNION ALL
    SELECT NULL, p.id, p.message_id, p.actor, p.detail,
           substring(p.detail FROM '"action_id":([0-9]{1,18})[,}]')::bigint
    FROM evidence_pending p WHERE p.kind = 'operator_action'
)
SELECT r.seq, r.staged, r.action_id AS recorded_id, r.message_id AS recorded_message_id, r.actor, r.detail,
       a.id, a.at, a.operator, a.role, a.action, a.via, a.target, a.message_id, a.outcome,
       encode(sha256(convert_to(a.reason, 'UTF8')), 'hex') AS reason_sha256
FROM recorded r FULL JOIN operator_actions a ON a.id = r.action_id
WHERE r.action_id IS NOT NULL OR (r.seq IS NULL AND r.staged IS NULL)  -- a record naming no row: nothing to compare
ORDER BY r.seq NULLS LAST, r.staged NULLS LAST, a.id
"""


#: Every message with a record of its receipt, its delivery history as the evidence tells it (every record that
#: creates a delivery or moves one, chained or staged, in chain order: staged after chained, in staging order) and its
#: delivery rows as stored. A message whose row is gone, or that has no record of its receipt, is reported by the
#: queries above (its deliveries go with its row). Each change of a delivery row stages its record in the same
#: transaction while it holds that row, so the order of the records is the order of the changes.
_DELIVERIES_AS_RECORDED = """
WITH rec AS (
    SELECT e.message_id, e.seq, NULL::bigint AS staged, e.kind, e.detail FROM evidence e
    WHERE e.kind IN ('received', 'quarantined', 'rejected', 'blocked', 'delivered', 'delivery_state',
                     'quarantine_rejected') AND e.message_id IS NOT NULL
    UNION ALL
    SELECT p.message_id, NULL, p.id, p.kind, p.detail FROM evidence_pending p
    WHERE p.kind IN ('received', 'quarantined', 'rejected', 'blocked', 'delivered', 'delivery_state',
                     'quarantine_rejected') AND p.message_id IS NOT NULL
), history AS (
    SELECT message_id, array_agg(seq ORDER BY seq NULLS LAST, staged) AS seqs,
           array_agg(kind ORDER BY seq NULLS LAST, staged) AS kinds,
           array_agg(detail ORDER BY seq NULLS LAST, staged) AS details
    FROM rec GROUP BY message_id
), stored AS (
    SELECT message_id, array_agg(recipient_system ORDER BY recipient_system) AS systems,
           array_agg(state ORDER BY recipient_system) AS states
    FROM deliveries GROUP BY message_id
)
SELECT h.message_id, h.seqs, h.kinds, h.details, d.systems, d.states
FROM history h
JOIN messages m ON m.message_id = h.message_id
LEFT JOIN stored d ON d.message_id = h.message_id
ORDER BY h.message_id
"""


def missing_evidence_problem(message_id: str, received_at: datetime) -> Problem:
    """The problem of a message that has no evidence of its receipt (a stable wording: auditors match on it)."""
    return Problem(
        "removed",
        None,
        f"报文 {message_id} 没有接收证据记录 message {message_id} (received {format_at(received_at)}) has no evidence "
        "record of its receipt (received, quarantined or rejected): the end of the log was cut off or the record "
        "removed",
    )


def _record_name(seq: int | None) -> str:
    return f"evidence record {seq}" if seq is not None else "a staged evidence record (not yet chained)"


def removed_message_problem(message_id: str, seq: int | None) -> Problem:
    """The problem of an evidence record of receipt whose message row is gone (deleted, with its deliveries)."""
    return Problem(
        "removed",
        seq,
        f"报文 {message_id} 的记录已被删除 message {message_id} recorded in {_record_name(seq)} no longer exists "
        "in the store: its row was deleted",
    )


def _changed(seq: int | None, what: str, field: str, then: Any, now: Any) -> Problem:
    return Problem(
        "altered",
        seq,
        f"{what} was changed after it was recorded: its {field} no longer matches {_record_name(seq)} "
        f"(recorded {str(then)[:64]!r}, now {str(now)[:64]!r})",
    )


#: The state of a message as its evidence has it: from the record of its receipt, then (a quarantined message
#: only) from the quarantine decision; and the status of its quarantine entry. Every change of ``messages.state``
#: the hub makes is ``hub.store.messages._decide``, which writes the decision record in the same transaction.
_STATE_OF_RECEIPT: Final[dict[str, str]] = {
    "received": "accepted",
    "quarantined": "quarantined",
    "rejected": "rejected",
}
_STATE_OF_DECISION: Final[dict[str, str]] = {"released": "released", "quarantine_rejected": "quarantine_rejected"}
_HELD_OF_DECISION: Final[dict[str | None, str]] = {
    None: "pending",
    "released": "released",
    "quarantine_rejected": "rejected",
}


def _loads(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _message_problems(r: Any) -> list[Problem]:
    """What is wrong with one message against one record of its receipt (a row of ``_MESSAGES_AS_RECORDED``)."""
    seq, mid = r["seq"], str(r["message_id"])
    if not r["present"]:
        return [removed_message_problem(mid, seq)]
    detail = _loads(r["detail"])
    if detail is None:
        return []  # a record whose hash is broken is reported by verify_chain; its claims are not trusted here
    what = f"message {mid}"
    problems: list[Problem] = []
    recorded = {
        "raw (the signed bytes)": detail.get("sha256"),
        "raw_sha256": detail.get("sha256"),
        "sender": r["actor"],
        "service": detail.get("service"),
        "classification": detail.get("classification"),
        "urgency": detail.get("urgency"),
    }
    stored = {
        "raw (the signed bytes)": r["actual"],
        "raw_sha256": r["raw_sha256"],
        "sender": r["sender"],
        "service": r["service"],
        "classification": r["classification"],
        "urgency": r["urgency"],
    }
    for field, then in recorded.items():
        if then is not None and stored[field] != then:
            problems.append(_changed(seq, what, field, then, stored[field]))
    state = _STATE_OF_RECEIPT.get(r["kind"])
    if state is None:  # pragma: no cover - the query selects these three kinds only
        return problems
    if r["kind"] != "quarantined":
        if r["state"] != state:
            problems.append(_changed(seq, what, "state", state, r["state"]))
        return problems
    # Held: the decision (if any) says what the state, the entry's status, its reviewer and reason are.
    decision = r["decision"]
    where = seq if decision is None else r["decision_seq"]
    state = _STATE_OF_DECISION.get(decision, state)
    if r["state"] != state:
        problems.append(_changed(where, what, "state", state, r["state"]))
    if r["held"] != _HELD_OF_DECISION[decision]:
        problems.append(_changed(where, what, "quarantine status", _HELD_OF_DECISION[decision], r["held"]))
    decided = _loads(r["decision_detail"])
    if decision is not None and decided is not None and r["held"] is not None:
        if r["reviewer"] != r["decided_by"]:
            problems.append(_changed(where, what, "quarantine reviewer", r["decided_by"], r["reviewer"]))
        then = decided.get("reason_sha256")
        if then is not None and r["reason_sha256"] != then:
            problems.append(_changed(where, what, "quarantine reason (SHA-256)", then, r["reason_sha256"]))
    return problems


@dataclass(frozen=True)
class _Replayed:
    """A message's deliveries as its evidence has them: each recipient system's state, the record that put it in
    that state (None while staged) and the record of the message's receipt (which created them)."""

    states: dict[str, str]
    where: dict[str, int | None]
    receipt: int | None


def _replay_deliveries(r: Any) -> _Replayed | None:
    """The state each delivery of one message must be in after the records of ``_DELIVERIES_AS_RECORDED``,
    replayed as ``hub.store.messages`` applies them: the receipt creates the pending deliveries (``to``) and
    ``blocked`` the blocked ones; ``delivered`` moves pending or failed ones on; a ``delivery_state`` report moves one
    forward in ``DELIVERY_RANK``, never out of blocked; a quarantine rejection blocks what is pending. None when there
    is nothing to compare: no record of receipt, or a record whose detail is not readable (``verify_chain`` reports
    its hash; its claims are not trusted)."""
    expected: dict[str, str] = {}
    where: dict[str, int | None] = {}
    received, receipt = False, None

    def move(system: Any, state: str, seq: int | None) -> None:
        if isinstance(system, str):
            expected[system] = state
            where[system] = seq

    for seq, kind, text in zip(r["seqs"], r["kinds"], r["details"], strict=True):
        detail = _loads(text)
        if detail is None:
            return None
        if kind in _STATE_OF_RECEIPT:
            received, receipt = True, seq
            for system in detail.get("to") or ():
                move(system, "pending", seq)
        elif kind == "blocked":
            for item in detail.get("recipients") or ():
                move(item.get("system") if isinstance(item, dict) else None, "blocked", seq)
        elif kind == "delivered":
            for system in detail.get("to") or ():
                if isinstance(system, str) and expected.get(system) in ("pending", "failed"):
                    move(system, "delivered", seq)
        elif kind == "delivery_state":
            system, reported = detail.get("system"), detail.get("reported")
            now = expected.get(system) if isinstance(system, str) else None
            rank = DELIVERY_RANK.get(reported, -1) if isinstance(reported, str) else -1
            if now is not None and now != "blocked" and rank > DELIVERY_RANK.get(now, 99):
                move(system, str(reported), seq)
        elif kind == "quarantine_rejected":
            for system in [s for s, state in expected.items() if state == "pending"]:
                move(system, "blocked", seq)
    return _Replayed(expected, where, receipt) if received else None


def _delivery_problems(r: Any) -> list[Problem]:
    """What is wrong with one message's delivery rows against its evidence (a row of ``_DELIVERIES_AS_RECORDED``):
    a delivery whose state was changed by hand (``altered``), one deleted (``removed``), one added (``inserted``)."""
    replayed = _replay_deliveries(r)
    if replayed is None:
        return []
    expected, where = replayed.states, replayed.where
    mid = str(r["message_id"])
    stored = dict(zip(r["systems"] or (), r["states"] or (), strict=True))
    problems: list[Problem] = []
    for system in sorted(expected.keys() - stored.keys()):
        problems.append(
            Problem(
                "removed",
                where[system],
                f"报文 {mid} 对 {system} 的投递记录已被删除 the delivery of message {mid} to {system}, last recorded "
                f"in {_record_name(where[system])} ({expected[system]}), no longer exists in deliveries: its row was "
                "deleted",
            )
        )
    for system in sorted(stored.keys() - expected.keys()):
        problems.append(
            Problem(
                "inserted",
                replayed.receipt,
                f"报文 {mid} 对 {system} 的投递没有证据记录 message {mid} has a delivery to {system} "
                f"({stored[system]}) that is neither among the recipients in {_record_name(replayed.receipt)} nor "
                "blocked by the gate: the row was added by hand",
            )
        )
    for system in sorted(expected.keys() & stored.keys()):
        if stored[system] != expected[system]:
            changed = _changed(
                where[system], f"the delivery of message {mid} to {system}", "state", expected[system], stored[system]
            )
            problems.append(
                Problem(changed.kind, changed.seq, f"报文 {mid} 对 {system} 的投递状态被改动 {changed.message}")
            )
    return problems


def _action_problems(r: Any) -> list[Problem]:
    """What is wrong with one operator action against its evidence record (a row of ``_ACTIONS_AS_RECORDED``)."""
    seq = r["seq"]
    if r["id"] is None:
        action_id = r["recorded_id"]
        return [
            Problem(
                "removed",
                seq,
                f"操作记录 {action_id} 已被删除 operator action {action_id} recorded in {_record_name(seq)} no longer "
                "exists in operator_actions: its row was deleted",
            )
        ]
    if r["recorded_id"] is None:
        return [
            Problem(
                "removed",
                None,
                f"操作记录 {r['id']} 没有证据记录 operator action {r['id']} ({r['operator']}, {r['action']}, "
                f"{format_at(r['at'])}) has no operator_action evidence record: the end of the log was cut off, the "
                "record removed, or the row added by hand",
            )
        ]
    detail = _loads(r["detail"])
    if detail is None:
        return []
    what = f"operator action {r['id']}"
    recorded_mid = None if r["recorded_message_id"] is None else str(r["recorded_message_id"])
    recorded = {
        "operator": r["actor"],
        "role": detail.get("role"),
        "action": detail.get("action"),
        "via": detail.get("via"),
        "outcome": detail.get("outcome"),
        "reason (SHA-256)": detail.get("reason_sha256"),
        "target": detail.get("target"),  # recorded only when there is one
        "message_id": recorded_mid,
    }
    stored = {
        "operator": r["operator"],
        "role": r["role"],
        "action": r["action"],
        "via": r["via"],
        "outcome": r["outcome"],
        "reason (SHA-256)": r["reason_sha256"],
        "target": r["target"],
        "message_id": None if r["message_id"] is None else str(r["message_id"]),
    }
    optional = ("target", "message_id")  # absent in the record means none in the row
    return [
        _changed(seq, what, field, then, stored[field])
        for field, then in recorded.items()
        if (then is not None or field in optional) and stored[field] != then
    ]


async def verify_messages(executor: Any) -> list[Problem]:
    """Compare what the store holds with the evidence records made when it happened, in one consistent snapshot,
    streamed (memory does not grow with the store; the event loop gets control back between rows fetched):

    - every recorded message with the record of its receipt (its digest, sender, service, 密级 and urgency) and its
      state (and quarantine entry: status, reviewer, reason) with what its receipt and any quarantine decision
      support: a message changed by hand afterwards is named with the field that changed (``altered``);
    - a record of receipt whose message row is gone (``removed``), and a message with no such record at all,
      chained or still staged (``removed``: the chain alone cannot see its end cut off when the head was moved back
      with it);
    - every delivery of a message (its row in ``deliveries``) with the records that created and moved it (the
      receipt's ``to``, ``blocked``, ``delivered``, ``delivery_state`` reports, a quarantine rejection), replayed:
      a state changed by hand (``altered``), a delivery deleted (``removed``) or added (``inserted``);
    - every operator action with its ``operator_action`` record (operator, role, action, via, outcome, target,
      message, the reason's SHA-256): a changed row (``altered``), a record whose row is gone or a row with no
      record (``removed``).

    A record whose own hash is broken is reported by ``verify_chain``; its claims are not trusted here."""
    problems: list[Problem] = []
    async with translated("comparing messages with their evidence"), acquired(executor) as conn:
        # A snapshot of its own, unless the caller already holds a transaction (then a savepoint inside it).
        tx = (
            conn.transaction()
            if conn.is_in_transaction()
            else conn.transaction(isolation="repeatable_read", readonly=True)
        )
        async with tx:
            async for r in conn.cursor(_MESSAGES_WITHOUT_EVIDENCE, prefetch=_VERIFY_FETCH):
                problems.append(missing_evidence_problem(str(r["message_id"]), r["received_at"]))
            async for r in conn.cursor(_MESSAGES_AS_RECORDED, prefetch=_VERIFY_FETCH):
                problems += _message_problems(r)
            async for r in conn.cursor(_DELIVERIES_AS_RECORDED, prefetch=_VERIFY_HISTORIES):
                problems += _delivery_problems(r)
            async for r in conn.cursor(_ACTIONS_AS_RECORDED, prefetch=_VERIFY_FETCH):
                problems += _action_problems(r)
    return problems
