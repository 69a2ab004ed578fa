"""Operator actions: one row with the reason in full and one chained evidence record with its digest."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from hub.store import evidence
from hub.store.audit import EVIDENCE_KIND, operator_actions, record_operator_action
from hub.store.db import create_pool

pytestmark = pytest.mark.integration


async def test_an_action_is_a_row_and_a_chained_record(pg_dsn: str) -> None:
    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        mid = uuid.uuid4()
        first = await record_operator_action(
            pool,
            operator="li.wei",
            role="security",
            action="quarantine.release",
            via="web",
            reason="已核实，可公开",
            message_id=mid,
            target=str(mid),
        )
        second = await record_operator_action(
            pool,
            operator="wang.fang",
            role="duty",
            action="dead.replay",
            via="cli",
            reason="收件系统已恢复",
            outcome="refused",
            detail={"code": "DEAD_NOT_FOUND"},
        )
        assert second > first
        newest = await operator_actions(pool, limit=10)
        mine = [a for a in newest if a.id in (first, second)]
        assert [a.operator for a in mine] == ["wang.fang", "li.wei"]
        assert mine[0].outcome == "refused" and mine[0].detail == {"code": "DEAD_NOT_FOUND"}
        assert mine[1].message_id == str(mid) and mine[1].reason == "已核实，可公开"
        assert [a.id for a in await operator_actions(pool, operator="li.wei")] == [first]
        assert [a.id for a in await operator_actions(pool, before_id=second, limit=1)] == [first]

        await evidence.chain_pending(pool, wait=True)
        rows = await pool.fetch(
            "SELECT actor, message_id, detail FROM evidence WHERE kind = $1 ORDER BY seq", EVIDENCE_KIND
        )
        by_actor = {r["actor"]: r for r in rows}
        assert by_actor["li.wei"]["message_id"] == mid
        detail = by_actor["li.wei"]["detail"]
        assert hashlib.sha256("已核实，可公开".encode()).hexdigest() in detail and "已核实" not in detail
        assert await evidence.verify_chain(pool) == []

        with pytest.raises(ValueError):
            await record_operator_action(pool, operator="li.wei", role="security", action="x", via="web", reason=" ")
    finally:
        await pool.close()
