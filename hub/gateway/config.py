"""``GatewaySettings``: what the gateway needs beyond the hub's ``Settings`` (pure)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hub.errors import ConfigError
from hub.settings import GATEWAY_PORT

__all__ = ["MAX_AUTO_EXAMINERS", "MAX_POLL_S", "GatewaySettings"]

#: The longest long poll ``GET /v1/inbox?wait=`` accepts (seconds).
MAX_POLL_S = 30
#: The most examiner processes ``hub gateway`` starts by default (``GatewaySettings.auto_examiners``).
MAX_AUTO_EXAMINERS = 4


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Where the gateway listens, its server certificate, its timeouts and default limits.

    Build it with ``GatewaySettings.for_state(settings.state_dir, host=…, port=…)``: the certificate and key default
    to ``<state_dir>/pki/gateway/server.pem`` and ``server.key``."""

    cert_file: Path
    key_file: Path
    host: str = "127.0.0.1"
    port: int = GATEWAY_PORT
    #: How long ``POST /v1/messages`` waits for the hub's signed answer before 503 ``GATEWAY_TIMEOUT``.
    answer_timeout_s: float = 30.0
    #: The whole request body must arrive within this (slow senders: 408 ``GATEWAY_READ_TIMEOUT``).
    body_timeout_s: float = 30.0
    #: An idle connection, or one whose request line and headers do not arrive, is closed after this (aiohttp's
    #: keep-alive timer runs from the connection's start and between requests).
    header_timeout_s: float = 15.0
    #: TLS handshakes under way at most: a connection that arrives while this many are is closed at once and counted
    #: (``TLS_HANDSHAKES_FULL``), so a flood of connections that never finish their handshake holds at most this many
    #: file descriptors for ``header_timeout_s`` each, and established clients keep theirs
    #: (``HUB_GATEWAY_MAX_HANDSHAKES``).
    max_handshakes: int = 512
    #: On stopping, ``GET /ready`` answers 503 ``GATEWAY_READY_STOPPING`` for this long while the gateway still serves,
    #: before it closes its port and its connections: a load balancer checking every few seconds takes it out of
    #: rotation first, so a rolling restart sends no client to a closed port. 0 (the default, no load balancer):
    #: stop at once. Set it to the balancer's time to mark a server down (HAProxy: ``fall`` × ``inter``)
    #: (``HUB_GATEWAY_DRAIN_S``).
    drain_s: float = 0.0
    #: The load balancers that put a PROXY protocol header (HAProxy ``send-proxy-v2``) before each connection's bytes,
    #: as addresses or networks ("10.0.0.5", "10.0.1.0/24"): a connection from one of them must carry one, and the
    #: client address it names is the connection's on the ops page and in the log; nobody else's is read
    #: (``hub.gateway.proxy_header``; ``HUB_GATEWAY_PROXY_FROM``, comma-separated). Empty: none.
    proxy_from: tuple[str, ...] = ()
    #: The longest a single long poll is held, whatever ``wait`` asks for (at most ``MAX_POLL_S``; a poll may end
    #: early with 204 and the client polls again — proxies that cut idle requests sooner want it lower).
    poll_limit_s: float = MAX_POLL_S
    #: An inbox item handed out and not acknowledged within this goes back to the queue (``HUB_GATEWAY_VISIBILITY_S``).
    visibility_timeout_s: float = 60.0
    #: Unacknowledged messages per system queue the gateway holds at most (the AMQP prefetch).
    prefetch: int = 64
    #: Per-system defaults when the directory's system has no ``rate``/``concurrency``.
    default_rate: float = 200.0
    default_concurrency: int = 32
    #: How often the client identification looks at the stored directory's version (``HUB_DIRECTORY_REFRESH_S``): a
    #: version ``hub directory load`` stored is identified by one look after it is first seen, when the examination
    #: has taken it (hub.gateway.app), so within twice this.
    directory_refresh_s: float = 30.0
    #: How often the gateway asks RabbitMQ's management API whether a system it reads the queue of reads it over
    #: AMQP too, and gives way if so (``hub.gateway.links``); 0: no one-link-per-system check at all
    #: (``HUB_GATEWAY_LINK_CHECK_S``).
    link_check_s: float = 10.0
    #: How often the gateway looks whether its server certificate and key (``cert_file``, ``key_file``) or the hub CA
    #: certificates it trusts changed on disk, and serves new connections with them if so — ``hub pki
    #: issue-server`` renews the certificate without a restart (``hub.gateway.tls.ServerCredentials``; SIGHUP to
    #: ``hub gateway`` looks at once); 0: never.
    cert_check_s: float = 30.0
    #: A system that has not polled, submitted or settled an inbox item for this long, with nothing handed out and
    #: no submission waiting, is let go: the gateway stops reading its queue and puts back what it held, so its
    #: deliveries wait (and expire) in the broker and the ops page shows it disconnected; its next poll reads the
    #: queue again (``hub.gateway.mailbox``). Four times the longest long poll by default; 0: never
    #: (``HUB_GATEWAY_IDLE_S``).
    idle_s: float = 4.0 * MAX_POLL_S
    #: Examine submissions in the gateway process with the pipeline's own batch code (``hub.gateway.direct``);
    #: False: publish each to the inbound queue and wait for a worker's answer on the system's queue (the first
    #: design: two broker round trips and a worker's batching per request).
    in_process: bool = True
    #: In-process batches of the normal lane at once; the emergency lane runs one beside them. One, as in the
    #: workers: batches then grow with the load and their fixed costs (two PostgreSQL statements, a confirm round
    #: trip) amortise; two at once cost a fifth more CPU a request in bench/gateway.py (2.2–2.5 against 3.0 ms).
    batches: int = 1
    #: Examiner processes (``hub.gateway.examiners``): the in-process path's batches run in this many processes of
    #: their own beside the gateway, which keeps TLS, HTTP, the limits and the inbox; 0: in the gateway process
    #: itself. One Python process uses one core: with examiners the gateway uses more (see docs/gateway.md). The
    #: settings built here take what they are given; ``hub gateway`` and ``hub run --gateway`` start
    #: ``auto_examiners()`` when neither ``--examiners`` nor ``HUB_GATEWAY_EXAMINERS`` says otherwise.
    examiners: int = 0

    @staticmethod
    def auto_examiners(cores: int | None = None) -> int:
        """The examiners ``hub gateway`` starts by default: one per core the process may run on, at most
        ``MAX_AUTO_EXAMINERS`` (the gateway process's TLS and HTTP cost about a third of what the examination costs,
        so one gateway process keeps about three examiners busy, and more examiners split the load into smaller
        batches, which cost more a message); none on a single core, where a second process only adds the frames."""
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 0 if cores < 2 else min(cores, MAX_AUTO_EXAMINERS)

    @classmethod
    def for_state(cls, state_dir: Path, **overrides: Any) -> GatewaySettings:
        """The settings of the installation at ``state_dir``. From the environment: ``HUB_GATEWAY_IN_PROCESS=0``
        selects the path through the inbound queue (``in_process=False``), ``HUB_GATEWAY_BATCHES=N`` the in-process
        batches at once (``batches``), ``HUB_GATEWAY_EXAMINERS=N`` the examiner processes (``examiners``),
        ``HUB_GATEWAY_LINK_CHECK_S=N`` how often it looks for a system on both links (``link_check_s``; 0: never),
        ``HUB_GATEWAY_IDLE_S=N`` after how long without a poll it lets a system's queue go (``idle_s``; 0: never),
        ``HUB_GATEWAY_MAX_HANDSHAKES=N`` the TLS handshakes under way at most (``max_handshakes``),
        ``HUB_GATEWAY_DRAIN_S=N`` how long a stopping gateway says so on ``GET /ready`` before it closes (``drain_s``),
        ``HUB_GATEWAY_PROXY_FROM=A,B`` the load balancers whose PROXY headers it reads (``proxy_from``),
        ``HUB_GATEWAY_CERT_CHECK_S=N`` how often it looks for a renewed server certificate (``cert_check_s``),
        ``HUB_GATEWAY_VISIBILITY_S=N`` after how long an unacknowledged delivery is served again
        (``visibility_timeout_s``),
        ``HUB_DIRECTORY_REFRESH_S=N`` how often the client identification reads the directory again
        (``directory_refresh_s``, as the examination and the workers do: ``Settings.directory_refresh_s``); an
        override given here wins."""
        folder = Path(state_dir) / "pki" / "gateway"
        values: dict[str, Any] = {"cert_file": folder / "server.pem", "key_file": folder / "server.key"}
        # Malformed values are a ConfigError naming the variable, as ``Settings.from_env``'s (they fell back to the
        # default in silence: HUB_GATEWAY_DRAIN_S=7.5 meant no drain at all).
        in_process = os.environ.get("HUB_GATEWAY_IN_PROCESS", "").strip().lower()
        if in_process:
            if in_process not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
                raise ConfigError(f"HUB_GATEWAY_IN_PROCESS must be 0 or 1, got {in_process!r}")
            values["in_process"] = in_process in ("1", "true", "yes", "on")
        for name, field_name, low, high, kind in (
            ("HUB_GATEWAY_BATCHES", "batches", 1, 64, int),
            ("HUB_GATEWAY_EXAMINERS", "examiners", 0, 64, int),
            ("HUB_GATEWAY_LINK_CHECK_S", "link_check_s", 0, 86400, float),  # 0: no one-link-per-system check
            ("HUB_GATEWAY_IDLE_S", "idle_s", 0, 86400, float),  # 0: a system once read is read until it stops
            ("HUB_GATEWAY_MAX_HANDSHAKES", "max_handshakes", 1, 100_000, int),
            # at most 30 s: hub run's supervisor waits 60 s for a stopping process
            ("HUB_GATEWAY_DRAIN_S", "drain_s", 0, 30, float),
            ("HUB_GATEWAY_CERT_CHECK_S", "cert_check_s", 0, 86400, float),  # 0: read the certificate at start only
            # systems whose handling of one delivery takes longer than a minute before they acknowledge it
            ("HUB_GATEWAY_VISIBILITY_S", "visibility_timeout_s", 1, 3600, float),
            ("HUB_DIRECTORY_REFRESH_S", "directory_refresh_s", 1, 86400, int),  # as Settings.directory_refresh_s
        ):
            raw = os.environ.get(name, "").strip()
            if raw:
                values[field_name] = _number(name, raw, low, high, kind)
        if 0 < values.get("cert_check_s", 1) < 1:
            raise ConfigError(
                f"HUB_GATEWAY_CERT_CHECK_S must be 0 (read the server certificate at start only) or at least 1 "
                f"second, got {values['cert_check_s']!r}"
            )
        proxies = [a.strip() for a in os.environ.get("HUB_GATEWAY_PROXY_FROM", "").split(",") if a.strip()]
        if proxies:
            values["proxy_from"] = tuple(proxies)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> GatewaySettings:
        return replace(self, **changes)


def _number(name: str, raw: str, low: float, high: float, kind: type[int] | type[float]) -> int | float:
    """``raw``, the value of the variable ``name``, as a ``kind`` from ``low`` to ``high``; else a ConfigError."""
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        what = "a whole number" if kind is int else "a number of seconds"
        raise ConfigError(f"{name} must be {what} from {low:g} to {high:g}, got {raw!r}")
    return value
