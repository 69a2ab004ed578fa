"""HTTPS gateway benchmark (issue 11): signed ~2 KB envelopes over HTTPS with keep-alive and client certificates,
against (a) the hub's gateway (``hub gateway`` in front of ``hub run``: the whole examination, the hub's signed
receipt in the response) and (b) a bare aiohttp handler with the same TLS (the hub CA's server certificate, client
certificates required) that publishes the body to RabbitMQ with a publisher confirm and answers 202. Same load,
same run: a fixed rate (default 200 requests/s) for latency, then flat out for throughput, in rounds (default 3:
the two paths take turns, and the median round of each is compared, so that a neighbour's burst on a shared VM
slows one phase, not the figure).

Last line: ``gateway_ratio=<hub/bare> gateway_per_s=<n> bare_per_s=<n> p99_ms=<n>`` (p99 of the gateway at the fixed
rate). Goal (issue 11): ratio ≥ 0.5, p99 ≤ 50 ms at 200 requests/s.

The hub side needs ``hub.gateway`` (imported lazily). Without it the bench measures the baseline only, says the
gateway is missing and exits 2.

Usage: ``.venv/bin/python bench/gateway.py [--quick] [--rate 200] [--seconds 15] [--flat 3000] [--connections 128]
[--rounds 3] [--examiners N]``.
Internally the bare server is this script again: ``bench/gateway.py --serve-bare PORT CERT KEY CAFILE AMQP QUEUE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shlex
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _e2e_env import Installation

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GOAL_RATIO, GOAL_P99_MS = 0.5, 50.0
#: Requests sent before each phase's clock starts, to open the keep-alive connections.
WARM = 32
#: Keep-alive connections of the flat-out phase, the same for both paths. Throughput is what a path carries with the
#: machine busy: with 16 the hub path kept it only about 60 % busy (each request waited for the batch before its own,
#: so the figure was the latency of a small serial pipeline); with 128 the bare path keeps it 80-86 % busy and the hub
#: path 86-91 % (2026-12-05; more makes neither carry more).
CONNECTIONS = 128


# ---------------------------------------------------------------------------------------------------- the baseline


async def serve_bare(port: int, cert: str, key: str, cafile: str, amqp_url: str, queue: str) -> None:
    """The bare baseline: aiohttp over TLS with client certificates required (the hub root + issuing CA as cafile),
    one aio-pika channel with publisher confirms; each POST body is published (persistent) to ``queue`` and answered
    202 once the broker confirmed it."""
    import aio_pika
    from aiohttp import web

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=cafile)

    conn = await aio_pika.connect_robust(amqp_url)
    channel = await conn.channel(publisher_confirms=True)
    exchange = channel.default_exchange

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        await exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), queue)
        return web.Response(status=202, text="accepted")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/messages", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await conn.close()


# ---------------------------------------------------------------------------------------------------- the client


#: CPU clock ticks of one process, or of a group of processes (pid → ticks).
Ticks = int | dict[int, int]


@dataclass
class Result:
    name: str
    sent: int = 0
    ok: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    #: CPU ticks of the parts (``flat_out``'s ``sample``) when the clock started and when the last answer came:
    #: the warm-up's TLS handshakes and the connections' close are outside, as they are outside ``seconds``.
    cpu: tuple[dict[str, Ticks], dict[str, Ticks]] | None = None

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        values = sorted(self.latencies_ms)
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]  # nearest rank

    def line(self) -> str:
        errs = ", ".join(f"{k}×{v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"  {self.name:28} {self.ok:6}/{self.sent:<6} in {self.seconds:6.2f} s = {self.per_s:8.1f}/s   "
            f"p50 {self.pct(0.50):7.1f} ms  p99 {self.pct(0.99):7.1f} ms  max {max(self.latencies_ms or [0]):7.1f} ms"
            f"   errors: {errs}"
        )


def _median_result(results: list[Result], *, upper: bool = False) -> Result:
    """The round whose requests a second are the median. Of an even count, the lower middle one (``upper``: the upper
    one): the hub's side takes the lower and the baseline the upper, so that an even count never flatters the ratio."""
    ranked = sorted(results, key=lambda r: r.per_s)
    return ranked[len(ranked) // 2 if upper else (len(ranked) - 1) // 2]


def client_context(root_ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(root_ca))  # the hub root only; the server sends its issuing CA
    ctx.load_cert_chain(cert, key)
    return ctx


async def _post(session: object, url: str, body: bytes, result: Result, started: float) -> None:
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    result.sent += 1
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/xml"}) as resp:
            await resp.read()
            if resp.status == 202:
                result.ok += 1
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                key = str(resp.status)
                result.errors[key] = result.errors.get(key, 0) + 1
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        key = type(exc).__name__
        result.errors[key] = result.errors.get(key, 0) + 1


async def warm_up(session: object, url: str, warm: list[bytes]) -> None:
    """Open the keep-alive connections before the clock starts (TLS handshakes are not what is measured): the
    ``warm`` requests at once, each on a connection of its own, which then stay in the pool."""
    scratch = Result("warm-up")
    await asyncio.gather(*(_post(session, url, b, scratch, time.perf_counter()) for b in warm))
    if scratch.errors:
        raise RuntimeError(f"warm-up requests to {url} failed: {scratch.errors}")


async def paced(
    name: str, url: str, ctx: ssl.SSLContext, bodies: list[bytes], rate: float, warm: list[bytes]
) -> Result:
    """Offer ``bodies`` on an absolute schedule of ``rate`` per second; latency from the scheduled time (a path
    that falls behind shows the queue it built up)."""
    import aiohttp

    result = Result(f"{name} @ {rate:g}/s")
    connector = aiohttp.TCPConnector(ssl=ctx, limit=256, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await warm_up(session, url, warm)
        tasks: list[asyncio.Task[None]] = []
        t0 = time.perf_counter() + 0.05
        for i, body in enumerate(bodies):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(session, url, body, result, due)))
        await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - t0
    return result


async def flat_out(
    name: str,
    url: str,
    ctx: ssl.SSLContext,
    bodies: list[bytes],
    connections: int,
    warm: list[bytes],
    sample: Callable[[], dict[str, Ticks]] | None = None,
) -> Result:
    """``connections`` keep-alive connections, each sending its next request as soon as the last one answered.
    ``sample`` (CPU ticks of the parts) is read when the clock starts and when it stops (``Result.cpu``)."""
    import aiohttp

    result = Result(f"{name} flat out ×{connections}")
    connector = aiohttp.TCPConnector(ssl=ctx, limit=connections, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60)
    queue = iter(bodies)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await warm_up(session, url, warm)

        async def one_connection() -> None:
            for body in queue:
                await _post(session, url, body, result, time.perf_counter())

        before = sample() if sample is not None else {}
        t0 = time.perf_counter()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        result.seconds = time.perf_counter() - t0
        if sample is not None:
            result.cpu = (before, sample())
    return result


async def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------------- CPU


def hub_cpu(inst: Installation, gateway: subprocess.Popen[bytes] | None) -> dict[str, Ticks]:
    """CPU clock ticks so far of the hub's side: the gateway process, its examiner processes, ``hub run``
    (supervisor and workers), and the PostgreSQL backends of the bench's database (from /proc). A group of processes
    is read per process (pid → ticks): ``cpu_line`` counts each one from its first reading, so a process that ends
    between two readings (an autovacuum worker of the database, say) is left out instead of taking its whole past
    off the sum (before: "PostgreSQL -0.80" ms a request)."""
    from _e2e_env import _cmdline, _comm, cpu_ticks

    db = inst.db_name
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    pg = [p for p in pids if _comm(p) == "postgres" and db and db in _cmdline(p)]
    examiners = [p for p in pids if gateway is not None and _ppid(p) == gateway.pid and _comm(p) != "postgres"]
    return {
        "gateway": cpu_ticks(gateway.pid) if gateway is not None else 0,
        "examiners": {p: cpu_ticks(p) for p in examiners},
        "hub run": {p: cpu_ticks(p) for p in inst.hub_pids()},
        "PostgreSQL": {p: cpu_ticks(p) for p in pg},
        # not the hub's: the load's own cost, and the broker both paths use (printed apart, see cpu_line)
        "client": cpu_ticks(os.getpid()),
        "machine": _machine_busy(),
        "RabbitMQ": {p: cpu_ticks(p) for p in pids if _comm(p) == "beam.smp"},
    }


def _ticks_between(before: Ticks, after: Ticks) -> int:
    """Ticks between two readings of one process (int) or of a group (pid → ticks: ``_e2e_env.ticks_between``)."""
    from _e2e_env import ticks_between

    if isinstance(after, dict):
        return ticks_between(before if isinstance(before, dict) else {}, after, after)
    assert isinstance(before, int)
    return after - before


def _machine_busy() -> int:
    """Busy clock ticks of the whole machine so far (all CPUs: /proc/stat without idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4] - sum(fields[8:])  # guest time is already in user


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def cpu_line(
    before: dict[str, Ticks], after: dict[str, Ticks], requests: int, seconds: float = 0.0
) -> tuple[str, float]:
    """'CPU ms per request' of each part and in all (ticks of 1/100 s), and the total."""
    hz = os.sysconf("SC_CLK_TCK")
    per = {k: _ticks_between(before[k], after[k]) * 1000 / hz / max(1, requests) for k in before}
    besides = {k: per.pop(k) for k in ("client", "RabbitMQ", "machine") if k in per}
    total = sum(per.values())
    text = ", ".join(f"{k} {v:.2f}" for k, v in per.items()) + f" = {total:.2f} ms CPU a request"
    if besides:
        text += " (besides: " + ", ".join(f"{k} {v:.2f}" for k, v in besides.items()) + ")"
    if seconds and "machine" in before:
        busy = _ticks_between(before["machine"], after["machine"]) / hz / seconds / (os.cpu_count() or 1)
        text += f"; the machine {busy:.0%} busy"
    return text, total


# ---------------------------------------------------------------------------------------------------- the run


def gateway_available() -> bool:
    try:
        import hub.gateway  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


async def run(args: argparse.Namespace) -> int:
    from _e2e_env import SENDER, Installation, _die_with_parent
    from _e2e_load import presign

    from hub.commands import trust_admin as admin
    from hub.pipeline.client import credential_paths
    from hub.trust import pki

    has_gateway = gateway_available()
    inst = Installation()
    bare: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    try:
        s = await inst.open()
        pki_dir = s.state_dir / "pki"
        paths = pki.PkiPaths(pki_dir)
        await admin.issue_server(s, pki_dir, ["127.0.0.1", "localhost"])
        cafile = inst.tmp / "hub-cas.pem"
        cafile.write_bytes(paths.root_cert.read_bytes() + paths.issuing_cert.read_bytes())
        key, cert = credential_paths(s, SENDER[0])
        ctx = client_context(paths.root_cert, cert, key)

        n_paced = int(args.rate * args.seconds)
        # Every flat-out connection is opened by a warm-up request before the clock starts (TLS handshakes are not
        # what is measured): with more connections than WARM, the rest were opened inside the measured phase.
        warm_flat = max(WARM, args.connections)
        per_path = n_paced + WARM + args.rounds * (args.flat + warm_flat)
        paths_n = 2 if has_gateway else 1
        # --broker-path: the gateway again on the path through the inbound queue, with a bare flat-out of its own
        broker_n = (n_paced + WARM + 2 * (args.flat + warm_flat)) if has_gateway and args.broker_path else 0
        print(f"签名 signing {per_path * paths_n + broker_n} envelopes (the sender's cost, before any clock starts) …")
        from _e2e_env import RECIPIENT

        messages = [body for _, body in presign(s.state_dir, SENDER, RECIPIENT, per_path * paths_n + broker_n)]
        broker_msgs = messages[per_path * paths_n :]
        messages = messages[: per_path * paths_n]
        size = sum(map(len, messages)) / len(messages)
        print(f"  {len(messages)} signed document.official envelopes, {size / 1024:.1f} KB each on the wire")

        bare_port = free_port()
        bare = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-bare",
                str(bare_port),
                str(paths.gateway_cert),
                str(paths.gateway_key),
                str(cafile),
                s.amqp_url,
                inst.raw_in,
            ],
            cwd=ROOT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        await wait_for_port(bare_port, bare)
        bare_url = f"https://127.0.0.1:{bare_port}/v1/messages"

        if has_gateway:
            inst.start_hub(args.workers)
            gw_port = free_port()

            def start_gateway(env: dict[str, str]) -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "hub.cli",
                        "gateway",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(gw_port),
                        # Throughput, not the sender's limit, is measured: the bench's sender has no directory rate,
                        # so the gateway's default would throttle the flat-out phase (429) long before the hub's work.
                        "--default-rate",
                        "100000",
                        "--default-concurrency",
                        "1000",
                        *(["--examiners", str(args.examiners)] if args.examiners is not None else []),
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=(inst.tmp / "gateway.log").open("ab"),
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                    start_new_session=True,
                )

            gateway = start_gateway(inst.env())
            await wait_for_port(gw_port, gateway)
            gw_url = f"https://127.0.0.1:{gw_port}/v1/messages"

        bare_msgs, hub_msgs = messages[:per_path], messages[per_path:]
        results: dict[str, Result] = {}
        print(
            f"负载 load: {n_paced} requests at {args.rate:g}/s, then {args.flat} flat out on {args.connections} connections"
        )
        if gateway is not None:
            from _e2e_env import _comm, children_of

            examiners = [p for p in children_of(gateway.pid) if _comm(p) != "postgres"]
            how = "--examiners " + str(args.examiners) if args.examiners is not None else "its default"
            print(f"  hub gateway ({how}): {len(examiners)} examiner process(es) beside the gateway process")

        # each path: [warm-up paced | paced | (warm-up flat | flat) × rounds]
        def parts(msgs: list[bytes]) -> tuple[list[bytes], list[bytes], list[tuple[list[bytes], list[bytes]]]]:
            a, b = WARM, WARM + n_paced
            step = warm_flat + args.flat
            rounds = [(msgs[c : c + warm_flat], msgs[c + warm_flat : c + step]) for c in range(b, len(msgs), step)]
            return msgs[:a], msgs[a:b], rounds

        bw1, bp, bare_rounds = parts(bare_msgs)
        hw1, hp, hub_rounds = parts(hub_msgs)  # empty without the gateway
        results["bare_paced"] = await paced("bare aiohttp + confirm", bare_url, ctx, bp, args.rate, bw1)
        print(results["bare_paced"].line())
        if has_gateway:
            results["hub_paced"] = await paced("hub gateway", gw_url, ctx, hp, args.rate, hw1)
            print(results["hub_paced"].line())
        from _e2e_env import cpu_ticks

        async def measured(
            side: str,
            name: str,
            url: str,
            bodies: list[bytes],
            warm: list[bytes],
            sample: Callable[[], dict[str, Ticks]],
        ) -> tuple[Result, float]:
            """A flat-out phase, its line and the CPU a request of each part while its clock ran."""
            result = await flat_out(name, url, ctx, bodies, args.connections, warm[: args.connections], sample)
            if result.cpu is None:
                raise RuntimeError(f"{name}: no CPU readings")
            text, cpu_ms = cpu_line(*result.cpu, len(bodies), result.seconds)
            print(result.line())
            print(f"    {side} side, flat out (/proc): {text}")
            return result, cpu_ms

        def bare_sample() -> dict[str, Ticks]:
            ticks = {**hub_cpu(inst, None), "bare handler": cpu_ticks(bare.pid)}
            return {k: ticks[k] for k in ("bare handler", "client", "RabbitMQ", "machine")}

        # The flat-out phases in rounds, the two paths taking turns (bare first in odd rounds, the hub first in even
        # ones): a neighbour's burst on the VM then slows one phase of one round, not one path's only measurement,
        # and the median of each path's rounds leaves it out.
        bare_flats: list[Result] = []
        hub_flats: list[Result] = []
        hub_cpu_ms: list[float] = []

        async def bare_phase(r: int) -> None:
            warm, flat = bare_rounds[r]
            bare_flats.append((await measured("bare", "bare aiohttp + confirm", bare_url, flat, warm, bare_sample))[0])

        async def hub_phase(r: int) -> None:
            warm, flat = hub_rounds[r]
            result, cpu_ms = await measured("hub", "hub gateway", gw_url, flat, warm, partial(hub_cpu, inst, gateway))
            hub_flats.append(result)
            hub_cpu_ms.append(cpu_ms)

        order = [bare_phase, hub_phase] if has_gateway else [bare_phase]
        for r in range(args.rounds):
            print(f"  第 {r + 1} 轮 round {r + 1} of {args.rounds}, flat out:")
            for phase in order if r % 2 == 0 else order[::-1]:
                await phase(r)
        results["bare_flat"] = _median_result(bare_flats, upper=True)
        if has_gateway:
            results["hub_flat"] = _median_result(hub_flats)
            cpu_ms = statistics.median(hub_cpu_ms)
            if args.rounds > 1:
                each = ", ".join(f"{h.per_s / b.per_s:.2f}" for h, b in zip(hub_flats, bare_flats, strict=True))
                print(
                    f"  各轮 rounds: ratio {each}; medians: hub {results['hub_flat'].per_s:.0f}/s, "
                    f"bare {results['bare_flat'].per_s:.0f}/s"
                )

        bare_per_s = results["bare_flat"].per_s
        if not has_gateway:
            print(
                f"bare_per_s={bare_per_s:.0f} bare_p99_ms={results['bare_paced'].pct(0.99):.1f}\n"
                "网关缺失 gateway missing: hub.gateway is not in this checkout; only the baseline ran"
            )
            return 2
        hub_per_s = results["hub_flat"].per_s
        p99 = results["hub_paced"].pct(0.99)
        extra = ""
        if broker_msgs:
            # The first design (HUB_GATEWAY_IN_PROCESS=0: publish to the inbound queue, wait for a worker's answer)
            # on the same installation, with a bare flat-out of its own beside it (the VM's speed drifts).
            _stop(gateway)
            gateway = start_gateway({**inst.env(), "HUB_GATEWAY_IN_PROCESS": "0"})
            await wait_for_port(gw_port, gateway)
            print("经入站队列 through the inbound queue (HUB_GATEWAY_IN_PROCESS=0, the first design):")
            ow1, op, broker_rounds = parts(broker_msgs)
            (ow2, of), (bw3, bf3) = broker_rounds[:2]
            results["old_paced"] = await paced("gateway via queue", gw_url, ctx, op, args.rate, ow1)
            print(results["old_paced"].line())
            results["bare_flat2"] = await flat_out(
                "bare aiohttp + confirm", bare_url, ctx, bf3, args.connections, bw3[: args.connections]
            )
            print(results["bare_flat2"].line())
            results["old_flat"], old_cpu_ms = await measured(
                "hub", "gateway via queue", gw_url, of, ow2, partial(hub_cpu, inst, gateway)
            )
            old_ratio = results["old_flat"].per_s / results["bare_flat2"].per_s
            extra = (
                f" gateway_ratio_queue={old_ratio:.2f} p99_ms_queue={results['old_paced'].pct(0.99):.1f}"
                f" cpu_ms={cpu_ms:.2f} cpu_ms_queue={old_cpu_ms:.2f}"
            )
        every = {id(r): r for r in (*results.values(), *bare_flats, *hub_flats)}.values()
        failed = [r for r in every if r.errors or r.ok < r.sent]
        if failed:
            # A figure made of refused or failed requests measures nothing: every request of every phase must have
            # been answered 202 (the hub: accepted, its signed receipt in the response).
            names = "; ".join(f"{r.name}: {r.sent - r.ok} of {r.sent}" for r in failed)
            raise RuntimeError(f"requests not answered 202 ({names}); no figure is printed")
        verdict = "met" if hub_per_s / bare_per_s >= GOAL_RATIO and p99 <= GOAL_P99_MS else "NOT met"
        print(f"目标 goal (ratio ≥ {GOAL_RATIO}, p99 ≤ {GOAL_P99_MS:.0f} ms at {args.rate:g}/s): {verdict}")
        print(
            f"gateway_ratio={hub_per_s / bare_per_s:.2f} gateway_per_s={hub_per_s:.0f} bare_per_s={bare_per_s:.0f} "
            f"p99_ms={p99:.1f}{extra}"
        )
        return 0
    finally:
        _stop(gateway)
        _stop(bare)
        for problem in await inst.close():
            print(f"清理 clean-up: {problem}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rate", type=float, default=200.0, help="offered requests/s for the latency phase (200)")
    p.add_argument("--seconds", type=float, default=15.0, help="length of the latency phase (15 s)")
    p.add_argument("--flat", type=int, default=3000, help="requests of a flat-out phase (3000)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="flat-out phases per path, the paths taking turns; the median of each path's is compared (3)",
    )
    p.add_argument(
        "--connections",
        type=int,
        default=CONNECTIONS,
        help=f"keep-alive connections flat out, both paths ({CONNECTIONS}: enough to keep either busy)",
    )
    p.add_argument("--workers", type=int, default=2, help="hub run --workers (2)")
    p.add_argument(
        "--examiners", type=int, default=None, help="hub gateway --examiners N (default: the gateway's own default)"
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 s at the rate, 600 flat out")
    p.add_argument(
        "--broker-path",
        action="store_true",
        help="then the gateway again with HUB_GATEWAY_IN_PROCESS=0 (through the inbound queue, the first design), "
        "beside a bare flat-out of its own: adds gateway_ratio_queue= and p99_ms_queue= to the last line",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be 1 or more")
    if args.quick:
        args.seconds, args.flat, args.rounds = 3.0, 600, 1
    return args


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-bare":
        port, cert, key, cafile, amqp, queue = sys.argv[2:8]
        asyncio.run(serve_bare(int(port), cert, key, cafile, amqp, queue))
        return 0
    args = parse_args()
    load = os.getloadavg()
    print("HTTPS 网关压测 gateway benchmark: signed envelopes over mutual TLS, hub gateway vs a bare aiohttp handler")
    print(f"机器 machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"命令 command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        print("中断 interrupted; everything the bench created was removed", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"失败 failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
