"""Examiner processes: the gateway's in-process path on more than one core (issue 11).

One Python process runs on one core. With ``GatewaySettings.examiners = N`` (``hub gateway --examiners N``,
``HUB_GATEWAY_EXAMINERS``) the gateway process keeps everything a client talks to — TLS, HTTP, the client
certificate's system, the rate and concurrency limits, the inbox and its acknowledgements, the answers that come
through the system's queue — and the examination of submissions (``hub.gateway.direct``: the pipeline's own batch
code, ``Worker.handle``) runs in N processes of their own (``hub.gateway.examiner``), each with its PostgreSQL
pool and AMQP connections. So the limits stay exact (one process counts them) and an inbox item is acknowledged
where it was handed out, while the costly part (parsing, XSD, signature checks, recording, signing, publishing)
runs beside it.

Gateway ⇄ examiner: a Unix socket pair, length-prefixed pickled tuples (both ends are this code base, started by
the gateway; nothing else can reach the socket)::

    gateway → examiner   ("submit", seq, system, body, message id, lane, priority)
                         ("cancel", seq)                 the client went away
                         ("expecting", token)            the waits asked for are registered
    examiner → gateway   ("ready",)                      connected, loaded: takes submissions
                         ("alive", seconds)              every second: the age of its oldest batch in hand
                         ("outcome", seq, kind, answer, error, reply)   exactly one per submit
                         ("expect", token, [(system, message id)])      before a retry copy is published

- A submission goes to examiner ``crc32(system, message id) mod N`` (the next one running if that one is not):
  two copies of one message meet in one process, which examines them one after the other (``Direct``).
- ``deferred`` (the examiner's store or broker failed and the message went to the retry queue, as a worker's
  would): the examiner first asks the gateway to expect the retried copy's answer (``expect``; the gateway's
  mailbox, which reads the system's queue, registers the wait and says ``expecting``) and only then publishes
  the copy, so the answer can never come first.
- A client that goes away: ``cancel``; the examiner cancels the submission as the gateway's own path does (its
  answer, once made, goes to the system's inbox). When the answer was already on its way back, the gateway
  publishes it to the inbox itself.
- An examiner that dies: its submissions in hand are answered 503 ``GATEWAY_UNAVAILABLE`` with Retry-After (a
  resend finishes what was begun: nothing is delivered twice under another id), and it is started again (back-off
  from 1 s to 30 s). With none running, submissions are answered the same way. One that hangs — says nothing for twice
  ``answer_timeout_s`` (it says ``alive`` every second), or has had one batch at it that long — is killed, and so dies
  (``_watch``); its clients have had their 503 ``GATEWAY_TIMEOUT`` after ``answer_timeout_s`` already
  (``hub.gateway.app._submit_direct``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import pickle
import socket
import struct
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hub.errors import HubError
from hub.gateway.direct import Outcome, gone, later, to_inbox
from hub.gateway.mailbox import Answer
from hub.metrics import child_dead
from hub.transport.topology import Outgoing

if TYPE_CHECKING:
    from hub.gateway.config import GatewaySettings
    from hub.gateway.mailbox import Mailbox
    from hub.settings import Settings
    from hub.transport.abc import AbstractTransport

__all__ = ["ExaminerPool", "FrameWriter", "read_frame", "sendable"]

log = logging.getLogger("hub.gateway")

_LENGTH = struct.Struct(">I")
#: The largest frame either side accepts (a body is at most ``max_message_bytes``, far below).
MAX_FRAME = 256 * 1024 * 1024
#: How long an examiner may take to connect and load (schemas, directory, trust store) before the gateway gives up.
STARTUP_S = 120.0
#: Restart back-off of an examiner that died: from the first to the last, doubling; reset after a minute's run.
RESTART_S = (1.0, 30.0)
#: How long closing waits for the submissions in hand, then for the examiners to finish and exit.
CLOSE_S = 30.0
UNAVAILABLE = "GATEWAY_UNAVAILABLE"
#: How often an examiner tells the gateway it is alive, and how old its oldest batch in hand is (``examiner._alive``).
ALIVE_S = 1.0


# ------------------------------------------------------------------------------------------------ the wire


class FrameWriter:
    """Frames out on one end of the socket, sent together once per pass of the event loop.

    The frames one pass makes — the submissions of every request read in it, a batch's outcomes (its submissions
    are settled together) — leave in one ``writelines``: one system call and one wake-up of the other side instead
    of one each. (Copying the bytes stays: it was most of the 7 % of the gateway process's CPU that py-spy put on
    these writes in bench/gateway.py with 128 connections and two examiners.) Order is kept: every frame of this
    socket goes through here, and ``flush`` sends what is held before an end of stream or a close."""

    __slots__ = ("_parts", "_scheduled", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._parts: list[bytes] = []
        self._scheduled = False

    def send(self, frame: tuple[Any, ...]) -> None:
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        self._parts += (_LENGTH.pack(len(data)), data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        parts, self._parts = self._parts, []
        if parts and not self.writer.is_closing():
            self.writer.writelines(parts)

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def write_eof(self) -> None:
        self.flush()
        self.writer.write_eof()

    def close(self) -> None:
        self.flush()
        self.writer.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next frame, or None at the end of the stream."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError:
        return None
    (size,) = _LENGTH.unpack(head)
    if size > MAX_FRAME:
        raise ConnectionError(f"a frame of {size} bytes is over the limit")
    try:
        data = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None
    frame = pickle.loads(data)  # noqa: S301 - our own process at the other end of a socket pair
    if not isinstance(frame, tuple) or not frame:
        raise ConnectionError("a frame that is not a tuple")
    return frame


def sendable(item: Outgoing | None) -> Outgoing | None:
    """An answer's publish as it crosses the socket: without its egress callable (an answer has no egress check:
    it is the hub's own, and a closure does not pickle)."""
    return None if item is None else dataclasses.replace(item, egress=None)


# ------------------------------------------------------------------------------------------------ the gateway's side


class Handle(Protocol):
    """A running examiner: an ``asyncio.subprocess.Process`` (or, in tests, a task in this process)."""

    @property
    def pid(self) -> int | None: ...

    async def wait(self) -> int | None: ...

    def kill(self) -> None: ...


Spawn = Callable[[int, socket.socket], Awaitable[Handle]]


@dataclass(eq=False, slots=True)
class _Call:
    system: str
    message_id: str
    future: asyncio.Future[Outcome]
    #: The gateway mailbox's wait for the retried copy's answer (registered when the examiner asks).
    pending: asyncio.Future[Answer] | None = None


@dataclass(eq=False, slots=True)
class _Examiner:
    index: int
    handle: Handle | None = None
    writer: FrameWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    ready: asyncio.Future[None] | None = None
    running: bool = False
    started_at: float = 0.0
    failures: int = 0
    restarting: bool = False
    inflight: dict[int, _Call] = field(default_factory=dict)
    #: When its last frame came (``time.monotonic``; it says ``alive`` every second), and how old its oldest batch in
    #: hand was then: ``_watch`` kills one that says nothing, or whose batch is stuck.
    heard: float = 0.0
    batch_s: float = 0.0


class ExaminerPool:
    """``await pool.submit(system, body, message_id, lane, priority)`` → ``Outcome``, as ``Direct.submit``;
    ``pool.mailbox`` is the gateway's (``Outcome.pending`` is its future)."""

    def __init__(
        self,
        settings: Settings,
        gateway: GatewaySettings,
        mailbox: Mailbox,
        transport: AbstractTransport,
        *,
        count: int,
        spawn: Spawn | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.mailbox = mailbox
        self._transport = transport  # answers whose client went away go to the inbox on it
        self._spawn = spawn if spawn is not None else self._spawn_process
        self._examiners = [_Examiner(i) for i in range(max(1, count))]
        self._seq = itertools.count(1)
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifetime ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every examiner and wait until each has loaded (a ConfigError-like HubError when one cannot)."""
        try:
            await asyncio.gather(*(self._start(e) for e in self._examiners))
        except BaseException:
            await self.close()
            raise
        self._later(self._watch())

    @property
    def hung_s(self) -> float:
        """How long an examiner may be silent, or have one batch at it, before it is taken for hung: twice the time a
        client waits for its answer (``answer_timeout_s``; the client has had its 503 by then), and never less than
        five of the examiners' heartbeats (an idle examiner is silent between two)."""
        return max(2 * self.gateway.answer_timeout_s, 5 * ALIVE_S)

    async def _watch(self) -> None:
        """Kill an examiner that has said nothing for ``hung_s`` (stopped, its event loop blocked: it says ``alive``
        every second) or whose oldest batch has been at it for longer (deadlocked, or waiting on a database that
        hangs rather than fails — its clients had their 503 at ``answer_timeout_s``, the batch goes on): what it holds
        is answered 503 and it is started again (``_ended``), and ``running`` (``/ready``) no longer counts it."""
        hung = self.hung_s
        while not self._closing:
            await asyncio.sleep(max(0.05, min(5.0, hung / 4)))
            now = time.monotonic()
            for e in self._examiners:
                if not (e.running and e.handle is not None):
                    continue
                silent, stuck = now - e.heard, e.batch_s + (now - e.heard)
                if silent <= hung and stuck <= hung:
                    continue
                log.error(
                    "gateway examiner %d (pid %s) %s: killed (%d submissions in hand)",
                    e.index,
                    e.handle.pid,
                    f"said nothing for {silent:.0f} s" if silent > hung else f"has had a batch at it for {stuck:.0f} s",
                    len(e.inflight),
                )
                e.running = False  # no new submission goes to it while it dies
                try:
                    e.handle.kill()
                except ProcessLookupError:  # it ended meanwhile: its socket's end does the rest
                    pass

    @property
    def running(self) -> int:
        return sum(e.running for e in self._examiners)

    def pids(self) -> list[int]:
        return [e.handle.pid for e in self._examiners if e.running and e.handle is not None and e.handle.pid]

    async def _start(self, e: _Examiner) -> None:
        parent, child = socket.socketpair()
        try:
            e.handle = await self._spawn(e.index, child)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()  # the examiner holds its own end
        reader, stream = await asyncio.open_unix_connection(sock=parent)
        e.writer = writer = FrameWriter(stream)
        e.ready = asyncio.get_running_loop().create_future()
        e.reader_task = asyncio.get_running_loop().create_task(self._read(e, reader, writer))
        try:
            async with asyncio.timeout(STARTUP_S):
                await asyncio.shield(e.ready)
        except TimeoutError:
            e.handle.kill()
            raise HubError(
                f"the gateway's examiner {e.index} did not load within {STARTUP_S:g} s", code="CONFIG"
            ) from None
        e.running = True
        e.started_at = e.heard = time.monotonic()
        e.batch_s = 0.0
        log.info("gateway examiner %d running (pid %s)", e.index, e.handle.pid)

    async def close(self) -> None:
        """Wait for the submissions in hand (up to ``CLOSE_S``), then let each examiner finish and exit."""
        self._closing = True
        deadline = time.monotonic() + CLOSE_S
        while any(e.inflight for e in self._examiners if e.running) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for e in self._examiners:
            if e.writer is not None and not e.writer.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    e.writer.write_eof()  # the examiner finishes what it holds, then exits
        for e in self._examiners:
            if e.reader_task is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                        await asyncio.shield(e.reader_task)
                e.reader_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await e.reader_task
            await self._reap(e, max(0.1, deadline - time.monotonic()))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _reap(self, e: _Examiner, timeout: float) -> int | None:
        if e.handle is None:
            return None
        pid = e.handle.pid
        try:
            return await self._wait(e, timeout)
        finally:
            if pid is not None and pid != os.getpid():  # its metrics' live-only series go with it
                child_dead(pid)

    async def _wait(self, e: _Examiner, timeout: float) -> int | None:
        assert e.handle is not None
        try:
            async with asyncio.timeout(timeout):
                return await e.handle.wait()
        except TimeoutError:
            log.warning("gateway examiner %d did not exit in time: killed", e.index)
            e.handle.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    return await e.handle.wait()
            return None

    async def _spawn_process(self, index: int, child: socket.socket) -> Handle:
        from hub.pipeline.worker import _die_with_parent

        fd = child.fileno()
        env = self.settings.to_env()
        env["HUB_GATEWAY_BATCHES"] = str(self.gateway.batches)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub.gateway.examiner",
            str(fd),
            str(index),
            pass_fds=(fd,),
            env=env,
            preexec_fn=_die_with_parent,  # it never outlives the gateway
            start_new_session=True,  # a terminal's Ctrl-C reaches the gateway, which stops it in order
        )
        return proc

    # -- the request's side ------------------------------------------------------------------------------------

    async def submit(self, system: str, data: bytes, message_id: str, lane: str, priority: int) -> Outcome:
        e = self._pick(system, message_id)
        if e is None or e.writer is None:
            return Outcome(
                "failed",
                error=HubError("no examiner process of the gateway runs now; send it again shortly", code=UNAVAILABLE),
            )
        seq = next(self._seq)
        call = _Call(system, message_id, asyncio.get_running_loop().create_future())
        e.inflight[seq] = call
        e.writer.send(("submit", seq, system, data, message_id, lane, priority))
        try:
            return await call.future
        except asyncio.CancelledError:
            if seq in e.inflight and e.writer is not None and not e.writer.is_closing():
                e.writer.send(("cancel", seq))  # its outcome still comes back (answered: to the inbox)
            elif call.future.done() and not call.future.cancelled():  # its outcome came in the pass the client left
                gone(call.future.result(), call.system, call.message_id, self.mailbox, self._hand_over)
            raise

    def _pick(self, system: str, message_id: str) -> _Examiner | None:
        n = len(self._examiners)
        first = zlib.crc32(f"{system}\0{message_id}".encode()) % n
        for i in range(n):
            e = self._examiners[(first + i) % n]
            if e.running:
                return e
        return None

    # -- the examiner's side -----------------------------------------------------------------------------------

    async def _read(self, e: _Examiner, reader: asyncio.StreamReader, writer: FrameWriter) -> None:
        try:
            while (frame := await read_frame(reader)) is not None:
                e.heard = time.monotonic()
                kind = frame[0]
                if kind == "outcome":
                    self._outcome(e, frame)
                elif kind == "alive":
                    e.batch_s = float(frame[1])
                elif kind == "expect":
                    self._expect(e, frame, writer)
                elif kind == "ready" and e.ready is not None and not e.ready.done():
                    e.ready.set_result(None)
        except (ConnectionError, OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
            log.error("gateway examiner %d: its socket failed (%s)", e.index, type(exc).__name__)
        finally:
            self._ended(e, writer)

    def _outcome(self, e: _Examiner, frame: tuple[Any, ...]) -> None:
        _, seq, kind, answer, error, reply = frame
        call = e.inflight.pop(seq, None)
        if call is None:
            return
        err = HubError(error[1], code=error[0]) if error is not None else None
        if kind == "deferred" and not call.future.done():
            if call.pending is None:  # pragma: no cover - the examiner always asks first
                call.pending = self.mailbox.expect(call.system, call.message_id)
            call.future.set_result(Outcome("deferred", pending=call.pending, error=err))
            return
        if call.pending is not None:  # no wait for a worker's answer after all (or nobody to give it to)
            self.mailbox.forget(call.system, call.message_id, call.pending)
        if call.future.done():  # the client went away while its answer was on its way back
            if kind == "answer" and reply is not None:
                self._hand_over(reply)
            return
        if kind == "cancelled":  # pragma: no cover - only after the gateway's cancel, when the future is done
            call.future.set_result(Outcome("failed", error=err))
            return
        call.future.set_result(
            Outcome(
                kind,  # type: ignore[arg-type]
                answer=Answer(*answer) if answer is not None else None,
                error=err,
                reply=reply,  # where the answer goes if the client is gone by the time it reads it
            )
        )

    def _expect(self, e: _Examiner, frame: tuple[Any, ...], writer: FrameWriter) -> None:
        _, token, pairs = frame
        wanted = {(str(s), str(m)) for s, m in pairs}
        for call in e.inflight.values():
            if (call.system, call.message_id) in wanted and call.pending is None:
                call.pending = self.mailbox.expect(call.system, call.message_id)
        if not writer.is_closing():
            writer.send(("expecting", token))

    def _ended(self, e: _Examiner, writer: FrameWriter) -> None:
        """The examiner's socket ended: what it held is answered 503 (resend), and it is started again."""
        e.running = False
        writer.close()
        if e.ready is not None and not e.ready.done():
            e.ready.set_exception(
                HubError(f"the gateway's examiner {e.index} stopped before it was ready (see its log)", code="CONFIG")
            )
            e.ready.exception()  # retrieved: a start that gave up waiting no longer looks at it
        held, e.inflight = e.inflight, {}
        for call in held.values():
            if call.pending is not None:
                self.mailbox.forget(call.system, call.message_id, call.pending)
            if not call.future.done():
                call.future.set_result(
                    Outcome(
                        "failed",
                        error=HubError(
                            f"the gateway's examiner process stopped while it held {call.message_id}",
                            code=UNAVAILABLE,
                        ),
                    )
                )
        if held:
            log.error("gateway examiner %d stopped with %d submissions in hand: answered 503", e.index, len(held))
        if not self._closing and e.started_at and not e.restarting:  # a failed restart's end: its loop goes on
            e.restarting = True
            self._later(self._restart(e))

    async def _restart(self, e: _Examiner) -> None:
        try:
            await self._restarted(e)
        finally:
            e.restarting = False

    async def _restarted(self, e: _Examiner) -> None:
        code = await self._reap(e, 10.0)
        ran = time.monotonic() - e.started_at
        e.failures = 0 if ran > 60 else e.failures + 1
        while not self._closing:
            delay = min(RESTART_S[1], RESTART_S[0] * 2 ** max(0, e.failures - 1)) if e.failures else 0.0
            log.error(
                "gateway examiner %d exited (code %s) after %.0f s; starting it again in %.0f s",
                e.index,
                code,
                ran,
                delay,
            )
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                await self._start(e)
                return
            except Exception as exc:  # it keeps trying: a gateway without examiners answers every submission 503
                e.failures += 1
                code, ran = None, 0.0
                why = exc.describe() if isinstance(exc, HubError) else f"{type(exc).__name__}: {exc}"
                log.error("gateway examiner %d could not start: %s", e.index, why)

    def _hand_over(self, reply: Outgoing) -> None:
        later(self._tasks, to_inbox(self._transport, reply))

    def _later(self, job: Any) -> None:
        later(self._tasks, job)
