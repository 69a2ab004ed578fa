"""SDK benchmark: hub-signed deliveries received through (a) an ``adapters.sdk.Adapter`` handler, (b) a FastStream
subscriber and (c) a bare aio-pika consumer, on the real RabbitMQ, in one run (issue 19).

Every variant does the same work per delivery: open it with the SDK's verification, ``AgencyTrust.open(body)``
(safe parse, envelope and body XSD, the hub's signature with its chain and CRL — and the originator's once
deliveries carry it), count it, and acknowledge it::

    (a) sdk        Adapter("city-220100-oa") with @adapter.handles("document.official") counting; its default
                   AdapterSettings (prefetch 64, batches of 32, concurrency 1) and its default store (SQLite
                   handled.sqlite3 in the adapter's home: a transaction per batch, a savepoint per handler, the
                   ids recorded and committed, then one ack per batch). Attached (Adapter.attach) to a
                   hub.transport.Transport logged in as guest instead of the system's own broker user: the
                   consuming code is the same either way.
    (b) faststream faststream[rabbit] RabbitBroker, one subscriber with Channel(prefetch_count=64) whose handler
                   (``body: bytes``) calls AgencyTrust.open; FastStream's default ack policy (ack after the handler
                   returned). Its per-message log lines at DEBUG (below its logger's level, as the SDK's INFO
                   lines are below the unconfigured root logger's): neither variant writes a line per message.
    (c) bare       aio-pika: connect_robust, set_qos(prefetch_count=64), queue.consume(callback); the callback calls
                   AgencyTrust.open and ``await message.ack()``.

The deliveries are made once with the hub's own code, before any clock starts: a throw-away CA
(``tests/hostile/costly.py`` ``make_kit``), N distinct ``document.official`` messages (the ~2 KB typical-notice
sample; distinct message ids, since the SDK deduplicates by them) signed by county-220122-oa, each examined by the
``Processor`` ``hub run`` uses and rendered into its hub-signed delivery (``Processor.render``): whatever the
delivery format is (one signature today, two after the originator's signature lands), the bench delivers what the
hub delivers. Each variant × round gets a fresh RabbitMQ namespace ``sdkbench-<tag>-<variant><round>`` (the hub's
topology, ``Transport.declare_topology``), its queue ``<ns>.q.city-220100-oa`` pre-filled with the same N
deliveries (the hub's ``outgoing.delivery`` properties, published with confirms), then the consumer runs in a
child process of its own (a fresh interpreter per variant: no shared state, its own CPU time) and is timed from
its start (subscribe; for the SDK ``adapter.start()``, which also opens the store) until N deliveries are
handled and acknowledged. Afterwards the bench checks the queue is empty once the consumer's connection closed
(nothing left unacknowledged) and, for the SDK, that its store recorded N message ids. Everything is removed at
the end.

Rounds are interleaved (sdk, faststream, bare; then rotated), default 3; the figures are the medians of the
rounds (this 2-core VM is shared: compare figures of the same run). CPU ms per delivery of the consumer process
(/proc, user + system) is printed beside the wall-clock rate.

The last line::

    sdk_per_s=<n> faststream_per_s=<n> bare_per_s=<n> sdk_vs_faststream=<ratio> sdk_vs_bare=<ratio>

Goal (issue 19): sdk_vs_faststream ≥ 1.2 and sdk_vs_bare ≥ 0.8. Usage::

    .venv/bin/pip install 'faststream[rabbit]==0.7.8'     # once: a benchmark-only dependency (extra "bench")
    .venv/bin/python bench/sdk.py                         # N = 5,000, 3 rounds
    .venv/bin/python bench/sdk.py --quick                 # N = 1,000, 2 rounds
    .venv/bin/python bench/sdk.py --profile /tmp/sdk-prof # + py-spy of each variant's consumer process

Exit status 2 (with a message) when faststream is not installed; 1 when a variant failed or an integrity check
did not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("sdk", "faststream", "bare")
PREFETCH = 64  # AdapterSettings.prefetch's default; the others get the same
SENDER = ("county-220122-oa", "11220122013550216R")  # 农安县林业局 OA
RECIPIENT = ("city-220100-oa", "11220100013544550M")  # 长春市林业局 OA
GOAL_VS_FASTSTREAM = 1.2
GOAL_VS_BARE = 0.8
WARM = 50  # deliveries each child opens before its clock starts (not in its queue)
FASTSTREAM_PIN = "faststream[rabbit]==0.7.8"


# ---------------------------------------------------------------------------------------------------- the child


def _trust(base: Path) -> Any:
    """The agency's trust, as every variant builds it: only the hub root and its CRLs where the SDK can
    (``AgencyTrust.from_files``, once ``TrustStore.from_files`` exists), else the throw-away PKI directory."""
    from adapters.sdk._trust import AgencyTrust
    from hub.trust import TrustStore, Verifier
    from hub.trust.pki import PkiPaths

    max_bytes = 16 * 1024 * 1024  # AdapterSettings.max_message_bytes's default
    paths = PkiPaths(base / "pki")
    if hasattr(TrustStore, "from_files"):
        return AgencyTrust.from_files(paths.root_cert, paths.crl_dir, max_bytes=max_bytes)
    return AgencyTrust(Verifier(TrustStore.load(paths.root)), max_bytes=max_bytes)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import logging
    import pickle

    base: Path = args.base
    n: int = args.n
    trust = _trust(base)
    for data in pickle.loads((base / "warm.pkl").read_bytes()):  # lazy imports, schema and certificate caches
        trust.open(data)
    # Every variant's verification is counted (the same few ns for each): proof that each delivery was opened once.
    opens = 0
    verify = trust.open

    def counted(data: bytes) -> Any:
        nonlocal opens
        opens += 1
        return verify(data)

    trust.open = counted
    url = os.environ.get("HUB_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    from hub.transport.names import Names

    queue = Names(args.namespace).system_queue(RECIPIENT[0])
    done = asyncio.Event()
    count = 0
    extra: dict[str, Any] = {}
    timeout = 60.0 + n / 50

    if args.child == "sdk":
        from adapters.sdk import Adapter, AdapterSettings
        from adapters.sdk._home import write_home
        from adapters.sdk._store import open_store
        from adapters.sdk._trust import load_signer
        from hub.settings import Settings
        from hub.transport import Transport
        from hub.trust.pki import PkiPaths

        paths = PkiPaths(base / "pki")
        home = write_home(
            base / f"home-{args.namespace}",
            key_pem=(base / "recipient-key.pem").read_bytes(),
            cert_pem=(base / "recipient-cert.pem").read_bytes(),
            root_pem=paths.root_cert.read_bytes(),
            crls={p.name: p.read_bytes() for p in paths.crl_dir.glob("*.crl")},
            amqp_url=url,
            namespace=args.namespace,
        )
        settings = AdapterSettings(system=RECIPIENT[0], home=home)  # every tunable at its default
        adapter = Adapter(settings=settings)

        @adapter.handles("document.official", version=1)
        async def on_document(message: Any, ctx: Any) -> None:
            nonlocal count
            count += 1
            if count >= n:
                done.set()

        transport = await Transport.connect(
            Settings.from_env(namespace=args.namespace), url=url, client_name="bench-sdk"
        )
        store = open_store(*settings.store_target())
        adapter.attach(
            transport=transport, signer=load_signer(settings.key_path, settings.cert_path), trust=trust, store=store
        )
        c0, t0 = _cpu(), time.perf_counter()
        await adapter.start()
        await asyncio.wait_for(done.wait(), timeout)
        for consumer in adapter._consumers:  # hub.transport.amqp.Consumer, one per queue of the system
            await cast(Any, consumer).wait_idle()  # the last batch committed and acknowledged
        t1, c1 = time.perf_counter(), _cpu()
        recorded = await store.count()
        await adapter.stop()
        await transport.close()
        extra = {
            "recorded": recorded,
            "settings": f"prefetch {settings.prefetch}, max_batch {settings.max_batch}, "
            f"concurrency {settings.concurrency}, store {settings.store_target()[0]}",
        }

    elif args.child == "faststream":
        from faststream.rabbit import RabbitBroker, RabbitQueue
        from faststream.rabbit.schemas import Channel

        broker = RabbitBroker(url, log_level=logging.DEBUG)

        @broker.subscriber(RabbitQueue(queue, declare=False), channel=Channel(prefetch_count=PREFETCH))
        async def handle(body: bytes) -> None:
            nonlocal count
            trust.open(body)
            count += 1
            if count >= n:
                done.set()

        await broker.connect()
        c0, t0 = _cpu(), time.perf_counter()
        await broker.start()
        await asyncio.wait_for(done.wait(), timeout)
        await asyncio.sleep(0)  # the last message's ack follows its handler's return in the same task
        t1, c1 = time.perf_counter(), _cpu()
        await broker.stop()

    elif args.child == "bare":
        import aio_pika

        connection = await aio_pika.connect_robust(url, client_properties={"connection_name": "bench-bare"})
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        q = await channel.get_queue(queue, ensure=False)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            trust.open(message.body)
            await message.ack()
            count += 1
            if count >= n:
                done.set()

        c0, t0 = _cpu(), time.perf_counter()
        await q.consume(on_message)
        await asyncio.wait_for(done.wait(), timeout)
        t1, c1 = time.perf_counter(), _cpu()
        await connection.close()
    else:
        raise SystemExit(f"unknown variant {args.child}")

    return {"variant": args.child, "n": count, "seconds": t1 - t0, "cpu": c1 - c0, "opened": opens, **extra}


def child_main(args: argparse.Namespace) -> int:
    if args.child == "faststream" and importlib.util.find_spec("faststream") is None:
        print(f"faststream is not installed: pip install '{FASTSTREAM_PIN}'", file=sys.stderr)
        return 2
    result = asyncio.run(_child(args))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------- the parent


@dataclass
class Run:
    variant: str
    round: int
    n: int
    seconds: float
    cpu: float
    extra: dict[str, Any]
    profile: Path | None = None

    @property
    def per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.n * 1000 if self.n else 0.0


@dataclass
class Prepared:
    """The throw-away CA, the recipient's key and certificate, and the deliveries (message id, delivery bytes,
    the hub's AMQP properties), in ``base``."""

    base: Path
    deliveries: list[tuple[Any, bytes]]  # (envelope, hub-signed delivery)
    delivery_bytes: float


def prepare(base: Path, n: int) -> Prepared:
    """N + WARM distinct hub-signed deliveries, made with the hub's own processor (make_kit: a CA in memory)."""
    import pickle

    from cryptography.hazmat.primitives import serialization

    from hub.pipeline.plan import Plan
    from hub.pipeline.processor import Accepted
    from hub.trust import keys, pki
    from tests.hostile.costly import PASSPHRASE, make_kit

    kit = make_kit(base)
    issuing = pki.load_ca(kit.pki_dir, PASSPHRASE)
    key = keys.generate_private_key()
    issued = pki.issue_from_csr(kit.pki_dir, PASSPHRASE, pki.make_csr(key, RECIPIENT[1], RECIPIENT[0]), ca=issuing)
    (base / "recipient-key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (base / "recipient-cert.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (issued.certificate, issuing[0]))
    )
    out: list[tuple[Any, bytes]] = []
    for _ in range(n + WARM):
        result = kit.processor.examine(kit.signed(kit.envelope(sender=SENDER, to=RECIPIENT)))
        if not isinstance(result, Accepted):
            raise RuntimeError(f"the hub refused the bench's message: {result.error.code} {result.error.detail}")
        rendered = kit.processor.render(Plan(deliver=tuple(result.deliveries)), result)
        out.append((result.envelope, rendered.delivery))
    (base / "warm.pkl").write_bytes(pickle.dumps([d for _, d in out[n:]]))
    deliveries = out[:n]
    return Prepared(base, deliveries, sum(len(d) for _, d in deliveries) / n)


async def fill(namespace: str, prepared: Prepared) -> None:
    """Declare the namespace's topology (the hub's) and publish the N deliveries to the recipient's queue."""
    from hub.pipeline import outgoing
    from hub.settings import Settings
    from hub.transport import Transport

    settings = Settings.from_env(namespace=namespace)
    async with await Transport.connect(settings, client_name="bench-sdk-fill") as t:
        await t.declare_topology([SENDER[0], RECIPIENT[0]])
        items = [
            outgoing.delivery(t.names, env, data, system=RECIPIENT[0], role="to", zone="extranet", ceiling=1)
            for env, data in prepared.deliveries
        ]
        for i in range(0, len(items), 500):
            await t.publish_many(items[i : i + 500])
        depth = await t.queue_depth(t.names.system_queue(RECIPIENT[0]))
    if depth != len(items):
        raise RuntimeError(f"{namespace}: {depth} deliveries in the queue after publishing {len(items)}")


async def leftover(namespace: str) -> int:
    from hub.settings import Settings
    from hub.transport import Transport

    settings = Settings.from_env(namespace=namespace)
    async with await Transport.connect(settings, client_name="bench-sdk-check") as t:
        return await t.queue_depth(t.names.system_queue(RECIPIENT[0]))


async def teardown(namespace: str) -> None:
    from hub.settings import Settings
    from hub.transport.users import teardown_namespace

    await teardown_namespace(Settings.from_env(namespace=namespace))


def run_child(variant: str, namespace: str, prepared: Prepared, n: int, profile: Path | None, rnd: int) -> Run:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        "--namespace",
        namespace,
        "--base",
        str(prepared.base),
        "--n",
        str(n),
    ]
    prof_file = None
    if profile is not None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        profile.mkdir(parents=True, exist_ok=True)
        prof_file = profile / f"{variant}-{rnd}.txt"
        cmd = [spy, "record", "--rate", "500", "--format", "raw", "--output", str(prof_file), "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    r = json.loads(lines[-1][len("RESULT ") :])
    extra = {k: v for k, v in r.items() if k not in ("variant", "n", "seconds", "cpu")}
    return Run(variant, rnd, int(r["n"]), float(r["seconds"]), float(r["cpu"]), extra, prof_file)


def bench(args: argparse.Namespace) -> list[Run]:
    tag = uuid.uuid4().hex[:6]
    base = Path(tempfile.mkdtemp(prefix="sdk-bench-"))
    made: list[str] = []
    try:
        t = time.perf_counter()
        prepared = prepare(base, args.messages)
        print(
            f"准备 set-up: {args.messages} distinct document.official messages signed by {SENDER[0]}, examined and "
            f"rendered into hub-signed deliveries by the hub's Processor (mean {prepared.delivery_bytes:.0f} bytes) "
            f"— {time.perf_counter() - t:.1f} s"
        )
        runs: list[Run] = []
        for rnd in range(1, args.rounds + 1):
            k = (rnd - 1) % len(VARIANTS)
            for variant in VARIANTS[k:] + VARIANTS[:k]:
                ns = f"sdkbench-{tag}-{variant}{rnd}"
                made.append(ns)
                asyncio.run(fill(ns, prepared))
                run = run_child(variant, ns, prepared, args.messages, args.profile, rnd)
                left = asyncio.run(leftover(ns))
                if run.n != args.messages or left != 0:
                    raise RuntimeError(f"{variant} round {rnd}: handled {run.n}, {left} left in the queue")
                if run.extra.get("opened") != args.messages:
                    raise RuntimeError(f"{variant} round {rnd}: {run.extra.get('opened')} AgencyTrust.open calls")
                if variant == "sdk" and run.extra.get("recorded") != args.messages:
                    raise RuntimeError(f"sdk round {rnd}: the store recorded {run.extra.get('recorded')} ids")
                print(
                    f"  第 {rnd} 轮 round {rnd} {variant:<10} {run.per_s:>7.0f} msg/s  {run.seconds:6.2f} s  "
                    f"CPU {run.cpu_ms:.3f} ms/msg  ({run.extra['opened']} opened, queue empty after; {ns})",
                    flush=True,
                )
                runs.append(run)
                asyncio.run(teardown(ns))
                made.remove(ns)
        return runs
    finally:
        for ns in made:
            with contextlib.suppress(Exception):
                asyncio.run(teardown(ns))
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- profiles

#: Where a sample's time goes, by the innermost frame of the stack that matches (AgencyTrust.open anywhere wins).
_BUCKETS = (
    ("SDK: handled-id store (SQLite)", ("adapters/sdk/_store.py",)),
    ("SDK: batch, context, handler call", ("adapters/sdk/",)),
    ("FastStream, fast_depends, pydantic", ("faststream/", "fast_depends/", "pydantic")),
    ("AMQP client (hub.transport, aiormq, aio-pika, pamqp)", ("hub/transport/", "aiormq/", "aio_pika/", "pamqp/")),
    ("asyncio event loop", ("asyncio/",)),
)
OPEN = "AgencyTrust.open (parse, XSD, signatures)"
#: Stacks of the child's set-up and tear-down (imports, the schema registry, connecting, warm-up, stopping).
_SETUP = (
    "_find_and_load",
    "registry (adapters/sdk/_trust.py",
    "_trust (",
    "write_home (",
    "load_signer (",
    "Transport.connect (",
    "connect_robust (",
    "RabbitBroker.connect (",
    "Adapter.stop (",
    "Transport.close (",
    ".stop (faststream/",
    "Connection.close (",
)


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def breakdown(path: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """(samples of the consuming phase, samples per bucket, SDK samples per innermost adapters/sdk line)."""
    buckets: dict[str, int] = {}
    sdk_lines: dict[str, int] = {}
    total = 0
    for frames, n in _stacks(path):
        joined = ";".join(frames)
        if any(marker in joined for marker in _SETUP):
            continue
        if "AgencyTrust.open (" in joined:
            if "counted (" not in joined:
                continue  # the warm-up before the clock
            name = OPEN
        else:
            name = next(
                (b for f in reversed(frames) for b, keys in _BUCKETS if any(k in f for k in keys)), "other (bench, …)"
            )
        if name.startswith("SDK"):
            inner = next(f for f in reversed(frames) if "adapters/sdk/" in f)
            sdk_lines[inner] = sdk_lines.get(inner, 0) + n
        buckets[name] = buckets.get(name, 0) + n
        total += n
    return total, buckets, sdk_lines


def print_profiles(runs: list[Run]) -> None:
    print()
    print("py-spy: where each consumer process spends its samples while consuming (set-up and warm-up excluded)")
    for variant in VARIANTS:
        total = 0
        buckets: dict[str, int] = {}
        lines: dict[str, int] = {}
        for r in runs:
            if r.variant != variant or r.profile is None or not r.profile.exists():
                continue
            t, b, sl = breakdown(r.profile)
            total += t
            for k, v in b.items():
                buckets[k] = buckets.get(k, 0) + v
            for k, v in sl.items():
                lines[k] = lines.get(k, 0) + v
        if not total:
            continue
        print(f"  {variant} ({total} samples)")
        for name, v in sorted(buckets.items(), key=lambda kv: -kv[1]):
            print(f"    {v / total * 100:5.1f} %  {name}")
        for where, v in sorted(lines.items(), key=lambda kv: -kv[1])[:10]:
            print(f"             {v / total * 100:5.1f} %  {where}")


# ---------------------------------------------------------------------------------------------------- report


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"机器 machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )


def report(runs: list[Run], args: argparse.Namespace) -> str:
    by = {v: [r for r in runs if r.variant == v] for v in VARIANTS}
    med = {v: statistics.median(r.per_s for r in rs) for v, rs in by.items()}
    cpu = {v: statistics.median(r.cpu_ms for r in rs) for v, rs in by.items()}
    sdk_settings = by["sdk"][0].extra.get("settings", "")
    print()
    print(f"{'':14}{'msg/s (median)':>16}{'rounds':>28}{'CPU ms/msg':>12}{'vs sdk':>9}")
    for v in VARIANTS:
        rounds = " ".join(f"{r.per_s:.0f}" for r in by[v])
        rel = med["sdk"] / med[v] if med[v] else 0.0
        print(f"{v:14}{med[v]:>16.0f}{rounds:>28}{cpu[v]:>12.3f}{rel:>9.2f}")
    print(
        f"  sdk: Adapter defaults ({sdk_settings}), attached to a Transport logged in as guest (the consuming code is "
        f"the same as with the system's own broker user); faststream and bare: prefetch {PREFETCH}"
    )
    if cpu["sdk"]:
        print(
            f"  per CPU second of the consumer process (the figure the shared machine's load moves least): sdk / "
            f"faststream {cpu['faststream'] / cpu['sdk']:.2f}, sdk / bare {cpu['bare'] / cpu['sdk']:.2f}"
        )
    vs_fs = med["sdk"] / med["faststream"] if med["faststream"] else 0.0
    vs_bare = med["sdk"] / med["bare"] if med["bare"] else 0.0
    ok_fs, ok_bare = vs_fs >= GOAL_VS_FASTSTREAM, vs_bare >= GOAL_VS_BARE
    print(
        f"目标 goal: sdk ≥ {GOAL_VS_FASTSTREAM} × faststream — {'达到 met' if ok_fs else '未达到 NOT met'} "
        f"({vs_fs:.2f}); sdk ≥ {GOAL_VS_BARE} × bare — {'达到 met' if ok_bare else '未达到 NOT met'} ({vs_bare:.2f})"
    )
    profiles = [r.profile for r in runs if r.profile is not None]
    if profiles:
        print_profiles(runs)
        print(f"py-spy raw stacks: {', '.join(str(p) for p in profiles)}")
    return (
        f"sdk_per_s={med['sdk']:.0f} faststream_per_s={med['faststream']:.0f} bare_per_s={med['bare']:.0f} "
        f"sdk_vs_faststream={vs_fs:.2f} sdk_vs_bare={vs_bare:.2f}"
    )


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1,000 deliveries, 2 rounds")
    ap.add_argument("--messages", type=int, help="deliveries per variant and round (default 5000; 1000 with --quick)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds of the three variants (default 3; 2 with --quick)")
    ap.add_argument("--profile", type=Path, metavar="DIR", help="run each consumer under py-spy (raw stacks in DIR)")
    # internal: one consumer in a child process
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--namespace", help=argparse.SUPPRESS)
    ap.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.messages = args.messages or (1000 if args.quick else 5000)
    args.rounds = max(1, args.rounds or (2 if args.quick else 3))
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        return child_main(args)
    if importlib.util.find_spec("faststream") is None:
        print(
            f"bench/sdk.py needs FastStream, a benchmark-only dependency it does not install itself:\n"
            f"    {shlex.quote(sys.executable)} -m pip install '{FASTSTREAM_PIN}'\n"
            f"(or pip install -e '.[bench]'); see bench/README.md",
            file=sys.stderr,
        )
        return 2
    print("SDK 压测 SDK benchmark: hub-signed deliveries through an SDK handler, FastStream and bare aio-pika")
    print(machine_line())
    print(f"命令 command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    started = time.perf_counter()
    try:
        runs = bench(args)
    except KeyboardInterrupt:
        print("中断 interrupted; everything the bench created was removed", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"失败 failed: {exc}", file=sys.stderr)
        return 1
    last = report(runs, args)
    print(f"{machine_line()} — run took {time.perf_counter() - started:.0f} s")
    print(last)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
