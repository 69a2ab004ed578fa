"""End-to-end benchmark: signed document.official messages through the whole hub, beside a bare aio-pika relay
on the same broker, in the same run.

Hub path (what is measured)::

    bench publisher ──► ns.in (lane normal) ──► `hub run --workers N` ──► ns.q.city-220100-oa ──► bench sink
                                                 parse, validate, verify,          (and a hub.receipt to
                                                 dedupe, route + gate, record in    ns.q.county-220122-oa)
                                                 PostgreSQL, sign delivery and
                                                 receipt, publish with confirms, ack

Raw path (the floor)::

    bench publisher ──► ns.raw.in ──► bench/_relay.py × N ──► ns.raw.out ──► bench sink
                                      consume, publish with confirms, ack; nothing else

Each message is one ``document.official`` (the ~2 KB ``typical-notice`` sample as body; ~4.5 KB once signed
with the certificate chain) from 农安县林业局 ``county-220122-oa`` to exactly one recipient system, 长春市林业局
``city-220100-oa``: one delivery and one receipt per message. The raw path carries the very same bytes. All
messages are signed before any clock starts (signing is the sender's cost) and every message id is distinct.

Phases, hub and raw side by side (raw first in each pair):

* throughput — the whole backlog published as fast as the broker confirms; from the first publish until the
  last message arrives in the recipient's queue. Every hub message must also get its hub.receipt.
* latency — a paced publisher offers ``--rate`` messages/s (300) for ``--seconds`` (20); latency is arrival
  at the recipient minus publish time, per message id; p50 and p99 (nearest rank).

The installation is the bench's own: a fresh PostgreSQL database ``hub_bench_<tag>``, a RabbitMQ namespace
``bench-<tag>``, a CA and keys in a temporary state dir; all removed at the end, also on failure or Ctrl-C. The
measuring consumer takes messages without acks (it is the instrument, not the system under test). CPU seconds
per component come from /proc (hub = supervisor + workers; postgres = the backends of the bench's database;
other = everything else on the machine, e.g. other users of the shared cores).

Then (unless ``--no-fast-off``) the hub is stopped and ``hub run`` started again with ``HUB_AMQP_FAST=0`` (aiormq's
own code paths, hub/transport/_aiormq_fast.py off) on the same installation, and the throughput rounds are repeated
with fresh messages, interleaved with the raw relay again (issue 18): its ratio and the hub's CPU per message with
and without the fast paths are printed beside the first run's.

Before that (unless ``--no-ops``) the ops page (issue 15): ``hub ops`` serves the installation in a process of its
own, an operator of the bench logs in, and throughput rounds are repeated with fresh messages — per round the raw
relay, then the hub with the page closed and the hub with the page open (the order alternating between rounds;
``--ops-rounds`` 6 of ``--ops-messages`` 3 × ``--messages`` for each variant): while
it is open, a client in the bench scrapes ``/metrics`` every second and polls ``/api/overview`` every 2 s, as the
open overview page does. Both hub variants are divided by the same raw rounds, so the page's whole cost (its process,
the management API and PostgreSQL reads it causes) counts against the hub: ``ops_delta_pct`` is the change of the
hub's throughput with the page open against closed in the same minutes, the median over the rounds of each
back-to-back pair (goal: within ±5 %); ``e2e_ratio_ops`` is the open rounds' throughput over the raw rounds'. The
CPU per message of hub run + RabbitMQ + PostgreSQL (+ the ops process while open) is printed beside: on a shared
machine it is the steadier measure of what the page costs.

The last line is the figure issue 4 asks for, the fast-path-off ratio (issue 18), and the ops-page ratios
(issue 15)::

    e2e_ratio=<hub msg/s ÷ raw msg/s> hub_per_s=<n> raw_per_s=<n> p99_ms=<hub p99 at the offered rate> e2e_ratio_fast_off=<the same ratio with HUB_AMQP_FAST=0> e2e_ratio_ops=<the ratio with the ops page open> ops_delta_pct=<open vs closed, %>

Goal: e2e_ratio ≥ 0.50 and p99_ms ≤ 50 at 300 messages/s. Usage::

    .venv/bin/python bench/e2e.py            # about 2 minutes on 2 cores
    .venv/bin/python bench/e2e.py --quick    # smoke run, about 20 s
    .venv/bin/python bench/e2e.py --profile /tmp/e2e-prof   # + where the workers' time goes (needs py-spy)
    .venv/bin/python bench/e2e.py --keep /tmp/e2e-keep      # + every latency and the hub's log, to find stalls

``--keep DIR`` writes ``latency-hub.tsv`` and ``latency-raw.tsv`` (one line per message in publish order: wall-clock
publish time, latency in ms) and ``hub.log`` (the hub's JSON log lines, same clock), so a latency spike can be put
beside what the hub did at that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _e2e_env import RECIPIENT, SENDER, CpuGroups, CpuSnapshot, Installation
from _e2e_load import Arrivals, Sink, Target, offer_backlog, offer_paced, presign

from hub.errors import HubError

GOAL_RATIO = 0.50
GOAL_P99_MS = 50.0
#: Issue 15: the hub's throughput with the ops page open within this many per cent of it closed.
GOAL_OPS_DELTA_PCT = 5.0
#: What the open overview page asks for (seconds between requests).
SCRAPE_EVERY_S = 1.0
OVERVIEW_EVERY_S = 2.0


@dataclass
class Phase:
    """One measured phase of one path."""

    path: str  # "hub" | "raw"
    kind: str  # "throughput" | "latency"
    n: int
    seconds: float
    latencies_ms: list[float]
    cpu: dict[str, float]
    receipts_ms: list[float] | None = None
    profile: list[Path] | None = None
    others: list[tuple[str, float]] | None = None

    @property
    def per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0


def merge(rounds: list[Phase]) -> Phase:
    """Several rounds of one path's throughput as one phase: all their messages over all their time."""
    cpu: dict[str, float] = {}
    others: dict[str, float] = {}
    for p in rounds:
        for k, v in p.cpu.items():
            cpu[k] = cpu.get(k, 0.0) + v
        for name, sec in p.others or []:
            others[name] = others.get(name, 0.0) + sec
    profile = [f for p in rounds for f in (p.profile or [])]
    return Phase(
        rounds[0].path,
        rounds[0].kind,
        sum(p.n for p in rounds),
        sum(p.seconds for p in rounds),
        [],
        cpu,
        profile=profile or None,
        others=sorted(others.items(), key=lambda kv: -kv[1]) or None,
    )


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


# ---------------------------------------------------------------------------------------------------- the ops page


class OpsPage:
    """``hub ops`` on the bench's installation (plain HTTP on loopback, a process of its own), an operator of the
    bench logged in, and — while ``open`` — the requests of an open overview page: ``/metrics`` every second (a
    Prometheus scraper) and ``/api/overview`` every 2 s (the page's own poll)."""

    NAME = "bench-ops"

    def __init__(self, inst: Installation) -> None:
        self.inst = inst
        self.proc: Any = None
        self.session: Any = None
        self.base = ""
        self._task: asyncio.Task[None] | None = None
        self.requests: dict[str, list[float]] = {"/metrics": [], "/api/overview": []}
        self.failures: list[str] = []
        self.cpu_s = 0.0
        self.open_s = 0.0
        self._since: tuple[int, float] = (0, 0.0)

    async def start(self) -> None:
        import re
        import secrets
        import socket
        import subprocess

        import aiohttp
        from _e2e_env import ROOT, _die_with_parent

        env = self.inst.env()
        password = secrets.token_urlsafe(16)
        added = subprocess.run(
            [sys.executable, "-m", "hub.cli", "operators", "add", self.NAME, "--role", "duty", "--password-stdin"],
            input=password + "\n",
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if added.returncode != 0:
            raise RuntimeError(f"hub operators add failed: {added.stdout}{added.stderr}")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = (self.inst.tmp / "ops.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "ops", "--plain-http", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        log.close()
        self.base = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=30)
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"hub ops exited with {self.proc.returncode}:\n{self.inst.tail(self.inst.tmp / 'ops.log')}"
                )
            try:
                async with self.session.get(self.base + "/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("hub ops did not answer /health within 60 s")
            await asyncio.sleep(0.2)
        async with self.session.get(self.base + "/login") as r:
            found = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        if found is None:
            raise RuntimeError("the ops login page has no CSRF field")
        form = {"csrf": found.group(1), "next": "/", "name": self.NAME, "password": password}
        async with self.session.post(self.base + "/login", data=form, allow_redirects=False) as r:
            if r.status not in (302, 303):
                raise RuntimeError(f"the bench's operator could not log in to the ops page ({r.status})")
        async with self.session.get(self.base + "/") as r:  # the overview page itself, once
            if r.status != 200:
                raise RuntimeError(f"the overview page answered {r.status}")
        async with self.session.get(self.base + "/api/overview") as r:
            if r.status != 200:
                raise RuntimeError(f"/api/overview answered {r.status}")

    async def _get(self, path: str) -> None:
        t = time.perf_counter()
        try:
            async with self.session.get(self.base + path) as r:
                await r.read()
                if r.status != 200:
                    self.failures.append(f"{path} {r.status}")
        except Exception as exc:
            self.failures.append(f"{path} {type(exc).__name__}")
            return
        self.requests[path].append((time.perf_counter() - t) * 1000)

    async def _poll(self) -> None:
        start = time.monotonic()
        n = 0
        while True:
            tasks = [asyncio.create_task(self._get("/metrics"))]
            if n % round(OVERVIEW_EVERY_S / SCRAPE_EVERY_S) == 0:
                tasks.append(asyncio.create_task(self._get("/api/overview")))
            n += 1
            await asyncio.gather(*tasks)
            await asyncio.sleep(max(0.0, start + n * SCRAPE_EVERY_S - time.monotonic()))

    def open(self) -> None:
        from _e2e_env import cpu_ticks

        self._since = (cpu_ticks(self.proc.pid), time.monotonic())
        self._task = asyncio.create_task(self._poll())

    async def close(self) -> None:
        from _e2e_env import TICKS, cpu_ticks

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            ticks, since = self._since
            self.cpu_s += (cpu_ticks(self.proc.pid) - ticks) / TICKS
            self.open_s += time.monotonic() - since

    async def stop(self) -> None:
        await self.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 10)
            except Exception:
                self.proc.kill()


@dataclass
class OpsResult:
    raw: Phase
    closed: Phase
    opened: Phase
    rounds: list[tuple[float, float, float]]  # raw, hub closed, hub open (msg/s)
    page: OpsPage

    @property
    def ratio_closed(self) -> float:
        return self.closed.per_s / self.raw.per_s if self.raw.per_s else 0.0

    @property
    def ratio_open(self) -> float:
        return self.opened.per_s / self.raw.per_s if self.raw.per_s else 0.0

    @property
    def pooled_delta_pct(self) -> float:
        """All open rounds' messages over their time against the closed rounds'."""
        return (self.opened.per_s / self.closed.per_s - 1) * 100 if self.closed.per_s else 0.0

    @property
    def delta_pct(self) -> float:
        """The median over the rounds of (open ÷ closed − 1): each pair ran back to back, and one round slowed by
        the neighbours moves a median less than the pooled figure."""
        import statistics

        pairs = [(o / c - 1) * 100 for _, c, o in self.rounds if c > 0]
        return statistics.median(pairs) if pairs else 0.0


# ---------------------------------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.inst = Installation()
        self.cpu = CpuGroups(self.inst)
        self.sink = Sink()
        self.transport: Any = None
        self.hub_target: Target
        self._normal_queue = ""
        self.raw_target: Target
        self.integrity = ""
        self.batches: dict[str, tuple[float, float, float]] = {}
        self.rounds: list[tuple[float, float]] = []
        #: The second hub run, with HUB_AMQP_FAST=0: (raw, hub) throughput and its rounds (raw msg/s, hub msg/s).
        self.fast_off: tuple[Phase, Phase] | None = None
        self.rounds_off: list[tuple[float, float]] = []
        #: The ops page's rounds (issue 15).
        self.ops: OpsResult | None = None
        self.ops_page: OpsPage | None = None
        self.profiler: Any = None
        if args.profile is not None:
            from _e2e_profile import Profiler

            self.profiler = Profiler(args.profile)

    async def run(self) -> list[Phase]:
        a = self.args
        t = time.perf_counter()
        settings = await self.inst.open()
        from hub.transport import Names, Transport

        names = Names(settings.namespace)
        self.hub_target = Target(names.inbound_exchange, "normal")
        self.raw_target = Target("", self.inst.raw_in)
        n_lat = int(a.rate * a.seconds)
        n_off = a.warmup + a.messages if a.fast_off else 0  # the second hub run's messages (distinct ids)
        n_ops = 2 * a.ops_messages if a.ops else 0  # the ops rounds: the page closed, the page open (distinct ids)
        total = a.warmup + a.messages + n_lat + n_ops + n_off
        loop = asyncio.get_running_loop()
        msgs = await loop.run_in_executor(None, presign, settings.state_dir, SENDER, RECIPIENT, total)
        size = sum(len(b) for _, b in msgs) / len(msgs)
        print(
            f"准备 set-up: database {self.inst.db_name}, namespace {self.inst.namespace}, {total} messages signed "
            f"in advance (mean {size:.0f} bytes) — {time.perf_counter() - t:.1f} s"
        )
        warm, backlog = msgs[: a.warmup], msgs[a.warmup : a.warmup + a.messages]
        paced = msgs[a.warmup + a.messages : a.warmup + a.messages + n_lat]
        ops_msgs, off = msgs[total - n_off - n_ops : total - n_off], msgs[total - n_off :]

        cmd = self.inst.start_hub(a.workers, processes=not a.no_processes)
        self.inst.start_relays(a.relays, settings.prefetch)
        print(
            f"枢纽 hub: {shlex.join(['hub', *cmd[3:]])} (pid {self.inst.hub.pid if self.inst.hub else '?'}); "
            f"中继 relay: {a.relays} × bench/_relay.py, prefetch {settings.prefetch}"
        )

        # The instrument (publisher and sink, this process) reads frames with the hub's reader, as it did when every
        # Transport.connect installed it (before issue 18): it costs the same for both paths and both hub runs.
        from hub.transport import _aiormq_fast

        _aiormq_fast.install_reader()
        self.transport = await Transport.connect(settings, client_name="bench-publisher")
        if settings.queue_type == "quorum" and not self.transport.names.quorum:
            raise RuntimeError(
                "HUB_QUEUE_TYPE=quorum, but the transport built classic names: the quorum wiring (issue 16, "
                "/work/notes/requests.md) is not in this checkout"
            )
        if settings.queue_type == "quorum":
            print("队列类型 queue type: quorum (every queue a quorum queue, urgent deliveries in lanes of their own)")
        await self.sink.start(
            settings.amqp_url,
            recipient_queue=names.system_queue(RECIPIENT[0]),
            sender_queue=names.system_queue(SENDER[0]),
            raw_queue=self.inst.raw_out,
        )
        self._normal_queue = names.inbound_queue("normal")
        await self._ready(self._normal_queue, a.workers, "hub workers")
        if not a.no_processes:
            await self.inst.note_engine()
        await self._ready(self.inst.raw_in, a.relays, "relays")

        # Warm-up: first batches pay for lazy imports, prepared statements, caches; not measured.
        await self._throughput("raw", warm, label="warm-up")
        await self._throughput("hub", warm, label="warm-up")

        # Throughput in interleaved rounds (raw, hub, raw, hub, …) over slices of the backlog: this shared VM's
        # speed drifts by a quarter between minutes, and interleaving puts both paths under the same drift.
        size = math.ceil(len(backlog) / a.rounds)
        raw_rounds: list[Phase] = []
        hub_rounds: list[Phase] = []
        for i in range(a.rounds):
            part = backlog[i * size : (i + 1) * size]
            raw_rounds.append(await self._throughput("raw", part))
            hub_rounds.append(await self._throughput("hub", part))
        self.rounds = [(r.per_s, h.per_s) for r, h in zip(raw_rounds, hub_rounds, strict=True)]
        phases = [
            merge(raw_rounds),
            merge(hub_rounds),
            await self._latency("raw", paced),
            await self._latency("hub", paced),
        ]
        self.batches = hub_batches(self.inst.hub_log, {"throughput": backlog, "latency": paced})
        if a.ops:
            self.ops = await self._ops(ops_msgs[: a.ops_messages], ops_msgs[a.ops_messages :])
        if a.fast_off:
            self.fast_off = await self._fast_off(off[: a.warmup], off[a.warmup :])
        self.integrity = await self._integrity(total)
        if self.sink.errors:
            raise RuntimeError(
                f"the hub answered {len(self.sink.errors)} message(s) with hub.error: {sorted(set(self.sink.errors))}"
            )
        return phases

    async def _fast_off(self, warm: list[tuple[str, bytes]], backlog: list[tuple[str, bytes]]) -> tuple[Phase, Phase]:
        """The same throughput rounds (raw, hub, raw, hub, …) through a second ``hub run`` started with
        HUB_AMQP_FAST=0 (aiormq's own code paths only) on the same installation, after the first one stopped."""
        a = self.args
        await self.inst.stop_hub()
        self.inst.start_hub(a.workers, processes=not a.no_processes, HUB_AMQP_FAST="0")
        pid = self.inst.hub.pid if self.inst.hub else "?"
        print(f"快速路径关闭 fast paths off: hub run --workers {a.workers} again with HUB_AMQP_FAST=0 (pid {pid})")
        await self._ready(self._normal_queue, a.workers, "hub workers (HUB_AMQP_FAST=0)")
        if not a.no_processes:
            await self.inst.note_engine()
        await self._throughput("hub", warm, label="warm-up HUB_AMQP_FAST=0")
        size = math.ceil(len(backlog) / a.rounds)
        raw_rounds: list[Phase] = []
        hub_rounds: list[Phase] = []
        for i in range(a.rounds):
            part = backlog[i * size : (i + 1) * size]
            raw_rounds.append(await self._throughput("raw", part, label="fast-off"))
            hub_rounds.append(await self._throughput("hub", part, label="fast-off"))
        self.rounds_off = [(r.per_s, h.per_s) for r, h in zip(raw_rounds, hub_rounds, strict=True)]
        return merge(raw_rounds), merge(hub_rounds)

    async def _ops(self, closed: list[tuple[str, bytes]], opened: list[tuple[str, bytes]]) -> OpsResult:
        """Throughput rounds with the ops page closed and open (see the module's docstring), same hub run."""
        a = self.args
        page = self.ops_page = OpsPage(self.inst)
        await page.start()
        print(
            f"运维页面 ops page: hub ops (pid {page.proc.pid}) at {page.base}, operator {page.NAME} logged in; "
            f"open = /metrics every {SCRAPE_EVERY_S:g} s + /api/overview every {OVERVIEW_EVERY_S:g} s"
        )
        size = math.ceil(len(closed) / a.ops_rounds)
        raw_rounds: list[Phase] = []
        closed_rounds: list[Phase] = []
        open_rounds: list[Phase] = []
        for i in range(a.ops_rounds):
            part, part_open = closed[i * size : (i + 1) * size], opened[i * size : (i + 1) * size]
            raw_rounds.append(await self._throughput("raw", part, label="ops"))
            for variant in ("closed", "open") if i % 2 == 0 else ("open", "closed"):
                if variant == "open":
                    page.open()
                    open_rounds.append(await self._throughput("hub", part_open, label="ops-open"))
                    await page.close()
                else:
                    closed_rounds.append(await self._throughput("hub", part, label="ops-closed"))
        rounds = [(r.per_s, c.per_s, o.per_s) for r, c, o in zip(raw_rounds, closed_rounds, open_rounds, strict=True)]
        return OpsResult(merge(raw_rounds), merge(closed_rounds), merge(open_rounds), rounds, page)

    async def _integrity(self, hub_messages: int) -> str:
        """After the measurements: a delivery and a receipt verify as hub-signed, PostgreSQL recorded every message
        with its delivery delivered, and nobody got a copy twice."""
        from hub.pipeline.client import Inbox, read_reply
        from hub.store.db import connection
        from hub.trust import TrustStore, Verifier
        from hub.validation import SchemaRegistry

        s = self.inst.settings
        assert s is not None
        inbox = Inbox(
            s,
            self.transport,
            RECIPIENT[0],
            verifier=Verifier(TrustStore.load(s.state_dir / "pki")),
            registry=SchemaRegistry(s.schemas_dir),
        )
        assert self.sink.sample_delivery is not None and self.sink.sample_receipt is not None
        delivery = inbox.open(self.sink.sample_delivery)
        reply = read_reply(inbox.open(self.sink.sample_receipt))
        if delivery.sender.system != SENDER[0] or reply is None or reply.outcome != "accepted":
            raise RuntimeError("a delivery or receipt is not what the hub should have sent")
        async with connection(s.pg_dsn) as conn:
            n_msg = await conn.fetchval("SELECT count(*) FROM messages WHERE state = 'accepted'")
            n_del = await conn.fetchval("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
            n_ev = await conn.fetchval(
                "SELECT (SELECT count(*) FROM evidence) + (SELECT count(*) FROM evidence_pending)"
            )
        dupes = self.sink.delivered.duplicates + self.sink.raw.duplicates + self.sink.receipts.duplicates
        line = (
            f"完整性 integrity: PostgreSQL {n_msg} messages accepted, {n_del} deliveries delivered, {n_ev} evidence "
            f"records (of {hub_messages} sent); a sampled delivery and receipt verify as hub-signed; "
            f"{dupes} duplicate arrivals, {len(self.sink.errors)} hub.error"
        )
        if n_msg != hub_messages or n_del != hub_messages:
            raise RuntimeError(line)
        return line

    def _keep_latencies(self, path: str, sent: dict[str, float], arrived: dict[str, float]) -> None:
        wall = time.time() - time.perf_counter()  # perf_counter → wall clock, as the hub's log has it
        lines = [
            f"{wall + t:.4f}\t{(arrived[m] - t) * 1000:.1f}\n" for m, t in sorted(sent.items(), key=lambda x: x[1])
        ]
        self.args.keep.mkdir(parents=True, exist_ok=True)
        (self.args.keep / f"latency-{path}.tsv").write_text("".join(lines))

    async def close(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()  # py-spy of a phase that failed
        if self.ops_page is not None:
            await self.ops_page.stop()
        if self.transport is not None:
            await self.transport.close()
        await self.sink.close()
        for problem in await self.inst.close(keep_log=self.args.keep):
            print(f"清理 clean-up: {problem}", file=sys.stderr)

    async def _ready(self, queue: str, consumers: int, what: str, timeout: float = 90.0) -> None:
        """Wait until ``consumers`` consumers are subscribed to ``queue`` (the hub workers start in a few s)."""
        deadline = time.monotonic() + timeout
        channel = await self.transport._channel.get_underlay_channel()  # the bench may look beneath the Transport
        while True:
            self.inst.check_alive()
            ok = await channel.queue_declare(queue, passive=True)
            if (ok.consumer_count or 0) >= consumers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not subscribe to {queue} within {timeout:.0f} s")
            await asyncio.sleep(0.2)

    def _arrivals(self, path: str) -> Arrivals:
        return self.sink.delivered if path == "hub" else self.sink.raw

    def _target(self, path: str) -> Target:
        return self.hub_target if path == "hub" else self.raw_target

    async def _await(self, arrivals: Arrivals, what: str, stall_s: float = 30.0) -> None:
        """Wait for all expected arrivals; fail when nothing arrives for ``stall_s`` or a child process died."""
        seen, last_progress = -1, time.monotonic()
        while not arrivals.done.is_set():
            self.inst.check_alive()
            if len(arrivals.times) != seen:
                seen, last_progress = len(arrivals.times), time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                raise RuntimeError(
                    f"{what}: {len(arrivals.times)} of {arrivals.target} arrived, nothing more for {stall_s:.0f} s\n"
                    f"--- hub log (tail) ---\n{self.inst.tail(self.inst.hub_log)}"
                )
            try:
                await asyncio.wait_for(arrivals.done.wait(), 0.5)
            except TimeoutError:
                pass

    async def _throughput(self, path: str, msgs: list[tuple[str, bytes]], label: str = "throughput") -> Phase:
        arrivals = self._arrivals(path)
        arrivals.expect([m for m, _ in msgs])
        if path == "hub":
            self.sink.receipts.expect([m for m, _ in msgs])
        profiling = self._profile_start(path, label)
        before = self.cpu.snapshot()
        start = await offer_backlog(self.transport, self._target(path), msgs)
        await self._await(arrivals, f"{path} {label}")
        end = max(arrivals.times.values())
        after = self.cpu.snapshot()
        files = self.profiler.stop() if profiling else None
        if path == "hub":
            await self._await(self.sink.receipts, f"{path} {label} receipts")
        phase = Phase(
            path,
            "throughput",
            len(msgs),
            end - start,
            [],
            after.seconds_since(before),
            profile=files,
            others=after.top_others(before),
        )
        if label.startswith("warm-up"):
            print(f"预热 {label} {path}: {len(msgs)} messages in {phase.seconds:.2f} s")
        return phase

    async def _latency(self, path: str, msgs: list[tuple[str, bytes]]) -> Phase:
        arrivals = self._arrivals(path)
        arrivals.expect([m for m, _ in msgs])
        if path == "hub":
            self.sink.receipts.expect([m for m, _ in msgs])
        profiling = self._profile_start(path, "latency")
        before = self.cpu.snapshot()
        sent = await offer_paced(self.transport, self._target(path), msgs, self.args.rate)
        await self._await(arrivals, f"{path} latency")
        after: CpuSnapshot = self.cpu.snapshot()
        files = self.profiler.stop() if profiling else None
        latencies = [(arrivals.times[m] - t) * 1000 for m, t in sent.items()]
        if self.args.keep is not None:
            self._keep_latencies(path, sent, arrivals.times)
        receipts = None
        if path == "hub":
            await self._await(self.sink.receipts, "hub latency receipts")
            receipts = [(self.sink.receipts.times[m] - t) * 1000 for m, t in sent.items()]
        span = max(arrivals.times.values()) - min(sent.values())
        return Phase(
            path,
            "latency",
            len(msgs),
            span,
            latencies,
            after.seconds_since(before),
            receipts,
            files,
            after.top_others(before),
        )

    def _profile_start(self, path: str, label: str) -> bool:
        if self.profiler is None or path != "hub" or label not in ("throughput", "latency"):
            return False
        self.profiler.start([p for p in self.inst.hub_worker_pids() if p != self.inst.engine_pid], label)
        return True


# ---------------------------------------------------------------------------------------------------- report


def hub_batches(log: Path, phases: dict[str, list[tuple[str, bytes]]]) -> dict[str, tuple[float, float, float]]:
    """From the hub's decision log (one JSON line per message with the ``batch_ms`` of its batch): per phase, the
    mean batch size and the p50/p99 time of the batch a message was in. Batches are told apart by their exact
    ``batch_ms`` (two batches with the same value to 0.01 ms count as one: an estimate)."""
    import json

    which = {mid: name for name, msgs in phases.items() for mid, _ in msgs}
    per: dict[str, list[float]] = {name: [] for name in phases}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if '"batch_ms"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        name = which.get(rec.get("message_id", ""))
        if name is not None:
            per[name].append(float(rec["batch_ms"]))
    out = {}
    for name, times in per.items():
        if times:
            out[name] = (len(times) / len(set(times)), pct(times, 50), pct(times, 99))
    return out


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"机器 machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )


def report(
    phases: list[Phase],
    args: argparse.Namespace,
    integrity: str,
    batches: dict[str, tuple[float, float, float]],
    rounds: list[tuple[float, float]],
    fast_off: tuple[Phase, Phase] | None = None,
    rounds_off: list[tuple[float, float]] | None = None,
    ops: OpsResult | None = None,
    engine_missing: str | None = None,
) -> str:
    """The report; its last line is returned. ``engine_missing``: why the process engine has no CPU row."""
    by = {(p.path, p.kind): p for p in phases}
    raw_tp, hub_tp = by["raw", "throughput"], by["hub", "throughput"]
    raw_lat, hub_lat = by["raw", "latency"], by["hub", "latency"]
    ratio = hub_tp.per_s / raw_tp.per_s if raw_tp.per_s else 0.0
    p99 = pct(hub_lat.latencies_ms, 99)

    print()
    print(f"{'':34}{'枢纽 hub':>12}{'裸中继 raw':>13}{'比值 hub/raw':>16}")
    print(f"{'吞吐 throughput (msg/s, backlog)':34}{hub_tp.per_s:>14.0f}{raw_tp.per_s:>14.0f}{ratio:>16.2f}")
    print(f"{'  积压 backlog (messages)':34}{hub_tp.n:>14}{raw_tp.n:>14}")
    for i, (r, h) in enumerate(rounds, 1):
        print(f"{f'  第 {i} 轮 round {i} of {len(rounds)} (msg/s)':34}{h:>14.0f}{r:>14.0f}{h / r if r else 0:>16.2f}")
    print(f"{'  用时 elapsed (s)':34}{hub_tp.seconds:>14.2f}{raw_tp.seconds:>14.2f}")
    ratio_off = None
    if fast_off is not None:
        raw_off, hub_off = fast_off
        ratio_off = hub_off.per_s / raw_off.per_s if raw_off.per_s else 0.0
        print(
            f"{'快速路径关闭 HUB_AMQP_FAST=0 (msg/s)':34}{hub_off.per_s:>14.0f}{raw_off.per_s:>14.0f}{ratio_off:>16.2f}"
        )
        for i, (r, h) in enumerate(rounds_off or [], 1):
            print(f"{f'  第 {i} 轮 round {i} (fast off)':34}{h:>14.0f}{r:>14.0f}{h / r if r else 0:>16.2f}")
        on_ms, off_ms = hub_tp.cpu.get("hub", 0) / hub_tp.n * 1000, hub_off.cpu.get("hub", 0) / hub_off.n * 1000
        change = f"{(off_ms / on_ms - 1) * 100:+.0f} %" if on_ms else "?"
        print(
            f"  hub run CPU per message: {on_ms:.2f} ms with the fast paths, {off_ms:.2f} ms without ({change}); "
            f"raw relay {raw_tp.cpu.get('relay', 0) / raw_tp.n * 1000:.2f} / "
            f"{raw_off.cpu.get('relay', 0) / raw_off.n * 1000:.2f} ms"
        )
    if ops is not None:
        print(
            f"{'运维页面关闭 ops page closed (msg/s)':34}{ops.closed.per_s:>14.0f}{ops.raw.per_s:>14.0f}"
            f"{ops.ratio_closed:>16.2f}"
        )
        print(
            f"{'运维页面打开 ops page open (msg/s)':34}{ops.opened.per_s:>14.0f}{ops.raw.per_s:>14.0f}"
            f"{ops.ratio_open:>16.2f}"
        )
        for i, (r, c, o) in enumerate(ops.rounds, 1):
            print(f"  第 {i} 轮 round {i} (ops): raw {r:.0f}, hub closed {c:.0f}, hub open {o:.0f} msg/s")
        pg = ops.page
        served = ", ".join(
            f"{path} {len(ms)}× p50 {pct(ms, 50):.0f} ms max {max(ms):.0f} ms" for path, ms in pg.requests.items() if ms
        )
        print(
            f"  ops page open {pg.open_s:.0f} s: {served}; hub ops CPU {pg.cpu_s / pg.open_s * 100 if pg.open_s else 0:.1f} % "
            f"of a core; failed requests: {len(pg.failures)}{' ' + str(sorted(set(pg.failures))) if pg.failures else ''}"
        )
        c_ms, o_ms = (ph.cpu.get("hub", 0) / ph.n * 1000 if ph.n else 0.0 for ph in (ops.closed, ops.opened))
        r_ms, q_ms = (ph.cpu.get("rabbitmq", 0) / ph.n * 1000 if ph.n else 0.0 for ph in (ops.closed, ops.opened))
        print(
            f"  CPU per message, page closed / open: hub run {c_ms:.2f} / {o_ms:.2f} ms, "
            f"RabbitMQ {r_ms:.2f} / {q_ms:.2f} ms"
        )
        # The steadier figure on a shared machine: CPU per message of everything the page can load (the hub, the
        # broker, the database, and the ops process itself while open), closed against open.
        sut = ("hub", "rabbitmq", "postgres")
        closed_ms = sum(ops.closed.cpu.get(k, 0) for k in sut) / ops.closed.n * 1000 if ops.closed.n else 0.0
        open_ms = (sum(ops.opened.cpu.get(k, 0) for k in sut) + pg.cpu_s) / ops.opened.n * 1000 if ops.opened.n else 0.0
        print(
            f"  CPU per message of hub run + RabbitMQ + PostgreSQL (+ hub ops while open): closed {closed_ms:.2f} ms, "
            f"open {open_ms:.2f} ms ({(open_ms / closed_ms - 1) * 100 if closed_ms else 0:+.1f} %)"
        )
        print(
            f"  hub throughput with the page open vs closed: median of the rounds {ops.delta_pct:+.1f} % "
            f"(pooled {ops.pooled_delta_pct:+.1f} %) "
            f"(goal within ±{GOAL_OPS_DELTA_PCT:g} %: {'达到 met' if abs(ops.delta_pct) <= GOAL_OPS_DELTA_PCT else '未达到 NOT met'})"
        )
    rate = f"{args.rate:g} msg/s × {args.seconds:g} s"
    print(f"时延 latency at {rate} (publish → arrival at the recipient's queue)")
    for label, q in (("  p50 (ms)", 50), ("  p99 (ms)", 99), ("  max (ms)", 100)):
        h, r = pct(hub_lat.latencies_ms, q), pct(raw_lat.latencies_ms, q)
        print(f"{label:34}{h:>14.1f}{r:>14.1f}{h / r if r else 0:>16.1f}")
    if hub_lat.receipts_ms:
        print(
            f"{'  回执 receipt p50 / p99 (ms)':34}{pct(hub_lat.receipts_ms, 50):>8.1f} / "
            f"{pct(hub_lat.receipts_ms, 99):.1f}"
        )
    print(f"{'  达到速率 achieved (msg/s)':34}{hub_lat.per_s:>14.0f}{raw_lat.per_s:>14.0f}")

    for kind, (size, b50, b99) in batches.items():
        print(
            f"  枢纽批次 hub batches, {kind}: ~{size:.1f} messages per batch; from a batch's start to its ack "
            f"p50 {b50:.1f} ms, p99 {b99:.1f} ms (hub decision log)"
        )
    print()
    col = f"{args.rate:g}/s"
    print(f"CPU 时间 (/proc) — throughput: CPU ms per message; latency phase: % of one core ({os.cpu_count()} cores)")
    print(f"{'':28}{'hub tp':>9}{'raw tp':>9}{'hub ' + col:>12}{'raw ' + col:>12}")
    rows = {
        "hub": "枢纽 hub run (all procs)",
        "engine": "  其中流程引擎 of which engine",
        "relay": "中继 relay",
        "rabbitmq": "RabbitMQ",
        "postgres": "PostgreSQL",
        "bench": "压测 bench (pub + sink)",
        "other": "其他进程 other processes",
        "irq": "中断 irq + softirq",
        "steal": "虚拟机被占 steal",
        "machine": "合计 machine",
    }
    for part, text in rows.items():
        if part == "engine" and engine_missing is not None:
            print(f"{text:28}{'—':>9}{'—':>9}{'—':>12}{'—':>12}  ({engine_missing})")
            continue
        print(
            f"{text:28}{hub_tp.cpu.get(part, 0) / hub_tp.n * 1000:>9.2f}"
            f"{raw_tp.cpu.get(part, 0) / raw_tp.n * 1000:>9.2f}"
            f"{hub_lat.cpu.get(part, 0) / hub_lat.seconds * 100:>11.0f}%"
            f"{raw_lat.cpu.get(part, 0) / raw_lat.seconds * 100:>11.0f}%"
        )
    for p in phases:
        busy = [f"{name} {sec / p.seconds * 100:.0f}%" for name, sec in (p.others or []) if sec / p.seconds >= 0.05]
        if busy:
            print(f"  其他进程 busiest other processes during {p.path} {p.kind}: {', '.join(busy)}")

    for p in (hub_tp, hub_lat):
        if p.profile:
            from _e2e_profile import print_breakdown

            what = "throughput (backlog)" if p.kind == "throughput" else f"latency ({args.rate:g} msg/s)"
            print_breakdown(what, p.profile, p.cpu.get("hub", 0) / p.n * 1000)

    print()
    print(integrity)
    ok_ratio, ok_p99 = ratio >= GOAL_RATIO, p99 <= GOAL_P99_MS
    print(
        f"目标 goal: hub ≥ {GOAL_RATIO:.0%} of raw throughput — {'达到 met' if ok_ratio else '未达到 NOT met'} "
        f"({ratio:.0%}); p99 ≤ {GOAL_P99_MS:.0f} ms at {args.rate:g} msg/s — "
        f"{'达到 met' if ok_p99 else '未达到 NOT met'} ({p99:.1f} ms)"
    )
    last = f"e2e_ratio={ratio:.2f} hub_per_s={hub_tp.per_s:.0f} raw_per_s={raw_tp.per_s:.0f} p99_ms={p99:.1f}"
    if ratio_off is not None:
        last += f" e2e_ratio_fast_off={ratio_off:.2f}"
    if ops is not None:
        last += f" e2e_ratio_ops={ops.ratio_open:.2f} ops_delta_pct={ops.delta_pct:+.1f}"
    return last


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1,000-message backlog, 4 s latency phase")
    ap.add_argument("--messages", type=int, help="throughput backlog (default 6000; 1000 with --quick)")
    ap.add_argument(
        "--rounds", type=int, help="interleaved raw/hub throughput rounds over the backlog (default 3; 2 with --quick)"
    )
    ap.add_argument("--rate", type=float, default=300.0, help="offered rate of the latency phase (msg/s)")
    ap.add_argument("--seconds", type=float, help="length of the latency phase (default 20; 4 with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="hub run --workers (default 2)")
    ap.add_argument(
        "--no-processes",
        action="store_true",
        help="hub run --no-processes: without the process engine, to see what it costs the figure (the README's figures "
        "are measured with it)",
    )
    ap.add_argument(
        "--no-fast-off",
        dest="fast_off",
        action="store_false",
        help="skip the second hub run with HUB_AMQP_FAST=0 (its throughput rounds and e2e_ratio_fast_off)",
    )
    ap.add_argument(
        "--no-ops",
        dest="ops",
        action="store_false",
        help="skip the ops-page rounds (hub ops serving, /metrics scraped every 1 s, /api/overview every 2 s)",
    )
    ap.add_argument(
        "--ops-messages",
        type=int,
        help="messages of the ops rounds, for each of page closed and page open (default 3 × --messages)",
    )
    ap.add_argument("--ops-rounds", type=int, default=6, help="ops rounds: raw, hub closed, hub open (default 6)")
    ap.add_argument("--relays", type=int, help="relay processes (default: as many as hub workers)")
    ap.add_argument("--warmup", type=int, help="unmeasured warm-up messages per path (default 300; 100 --quick)")
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the hub workers with py-spy during the hub phases (raw stacks kept in DIR)",
    )
    ap.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="write every latency (wall-clock publish time, ms) and the hub's log to DIR",
    )
    ap.add_argument(
        "--quorum",
        action="store_true",
        help="then the bench again on an installation with HUB_QUEUE_TYPE=quorum (same broker node, throughput and "
        "latency only), its ratio appended as e2e_ratio_quorum (issue 16)",
    )
    args = ap.parse_args(argv)
    args.messages = args.messages or (1000 if args.quick else 6000)
    args.seconds = args.seconds or (4.0 if args.quick else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (100 if args.quick else 300)
    args.relays = args.relays or args.workers
    args.rounds = max(1, args.rounds or (2 if args.quick else 3))
    args.ops_messages = args.ops_messages or 3 * args.messages
    args.ops_rounds = max(1, args.ops_rounds)
    return args


async def amain(args: argparse.Namespace) -> str:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    bench = Bench(args)
    try:
        phases = await bench.run()
    finally:
        await bench.close()
    if bench.inst.engine_pid is not None:
        engine_missing = None
    elif args.no_processes:
        engine_missing = "hub run --no-processes"
    else:
        engine_missing = "not measured: the engine's process_instances row did not show"
    return report(
        phases,
        args,
        bench.integrity,
        bench.batches,
        bench.rounds,
        bench.fast_off,
        bench.rounds_off,
        bench.ops,
        engine_missing=engine_missing,
    )


def main() -> int:
    args = parse_args()
    print("端到端压测 end-to-end benchmark: signed document.official through the whole hub vs a bare aio-pika relay")
    print(machine_line())
    print(f"命令 command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    started = time.perf_counter()
    try:
        last = asyncio.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("中断 interrupted; everything the bench created was removed", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"失败 failed: {exc}", file=sys.stderr)
        return 1
    except HubError as exc:
        print(f"失败 failed: {exc.describe()}", file=sys.stderr)
        return 1
    print(f"{machine_line()} — run took {time.perf_counter() - started:.0f} s")
    if args.quorum:
        quorum = _quorum_run(args)
        if quorum is None:
            print(last)
            return 1
        last += f" e2e_ratio_quorum={quorum}"
    print(last)
    return 0


def _quorum_run(args: argparse.Namespace) -> str | None:
    """Issue 16: this bench again in a child process with HUB_QUEUE_TYPE=quorum (a new installation: a queue's type
    cannot change in place) on the same single broker node, throughput and latency only; its e2e_ratio (beside its
    own raw relay, measured in the same minutes) or None when it failed."""
    import os
    import subprocess

    cmd = [sys.executable, __file__, "--no-fast-off", "--no-ops", "--messages", str(args.messages)]
    cmd += ["--rounds", str(args.rounds), "--seconds", str(args.seconds), "--workers", str(args.workers)]
    cmd += ["--warmup", str(args.warmup), "--rate", str(args.rate)]
    print()
    print("仲裁队列 quorum queues: the bench again with HUB_QUEUE_TYPE=quorum (its own installation)")
    done = subprocess.run(cmd, env={**os.environ, "HUB_QUEUE_TYPE": "quorum"}, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        print("  " + line)
    if done.returncode != 0:
        print("  " + done.stderr.strip().replace("\n", "\n  "))
        return None
    lines = done.stdout.strip().splitlines()
    fields = dict(f.split("=", 1) for f in lines[-1].split() if "=" in f) if lines else {}
    return fields.get("e2e_ratio")


if __name__ == "__main__":
    raise SystemExit(main())
