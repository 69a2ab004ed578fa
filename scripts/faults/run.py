"""``make faults``: every fault scenario of issue 16 in full on a PostgreSQL instance and a RabbitMQ node of its own
(never the machine's shared services), then the core scenarios again with ``HUB_AMQP_FAST=0``; prints the table
(fault, messages sent, delivered, duplicates, operator-visible, lost, evidence chain) and, last,
``faults_lost=<total> faults_rows=<n>``. Exit 1 when a message was lost, an evidence chain does not verify, or a
message that expired while its recipient was away was not answered with exactly one signed DELIVERY_EXPIRED.

    .venv/bin/python scripts/faults/run.py [--only NAME ...] [--scale 0.2] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "faults"))

import scenario as sc


def plan(scale: float) -> list[tuple[str, int, object, object, bool, float]]:
    """(fault, messages, harm, sender, fast, offered rate a second)."""
    n = lambda k: max(100, int(k * scale))  # noqa: E731
    sender, link = sc.slow_link(stall_s=8.0)
    # and 20 messages to it alone, expiring 20 s into its absence: each must come back as a signed DELIVERY_EXPIRED
    offline = sc.recipient_offline(60.0, expiring=20, expires_s=20.0)
    return [
        ("worker SIGKILL ×10 工作进程被杀", n(3000), sc.kill_workers(10), None, True, 200.0),
        ("broker stop/start 消息中间件重启", n(2000), sc.restart_broker(5.0), None, True, 200.0),
        ("broker SIGKILL/start 消息中间件崩溃", n(2000), sc.restart_broker(5.0, kill=True), None, True, 200.0),
        ("PostgreSQL stop/start 数据库重启", n(2000), sc.restart_postgres(5.0), None, True, 200.0),
        ("recipient offline 60 s 收件方离线", n(2000), offline, None, True, 200.0),
        ("slow/stalled/cut link 慢速链路", n(1500), link, sender, True, 100.0),
        ("PostgreSQL disk full 数据库磁盘满", n(1000), sc.disk_full(10.0), None, True, 40.0),
        ("worker SIGKILL ×10 工作进程被杀", n(3000), sc.kill_workers(10), None, False, 200.0),
        ("broker stop/start 消息中间件重启", n(2000), sc.restart_broker(5.0), None, False, 200.0),
        ("PostgreSQL stop/start 数据库重启", n(2000), sc.restart_postgres(5.0), None, False, 200.0),
    ]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="run the faults whose name contains one of these words")
    ap.add_argument("--scale", type=float, default=1.0, help="messages per fault × this (at least 100)")
    ap.add_argument("--keep", action="store_true", help="keep the lab's folder (logs) afterwards")
    ap.add_argument("--no-cluster", dest="cluster", action="store_false", help="skip bench/cluster.py at the end")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="hub-faults-", dir="/tmp"))
    lab = sc.Lab(base)
    rows: list[sc.Row] = []
    print(f"lab: {base} (PostgreSQL :{lab.pg.port}, RabbitMQ {lab.node.node} :{lab.node.port})", flush=True)
    try:
        await asyncio.to_thread(lab.start)
        for fault, n, harm, sender, fast, rate in plan(args.scale):
            if args.only and not any(w.lower() in fault.lower() for w in args.only):
                continue
            os.environ["HUB_AMQP_FAST"] = "1" if fast else "0"
            tag = fault.split(" ")[0].split("/")[0].lower()
            settings = None
            if "disk" in fault:
                if lab.mount is None:
                    await asyncio.to_thread(lab.small_tablespace)
                settings = lab.settings("disk", tablespace="small")
            run = sc.Run(lab, fault, n, rate=rate)
            run.settings = settings or lab.settings(tag)
            t = time.monotonic()
            print(f"… {fault} (HUB_AMQP_FAST={int(fast)}, {n} messages)", flush=True)
            row = await run(harm, sender=sender)  # type: ignore[arg-type]
            rows.append(row)
            print(f"  {row.line()}  {row.notes}  [{time.monotonic() - t:.0f} s]", flush=True)
    finally:
        os.environ.pop("HUB_AMQP_FAST", None)
        await asyncio.to_thread(lab.close)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    cluster = _cluster() if args.cluster and not args.only else None
    print()
    print(sc.TABLE_HEAD)
    for row in rows:
        print(row.line())
    if cluster is not None:
        rows.append(cluster)
        print(cluster.line())
    for row in rows:
        if row.notes:
            print(f"- {row.fault} (fast {'on' if row.fast else 'off'}): {row.notes}")
    lost = sum(r.lost for r in rows)
    broken = [r for r in rows if not r.evidence.startswith("ok") or r.expired_told != r.expired]
    print(f"faults_lost={lost} faults_rows={len(rows)}")
    return 1 if lost or broken else 0


def _cluster() -> sc.Row | None:
    """bench/cluster.py (three RabbitMQ nodes, quorum queues, two hub instances, node 1 stopped under load) as one more
    row; None (said why) when this checkout lacks the quorum wiring it needs (it exits 2)."""
    import subprocess

    script = Path(__file__).resolve().parents[2] / "bench" / "cluster.py"
    print("… cluster: bench/cluster.py (3 nodes, quorum queues, 2 hub instances, node 1 stopped)", flush=True)
    t = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=1800)
    out = done.stdout.strip().splitlines()
    if done.returncode == 2:
        print(f"  not run: {out[-1] if out else done.stderr[-300:]}")
        return None
    fields = dict(f.split("=", 1) for f in (out[-1].split() if out else []) if "=" in f)
    row = next((line for line in out if line.startswith("| 3 RabbitMQ nodes")), "")
    cells = [c.strip() for c in row.strip("|").split("|")] if row else []
    ok = done.returncode == 0 and len(cells) >= 8
    if not ok:  # what the bench said (its table row, its checks), not the client library's reconnect noise
        said = [line for line in out if not line.startswith((" ", "Traceback"))][-12:]
        print("  bench/cluster.py failed:\n    " + "\n    ".join(said), flush=True)
    return sc.Row(
        fault="cluster: 3 nodes, quorum, 2 instances, node 1 stopped 集群节点停止",
        sent=int(fields.get("cluster_sent", 0)),
        delivered=int(cells[2]) if ok else 0,
        duplicates=int(cells[3]) if ok else 0,
        lost=int(fields.get("cluster_lost", 1)),
        visible=0,
        evidence=cells[7] if ok else f"FAILED (exit {done.returncode}; the bench's lines above)",
        seconds=time.monotonic() - t,
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
