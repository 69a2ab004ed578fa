"""The gateway as a process: ``run_gateway`` (``hub gateway``; blocking, graceful on SIGTERM/SIGINT) and
``WithGateway``, the supervisor target of ``hub run --gateway`` (one more supervised process beside the workers:
restarted when it dies, stopped with SIGTERM with them)."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from hub.errors import HubError
from hub.gateway.config import GatewaySettings
from hub.settings import Settings

__all__ = ["WithGateway", "gateway_main", "run_gateway"]

log = logging.getLogger("hub.gateway")


async def serve(settings: Settings, gateway: GatewaySettings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then stop gracefully (requests in hand finish; held inbox items go back)."""
    from hub.gateway.app import start_gateway

    runner = await start_gateway(settings, gateway)
    log.info(
        "gateway listening on https://%s:%d", gateway.host, runner.addresses[0][1] if runner.addresses else gateway.port
    )
    try:
        await stop.wait()
    finally:
        log.info("gateway stopping")
        await runner.cleanup()


def run_gateway(settings: Settings, gateway: GatewaySettings) -> None:
    """Run the gateway in this process until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await serve(settings, gateway, stop)

    asyncio.run(main())


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
        from hub.pipeline.worker import _die_with_parent

        _die_with_parent()
        gateway_main(settings, self.gateway)
