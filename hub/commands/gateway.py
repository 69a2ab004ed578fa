"""``hub gateway [--host H] [--port P]``: serve the HTTPS gateway (hub/gateway) in this process until SIGTERM."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.settings import Settings

if TYPE_CHECKING:
    from hub.gateway.config import GatewaySettings

__all__ = ["gateway_settings", "register"]


def add_gateway_arguments(p: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """--host, --port, --cert, --key (``prefix``: ``gateway-`` under ``hub run``)."""
    p.add_argument(f"--{prefix}host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument(f"--{prefix}port", type=int, default=None, help="port (default 8443)")
    p.add_argument(
        f"--{prefix}cert", type=Path, default=None, help="server certificate (<state>/pki/gateway/server.pem)"
    )
    p.add_argument(f"--{prefix}key", type=Path, default=None, help="its key (default <state>/pki/gateway/server.key)")
    p.add_argument(
        f"--{prefix}default-rate",
        type=float,
        default=None,
        help="requests per second for a system the directory gives no rate (default 200)",
    )
    p.add_argument(
        f"--{prefix}default-concurrency",
        type=int,
        default=None,
        help="concurrent requests for a system the directory gives no concurrency (default 32)",
    )
    p.add_argument(
        f"--{prefix}examiners",
        type=int,
        default=None,
        metavar="N",
        help="examine submissions in N processes beside the gateway's own, which keeps TLS, HTTP, the limits and "
        "the inbox; 0: in the gateway process (default: one per core, at most 4, none on one core; "
        "HUB_GATEWAY_EXAMINERS)",
    )


def gateway_settings(args: argparse.Namespace, settings: Settings, *, prefix: str = "") -> GatewaySettings:
    from hub.gateway.config import GatewaySettings

    def arg(name: str) -> Any:
        return getattr(args, prefix.replace("-", "_") + name, None)

    examiners = arg("examiners")
    env = os.environ.get("HUB_GATEWAY_EXAMINERS", "").strip()
    if env and not (env.isascii() and env.isdigit()):
        raise SystemExit(f"HUB_GATEWAY_EXAMINERS must be a number of processes (0 or more), not {env!r}")
    if examiners is None and not env:
        examiners = GatewaySettings.auto_examiners()  # the command uses the machine's cores unless told otherwise
    if examiners is not None and examiners < 0:
        raise SystemExit(f"--{prefix}examiners must be 0 or more (the gateway's examiner processes), not {examiners}")
    return GatewaySettings.for_state(
        settings.state_dir,
        host=arg("host"),
        port=arg("port"),
        cert_file=arg("cert"),
        key_file=arg("key"),
        default_rate=arg("default_rate"),
        default_concurrency=arg("default_concurrency"),
        examiners=examiners,
    )


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from hub.metrics_files import gateway_metrics_dir, prepare_standalone
    from hub.settings import GATEWAY_PORT

    # First, before anything imports prometheus_client (hub.gateway does): the gateway's metrics, and its examiners',
    # go to files the ops page of this machine reads, as under `hub run --gateway`.
    metrics = gateway_metrics_dir(settings, args.port if args.port is not None else GATEWAY_PORT)
    not_shared = prepare_standalone(metrics)
    import logging

    from hub import logs
    from hub.gateway.server import run_gateway
    from hub.metrics import stopped_standalone

    gateway = gateway_settings(args, settings)
    logs.setup()
    if not_shared is not None:
        logging.getLogger("hub.gateway").warning(
            "the gateway's metrics stay in its process, not on the ops page of this machine: %s", not_shared
        )
    try:
        run_gateway(settings, gateway)
    finally:
        if not_shared is None:
            stopped_standalone(metrics)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "gateway",
        help="serve the HTTPS gateway: signed XML over HTTPS with client certificates of the hub CA (HTTPS 网关)",
    )
    add_gateway_arguments(p)
    p.set_defaults(handler=cmd_gateway)
