"""Hostile burst (issue 16, item 3): does a burst of 10,000 hostile messages starve valid traffic? The real hub
(``hub run --workers N`` as a child process, on an installation of its own made as bench/e2e.py makes one) gets a
steady, paced stream of valid signed ``document.official`` messages (default 200 msg/s) in two phases of equal
length in the same process tree: a quiet one, and one during which 10,000 hostile messages are published by another
enrolled system (a compromised county system, 榆树市林业局 ``county-220182-oa``) in the normal lane as fast as the
broker confirms them, at its start. Each side publishes as its own RabbitMQ user, with the routing key its topic
permission allows (``normal.<its id>`` on ``ns.submit``), as the SDK does: each lands in its own inbound queue.

The hostile messages are mutants of messages the attacking system signed with its own key
(``tests/hostile/mutations.py``, as the property tests build them): a flipped bit in the signed content, in
DigestValue or SignatureValue, in the certificate; a changed field value, a dropped or duplicated element, a second
signature, a ``ds:Object``, a foreign algorithm or transform, a renamed prefix, a truncation. Most of them pass the
parser and the schema and cost a full signature verification before they are refused.

    .venv/bin/python bench/hostile_burst.py [--rate 200] [--seconds 30] [--hostile 10000] [--workers 2] [--drain]

The hub reads a system whose messages it refuses at ``hub.pipeline.lanes.REFUSAL_RATE_PER_S`` per worker: the flood
waits in the attacker's own queue, and the bench ends with the burst phase (``--drain`` waits until it is answered).

Latency is publish → in the recipient's queue, per valid message (nearest-rank p99). Last line:
``burst_valid_p99_ms=<n> quiet_valid_p99_ms=<n> burst_ratio=<burst ÷ quiet>`` (goal ≤ 2).
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import random
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _e2e_env import RECIPIENT, SENDER, Installation
from _e2e_load import presign
from soak import Sink, p99

from hub.errors import HubError
from tests.hostile import mutations as m

#: The compromised system that floods the hub (enrolled by the bench, in the directory under the same city bureau).
ATTACKER = ("county-220182-oa", "11220182013552847D")  # 榆树市林业局 OA

MUTATIONS: list[tuple[str, Callable[[bytes, int], bytes | None]]] = [
    ("flip a signed byte", lambda d, i: m.flip(d, 200 + i % max(1, d.index(b"<ds:Signature") - 400), 1)),
    ("DigestValue bit", lambda d, i: m.tweak_value(d, "DigestValue", i)),
    ("SignatureValue bit", lambda d, i: m.tweak_value(d, "SignatureValue", i)),
    ("certificate bit", lambda d, i: m.tweak_value(d, "X509Certificate", 2 * (i % 300))),
    ("field value", lambda d, i: m.change_text(d, i, "秘密")),
    ("drop signed element", lambda d, i: m.drop_element(d, i, True)),
    ("duplicate signed element", lambda d, i: m.duplicate_element(d, i, True)),
    ("second signature", lambda d, i: m.add_signature(d)),
    ("ds:Object", lambda d, i: m.add_object(d)),
    ("foreign SignatureMethod", lambda d, i: m.set_algorithm(d, "SignatureMethod", m.HOSTILE_ALGORITHMS[i % 7])),
    ("XSLT transform", lambda d, i: m.add_transform(d, "http://www.w3.org/TR/1999/REC-xslt-19991116", True)),
    ("renamed prefix", lambda d, i: m.change_prefix(d, i, "x")),
    ("truncated", lambda d, i: m.truncate(d, 100 + i * 37)),
    ("signature moved", lambda d, i: m.move_signature(d, "body")),
]


def make_hostile(bases: list[tuple[str, bytes]], seed: int = 16) -> tuple[list[bytes], dict[str, int]]:
    rng = random.Random(seed)
    out: list[bytes] = []
    kinds: dict[str, int] = {}
    for k, (_, data) in enumerate(bases):
        for _ in range(5):
            name, fn = MUTATIONS[rng.randrange(len(MUTATIONS))]
            mutant = fn(data, rng.randrange(1 << 16) + k)
            if mutant is not None and mutant != data:
                out.append(mutant)
                kinds[name] = kinds.get(name, 0) + 1
                break
    return out, kinds


class Burst:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.inst = Installation()
        self.sent: dict[str, float] = {}
        self.sink = Sink(self.sent)
        self.transport: Any = None
        self.admin: Any = None
        self.phase_sent_at: list[float] = []

    async def run(self) -> str:
        a = self.args
        t0 = time.perf_counter()
        settings = await self.inst.open()
        from hub.pipeline.client import enroll
        from hub.transport import Names, Outgoing, Transport
        from hub.transport.users import amqp_url_for, provision

        names = Names(settings.namespace)
        await enroll(settings, *ATTACKER)
        await provision(settings, [(SENDER[0], None), (ATTACKER[0], None)])
        per_phase = int(a.rate * a.seconds)
        warm = int(a.rate * 10)
        loop = asyncio.get_running_loop()
        valid = await loop.run_in_executor(None, presign, settings.state_dir, SENDER, RECIPIENT, warm + 2 * per_phase)
        bases = await loop.run_in_executor(None, presign, settings.state_dir, ATTACKER, RECIPIENT, a.hostile)
        hostile, kinds = await loop.run_in_executor(None, make_hostile, bases)
        print(
            f"准备 set-up: database {self.inst.db_name}, namespace {self.inst.namespace}; {len(valid)} valid and "
            f"{len(hostile)} hostile messages made in advance — {time.perf_counter() - t0:.1f} s\n"
            f"  hostile kinds: {dict(sorted(kinds.items()))}",
            flush=True,
        )
        cmd = self.inst.start_hub(a.workers)
        print(f"枢纽 hub: {shlex.join(['hub', *cmd[3:]])} (pid {self.inst.hub.pid if self.inst.hub else '?'})")
        self.transport = await Transport.connect(
            settings, url=amqp_url_for(settings, SENDER[0]), client_name="burst-valid-sender"
        )
        self.admin = await Transport.connect(settings, client_name="burst-watch")
        await self.sink.start(
            settings.amqp_url,
            recipient_queue=names.system_queue(RECIPIENT[0]),
            sender_queue=names.system_queue(ATTACKER[0]),  # the attacker's refusals (the valid sender's receipts aside)
        )
        flood_queue = names.system_inbound_queue("normal", ATTACKER[0])
        await self._ready(names.system_inbound_queue("normal", SENDER[0]), a.workers)
        exchange = names.submit_exchange
        valid_key, hostile_key = names.inbound_key("normal", SENDER[0]), names.inbound_key("normal", ATTACKER[0])
        sender_user = self.transport.user

        async def paced(part: list[tuple[str, bytes]]) -> list[float]:
            self.sink.after_warmup = []
            self.sink.sent_at = []
            self.sink.warm = True
            tasks = []
            start = time.perf_counter()
            i = 0
            while i < len(part):
                now = time.perf_counter()
                due = min(len(part), int((now - start) * a.rate) + 1)
                if due > i:
                    for mid, _ in part[i:due]:
                        self.sent[mid] = now
                    items = [
                        Outgoing(exchange, valid_key, body, {}, 0, mid, user_id=sender_user)
                        for mid, body in part[i:due]
                    ]
                    tasks.append(asyncio.create_task(self.transport.publish_many(items)))
                    i = due
                await asyncio.sleep(max(0.0, start + i / a.rate - time.perf_counter()))
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + 120
            while self.sent and time.monotonic() < deadline:
                self.inst.check_alive()
                await asyncio.sleep(0.1)
            if self.sent:
                raise RuntimeError(f"{len(self.sent)} valid message(s) did not arrive within 120 s")
            self.sink.warm = False
            self.phase_sent_at = list(self.sink.sent_at)
            return list(self.sink.after_warmup)

        flood_file = self.inst.tmp / "hostile.pickle"
        flood_file.write_bytes(pickle.dumps(hostile))

        async def flood() -> float:
            """The attacker publishes from a process of its own (another machine in real life): its publishing
            work does not delay the valid sender's pacing or the sink's clock in this process."""
            proc = await asyncio.create_subprocess_exec(
                *(["nice", "-n", "19"] if a.nice_attacker else []),
                sys.executable,
                __file__,
                "--flood-child",
                str(flood_file),
                amqp_url_for(settings, ATTACKER[0]),
                exchange,
                hostile_key,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"the attacker's process exited {proc.returncode}")
            return float(out.decode().strip().splitlines()[-1])

        await paced(valid[:warm])
        print(f"预热 warm-up: {warm} valid messages", flush=True)
        quiet = await paced(valid[warm : warm + per_phase])
        print(f"安静 quiet: {len(quiet)} valid, p99 {p99(quiet):.1f} ms, max {max(quiet):.1f} ms", flush=True)
        errors_before = sum(self.sink.errors.values())
        flood_start = time.perf_counter()
        flooding = asyncio.create_task(flood())
        burst = await paced(valid[warm + per_phase :])
        flood_s = await flooding
        # The hub's own part: messages sent after the broker had taken the whole flood (while it takes 10,000
        # messages in about a second it is busy, and so is the machine's CPU, for everybody).
        after = [ms for ms, t in zip(burst, self.phase_sent_at, strict=True) if t >= flood_start + flood_s]
        burst_s = time.perf_counter() - flood_start
        refused = sum(self.sink.errors.values()) - errors_before
        waiting = await self._depth(flood_queue)
        print(
            f"突发 burst: {len(burst)} valid, p99 {p99(burst):.1f} ms, max {max(burst):.1f} ms; {len(hostile)} hostile "
            f"published in {flood_s:.1f} s by {ATTACKER[0]}; by the end of the phase ({burst_s:.0f} s) {refused} "
            f"were answered with a signed hub.error (≈{refused / burst_s:.0f}/s: the attacker's refusal rate) and "
            f"{waiting} still waited in its own inbound queue (kept, read at that rate)\n"
            f"  sent after the broker had taken the flood ({flood_s:.1f} s in): {len(after)} valid, p99 "
            f"{p99(after):.1f} ms ({p99(after) / p99(quiet):.2f}× quiet) — the rest of the burst figure is the "
            f"broker and the machine taking 10,000 messages in {flood_s:.1f} s",
            flush=True,
        )
        if a.drain:
            drained_s = (await self._drained(flood_queue)) - flood_start
            await asyncio.sleep(2)
            refused = sum(self.sink.errors.values()) - errors_before
            print(
                f"排空 drained: the attacker's queue empty {drained_s:.0f} s after the flood began; {refused} signed "
                f"hub.error(s) to it (the rest are parked in the dead-letter queue: their signature did not verify)",
                flush=True,
            )
        q, b = p99(quiet), p99(burst)
        return f"burst_valid_p99_ms={b:.1f} quiet_valid_p99_ms={q:.1f} burst_ratio={b / q:.2f}"

    async def _depth(self, queue: str) -> int:
        channel = await self.admin._channel.get_underlay_channel()
        return int((await channel.queue_declare(queue, passive=True)).message_count or 0)

    async def _drained(self, queue: str) -> float:
        """perf_counter time at which ``queue`` was first seen empty."""
        while await self._depth(queue):
            await asyncio.sleep(0.5)
        return time.perf_counter()

    async def _ready(self, queue: str, consumers: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        channel = await self.admin._channel.get_underlay_channel()
        while True:
            self.inst.check_alive()
            ok = await channel.queue_declare(queue, passive=True)
            if (ok.consumer_count or 0) >= consumers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"hub workers did not subscribe to {queue} within {timeout:.0f} s")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for t in (self.transport, self.admin):
            if t is not None:
                await t.close()
        await self.sink.close()
        for problem in await self.inst.close(keep_log=self.args.keep):
            print(f"清理 clean-up: {problem}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="valid messages per second (default 200)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default 30)")
    ap.add_argument("--hostile", type=int, default=10_000, help="hostile messages in the burst (default 10,000)")
    ap.add_argument("--workers", type=int, default=2, help="hub run --workers (default 2)")
    ap.add_argument("--keep", type=Path, help="copy the hub's log into this directory")
    ap.add_argument(
        "--nice-attacker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the attacker's process at the lowest CPU priority (it stands for another machine; default on)",
    )
    ap.add_argument("--drain", action="store_true", help="wait until every hostile message was answered (minutes)")
    return ap.parse_args(argv)


async def amain(args: argparse.Namespace) -> str:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    burst = Burst(args)
    try:
        return await burst.run()
    finally:
        await burst.close()


async def _flood_child(path: str, url: str, exchange: str, key: str) -> float:
    """The attacker: publish every message of ``path`` as fast as the broker confirms (4 batches of 256 in flight)."""
    from hub.settings import Settings
    from hub.transport import Outgoing, Transport

    hostile: list[bytes] = pickle.loads(Path(path).read_bytes())
    transport = await Transport.connect(Settings.from_env(), url=url, client_name="burst-attacker")
    try:
        start = time.perf_counter()
        sem = asyncio.Semaphore(4)

        async def one(first: int) -> None:
            async with sem:
                chunk = hostile[first : first + 256]
                await transport.publish_many(
                    [
                        Outgoing(exchange, key, body, {}, 0, f"hostile-{first + k}", user_id=transport.user)
                        for k, body in enumerate(chunk)
                    ]
                )

        await asyncio.gather(*(one(i) for i in range(0, len(hostile), 256)))
        return time.perf_counter() - start
    finally:
        await transport.close()


def main() -> int:
    if sys.argv[1:2] == ["--flood-child"]:
        print(asyncio.run(_flood_child(*sys.argv[2:6])))
        return 0
    args = parse_args()
    print(f"恶意突发 hostile burst: {shlex.join([Path(sys.executable).name, *sys.argv])}", flush=True)
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
    print(last)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
