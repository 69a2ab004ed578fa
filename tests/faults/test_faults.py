"""Issue 16, fault tests (the reduced form ``make test`` runs; ``make faults`` runs every fault in full, one
installation each, and the core faults again with ``HUB_AMQP_FAST=0``: ``scripts/faults/run.py``).

On a PostgreSQL instance and a RabbitMQ node of the test's own (``instances.py``: own ports, node name, data
directories under a temporary folder; the machine's shared services are never touched), ``hub run --workers 2``
takes signed messages from a real sender — publishing through a TCP proxy of the test's (``SlowLink``) — to two
recipients, while, one after the other: a worker is SIGKILLed twice, the sender's link stalls and is cut, one
recipient stops reading for a while (10 messages sent to it alone expire meanwhile), the broker node is SIGKILLed and
started again, the disk under the database's tablespace (a tmpfs) fills up and is freed, and PostgreSQL is stopped
and started. Afterwards every message the broker confirmed to the sender reached both recipients (or a state an
operator sees), every copy carries a message id the sender sent, none of the expiring messages reached its recipient
and the sender got exactly one hub-signed hub.error DELIVERY_EXPIRED for each, the hub answered, stopped on SIGTERM,
and ``hub evidence verify`` passes."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import scenario as sc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab() -> Iterator[sc.Lab]:
    base = Path(tempfile.mkdtemp(prefix="hub-faults-", dir="/tmp"))
    lab = sc.Lab(base)
    try:
        lab.start()
        lab.small_tablespace()
        yield lab
    finally:
        with contextlib.suppress(Exception):
            lab.close()
        shutil.rmtree(base, ignore_errors=True)


async def test_every_fault_in_one_run_loses_nothing(lab: sc.Lab) -> None:
    sender, link = sc.slow_link(stall_s=3.0)
    harm = sc.sequence(
        sc.kill_workers(2),
        link,
        sc.recipient_offline(6.0, after_sending=False, expiring=10, expires_s=3.0),
        sc.restart_broker(2.0, kill=True),
        sc.disk_full(4.0),
        sc.caught_up(),
        sc.restart_postgres(2.0),
    )
    run = sc.Run(lab, "all faults", 20_000, rate=50.0, step=25, until_harm_done=True)  # sending ends with the harms
    run.settings = lab.settings("all", tablespace="small")
    row = await run(harm, sender=sender)
    print(sc.TABLE_HEAD, row.line(), row.notes, run.timings, sep="\n")
    assert row.lost == 0, row
    assert row.evidence.startswith("ok"), row.evidence
    assert row.sent >= 200, row  # the faults happened under load
    assert (row.expired, row.expired_told) == (10, 10), (row, row.notes)  # 10 expired → 10 signed DELIVERY_EXPIRED
    assert row.delivered == row.sent - row.expired, row  # none other had to go to an operator either
    assert row.visible == row.expired, row  # the expired ones: the sender told, the letters in ns.dead
    assert "hub log names it: True" in row.notes, row.notes  # the disk-full: the hub said why it stopped
    assert "10 answered" in row.notes, row.notes  # before the next fault
    assert "2 workers killed" in row.notes and "stalled" in row.notes and "broker killed" in row.notes, row.notes
    assert "hub run exited" not in row.notes, row.notes
