"""An adapter written on the SDK receiving over the HTTPS gateway (``AdapterSettings.gateway_url``) beside the same
adapter receiving over RabbitMQ, in one run on one installation: how much the HTTPS link costs a system that can
reach only HTTPS.

The installation is ``bench/e2e.py``'s (``_e2e_env.Installation``: its own database, namespace and CA), with
``hub run --workers 2`` and ``hub gateway`` (its default examiners) as child processes. Two recipients of 农安县's
``document.official`` notices (the ~2 KB typical notice, signed before any clock): 长春市 (``city-220100-oa``)
receives over RabbitMQ with its own broker user, 德惠市 (``county-220183-oa``) over HTTPS with mutual TLS — the
same ``adapters.sdk.Adapter``, one handler that counts, the default SQLite store, each from an enrolment directory
of its own. Per round and link: ``--messages`` notices go through the hub into the recipient's queue first (the
hub's work is not measured), then the adapter starts and the clock runs until every delivery was handled and
recorded, and the adapter is stopped (its last acknowledgements sent). The links take turns (``--rounds``); the
medians are compared. CPU per delivery of this process (the adapter) and of the gateway process is printed.

Last line::

    sdk_https_per_s=<deliveries a second over HTTPS> sdk_amqp_per_s=<over RabbitMQ> https_ratio=<https / amqp>

Usage: ``python bench/sdk_https.py [--messages N] [--rounds N] [--quick]``. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

AMQP = ("city-220100-oa", "11220100013544550M")  # 长春市林业局 OA: over RabbitMQ
HTTPS = ("county-220183-oa", "11220183013553609R")  # 德惠市林业局 OA: over the HTTPS gateway


async def _delivered(pool: Any, system: str) -> int:
    """Deliveries to ``system`` the hub recorded as delivered (the broker confirmed them into its queue)."""
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE recipient_system = $1 AND state <> 'pending'", system
        )
    )


async def _round(
    home: Path, system: str, gateway_url: str, n: int, gateway_pid: int | None
) -> tuple[float, float, float]:
    """(deliveries a second, this process's CPU ms a delivery, the gateway's CPU ms a delivery) for one round."""
    from _e2e_env import TICKS, cpu_ticks

    from adapters.sdk import Adapter, AdapterSettings, Context

    handled: set[str] = set()
    done = asyncio.Event()

    adapter = Adapter(
        system,
        AdapterSettings(
            system=system,
            home=home,
            gateway_url=gateway_url,
            store=f"sqlite:///{home}/handled-{time.time_ns()}.sqlite3",
        ),
    )

    @adapter.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        handled.add(ctx.message_id)
        if len(handled) >= n:
            done.set()

    gw0 = cpu_ticks(gateway_pid) if gateway_pid else 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    await adapter.start()
    await asyncio.wait_for(done.wait(), 300)
    await adapter.stop()
    took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    gw = ((cpu_ticks(gateway_pid) - gw0) / TICKS) if gateway_pid else 0.0
    return n / took, cpu / n * 1000, gw / n * 1000


async def run(args: argparse.Namespace) -> int:
    from _e2e_env import SENDER, Installation, _die_with_parent
    from _e2e_load import Target, offer_backlog, presign
    from gateway import free_port, wait_for_port

    from adapters.sdk.testing import enrolled_home
    from hub.commands import trust_admin as admin
    from hub.transport import Names, Transport

    inst = Installation()
    gateway: subprocess.Popen[bytes] | None = None
    transport = pool = None
    try:
        s = await inst.open()
        names = Names(s.namespace)
        await admin.issue_server(s, s.state_dir / "pki", ["127.0.0.1", "localhost"])
        homes = {
            sys_: await enrolled_home(s, sys_, agency, inst.tmp / "homes" / sys_) for sys_, agency in (AMQP, HTTPS)
        }
        n, rounds = args.messages, args.rounds
        print(f"签名 signing {2 * n * rounds} notices (the sender's cost, before any clock) …")
        loop = asyncio.get_running_loop()
        msgs = {
            r[0]: await loop.run_in_executor(None, presign, s.state_dir, SENDER, r, n * rounds) for r in (AMQP, HTTPS)
        }
        inst.start_hub(2)
        port = free_port()
        gateway = subprocess.Popen(
            # The link's capacity is measured, not the directory's per-system limits: each delivery over HTTPS is
            # two requests (the poll, the acknowledgement), so the default 200 requests a second would cap it at 100.
            [
                *(sys.executable, "-m", "hub.cli", "gateway", "--host", "127.0.0.1", "--port", str(port)),
                *("--default-rate", "100000", "--default-concurrency", "1000"),
            ],
            env=inst.env(),
            cwd=ROOT,
            stdout=(inst.tmp / "gateway.log").open("ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        await wait_for_port(port, gateway)
        url = f"https://127.0.0.1:{port}"
        transport = await Transport.connect(s, client_name="bench-sdk-https")
        from hub.store.db import create_pool

        pool = await create_pool(s.pg_dsn, min_size=1, max_size=2)
        target = Target(names.inbound_exchange, "normal")
        results: dict[str, list[tuple[float, float, float]]] = {"amqp": [], "https": []}
        for r in range(rounds):
            order = [("amqp", AMQP), ("https", HTTPS)]
            for link, (system, _) in order if r % 2 == 0 else order[::-1]:
                part = msgs[system][r * n : (r + 1) * n]
                await offer_backlog(transport, target, part)
                deadline = time.monotonic() + 120
                while await _delivered(pool, system) < (r + 1) * n:  # the hub's work, before the clock
                    if time.monotonic() > deadline:
                        print(f"失败 failed: {system}'s queue did not fill: see {inst.hub_log}", file=sys.stderr)
                        return 1
                    await asyncio.sleep(0.2)
                per_s, cpu, gw = await _round(
                    homes[system],
                    system,
                    url if link == "https" else "",
                    n,
                    gateway.pid if link == "https" else None,
                )
                results[link].append((per_s, cpu, gw))
                extra = f", gateway {gw:.2f} ms" if link == "https" else ""
                print(
                    f"  第 {r + 1} 轮 round {r + 1}: {link:5}  {per_s:7.0f} deliveries/s   adapter {cpu:.2f} ms CPU a delivery{extra}"
                )
        https = statistics.median(x[0] for x in results["https"])
        amqp = statistics.median(x[0] for x in results["amqp"])
        print(f"sdk_https_per_s={https:.0f} sdk_amqp_per_s={amqp:.0f} https_ratio={https / amqp:.2f}")
        return 0
    finally:
        if transport is not None:
            await transport.close()
        if pool is not None:
            await pool.close()
        if gateway is not None and gateway.poll() is None:
            gateway.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                gateway.wait(20)
        await inst.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--messages", type=int, default=2000, help="deliveries a round and link (2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the links taking turns; medians (3)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 100 deliveries, one round")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.rounds = 100, 1
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
