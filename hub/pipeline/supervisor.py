"""``hub run``: N pipeline worker processes (competing consumers) under one supervisor.

More load → more worker processes (``--workers``, default one per core). Each worker owns its own asyncio loop,
RabbitMQ connection, PostgreSQL pool, keys and compiled schemas, so crypto and XML work spread over cores.

Signals: SIGTERM/SIGINT to the supervisor → SIGTERM to every worker → each stops consuming, finishes the batch
in hand (record, deliver, receipt, ack) and exits; unacknowledged messages stay in RabbitMQ. A worker that dies
unexpectedly (even SIGKILL) loses nothing — its unacknowledged deliveries go back to the queue — and the
supervisor starts a replacement after a short back-off.

Metrics (``hub.metrics``): before the first spawn the supervisor empties ``<state_dir>/metrics/`` and points
``PROMETHEUS_MULTIPROC_DIR`` at it, so that every process it starts writes its counters there (the ops app adds
them up); a process that died has its heartbeat removed there, its counters kept.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from hub.settings import Settings

log = logging.getLogger("hub.supervisor")


def default_workers(settings: Settings) -> int:
    return settings.workers if settings.workers > 0 else (os.cpu_count() or 1)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        target: Callable[[Settings, int, int], None],
        *,
        workers: int | None = None,
        restart_backoff_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.target = target
        self.n = workers or default_workers(settings)
        self.restart_backoff_s = restart_backoff_s
        self.ctx = mp.get_context("spawn")
        self.procs: dict[int, BaseProcess] = {}
        self.stopping = False

    def _start(self, index: int) -> None:
        p = self.ctx.Process(target=self.target, args=(self.settings, index, os.getpid()), name=f"hub-worker-{index}")
        # Started with SIGHUP ignored (kept across the spawn's exec): a reload signal passed on while it imports does
        # not end it (the gateway installs its own handler once it can act on it).
        hangup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            p.start()
        finally:
            signal.signal(signal.SIGHUP, hangup)
        self.procs[index] = p
        log.info("worker %d started (pid %s)", index, p.pid)

    def _dead(self, p: BaseProcess) -> None:
        """A process that exited: its heartbeat goes from the metrics (its counters stay)."""
        from hub.metrics import process_dead

        if p.pid is not None:
            try:
                process_dead(self.settings, p.pid)
            except OSError as exc:
                log.warning("could not clear the metrics of pid %s: %s", p.pid, exc)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _hangup(self, *_: object) -> None:
        """SIGHUP (``systemctl reload forestry-hub``): passed on to every process; the gateway's reads its server
        certificate again (``hub.gateway.server``), the workers ignore it (``worker.ignore_hangup``)."""
        for p in list(self.procs.values()):
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGHUP)

    def run(self) -> int:
        from hub.metrics import prepare_multiprocess

        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hangup)
        # Before the first spawn: the processes inherit the environment (WithGateway: its last one is the gateway).
        prepare_multiprocess(self.settings, getattr(self.target, "workers", self.n))
        for i in range(self.n):
            self._start(i)
        try:
            while not self.stopping:
                for index, p in list(self.procs.items()):
                    if not p.is_alive() and not self.stopping:
                        log.warning("worker %d (pid %s) exited with %s; restarting", index, p.pid, p.exitcode)
                        self._dead(p)
                        time.sleep(self.restart_backoff_s)
                        self._start(index)
                time.sleep(0.2)
        finally:
            for p in self.procs.values():
                if p.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            for p in self.procs.values():
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    log.error("worker %s did not stop within 60 s; killing it", p.pid)
                    p.kill()
                    p.join(5)
                self._dead(p)
        log.info("all workers stopped")
        return 0
