"""One examiner process of the gateway (``hub.gateway.examiners``): ``python -m hub.gateway.examiner FD INDEX``,
started by the gateway with its end of a socket pair as FD and the installation's ``HUB_*`` settings.

It connects PostgreSQL and RabbitMQ as the gateway's in-process path does (``hub.gateway.direct.Direct``: the
pipeline's batch code on micro-batches), examines each submission the gateway sends and sends back its outcome. It
holds nothing of its own: at the end of its socket (the gateway closes it, or dies) it finishes the batches in hand
and exits; SIGTERM does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from hub.aio import stopped
from hub.errors import HubError
from hub.gateway.direct import Direct, GatewayWorker, Outcome, Submission
from hub.gateway.examiners import ALIVE_S, FrameWriter, read_frame, sendable

if TYPE_CHECKING:
    from hub.gateway.config import GatewaySettings
    from hub.settings import Settings

__all__ = ["ExaminerWorker", "main", "serve"]

log = logging.getLogger("hub.gateway")


class _Link:
    """The examiner's end of the socket: frames out, and the gateway's ``expecting`` replies."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = FrameWriter(writer)
        self._tokens = itertools.count(1)
        self._waits: dict[int, asyncio.Future[None]] = {}
        self.broken = False

    def send(self, frame: tuple[Any, ...]) -> None:
        if not self.writer.is_closing():
            self.writer.send(frame)

    async def expect(self, pairs: list[tuple[str, str]]) -> None:
        if self.broken:
            raise HubError("the gateway is gone: no answer can be waited for", code="GATEWAY_UNAVAILABLE")
        token = next(self._tokens)
        waiting = self._waits[token] = asyncio.get_running_loop().create_future()
        self.send(("expect", token, pairs))
        await waiting

    def expecting(self, token: int) -> None:
        waiting = self._waits.pop(token, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def close(self) -> None:
        self.broken = True
        for waiting in self._waits.values():
            if not waiting.done():
                waiting.set_exception(
                    HubError("the gateway is gone: no answer can be waited for", code="GATEWAY_UNAVAILABLE")
                )
        self._waits.clear()


class _NoMailbox:
    """The examiner has no mailbox: the gateway's waits for retried copies are registered there (``expect``)."""

    def expect(self, system: str, message_id: str) -> Any:  # pragma: no cover - ExaminerWorker asks the gateway
        raise RuntimeError("an examiner asks the gateway to expect an answer")

    def forget(self, system: str, message_id: str, future: Any) -> None:
        """The gateway forgets its own wait when the outcome reaches it."""


class ExaminerWorker(GatewayWorker):
    """``GatewayWorker`` whose waits for retried copies' answers are registered by the gateway's mailbox, which
    reads the systems' queues: one round trip over the socket before the retry copy is published."""

    def __init__(self, settings: Settings, link: _Link) -> None:
        super().__init__(settings, cast(Any, _NoMailbox()))
        self.link = link

    async def expect_answers(self, subs: list[Submission]) -> None:
        await self.link.expect([(s.system, s.message_id) for s in subs])
        loop = asyncio.get_running_loop()
        for sub in subs:
            sub.pending = loop.create_future()  # a marker: the gateway holds the wait itself


def _outcome_frame(seq: int, outcome: Outcome) -> tuple[Any, ...]:
    answer = outcome.answer
    error = outcome.error
    return (
        "outcome",
        seq,
        outcome.kind,
        (answer.kind, answer.body, answer.message_id) if answer is not None else None,
        (error.code, error.detail) if error is not None else None,
        sendable(outcome.reply),
    )


async def serve(
    sock: socket.socket,
    settings: Settings,
    gateway: GatewaySettings,
    *,
    index: int = 0,
    opened: Callable[[Direct], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Examine what arrives on ``sock`` until it ends (or ``stop`` is set); ``opened`` is called with the ``Direct``
    once loaded (tests reach its worker through it)."""
    from hub.store.db import create_pool
    from hub.transport import Transport

    reader, writer = await asyncio.open_unix_connection(sock=sock)
    link = _Link(writer)
    pool = transport = urgent = direct = None
    tasks: dict[int, asyncio.Task[None]] = {}
    record: asyncio.Task[None] | None = None
    try:
        pool = await create_pool(settings.pg_dsn, min_size=1, max_size=4, generic_plans=True)
        transport = await Transport.connect(settings, client_name=f"hub-gateway-examiner-{index}")
        urgent = await Transport.connect(settings, client_name=f"hub-gateway-examiner-{index}-emergency")
        direct = Direct(
            settings,
            transport,
            urgent,
            cast(Any, _NoMailbox()),
            concurrency=gateway.batches,
            worker=ExaminerWorker(settings, link),
        )
        await direct.open(pool)
        # Its row in the store with the directory version it examines with (hub.store.process_instances): the ops
        # page's directory row sees a gateway's examination on any machine.
        from hub.store.process_instances import ProcessRecord

        examining = direct
        record = asyncio.get_running_loop().create_task(
            ProcessRecord("gateway", str(index)).run(pool, lambda: examining.worker.directory_version)
        )
        if opened is not None:
            opened(direct)
        link.send(("ready",))
        alive = asyncio.get_running_loop().create_task(_alive(link, direct))
        try:
            await _serve_frames(reader, link, direct, tasks, stop)
        finally:
            alive.cancel()
    finally:
        link.close()  # a batch waiting on an expect fails now: nobody can register its wait any more
        if record is not None:  # its row removed while the pool is open
            await stopped(record)  # re-cancelled until it ends (hub.aio)
        if tasks:
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        with contextlib.suppress(Exception):
            if direct is not None:
                await direct.close()
        for conn in (urgent, transport):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close()
        with contextlib.suppress(Exception):
            link.writer.close()  # what it holds goes first


async def _alive(link: _Link, direct: Direct) -> None:
    """``("alive", oldest batch's age)`` every ``ALIVE_S``: the gateway kills an examiner that stops saying it, or
    whose batch is stuck (``ExaminerPool._watch``)."""
    while True:
        await asyncio.sleep(ALIVE_S)
        link.send(("alive", direct.oldest_batch_s()))


async def _serve_frames(
    reader: asyncio.StreamReader,
    link: _Link,
    direct: Direct,
    tasks: dict[int, asyncio.Task[None]],
    stop: asyncio.Event | None,
) -> None:
    loop = asyncio.get_running_loop()

    async def run(seq: int, system: str, data: bytes, message_id: str, lane: str, priority: int) -> None:
        try:
            outcome = await direct.submit(system, data, message_id, lane, priority)
        except Exception as exc:  # a bug: the client is told to resend, the traceback is in the log
            log.exception("gateway examiner: a submission failed (%s)", type(exc).__name__)
            outcome = Outcome("failed", error=HubError(f"the examiner failed ({type(exc).__name__})", code="INTERNAL"))
        link.send(_outcome_frame(seq, outcome))

    async def read_all() -> None:
        while (frame := await read_frame(reader)) is not None:
            kind = frame[0]
            if kind == "submit":
                _, seq, system, data, message_id, lane, priority = frame
                task = loop.create_task(run(seq, system, data, message_id, lane, priority))
                tasks[seq] = task
                task.add_done_callback(_forget(tasks, seq, link))
            elif kind == "cancel":
                found = tasks.get(frame[1])
                if found is not None:
                    found.cancel()
            elif kind == "expecting":
                link.expecting(frame[1])

    # One task reads every frame (not a task and a wait for each): ``stop`` ends it between or inside reads.
    reading = loop.create_task(read_all())
    if stop is None:
        await reading
        return
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait((reading, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            return
        await reading  # its end of stream, or the error it raised
    finally:
        stopping.cancel()
        if not reading.done():  # this task itself was cancelled
            reading.cancel()


def _forget(tasks: dict[int, asyncio.Task[None]], seq: int, link: _Link) -> Callable[[asyncio.Task[None]], None]:
    """When a submission's task ends: forgotten; cancelled (the gateway's ``cancel``, even before it started):
    the gateway is told, so that it forgets it too — every submit gets exactly one outcome."""

    def done(task: asyncio.Task[None]) -> None:
        tasks.pop(seq, None)
        if task.cancelled():
            link.send(("outcome", seq, "cancelled", None, None, None))

    return done


def main(argv: list[str] | None = None) -> int:
    from hub import logs
    from hub.gateway.config import GatewaySettings
    from hub.pipeline.worker import _run, ignore_hangup, settle_memory
    from hub.settings import Settings

    ignore_hangup()  # the gateway's reload signal is its own (systemctl kill -s HUP reaches every process)
    args = sys.argv[1:] if argv is None else argv
    fd, index = int(args[0]), int(args[1]) if len(args) > 1 else 0
    logs.setup(batched=True)  # as the pipeline workers
    settings = Settings.from_env()
    gateway = GatewaySettings.for_state(settings.state_dir)
    sock = socket.socket(fileno=fd)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await serve(sock, settings, gateway, index=index, opened=lambda _d: settle_memory(), stop=stop)

    try:
        _run(run())
    except HubError as exc:
        log.error("gateway examiner %d cannot run: %s", index, exc.describe())
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
