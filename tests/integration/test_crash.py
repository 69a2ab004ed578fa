"""Nothing is lost when a worker dies (issue 4 acceptance): ``hub run`` with two worker processes, 2,000 signed
messages to a group of two county bureaus, one worker killed with SIGKILL in the middle, the supervisor starts a
replacement; every message reaches every recipient (a duplicate, if any, carries the same message id), every
sender gets an answer, the hub stops gracefully on SIGTERM, and the evidence chain verifies — until one evidence
row is edited by hand."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest
from harness import Hub, document

from hub.envelope import Envelope, Recipient, parse

pytestmark = pytest.mark.integration

N = 2000
SENDER = "county-220122-oa"
PEERS = ("county-220182-oa", "county-220183-oa")


def _children(pid: int) -> list[int]:
    """The pipeline worker processes under a ``hub run`` supervisor (not multiprocessing's resource tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmdline = f.read()
                except OSError:
                    continue
                if b"spawn_main" in cmdline:
                    found.append(int(entry))
    return found


async def _ids_in(hub: Hub, system: str, seen: Counter[str]) -> None:
    """Move whatever is in a system's queue into ``seen`` (message id → copies), verifying the hub signature."""
    box = hub.inbox(system)
    while batch := await box.take(max_messages=200):
        for m in batch:
            seen[box.open(m.body).message_id] += 1
        await hub.transport.ack(batch)


async def test_sigkill_of_a_worker_loses_nothing(fresh_settings) -> None:  # type: ignore[no-untyped-def]
    hub = Hub(fresh_settings)
    await hub.setup()
    proc = None
    try:
        payloads = []
        for _ in range(N):
            data = hub.sign(SENDER, document(SENDER, [Recipient.to_group("county-bureaus:220100")]))
            payloads.append((Envelope.from_tree(parse(data)), data))
        sent = {env.message_id for env, _ in payloads}
        proc = hub.run_hub(workers=2)
        for i in range(0, N, 250):
            await hub.publish(payloads[i : i + 250])

        delivered: dict[str, Counter[str]] = {s: Counter() for s in PEERS}
        answers: Counter[str] = Counter()
        killed = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for system in PEERS:
                await _ids_in(hub, system, delivered[system])
            await _ids_in(hub, SENDER, answers)  # receipts: counted by their own ids, checked below via the DB
            if killed is None and sum(delivered[PEERS[0]].values()) >= 300:
                workers = _children(proc.pid)
                assert len(workers) >= 2, f"expected two worker processes under {proc.pid}, found {workers}"
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
            if all(set(delivered[s]) >= sent for s in PEERS) and killed is not None:
                break
            await asyncio.sleep(0.2)
        assert killed is not None, "the hub delivered nothing before the deadline"
        for s in PEERS:
            missing = sent - set(delivered[s])
            assert not missing, f"{s} is missing {len(missing)} of {N} messages"
            assert set(delivered[s]) <= sent  # duplicates, if any, carry the same message ids
        # the supervisor replaced the killed worker
        for _ in range(100):
            workers = _children(proc.pid)
            if killed not in workers and len(workers) == 2:
                break
            await asyncio.sleep(0.1)
        assert killed not in workers and len(workers) == 2, workers

        async with hub.pool.acquire() as conn:
            states = dict(await conn.fetch("SELECT state, count(*) FROM deliveries GROUP BY state"))
            answered = await conn.fetchval("SELECT count(DISTINCT message_id) FROM receipts WHERE kind = 'hub.receipt'")
        assert states == {"delivered": 2 * N}
        assert answered == N

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        proc = None

        ok = await hub.cli("evidence", "verify")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        async with hub.pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("ALTER TABLE evidence DISABLE TRIGGER USER")
                await conn.execute(
                    "UPDATE evidence SET actor = 'someone-else' WHERE seq = (SELECT min(seq) + 7 FROM evidence)"
                )
                await conn.execute("ALTER TABLE evidence ENABLE TRIGGER USER")
        broken = await hub.cli("evidence", "verify")
        assert broken.returncode == 1
        assert "altered" in broken.stdout
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        await hub.close()


async def test_workers_do_not_outlive_a_killed_supervisor(fresh_settings) -> None:  # type: ignore[no-untyped-def]
    """A supervisor killed with SIGKILL takes its workers with it: no unsupervised consumer keeps running."""
    hub = Hub(fresh_settings)
    await hub.setup()
    proc = hub.run_hub(workers=2)
    try:
        workers: list[int] = []
        for _ in range(200):
            workers = _children(proc.pid)
            if len(workers) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(workers) == 2
        proc.kill()
        proc.wait()
        for _ in range(100):
            if not any(os.path.exists(f"/proc/{w}") and _state(w) != "Z" for w in workers):
                break
            await asyncio.sleep(0.1)
        assert not any(os.path.exists(f"/proc/{w}") and _state(w) != "Z" for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await hub.close()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
