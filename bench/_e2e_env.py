"""The throw-away installation bench/e2e.py measures: its own PostgreSQL database and RabbitMQ namespace, a CA
and enrolled systems in a temporary state directory, ``hub run`` and the raw relays as child processes, and the
CPU accounting read from /proc. Everything made here is removed by ``Installation.close`` (also after a failure
or Ctrl-C: the caller runs it in ``finally``)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.settings import PROJECT_ROOT, Settings  # noqa: E402

ADMIN_DSN = os.environ.get("HUB_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DIRECTORY_XML = PROJECT_ROOT / "routes" / "directory.xml"
HUB_AGENCY = "11220000013544357T"  # 吉林省林业和草原局 runs the hub
SENDER = ("county-220122-oa", "11220122013550216R")  # 农安县林业局 OA
RECIPIENT = ("city-220100-oa", "11220100013544550M")  # 长春市林业局 OA
RELAY_SCRIPT = Path(__file__).resolve().parent / "_relay.py"
TICKS = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the bench dies without cleaning up (e.g. SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _admin_sql(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Installation:
    """One hub installation for one bench run. ``open()`` builds it; ``close()`` removes every trace."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hub-bench-")))
    settings: Settings | None = None
    db_created: bool = False
    namespace_used: bool = False
    hub: subprocess.Popen[bytes] | None = None
    relays: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: The process engine's pid (``hub run``'s child that reads the feed; ``note_engine``), for its own row.
    engine_pid: int | None = None

    @property
    def db_name(self) -> str:
        return f"hub_bench_{self.tag}"

    @property
    def namespace(self) -> str:
        return f"bench-{self.tag}"

    @property
    def raw_in(self) -> str:
        return f"{self.namespace}.raw.in"

    @property
    def raw_out(self) -> str:
        return f"{self.namespace}.raw.out"

    @property
    def hub_log(self) -> Path:
        return self.tmp / "hub-run.log"

    # ------------------------------------------------------------------ set-up

    async def open(self) -> Settings:
        """Database, CA, directory in PostgreSQL, the two enrolled systems, the topology and the relay queues."""
        from hub.commands import trust_admin as admin
        from hub.directory import load_directory
        from hub.pipeline.client import enroll
        from hub.store.db import create_pool
        from hub.store.directory import DirectoryRepository

        await _admin_sql(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        dsn = ADMIN_DSN.rsplit("/", 1)[0] + "/" + self.db_name
        s = self.settings = Settings.from_env(pg_dsn=dsn, namespace=self.namespace, state_dir=self.tmp / "state")
        await admin.init(s, s.state_dir / "pki", agency=HUB_AGENCY)  # migrates first
        directory = load_directory(DIRECTORY_XML)
        pool = await create_pool(s.pg_dsn, min_size=1, max_size=2)
        try:
            await DirectoryRepository(pool).save(directory)
        finally:
            await pool.close()
        for system, agency in (SENDER, RECIPIENT):
            await enroll(s, system, agency)
        self.namespace_used = True
        await self._declare(directory)
        return s

    async def _declare(self, directory: Any) -> None:
        """The hub's topology, and for the relay two queues shaped like the hub's: the inbound lane (classic) and a
        system queue (classic, x-max-priority)."""
        from hub.transport import MAX_PRIORITY, Transport

        assert self.settings is not None
        t = await Transport.connect(self.settings, client_name="bench-setup")
        try:
            await t.declare_topology(sys_.id for sys_ in directory.systems())
            channel = await t._channel.get_underlay_channel()  # the bench may use aio-pika's layer directly
            await channel.queue_declare(self.raw_in, durable=True, arguments={"x-queue-type": "classic"})
            await channel.queue_declare(
                self.raw_out, durable=True, arguments={"x-queue-type": "classic", "x-max-priority": MAX_PRIORITY}
            )
        finally:
            await t.close()

    def env(self) -> dict[str, str]:
        assert self.settings is not None
        return self.settings.to_env()

    def start_hub(self, workers: int, *, processes: bool = True, **env: str) -> list[str]:
        """``hub run --workers N`` as an operator starts it (``env``: variables to add, e.g. ``HUB_AMQP_FAST="0"``;
        ``processes=False``: ``--no-processes``); its log is appended to a file in the temp dir."""
        cmd = [sys.executable, "-m", "hub.cli", "run", "--workers", str(workers)]
        if not processes:
            cmd.append("--no-processes")
        log = self.hub_log.open("ab")
        self.hub = subprocess.Popen(
            cmd,
            env={**self.env(), **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        log.close()
        return cmd

    async def stop_hub(self, timeout: float = 60.0) -> None:
        """Stop ``hub run`` gracefully (SIGTERM: the workers finish their batches) and wait until it exited."""
        if self.hub is None:
            return
        hub, self.hub = self.hub, None
        if hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while hub.poll() is None:
            if time.monotonic() > deadline:
                hub.kill()
                raise RuntimeError(
                    f"hub run did not stop within {timeout:.0f} s of SIGTERM:\n{self.tail(self.hub_log)}"
                )
            await asyncio.sleep(0.05)

    def start_relays(self, n: int, prefetch: int) -> None:
        assert self.settings is not None
        for _ in range(n):
            self.relays.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(RELAY_SCRIPT),
                        self.settings.amqp_url,
                        self.raw_in,
                        self.raw_out,
                        str(prefetch),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=(self.tmp / "relay.log").open("ab"),
                    preexec_fn=_die_with_parent,
                    start_new_session=True,
                )
            )

    def check_alive(self) -> None:
        """Fail fast (with the hub's log) when a child process died."""
        if self.hub is not None and self.hub.poll() is not None:
            raise RuntimeError(f"hub run exited with {self.hub.returncode}:\n{self.tail(self.hub_log)}")
        for r in self.relays:
            if r.poll() is not None:
                raise RuntimeError(f"a relay exited with {r.returncode}:\n{self.tail(self.tmp / 'relay.log')}")

    @staticmethod
    def tail(path: Path, lines: int = 30) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def hub_pids(self) -> list[int]:
        """The supervisor and all its children (workers and multiprocessing's resource tracker)."""
        return [self.hub.pid, *children_of(self.hub.pid)] if self.hub is not None else []

    async def note_engine(self, timeout: float = 30.0) -> None:
        """Find the process engine among ``hub run``'s children: its row in ``process_instances`` (written at its
        start) names its pid. Left None (no row of its own in the CPU table) when it does not show."""
        import asyncpg

        assert self.settings is not None
        self.engine_pid = None
        conn = await asyncpg.connect(self.settings.pg_dsn)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                rows = await conn.fetch("SELECT pid FROM process_instances WHERE role = 'processes'")
                pids = {int(r["pid"]) for r in rows}
                mine = pids & set(self.hub_pids())
                if mine:
                    self.engine_pid = mine.pop()
                    return
                await asyncio.sleep(0.2)
            print(f"流程引擎 process engine: no row of hub run's within {timeout:.0f} s; its CPU is not shown apart")
        finally:
            await conn.close()

    def hub_worker_pids(self) -> list[int]:
        """The pipeline worker processes only."""
        if self.hub is None:
            return []
        return [p for p in children_of(self.hub.pid) if "spawn_main" in _cmdline(p)]

    # ------------------------------------------------------------------ tear-down

    async def close(self, *, keep_log: Path | None = None) -> list[str]:
        """Stop the children, tear down the namespace, drop the database, remove the temp dir (after copying the
        hub's log into ``keep_log`` if given). Returns problems (printed by the caller; a failed clean-up must not
        hide the bench's own error)."""
        problems: list[str] = []
        procs = ([self.hub] if self.hub is not None else []) + self.relays
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in procs:
            while p.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.poll() is None:
                problems.append(f"pid {p.pid} did not stop on SIGTERM; killed")
                p.kill()
                p.wait()
        if self.hub is not None:
            for pid in self.hub_pids()[1:]:  # orphans of a supervisor that was killed
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if self.namespace_used and self.settings is not None:
            from hub.transport.users import teardown_namespace

            try:
                await teardown_namespace(self.settings)
            except Exception as exc:
                problems.append(f"RabbitMQ namespace {self.namespace} not removed: {exc}")
        if self.db_created:
            try:
                await _admin_sql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except Exception as exc:
                problems.append(f"database {self.db_name} not dropped: {exc}")
        if keep_log is not None and self.hub_log.exists():
            keep_log.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.hub_log, keep_log / "hub.log")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return problems


# ---------------------------------------------------------------------------------------------------- /proc


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process in clock ticks (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def ticks_between(before: dict[int, int], after: dict[int, int], pids: Any) -> int:
    """CPU ticks of ``pids`` between two readings (pid → ticks), each process from its first reading: one that was
    not there before counts from 0, one that is gone since (0) or whose pid was reused adds nothing."""
    return sum(max(0, after.get(pid, 0) - before.get(pid, 0)) for pid in pids)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, irq + softirq) clock ticks of the whole machine since boot, from /proc/stat. Busy excludes
    idle and iowait; steal is time the hypervisor gave our virtual CPUs to someone else."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = parts[:8]
    return user + nice + system + irq + softirq + steal, steal, irq + softirq


@dataclass
class CpuGroups:
    """Which processes belong to which component. Re-evaluated at every snapshot (PostgreSQL backends and
    worker processes come and go)."""

    inst: Installation

    def groups(self, pids: list[int]) -> dict[str, list[int]]:
        return {
            "hub": self.inst.hub_pids(),
            "engine": [self.inst.engine_pid] if self.inst.engine_pid is not None else [],
            "relay": [r.pid for r in self.inst.relays],
            "rabbitmq": [p for p in pids if _comm(p) == "beam.smp"],
            "postgres": [p for p in pids if _comm(p) == "postgres" and self.inst.db_name in _cmdline(p)],
            "bench": [os.getpid()],
        }

    def snapshot(self) -> CpuSnapshot:
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        ticks = {pid: cpu_ticks(pid) for pid in pids}
        groups = self.groups(pids)
        mine = {pid for members in groups.values() for pid in members}
        others = {pid: _comm(pid) for pid in pids if pid not in mine}
        busy, steal, irq = machine_ticks()
        return CpuSnapshot(ticks, groups, others, busy, steal, irq, time.perf_counter())


@dataclass
class CpuSnapshot:
    ticks: dict[int, int]
    groups: dict[str, list[int]]
    others: dict[int, str]
    busy: int
    steal: int
    irq: int
    at: float

    def seconds_since(self, before: CpuSnapshot) -> dict[str, float]:
        """CPU seconds per component between two snapshots. ``other`` is every other process on the machine
        (other users of the shared cores); ``irq`` interrupt and softirq time (loopback TCP is processed there);
        ``steal`` time the hypervisor ran someone else on our cores."""

        out = {name: ticks_between(before.ticks, self.ticks, pids) / TICKS for name, pids in self.groups.items()}
        out["other"] = ticks_between(before.ticks, self.ticks, self.others) / TICKS
        out["irq"] = (self.irq - before.irq) / TICKS
        out["steal"] = (self.steal - before.steal) / TICKS
        out["machine"] = (self.busy - before.busy) / TICKS
        return out

    def top_others(self, before: CpuSnapshot, n: int = 3) -> list[tuple[str, float]]:
        """The busiest other processes by name (CPU seconds), to explain a noisy figure."""
        by_name: dict[str, float] = {}
        for pid, name in self.others.items():
            d = max(0, self.ticks.get(pid, 0) - before.ticks.get(pid, 0)) / TICKS
            if d:
                by_name[name] = by_name.get(name, 0.0) + d
        return sorted(by_name.items(), key=lambda kv: -kv[1])[:n]
