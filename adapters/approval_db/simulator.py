"""The simulated approval desk (敦化市林业局行政审批窗口系统), following README.md's contract: tests and demo.

It owns a PostgreSQL database of its own on the machine's server (created from a DSN's server part, dropped at the
end), lays out schema.sql, and plays the approval system's side: ``submit`` inserts an application with its
materials and its ``hub_outbox`` row in one transaction (as the contract asks); ``outbox``, ``statuses`` and
``decisions`` read what the adapter wrote back. ``down()`` takes the database away (no new connections, the open
ones terminated — as a database restart or an outage looks to the adapter) and ``up()`` brings it back.

What it "received" is the rows the adapter inserted: the tables' UNIQUE message ids are the contract's dedup, and
``received()`` reports rows and distinct ids so a test sees any duplicate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

SCHEMA = Path(__file__).with_name("schema.sql")
AGENCY = "11222403014102856B"  # 敦化市林业局
AGENCY_NAME = "敦化市林业局"


def server_dsn(dsn: str, database: str) -> str:
    """``dsn`` with its database replaced."""
    return dsn.rsplit("/", 1)[0] + "/" + database


def application(case_number: str, **overrides: Any) -> dict[str, Any]:
    """A tree-felling licence application of the desk (the values of the XSD's own sample, in Dunhua)."""
    row: dict[str, Any] = {
        "case_number": case_number,
        "item_code": "000131001000",
        "item_name": "林木采伐许可证核发",
        "accepting_agency_name": AGENCY_NAME,
        "accepting_agency_code": AGENCY,
        "applicant_kind": "legal-person",
        "applicant_name": "敦化市大石头林业有限公司",
        "applicant_credit_code": "91220101MA17Q8RN3R",
        "applicant_identity_number": None,
        "applicant_address": "敦化市大石头镇林业街8号",
        "contact_name": "王立新",
        "contact_phone": "13904338826",
        "summary": "申请对大石头林场12林班3小班落叶松人工林进行抚育间伐，采伐面积8.4公顷，蓄积量216立方米。",
        "location_division_code": "222403",
        "location_description": "敦化市大石头林场12林班3小班",
        "submitted_at": datetime.now(UTC).replace(microsecond=0),
        "time_limit_working_days": 20,
        "statutory_deadline": date.today() + timedelta(days=28),
        "promised_deadline": date.today() + timedelta(days=14),
    }
    row.update(overrides)
    return row


MATERIALS: tuple[dict[str, Any], ...] = (
    {
        "name": "林木采伐申请书",
        "form": "electronic",
        "copies": None,
        "file_name": "林木采伐申请书.pdf",
        "media_type": "application/pdf",
        "content": b"%PDF-1.7\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n",
    },
    {"name": "林权证复印件", "form": "copy", "copies": 1, "file_name": None, "media_type": None, "content": None},
)

_APP_COLUMNS = tuple(application("X").keys())
_INSERT_APP = (
    f"INSERT INTO applications ({', '.join(_APP_COLUMNS)}) "  # noqa: S608 — fixed column names
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_APP_COLUMNS) + 1))})"
)
_INSERT_MATERIAL = (
    "INSERT INTO application_materials (case_number, position, name, form, copies, file_name, media_type, content)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
_INSERT_OUTBOX = (
    "INSERT INTO hub_outbox (case_number, recipient_system, urgency) VALUES ($1, $2, $3) RETURNING message_id::text"
)


class ApprovalSystem:
    """The desk's database and the desk's side of the contract."""

    def __init__(self, base_dsn: str, name: str | None = None) -> None:
        self.name = name or f"approval_{uuid.uuid4().hex[:10]}"
        self.admin_dsn = base_dsn
        self.dsn = server_dsn(base_dsn, self.name)

    # ------------------------------------------------------------------------------------------ lifetime

    async def _admin(self, *sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for statement in sql:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def create(self, *, schema: bool = True) -> ApprovalSystem:
        """Create the database and, unless ``schema=False`` (a desk that skipped schema.sql), its tables."""
        await self._admin(f'CREATE DATABASE "{self.name}"')
        if not schema:
            return self
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(SCHEMA.read_text(encoding="utf-8"))
        finally:
            await conn.close()
        return self

    async def drop(self) -> None:
        await self._admin(
            f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true',
            f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)',
        )

    async def down(self) -> None:
        """The database goes away: new connections refused, open ones cut."""
        await self._admin(
            f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'"  # noqa: S608
            " AND pid <> pg_backend_pid()",
        )

    async def up(self) -> None:
        await self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    # ------------------------------------------------------------------------------------------ the desk's side

    async def submit(
        self,
        app: dict[str, Any],
        materials: Sequence[dict[str, Any]] = MATERIALS,
        *,
        recipient: str = "prov-220000-approval",
        urgency: str = "平件",
    ) -> str:
        """Insert the application, its materials and its outbox row in one transaction; the row's message id."""
        return (await self.submit_many([app], materials, recipient=recipient, urgency=urgency))[0]

    async def submit_many(
        self,
        apps: Sequence[dict[str, Any]],
        materials: Sequence[dict[str, Any]] = MATERIALS,
        *,
        recipient: str = "prov-220000-approval",
        urgency: str = "平件",
    ) -> list[str]:
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                await conn.executemany(_INSERT_APP, [tuple(a[c] for c in _APP_COLUMNS) for a in apps])
                await conn.executemany(
                    _INSERT_MATERIAL,
                    [
                        (
                            a["case_number"],
                            i,
                            m["name"],
                            m["form"],
                            m["copies"],
                            m["file_name"],
                            m["media_type"],
                            m["content"],
                        )
                        for a in apps
                        for i, m in enumerate(materials, start=1)
                    ],
                )
                ids = []
                for a in apps:  # RETURNING per row keeps the order
                    ids.append(await conn.fetchval(_INSERT_OUTBOX, a["case_number"], recipient, urgency))
            return ids
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def outbox(self) -> list[dict[str, Any]]:
        return await self.fetch("SELECT *, message_id::text AS message_id FROM hub_outbox ORDER BY id")

    async def outbox_states(self) -> dict[str, int]:
        rows = await self.fetch("SELECT state, count(*) AS n FROM hub_outbox GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}

    async def statuses(self, case_number: str | None = None) -> list[dict[str, Any]]:
        if case_number is None:
            return await self.fetch("SELECT * FROM approval_status_history ORDER BY id")
        return await self.fetch("SELECT * FROM approval_status_history WHERE case_number = $1 ORDER BY id", case_number)

    async def decisions(self, case_number: str | None = None) -> list[dict[str, Any]]:
        if case_number is None:
            return await self.fetch("SELECT * FROM approval_decisions ORDER BY id")
        return await self.fetch("SELECT * FROM approval_decisions WHERE case_number = $1 ORDER BY id", case_number)

    async def notices(self, case_number: str | None = None) -> list[dict[str, Any]]:
        """The hub's notices the adapter recorded (all, or those linked to one of the desk's applications)."""
        if case_number is None:
            return await self.fetch("SELECT * FROM hub_notices ORDER BY id")
        return await self.fetch("SELECT * FROM hub_notices WHERE case_number = $1 ORDER BY id", case_number)

    async def received(self) -> dict[str, tuple[int, int]]:
        """{table: (rows, distinct message ids)} of what the adapter wrote back: rows > ids would be a duplicate."""
        out = {}
        for table in ("approval_status_history", "approval_decisions"):
            [r] = await self.fetch(f"SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM {table}")  # noqa: S608
            out[table] = (int(r["n"]), int(r["d"]))
        return out
