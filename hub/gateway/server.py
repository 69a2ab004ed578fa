"""The gateway as a process: ``run_gateway`` (``hub gateway``; blocking, graceful on SIGTERM/SIGINT) and
``WithGateway``, the supervisor target of ``hub run --gateway`` (one more supervised process beside the workers:
restarted when it dies, stopped with SIGTERM with them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from hub.errors import HubError
from hub.gateway.config import GatewaySettings
from hub.settings import Settings

__all__ = ["WithGateway", "gateway_main", "open_files_limit", "run_gateway"]

log = logging.getLogger("hub.gateway")

#: The open files a gateway process asks for (each client connection is one; systemd's default soft limit is 1,024).
WANTED_OPEN_FILES = 65_536
#: Below this many the gateway says so at start: a few hundred clients and a connection flood would exhaust them.
FEW_OPEN_FILES = 4_096


def open_files_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (at most the hard limit, as nginx's
    ``worker_rlimit_nofile`` does) and return it; a WARNING when it stays below ``FEW_OPEN_FILES``."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - a sandbox that forbids it
            pass
    if soft != resource.RLIM_INFINITY and soft < FEW_OPEN_FILES:
        log.warning(
            "the gateway may open only %d files (connections); raise the limit (systemd: LimitNOFILE=%d) — "
            "网关进程可打开的文件数（连接数）只有 %d，请调高",
            soft,
            WANTED_OPEN_FILES,
            soft,
        )
    return int(soft)


async def serve(
    settings: Settings, gateway: GatewaySettings, stop: asyncio.Event, *, started: Callable[[], None] | None = None
) -> None:
    """Serve until ``stop`` is set, then stop gracefully (requests in hand finish; held inbox items go back);
    ``started`` is called once the gateway listens."""
    from hub.gateway.app import GatewayRunner, start_gateway

    # SIGHUP (systemd: ExecReload=kill -HUP $MAINPID; hub run's supervisor passes it on) reads the server certificate
    # again. Handled from before the start to the end: its default action would end the process, and systemd does
    # not restart a unit that SIGHUP ended.
    runner: GatewayRunner | None = None
    pending = False  # a SIGHUP while it starts: acted on once it listens (it may have read the files before)

    def hangup() -> None:
        nonlocal pending
        if runner is None:
            pending = True
            return
        try:
            runner.reload_certificate(asked=True)
        except Exception:  # a signal handler must not take the loop down
            log.exception("could not read the gateway's server certificate again")

    loop = asyncio.get_running_loop()
    handled = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests): no SIGHUP
        loop.add_signal_handler(signal.SIGHUP, hangup)
        handled = True
    try:
        runner = await start_gateway(settings, gateway)
        if pending:
            hangup()
        if started is not None:
            started()
        log.info(
            "gateway listening on https://%s:%d",
            gateway.host,
            runner.addresses[0][1] if runner.addresses else gateway.port,
        )
        try:
            await stop.wait()
        finally:
            log.info("gateway stopping")
            await runner.cleanup()
    finally:
        if handled:
            # The process is ending: a late one must not end it early. Removing the handler puts back the default
            # action for a moment, so SIGHUP waits (blocked) until it is ignored.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
            try:
                loop.remove_signal_handler(signal.SIGHUP)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def run_gateway(settings: Settings, gateway: GatewaySettings) -> None:
    """Run the gateway in this process until SIGTERM or SIGINT, on the event loop the workers run on (uvloop where
    it is installed: less CPU per TLS read and write, per callback). With the in-process path the process runs the
    workers' batch code, so it is set up as they are: the decision lines of a batch written in one go, what start-up
    loaded moved out of the collector's view (``hub.pipeline.worker.settle_memory``)."""
    from hub.pipeline.worker import _run, ignore_hangup, settle_memory

    ignore_hangup()  # a reload signal before the gateway's handler (serve) does not end it
    if gateway.in_process:
        _batched_logs()
    open_files_limit()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await serve(settings, gateway, stop, started=settle_memory if gateway.in_process else None)

    _run(main())


def _batched_logs() -> None:
    """The JSON lines of ``hub.logs.setup`` with the workers' batched handler (the level kept)."""
    from hub import logs

    root = logging.getLogger()
    if any(isinstance(h, logs.BatchedHandler) for h in root.handlers):
        return
    if root.handlers and all(isinstance(h.formatter, logs.JsonFormatter) for h in root.handlers):
        logs.setup(logging.getLevelName(root.level), batched=True)


def gateway_main(settings: Settings, gateway: GatewaySettings) -> None:
    """Entry point of the gateway process under ``hub run`` (JSON logs; exit 2 when it cannot run)."""
    from hub import logs

    logs.setup()
    try:
        run_gateway(settings, gateway)
    except HubError as exc:
        log.error("the gateway cannot run: %s", exc.describe())
        raise SystemExit(2) from None


@dataclass(frozen=True)
class WithGateway:
    """A supervisor target: processes 0 … workers-1 are pipeline workers, process ``workers`` is the gateway.
    Picklable (the supervisor spawns its processes)."""

    workers: int
    gateway: GatewaySettings

    def __call__(self, settings: Settings, index: int, supervisor: int | None = None) -> None:
        if index < self.workers:
            from hub.pipeline.worker import worker_main

            worker_main(settings, index, supervisor)
            return
        from hub.pipeline.worker import _die_with_parent, ignore_hangup

        _die_with_parent()
        ignore_hangup()  # until the gateway's own handler: a reload signal forwarded while it starts does not end it
        gateway_main(settings, self.gateway)
