"""Issue 16, item 2: two hub instances on a three-node RabbitMQ cluster with quorum queues; one broker node stopped
under load — nothing lost, the hub goes on.

Starts its own three RabbitMQ nodes (``tests/faults/instances.py``: own node names, ports, data directories under
/tmp; the machine's shared RabbitMQ and PostgreSQL are never touched) and clusters them, and a PostgreSQL instance of
its own. One installation (database, namespace, CA, the demo directory) with ``HUB_QUEUE_TYPE=quorum``: every queue a
quorum queue replicated on the three nodes, declared through node 1 (which so leads them). Two ``hub run --workers 2``
processes, each with its own copy of the state directory as on two machines: instance A connected to node 1,
instance B to node 2. A real sender and a collector (every delivery's hub signature verified) on node 3.

Under load (``--rate`` msg/s of signed ``document.official`` to two recipients) node 1 — the queues' leader, and
instance A's broker — is stopped (``rabbitmqctl stop``): the quorum queues elect leaders on nodes 2 and 3, instance A
loses its broker and retries, instance B goes on with all the work. After ``--down`` seconds node 1 starts again and
rejoins. Afterwards: every message the sender published reached both recipients, duplicates carry sent ids, both
instances worked (their decision lines), messages were delivered while node 1 was down, and ``hub evidence verify``
passes. Prints a table and ends with ``cluster_lost=<n> cluster_sent=<n> cluster_delivered_while_down=<n>``.

    .venv/bin/python bench/cluster.py [--messages 3000] [--rate 150] [--down 15]

Needs the quorum wiring of ``/work/notes/requests.md`` (the transport building ``Names`` with the queue type, the
publishers' ``delivery_key``, the readers' ``system_queues``): without it the hub declares classic queues, which this
script sees and refuses (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "faults"))

import scenario as sc  # noqa: E402
from instances import PgInstance, RabbitNode  # noqa: E402


def _parallel(*jobs: object) -> None:
    failed: list[BaseException] = []

    def wrap(job: object) -> None:
        try:
            job()  # type: ignore[operator]
        except BaseException as exc:  # re-raised below
            failed.append(exc)

    threads = [threading.Thread(target=wrap, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]


def _decisions(log: Path) -> int:
    n = 0
    with contextlib.suppress(OSError), open(log, errors="replace") as f:
        for line in f:
            if '"decision"' in line:
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("decision") in ("accepted", "duplicate"):
                        n += 1
    return n


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=150.0)
    ap.add_argument("--down", type=float, default=15.0, help="seconds node 1 stays stopped")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    # Node 1 is stopped once a quarter of the messages are confirmed, and stopping it takes a few seconds: with fewer
    # than about eight seconds of sending, nothing is left to send while it is down and the run proves nothing.
    if args.rate <= 0 or args.down <= 0:
        ap.error("--rate and --down must be above 0")
    need = int(args.rate * 8)
    if args.messages < need:
        ap.error(
            f"--messages {args.messages} is too few at --rate {args.rate:g}: the sender would be done before node 1 is "
            f"down; give at least {need} (eight seconds of sending)"
        )

    from hub.settings import Settings
    from hub.transport import Transport
    from hub.transport.memory import MemoryTransport

    early = await MemoryTransport.connect(Settings(queue_type="quorum"))
    quorum_wired = early.names.quorum
    await early.close()
    if not quorum_wired:  # before starting anything: the in-memory twin shows whether the wiring is in
        print(
            "the transport builds classic Names: the quorum wiring (/work/notes/requests.md, issue 16) is not in this "
            "checkout; HUB_QUEUE_TYPE=quorum would declare classic queues"
        )
        return 2
    base = Path(tempfile.mkdtemp(prefix="hub-cluster-", dir="/tmp"))
    tag = uuid.uuid4().hex[:4]
    nodes = [RabbitNode(base, f"hubclu{i}{tag}") for i in (1, 2, 3)]
    pg = PgInstance(base / "pg")
    procs: list[subprocess.Popen[bytes]] = []
    hub = None
    started = time.monotonic()
    try:
        print(f"lab: {base}; nodes {', '.join(f'{n.node}:{n.port}' for n in nodes)}; PostgreSQL :{pg.port}", flush=True)
        _parallel(lambda: (pg.init(), pg.start()), *(n.start for n in nodes))
        for n in nodes[1:]:
            await asyncio.to_thread(n.join, nodes[0])
        running = nodes[0].ctl("cluster_status", "--formatter", "json").stdout
        members = json.loads(running).get("running_nodes", [])
        print(f"cluster of {len(members)} running nodes: {', '.join(members)} [{time.monotonic() - started:.0f} s]")
        if len(members) != 3:
            print("the three nodes did not form a cluster")
            return 1

        db = f"hub_cluster_{tag}"
        pg.psql(f'CREATE DATABASE "{db}"')
        state_a = base / "state-a"
        state_a.mkdir()
        settings = Settings.from_env(
            amqp_url=nodes[0].amqp_url,
            amqp_management_url=nodes[0].management_url,
            pg_dsn=pg.dsn(db),
            namespace=f"cluster-{tag}",
            state_dir=state_a,
            queue_type="quorum",
        )
        hub = sc.Hub(settings)
        await hub.setup()  # declares the topology through node 1: it leads every queue
        if not hub.transport.names.quorum:
            print(
                "the transport built classic Names: the quorum wiring (/work/notes/requests.md, issue 16) is not in this "
                "checkout; HUB_QUEUE_TYPE=quorum would declare classic queues"
            )
            return 2
        types = nodes[0].ctl("list_queues", "name", "type", "--formatter", "json").stdout
        kinds = {q["name"]: q["type"] for q in json.loads(types) if q["name"].startswith(settings.namespace)}
        if not kinds or set(kinds.values()) != {"quorum"}:
            print(f"not every queue is a quorum queue: {sorted(set(kinds.values()))}")
            return 1
        print(f"{len(kinds)} quorum queues (each system: an urgent lane and a normal one)")
        # the sender and the collector work on node 3
        await hub.transport.close()
        hub.transport = await Transport.connect(settings.with_(amqp_url=nodes[2].amqp_url), client_name="bench-c")
        traffic = sc.Traffic(hub, args.messages)
        traffic.sign()

        state_b = base / "state-b"
        shutil.copytree(state_a, state_b)
        env_b = settings.with_(
            amqp_url=nodes[1].amqp_url, amqp_management_url=nodes[1].management_url, state_dir=state_b
        ).to_env()
        proc_a = hub.run_hub(workers=2)
        procs.append(proc_a)
        with open(state_b / "hub.log", "ab") as log_b:
            proc_b = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "run", "--workers", "2", "--no-processes"],
                env=env_b,
                stdout=subprocess.DEVNULL,
                stderr=log_b,
            )
        procs.append(proc_b)

        stop = asyncio.Event()
        collector = asyncio.create_task(traffic.collect(stop))
        sending = asyncio.create_task(traffic.send(rate=args.rate))
        arrived = lambda: len(traffic.delivered[sc.PEERS[0]])  # noqa: E731
        # Stop node 1 by what the sender published, not by what arrived: on a loaded machine arrivals lag, and the
        # sender must still have most of its messages to send while the node is down.
        while len(traffic.confirmed) < args.messages // 4 or arrived() == 0:
            await asyncio.sleep(0.2)
        a_before, b_before = _decisions(state_a / "hub.log"), _decisions(state_b / "hub.log")
        t_down = time.monotonic()
        at_stop = arrived()
        await asyncio.to_thread(nodes[0].stop)
        stopped_in = time.monotonic() - t_down
        print(f"node 1 stopped ({stopped_in:.0f} s) with {at_stop} messages delivered", flush=True)
        await asyncio.sleep(args.down)
        while_down = arrived() - at_stop
        b_down = _decisions(state_b / "hub.log") - b_before
        print(f"while node 1 was down: {while_down} messages delivered, instance B decided {b_down}", flush=True)
        await asyncio.to_thread(nodes[0].start)
        print(f"node 1 started again [{time.monotonic() - t_down:.0f} s after the stop]", flush=True)
        await sending
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not traffic.done():
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        stop.set()
        await collector
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in procs]
        procs.clear()
        verify = hub.hub_cli("evidence", "verify", timeout=300)
        evidence = "ok 完整" if verify.returncode == 0 else "BROKEN"
        missing = traffic.confirmed - traffic.everywhere()
        dead = await sc.dead_letter_ids(hub) if missing else set()
        refused = {m for m, o in traffic.answers.items() if o not in ("accepted", "duplicate")}
        lost = len(missing - dead - refused)
        dups = sum(c - 1 for counts in traffic.delivered.values() for c in counts.values() if c > 1)
        stray = set().union(*(set(c) for c in traffic.delivered.values())) - traffic.ids
        a_total, b_total = _decisions(state_a / "hub.log"), _decisions(state_b / "hub.log")
        print()
        print(
            "| set-up | sent 发送 | delivered 送达 | duplicates 重复 | lost 丢失 | delivered while node 1 was down | "
            "decisions A / B (B while down) | evidence chain 证据链 | hub run exit |"
        )
        print("|---|---:|---:|---:|---:|---:|---|---|---|")
        print(
            f"| 3 RabbitMQ nodes, quorum queues, 2 hub instances × 2 workers; node 1 (leader, A's broker) stopped "
            f"{args.down:.0f} s | {len(traffic.confirmed)} | {len(traffic.everywhere() & traffic.confirmed)} | {dups} | "
            f"{lost + len(stray)} | {while_down} | {a_total} / {b_total} ({b_down}) | {evidence} | {codes} |"
        )
        print(f"publish errors retried by the sender: {traffic.broker_errors}; A before the stop {a_before}")
        ok = not lost and not stray and evidence.startswith("ok") and while_down > 0 and b_down > 0 and codes == [0, 0]
        checks = {
            "nothing lost": not lost and not stray,
            "the evidence chain verifies": evidence.startswith("ok"),
            "messages delivered while node 1 was down": while_down > 0,
            "instance B decided while node 1 was down": b_down > 0,
            "both hub run instances exited 0 on SIGTERM": codes == [0, 0],
        }
        for what, passed in checks.items():
            print(f"{'✔' if passed else '✘ FAILED'} {what}")
        print(
            f"cluster_lost={lost + len(stray)} cluster_sent={len(traffic.confirmed)} "
            f"cluster_delivered_while_down={while_down}"
        )
        return 0 if ok else 1
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if hub is not None:
            with contextlib.suppress(Exception):
                await hub.close()
        for n in nodes:
            with contextlib.suppress(Exception):
                n.destroy() if not args.keep else n.kill()
        with contextlib.suppress(Exception):
            pg.destroy() if not args.keep else pg.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
