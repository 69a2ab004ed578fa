"""Soak (issue 16, item 4): the real hub (``hub run --workers N`` as a child process, on an installation of its own
made as bench/e2e.py makes one) under a steady publish rate of signed ``document.official`` messages from a real
sender to a real recipient, for ``--minutes``; every 30 s it prints elapsed time, delivered throughput, p99
latency (publish → in the recipient's queue) and each hub worker's RSS (VmRSS from /proc/<pid>/status of the
``hub run`` children).

    .venv/bin/python bench/soak.py --minutes 10 [--rate 400] [--workers 2]

Messages are signed before the clock starts (signing is the sender's cost), in a process pool, and spooled to a
file in the installation's temporary directory (10 minutes at 400 msg/s is 240,000 distinct messages, ~1 GB), so
the bench's own memory stays flat; the publisher reads them back in order at the offered rate (absolute schedule:
message i at start + i/rate). The sink consumes the recipient's queue (deliveries) and the sender's queue
(receipts and hub.errors) without acks.

Last line: ``soak_rss_growth_mb=<max over workers of (RSS at the end − RSS at the first sample after warm-up)>
soak_per_s=<delivered per second over the run> soak_p99_ms=<p99 latency after warm-up>``. Goal (issue 16):
``soak_rss_growth_mb`` under 20 at ≥ 300 msg/s for 10 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shlex
import signal
import struct
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _e2e_env import RECIPIENT, SENDER, Installation
from _e2e_load import _error_code, _sign_chunk

from hub.errors import HubError

REPORT_EVERY_S = 30.0
SAMPLE_EVERY_S = 5.0
_REC = struct.Struct("!HI")  # message id length, body length


# ---------------------------------------------------------------------------------------------------- spool


def spool(state_dir: Path, path: Path, n: int) -> tuple[int, float]:
    """Sign ``n`` distinct messages in a process pool and append them to ``path``. Returns (count, mean size)."""
    procs = max(1, min(os.cpu_count() or 1, 4))
    chunk = 2000
    sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    total = 0
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool, path.open("wb") as out:
        pending = [pool.submit(_sign_chunk, str(state_dir), SENDER, RECIPIENT, k) for k in sizes[: procs * 2]]
        rest = sizes[procs * 2 :]
        count = 0
        while pending:
            part = pending.pop(0).result()
            if rest:
                pending.append(pool.submit(_sign_chunk, str(state_dir), SENDER, RECIPIENT, rest.pop(0)))
            for mid, body in part:
                m = mid.encode()
                out.write(_REC.pack(len(m), len(body)) + m + body)
                total += len(body)
                count += 1
    return count, total / max(1, count)


def read_records(f: BinaryIO, k: int) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(k):
        head = f.read(_REC.size)
        if len(head) < _REC.size:
            break
        lm, lb = _REC.unpack(head)
        mid = f.read(lm).decode()
        out.append((mid, f.read(lb)))
    return out


# ---------------------------------------------------------------------------------------------------- /proc


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]


# ---------------------------------------------------------------------------------------------------- sink


class Sink:
    """Latency per delivered message (publish time looked up by message id, then forgotten), receipts and errors
    counted. No acks: the instrument, not the system under test."""

    def __init__(self, sent: dict[str, float]) -> None:
        self.sent = sent
        self.window: list[float] = []
        self.after_warmup: list[float] = []
        #: The publish time of each latency in ``after_warmup`` (same order).
        self.sent_at: list[float] = []
        self.warm = False
        self.delivered = 0
        self.strays = 0
        self.receipts = 0
        self.errors: dict[str, int] = {}
        self._conn: Any = None

    async def start(self, url: str, *, recipient_queue: str, sender_queue: str) -> None:
        import aio_pika

        self._conn = await aio_pika.connect(url, client_properties={"connection_name": "soak-sink"})
        channel = await (await self._conn.channel(publisher_confirms=False)).get_underlay_channel()
        await channel.basic_qos(prefetch_count=2000)
        clock = time.perf_counter

        async def on_delivery(dm: Any) -> None:
            t = self.sent.pop(dm.header.properties.message_id or "", None)
            if t is None:
                self.strays += 1
                return
            ms = (clock() - t) * 1000
            self.delivered += 1
            self.window.append(ms)
            if self.warm:
                self.after_warmup.append(ms)
                self.sent_at.append(t)

        async def on_reply(dm: Any) -> None:
            kind = (dm.header.properties.headers or {}).get("x-hub-kind")
            if kind == "receipt":
                self.receipts += 1
            else:
                code = _error_code(dm.body) if kind == "error" else f"unexpected:{kind}"
                self.errors[code] = self.errors.get(code, 0) + 1

        await channel.basic_consume(recipient_queue, on_delivery, no_ack=True)
        await channel.basic_consume(sender_queue, on_reply, no_ack=True)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


# ---------------------------------------------------------------------------------------------------- the run


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.inst = Installation()
        self.sent: dict[str, float] = {}
        self.sink = Sink(self.sent)
        self.transport: Any = None
        self.published = 0
        self.publish_s = 0.0
        #: pid -> [(elapsed, rss MB)]
        self.rss: dict[int, list[tuple[float, float]]] = {}
        self.warmup_s = min(60.0, args.minutes * 60 / 4)

    async def run(self) -> str:
        a = self.args
        t0 = time.perf_counter()
        settings = await self.inst.open()
        from hub.transport import Names, Outgoing, Transport

        names = Names(settings.namespace)
        n = int(a.rate * a.minutes * 60)
        spool_path = self.inst.tmp / "soak.spool"
        loop = asyncio.get_running_loop()
        count, size = await loop.run_in_executor(None, spool, settings.state_dir, spool_path, n)
        print(
            f"准备 set-up: database {self.inst.db_name}, namespace {self.inst.namespace}, {count} messages signed "
            f"in advance (mean {size:.0f} bytes) — {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        cmd = self.inst.start_hub(a.workers)
        print(f"枢纽 hub: {shlex.join(['hub', *cmd[3:]])} (pid {self.inst.hub.pid if self.inst.hub else '?'})")
        self.transport = await Transport.connect(settings, client_name="soak-publisher")
        await self.sink.start(
            settings.amqp_url,
            recipient_queue=names.system_queue(RECIPIENT[0]),
            sender_queue=names.system_queue(SENDER[0]),
        )
        await self._ready(names.inbound_queue("normal"), a.workers)
        workers = self.inst.hub_worker_pids()
        print(f"工作进程 workers: {workers}; offered {a.rate:.0f} msg/s for {a.minutes:g} min", flush=True)

        exchange = names.inbound_exchange
        stop = asyncio.Event()
        monitor = asyncio.create_task(self._monitor(stop))
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        self.start = start
        i = 0
        try:
            with spool_path.open("rb") as f:
                while i < count:
                    now = time.perf_counter()
                    due = min(count, int((now - start) * a.rate) + 1)
                    if due > i:
                        part = read_records(f, due - i)
                        for mid, _ in part:
                            self.sent[mid] = now
                        items = [Outgoing(exchange, "normal", body, {}, 0, mid) for mid, body in part]
                        task = asyncio.create_task(self.transport.publish_many(items))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        i = due
                        self.published = i
                        if len(tasks) > 200:
                            raise RuntimeError("the broker stopped confirming publishes (200 batches outstanding)")
                    await asyncio.sleep(max(0.0, start + i / a.rate - time.perf_counter()))
                await asyncio.gather(*tasks)
            self.publish_s = time.perf_counter() - start
            # Drain: what was published must arrive (the hub catches up), within a minute.
            deadline = time.monotonic() + 60
            while self.sent and time.monotonic() < deadline:
                self.inst.check_alive()
                await asyncio.sleep(0.2)
        finally:
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stop.set()
            await monitor
        return self._summary(time.perf_counter() - start)

    async def _monitor(self, stop: asyncio.Event) -> None:
        """RSS every 5 s, a report line every 30 s."""
        last_report = time.perf_counter()
        last_delivered = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
            self.inst.check_alive()
            now = time.perf_counter()
            elapsed = now - self.start
            for pid in self.inst.hub_worker_pids():
                mb = rss_mb(pid)
                if mb is not None:
                    self.rss.setdefault(pid, []).append((elapsed, mb))
            if not self.sink.warm and elapsed >= self.warmup_s:
                self.sink.warm = True
            if now - last_report >= REPORT_EVERY_S - 0.5 or (stop.is_set() and now - last_report > 2.0):
                span = now - last_report
                got = self.sink.delivered - last_delivered
                window, self.sink.window = self.sink.window, []
                rss = " ".join(f"{pid}:{s[-1][1]:.1f}MB" for pid, s in sorted(self.rss.items()) if s)
                print(
                    f"{elapsed:7.0f} s  published {self.published:>7}  delivered {self.sink.delivered:>7}  "
                    f"{got / span:6.0f} msg/s  p99 {p99(window):7.1f} ms  backlog {len(self.sent):>6}  "
                    f"RSS {rss}",
                    flush=True,
                )
                last_report, last_delivered = now, self.sink.delivered

    def _summary(self, total_s: float) -> str:
        growth = 0.0
        lines = []
        for pid, samples in sorted(self.rss.items()):
            after = [mb for t, mb in samples if t >= self.warmup_s]
            if not after:
                continue
            g = after[-1] - after[0]
            growth = max(growth, g)
            lines.append(
                f"  worker {pid}: {after[0]:.1f} MB after warm-up ({self.warmup_s:.0f} s) → {after[-1]:.1f} MB at the "
                f"end (peak {max(after):.1f}), growth {g:+.1f} MB"
            )
        print("\n".join(lines))
        lost = len(self.sent)
        print(
            f"结果 result: published {self.published} in {self.publish_s:.1f} s, delivered {self.sink.delivered}, "
            f"receipts {self.sink.receipts}, not arrived {lost}, strays {self.sink.strays}, errors {self.sink.errors}"
        )
        if lost:
            raise RuntimeError(f"{lost} message(s) did not reach the recipient within 60 s of the last publish")
        if self.sink.errors:
            raise RuntimeError(f"the hub answered with hub.error: {self.sink.errors}")
        per_s = self.sink.delivered / max(self.publish_s, 1e-9)
        return f"soak_rss_growth_mb={growth:.1f} soak_per_s={per_s:.0f} soak_p99_ms={p99(self.sink.after_warmup):.1f}"

    async def _ready(self, queue: str, consumers: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        channel = await self.transport._channel.get_underlay_channel()
        while True:
            self.inst.check_alive()
            ok = await channel.queue_declare(queue, passive=True)
            if (ok.consumer_count or 0) >= consumers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"hub workers did not subscribe to {queue} within {timeout:.0f} s")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        await self.sink.close()
        for problem in await self.inst.close(keep_log=self.args.keep):
            print(f"清理 clean-up: {problem}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to publish (default 10)")
    ap.add_argument("--rate", type=float, default=400.0, help="offered rate, msg/s (default 400)")
    ap.add_argument("--workers", type=int, default=2, help="hub run --workers (default 2)")
    ap.add_argument("--keep", type=Path, help="copy the hub's log into this directory")
    return ap.parse_args(argv)


async def amain(args: argparse.Namespace) -> str:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    soak = Soak(args)
    try:
        return await soak.run()
    finally:
        await soak.close()


def main() -> int:
    args = parse_args()
    print(f"浸泡测试 soak: {shlex.join([Path(sys.executable).name, *sys.argv])}", flush=True)
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
