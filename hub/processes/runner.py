"""Running the process engine: ``hub processes run`` and, as one more supervised process, ``hub run``.

The engine process connects to PostgreSQL and RabbitMQ as the hub, loads the same context as a worker (directory,
routes, schemas, the hub's key), builds every process found in ``PROCESS_MODULES`` and loops. It also empties the hub
system's own queue: the pipeline answers each message a process sent with a hub.receipt or hub.error addressed to
the hub; a receipt is dropped, an error raises an alarm (``PROCESS_SEND_REFUSED``) — a process must never send what
the hub refuses, so that is a bug for the people on duty to see.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.aio import stopped
from hub.errors import HubError
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.pipeline.context import Context
    from hub.processes.engine import Process, ProcessEngine
    from hub.transport import Incoming

log = logging.getLogger("hub.processes")

#: The processes, each a module with ``make(context, settings) -> Process`` (and optionally ``register(sub)`` for
#: its commands). A module not (yet) present is skipped.
PROCESS_MODULES = (
    "hub.processes.documents",
    "hub.processes.approvals",
    "hub.processes.emergencies",
    "hub.processes.meetings",
)


def process_modules() -> list[Any]:
    found = []
    for name in PROCESS_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


def make_processes(context: Context, settings: Settings) -> list[Process]:
    return [m.make(context, settings) for m in process_modules()]


@dataclass(frozen=True)
class ProcessFiles:
    """The processes' own files (the broadcast plan, the documents' deadlines, the holiday calendar: each module's
    ``config_files``), for an engine that follows their edits without a restart
    (``ProcessEngine.follow_process_files``)."""

    settings: Settings

    def fingerprint(self) -> str:
        """What the files are now (``hub.pipeline.follow.files_fingerprint``; a missing file counts as such)."""
        from hub.pipeline.follow import files_fingerprint

        listed = (getattr(m, "config_files", None) for m in process_modules())
        return files_fingerprint(path for files in listed if files is not None for path in files(self.settings))

    def problems(self) -> list[str]:
        """What keeps a module from using its files as they are now (each module's ``config_problem``)."""
        found = []
        for m in process_modules():
            check = getattr(m, "config_problem", None)
            if check is not None and (problem := check(self.settings)):
                found.append(str(problem))
        return found

    def make(self, context: Context) -> list[Process]:
        return make_processes(context, self.settings)


async def open_engine(
    settings: Settings, *, clock: Callable[[], datetime] | None = None, connect: bool = True
) -> tuple[ProcessEngine, Any]:
    """An engine with its own pool and (``connect``) transport; returns (engine, closer)."""
    from hub.pipeline.context import load_context
    from hub.pipeline.follow import starting_view
    from hub.processes.engine import ProcessEngine
    from hub.store.db import create_pool
    from hub.transport import Transport

    pool = await create_pool(settings.pg_dsn, min_size=1, max_size=3)
    try:
        version, routes = await starting_view(pool, settings)  # before the context: a change in between is taken
        files = ProcessFiles(settings)
        fingerprint = files.fingerprint()  # before the processes read them, for the same reason
        context = await load_context(settings, pool)
        transport = await Transport.connect(settings, client_name="hub-processes") if connect else None
    except BaseException:
        await pool.close()
        raise
    engine = ProcessEngine(
        pool, context, make_processes(context, settings), transport=transport, clock=clock, directory_version=version
    )
    engine.routes_fingerprint = routes
    if connect:  # the engine of hub run / hub processes run (not a command's look ahead)
        from hub.metrics import directory_taken

        directory_taken("processes", 0, version)
    engine.files, engine.files_fingerprint = files, fingerprint

    async def close() -> None:
        if transport is not None:
            await transport.close()
        await pool.close()

    return engine, close


async def _answers(engine: ProcessEngine, batch: list[Incoming]) -> None:
    """The hub's answers to what the processes sent: errors become alarms, everything is acknowledged."""
    from hub.envelope import Envelope
    from hub.envelope.intake import parse
    from hub.pipeline.client import read_reply

    assert engine.transport is not None
    refused = []
    for m in batch:
        try:
            reply = read_reply(Envelope.from_tree(parse(m.body, max_bytes=engine.max_bytes)))
        except Exception:  # an answer it cannot read must not stop the others being acknowledged
            log.exception("could not read an answer to a process message")
            reply = None
        if reply is not None and reply.kind == "error":
            refused.append(reply)
    if refused:
        async with engine.pool.acquire() as conn, conn.transaction():
            from hub.processes.engine import Tx

            tx = Tx(engine, conn, "engine", engine.clock())
            for r in refused:
                log.error("the hub refused a process message %s: %s", r.about, r.outcome)
                await tx.alarm(
                    "PROCESS_SEND_REFUSED",
                    r.about,
                    "流程发出的报文被枢纽拒收",
                    f"message {r.about} sent by a process was refused: {r.outcome}: {r.detail}",
                )
    await engine.transport.ack(batch)


async def serve(settings: Settings, stop: asyncio.Event, *, clock: Callable[[], datetime] | None = None) -> None:
    """Run the engine until ``stop``: the loop, and a consumer of the hub's own queue for the answers."""
    from hub.metrics import heartbeat

    engine, close = await open_engine(settings, clock=clock)
    assert engine.transport is not None
    try:
        names = engine.transport.names
        hub_system = engine.context.directory.hub_system
        await engine.transport.declare_topology([hub_system])

        async def answers(batch: list[Incoming]) -> None:
            await _answers(engine, batch)

        consumers = [
            await engine.transport.consume(queue, answers, prefetch=100) for queue in names.system_queues(hub_system)
        ]
        beat = asyncio.create_task(heartbeat("processes", 0, pool=engine.pool))
        log.info("processes ready: %s", ", ".join(p.name for p in engine.processes) or "none")
        try:
            await engine.run(stop)
        finally:
            await stopped(beat)  # its row in the store removed while the pool is open (re-cancelled: hub.aio)
            for consumer in consumers:
                await consumer.stop(drain=True)
    finally:
        await close()


def processes_main(settings: Settings, clock_file: Path | None = None, supervisor: int | None = None) -> None:
    """Entry point of the engine's process (``hub processes run``, or spawned by ``hub run``)."""
    import os

    from hub import logs
    from hub.pipeline.worker import _die_with_parent, _run, _watch_parent, ignore_hangup
    from hub.processes.engine import file_clock

    ignore_hangup()  # hub run's supervisor passes the gateway's reload signal to every process
    if supervisor is not None:
        _die_with_parent()
        if os.getppid() != supervisor:
            return
    logs.setup()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        watch = asyncio.create_task(_watch_parent(supervisor, stop)) if supervisor is not None else None
        await serve(settings, stop, clock=file_clock(clock_file) if clock_file is not None else None)
        if watch is not None:
            watch.cancel()

    try:
        _run(main())
    except HubError as exc:
        log.error("the process engine cannot run: %s", exc.describe())
        raise SystemExit(2) from None


@dataclass(frozen=True)
class WithProcesses:
    """A supervisor target: processes 0 … n-1 are ``inner`` (the workers, and the gateway if any), process ``n``
    is the process engine. Picklable (the supervisor spawns its processes)."""

    inner: Any
    n: int
    clock_file: Path | None = None

    @property
    def workers(self) -> int:
        return int(getattr(self.inner, "workers", self.n))

    def __call__(self, settings: Settings, index: int, supervisor: int | None = None) -> None:
        if index < self.n:
            self.inner(settings, index, supervisor)
            return
        processes_main(settings, self.clock_file, supervisor)


async def pass_at(settings: Settings, processes: Sequence[str], at: datetime) -> dict[str, int]:
    """One pass of only the named processes' timers, by a clock set to ``at``, then the outbox (a demo's or an
    operator's look ahead: "what would fire by then"). The feed is not read (a moved clock must not judge new
    messages, and the running engine reads it), and other processes' deadlines are neither fired nor taken."""
    from hub.pipeline.context import load_context
    from hub.processes.engine import ProcessEngine
    from hub.store.db import create_pool
    from hub.transport import Transport

    pool = await create_pool(settings.pg_dsn, min_size=1, max_size=2)
    transport = None
    try:
        context = await load_context(settings, pool)
        chosen = [p for p in make_processes(context, settings) if p.name in processes]
        missing = set(processes) - {p.name for p in chosen}
        if missing:
            raise ValueError(f"no process named {', '.join(sorted(missing))}")
        transport = await Transport.connect(settings, client_name="hub-processes-pass")
        engine = ProcessEngine(pool, context, chosen, transport=transport, clock=lambda: at)
        fired = 0
        while (n := await engine.timers_once()) > 0:
            fired += n
        return {"fed": 0, "fired": fired, "published": await engine.publish_once()}
    finally:
        if transport is not None:
            await transport.close()
        await pool.close()
