"""One frozen ``Settings`` object, read from the environment (``HUB_*``) with defaults that work on a fresh
machine. It is passed down explicitly; nothing in the hub reads the environment anywhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hub.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_state_dir() -> Path:
    return PROJECT_ROOT / "var"


#: The queue types ``HUB_QUEUE_TYPE`` accepts.
QUEUE_TYPES = ("classic", "quorum")
#: The HTTPS gateway's port unless told otherwise (``hub gateway --port``, ``hub run --gateway-port``).
GATEWAY_PORT = 8443

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(raw)


#: (setting, lowest value, what a lower one would do) — checked when the settings are made.
_LOWEST = (
    ("max_message_bytes", 1, "below it every message would be refused as too large"),
    ("message_budget_ms", 1, "below it every message would be refused as over its CPU budget"),
    ("clock_skew_s", 0, "seconds a message's Created may be ahead of the hub's clock"),
    ("crl_hours", 1, "below it every CRL would be stale when published, and verification fails closed"),
    ("workers", 0, "0 is one worker per core"),
    ("prefetch", 1, "0 would let RabbitMQ hand a worker every queued message at once"),
    ("poll_grace_s", 0, "seconds after a system's last poll through the gateway; 0 is no grace"),
)
#: (setting, highest value, why): above it the hub cannot start or its consumers fail (RabbitMQ's prefetch is a
#: 16-bit count; a time past these overflows Python's datetime arithmetic where it is used).
_HIGHEST = (
    ("prefetch", 65535, "AMQP's basic.qos prefetch count is 16 bits"),
    ("clock_skew_s", 86400, "a day; more would accept messages dated far in the future"),
    ("crl_hours", 24 * 366, "a CRL's next update at most a year ahead"),
    ("poll_grace_s", 86400 * 30, "thirty days"),
    ("message_budget_ms", 3_600_000, "an hour"),
)


@dataclass(frozen=True, slots=True)
class Settings:
    #: AMQP URL of RabbitMQ.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    #: RabbitMQ management API (used only to provision per-system users).
    amqp_management_url: str = "http://guest:guest@127.0.0.1:15672/"
    #: PostgreSQL DSN.
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    #: Where schemas/ and routes/ live (shipped with the project).
    schemas_dir: Path = PROJECT_ROOT / "schemas"
    routes_dir: Path = PROJECT_ROOT / "routes"
    #: Hub state: PKI, keys, logs of a local installation.
    state_dir: Path = field(default_factory=_default_state_dir)
    #: Intake limits. 4 MiB covers a document with attachments; larger payloads travel as references.
    max_message_bytes: int = 4 * 1024 * 1024
    #: CPU budget of one message's examination in milliseconds (parse, validate, verify, route, gate). Every step
    #: is bounded by the intake's limits (README, cost model: at most a few tens of ms at the size limit); a message
    #: found past the budget between two steps is refused with MSG_COST_EXCEEDED and parked in the dead-letter
    #: queue for an operator, and the worker goes on with the rest of its batch. The clock leaves out the collector's
    #: full passes (hub.pipeline.cpu_clock): their cost is the process's heap, not the message's.
    message_budget_ms: int = 250
    #: Allowed clock skew for Created (future-dated messages) in seconds.
    clock_skew_s: int = 300
    #: Passphrase that encrypts the CA private keys at rest.
    ca_passphrase: str = "change-me-demo-only"  # noqa: S105 - demo default; deployments set HUB_CA_PASSPHRASE
    #: Hours between a CRL's thisUpdate and nextUpdate; verification fails closed once a CRL is past nextUpdate,
    #: so CRLs are republished (hub pki crl, or hub.commands.trust_admin.refresh_crls_if_due) well before that.
    crl_hours: int = 24
    #: Prefix of every RabbitMQ exchange, queue and user the hub creates (tests use a unique one).
    namespace: str = "hub"
    #: Number of pipeline worker processes (0 = one per core).
    workers: int = 0
    #: Seconds between two looks of each worker (and of the gateway's examination and the process engine) at the
    #: stored directory's version and the routes files: after ``hub directory load`` or an edit of ``routes/*.xml``
    #: it takes the directory and the routes loaded against it without a restart (hub.pipeline.follow).
    directory_refresh_s: int = 30
    #: Consumer prefetch per worker.
    prefetch: int = 256
    #: The hub's replacements of aiormq/pamqp internals (hub/transport/_aiormq_fast.py: frame reader, in-line
    #: delivery, frame-queue bound, batched confirms and publish frames). ``HUB_AMQP_FAST=0`` runs aiormq's own code
    #: paths only (same behaviour, about 10–20 % more CPU per message in the workers).
    amqp_fast: bool = True
    #: ``classic`` (default: durable classic queues, system queues with message priorities) or ``quorum`` (every
    #: queue a quorum queue, replicated over a RabbitMQ cluster; urgent deliveries get a lane of their own per system
    #: instead of priorities: ``hub.transport.topology``). Set it before the first ``hub run`` of an installation: a
    #: queue declared as one type cannot be re-declared as the other (AMQP_PRECONDITION).
    queue_type: str = "classic"
    #: Seconds after an HTTPS system's last poll during which the ops overview shows it 间歇轮询 (polls from time to
    #: time) rather than 未连接 while nobody reads its queue: the gateway lets an idle system's queue go after
    #: ``HUB_GATEWAY_IDLE_S`` (hub.gateway.mailbox), so a system that polls every few minutes has no consumer between
    #: its polls. Set it a little above the longest pause between your systems' polls; 0: no grace.
    poll_grace_s: int = 900

    def __post_init__(self) -> None:
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigError(f"HUB_QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, got {self.queue_type!r}")
        if not self.pg_dsn.startswith(("postgresql://", "postgres://")):
            # libpq's key=value form: asyncpg refuses it only at the first connection, with its own words.
            raise ConfigError(
                "HUB_PG_DSN must be a URL, postgresql://user[:password]@host:port/database[?sslmode=…], not libpq's "
                "key=value form"
            )
        if self.directory_refresh_s < 1:  # 0 would have every worker ask PostgreSQL without a pause
            raise ConfigError(f"HUB_DIRECTORY_REFRESH_S must be at least 1 (seconds), got {self.directory_refresh_s}")
        # A value below these starts a hub that cannot work, with nothing said until the first message fails.
        for name, low, why in _LOWEST:
            value = getattr(self, name)
            if value < low:
                raise ConfigError(f"HUB_{name.upper()} must be at least {low} ({why}), got {value}")
        for name, high, why in _HIGHEST:
            value = getattr(self, name)
            if value > high:
                raise ConfigError(f"HUB_{name.upper()} must be at most {high} ({why}), got {value}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``HUB_<FIELD>`` variables; unknown or malformed values are a ConfigError."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("HUB_" + f.name.upper())
            if raw is None:
                continue
            try:
                if f.type in ("bool", bool):
                    values[f.name] = _boolean(raw)
                elif f.type in ("int", int):
                    values[f.name] = int(raw)
                elif f.type in ("Path", Path):
                    values[f.name] = Path(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                kind = "0 or 1" if f.type in ("bool", bool) else "an integer"
                raise ConfigError(f"HUB_{f.name.upper()} must be {kind}, got {raw!r}") from None
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def to_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) plus every setting as its ``HUB_*`` variable: what a
        ``hub`` subprocess (``hub run``, ``hub quarantine release``, …) needs to act on this same installation."""
        env = dict(os.environ if base is None else base)
        for f in fields(self):
            value = getattr(self, f.name)
            env["HUB_" + f.name.upper()] = str(int(value)) if isinstance(value, bool) else str(value)
        return env
