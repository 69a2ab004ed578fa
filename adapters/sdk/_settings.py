"""``AdapterSettings``: one frozen object, read from a TOML file and ``HUB_ADAPTER_*`` variables.

An adapter needs only what its enrolment gave it (``hub adapter enrol``), in one directory, ``home``::

    home/
      key.pem          the system's private key (made on the agency's side, never sent anywhere; 0600)
      cert.pem         its certificate, followed by the issuing CA's
      hub-root.pem     the hub's root certificate: the only trust anchor
      crl/*.crl        the hub CA's revocation lists: fetched from the gateway's GET /v1/crl at start and every
                       ``crl_refresh_s`` when ``gateway_url`` or ``tracking_url`` is set (``adapters.sdk._crl``),
                       else copied here by the agency from what the hub's operators send; re-read when changed
      broker.json      {"url": "amqp://<user>:<password>@host:5672/", "namespace": "hub"} (0600); not read when the
                       adapter takes part over the HTTPS gateway (``gateway_url``)
      handled.sqlite3  what the adapter has handled (made on first start; the default store)

Never the hub's PKI directory, never a schema folder: the XSDs ship with the SDK.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from adapters.sdk._errors import ConfigurationError

__all__ = ["AdapterSettings"]

_ENV_PREFIX = "HUB_ADAPTER_"
#: The bounds of ``crl_refresh_s``: no more often than a minute (the gateway's rate limits are the system's), no
#: less often than a day (a CRL of the hub is valid for ``crl_hours``, 24 by default).
CRL_REFRESH_MIN_S = 60
CRL_REFRESH_MAX_S = 86400


@dataclass(frozen=True, kw_only=True)
class AdapterSettings:
    """Everything an adapter is configured by. Build with ``AdapterSettings.from_file(path)`` or directly."""

    #: The system id this adapter is (as in the hub's directory and its certificate), e.g. ``county-220182-oa``.
    system: str
    #: The enrolment directory (see the module docstring).
    home: Path
    #: Where handled message ids live: empty for ``home/handled.sqlite3``, ``sqlite:///path`` or a PostgreSQL DSN
    #: (``postgresql://…``) when the agency has a database (then handlers get an asyncpg connection as ``ctx.db``).
    store: str = ""
    #: Override of broker.json's URL (e.g. another broker node); credentials stay those of broker.json.
    amqp_url: str = ""
    #: Override of broker.json's namespace.
    namespace: str = ""
    #: The hub's HTTPS gateway, e.g. ``https://gateway.jl-forestry.gov.cn:8443``: set, the adapter takes part over
    #: HTTPS only (its key and certificate for mutual TLS, the hub root as the only trust; ``adapters.sdk._gateway``)
    #: instead of RabbitMQ, with the same handlers and store.
    gateway_url: str = ""
    #: An adapter on RabbitMQ reads its document tracking (``Adapter.sent_messages``, ``hub adapter sent``) from this
    #: gateway, e.g. ``https://gateway.jl-forestry.gov.cn:8443``, with its enrolment key and certificate; it keeps
    #: taking part over RabbitMQ. Over the gateway (``gateway_url``) tracking is read there, and this stays empty.
    tracking_url: str = ""
    #: The agency's outbound HTTP proxy the gateway is reached through, e.g. ``http://proxy.example.gov.cn:3128``
    #: (``http://user:password@host:port`` when it asks for a login): the adapter asks it to CONNECT to the gateway
    #: and speaks TLS with its own certificate through the tunnel, so the proxy sees neither the certificate's key nor
    #: the messages. Empty: straight to the gateway (``HTTPS_PROXY`` and the like are not read: the hub is reached
    #: as configured here, or not at all).
    gateway_proxy: str = ""
    #: Long polls of the gateway's inbox at once (each holds one of the system's concurrent requests at the gateway).
    gateway_polls: int = 2
    #: Seconds one long poll waits for a delivery (the gateway holds a poll at most 30 s).
    gateway_wait: int = 20
    #: Seconds between two fetches of the hub's CRLs from the gateway (``GET /v1/crl``, at start and then this often;
    #: ``adapters.sdk._crl``), when ``gateway_url`` or ``tracking_url`` is set; 60 to 86400. The hub's CRLs are valid
    #: for a day (``crl_hours``): the default leaves a failed fetch many chances before the ones at hand go stale.
    crl_refresh_s: int = 3600
    #: Unacknowledged deliveries the broker may hand this adapter at once.
    prefetch: int = 64
    #: Deliveries handed over in one batch (one store commit and one acknowledgement per batch).
    max_batch: int = 32
    #: Batches handled at once (SQLite has one writer: batches then take turns on the store).
    concurrency: int = 1
    #: Seconds ``send`` waits for the hub's receipt and ``request`` for the reply, unless given per call.
    request_timeout: float = 30.0
    #: How often a handler may ask for ``Retry`` (or fail) before the delivery is dead-lettered.
    retry_limit: int = 5
    #: The largest delivery the adapter parses (the hub's limit).
    max_message_bytes: int = 16 * 1024 * 1024
    #: Seconds between two connection attempts at start-up, doubled up to ``reconnect_max``.
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    #: Extra values an adapter reads itself (a section ``[adapter]`` of the file).
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home))
        if self.prefetch < 1 or self.max_batch < 1 or self.concurrency < 1:
            raise ConfigurationError("prefetch, max_batch and concurrency must be at least 1")
        # Each of these at 0 or below would start an adapter that cannot work: every send timing out at once, every
        # delivery refused as too large, reconnecting to the broker without a pause.
        if not self.request_timeout > 0:
            raise ConfigurationError(
                f"request_timeout must be a positive number of seconds, not {self.request_timeout}"
            )
        if self.max_message_bytes < 1:
            raise ConfigurationError(f"max_message_bytes must be at least 1, not {self.max_message_bytes}")
        if not 0 < self.reconnect_initial <= self.reconnect_max:
            raise ConfigurationError(
                f"reconnect_initial ({self.reconnect_initial} s) must be positive and at most reconnect_max "
                f"({self.reconnect_max} s)"
            )
        if self.retry_limit < 0:
            raise ConfigurationError(f"retry_limit must be 0 (no retries) or more, not {self.retry_limit}")
        for name in ("gateway_url", "tracking_url"):
            given = getattr(self, name)
            if given and not _https_address(given):
                raise ConfigurationError(
                    f"{name} {given!r}: give the gateway as https://host[:port] (it takes only HTTPS with the "
                    "system's certificate)"
                )
        if self.gateway_url and self.tracking_url:
            raise ConfigurationError(
                "tracking_url is for an adapter on RabbitMQ: over the gateway (gateway_url) document tracking is "
                "read from the same gateway; leave tracking_url out"
            )
        if self.gateway_proxy:
            from yarl import URL

            try:
                proxy: URL | None = URL(self.gateway_proxy)
            except ValueError:
                proxy = None
            if proxy is None or proxy.scheme != "http" or not proxy.host or proxy.path not in ("", "/"):
                raise ConfigurationError(  # not the value: it may carry the proxy's password
                    "gateway_proxy: give the agency's proxy as http://host:port (or http://user:password@host:port); "
                    "the TLS to the gateway runs inside its tunnel"
                )
            if not (self.gateway_url or self.tracking_url):
                raise ConfigurationError(
                    "gateway_proxy is set but neither gateway_url nor tracking_url is: the proxy is for the gateway"
                )
        if self.gateway_polls < 1:
            raise ConfigurationError(f"gateway_polls must be at least 1, not {self.gateway_polls}")
        if not 1 <= self.gateway_wait <= 30:
            raise ConfigurationError(f"gateway_wait must be 1 to 30 seconds, not {self.gateway_wait}")
        if not CRL_REFRESH_MIN_S <= self.crl_refresh_s <= CRL_REFRESH_MAX_S:
            raise ConfigurationError(
                f"crl_refresh_s must be {CRL_REFRESH_MIN_S} to {CRL_REFRESH_MAX_S} seconds (the hub's CRLs are "
                f"valid for a day: fetch them well within that), not {self.crl_refresh_s}"
            )

    # ------------------------------------------------------------------------------------------ files

    @property
    def key_path(self) -> Path:
        return self.home / "key.pem"

    @property
    def cert_path(self) -> Path:
        return self.home / "cert.pem"

    @property
    def root_cert_path(self) -> Path:
        return self.home / "hub-root.pem"

    @property
    def crl_dir(self) -> Path:
        return self.home / "crl"

    @property
    def broker_path(self) -> Path:
        return self.home / "broker.json"

    def broker(self) -> tuple[str, str]:
        """(AMQP URL with the system's credentials, namespace) from broker.json and the overrides."""
        try:
            data = json.loads(self.broker_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(
                f"no broker credentials at {self.broker_path}: finish the enrolment (hub adapter enrol --accept)",
                code="SDK_NOT_ENROLLED",
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{self.broker_path} is unreadable: {exc}") from None
        url = str(data.get("url") or "")
        if self.amqp_url:
            from yarl import URL

            given, enrolled = URL(self.amqp_url), URL(url)
            url = str(given.with_user(enrolled.user).with_password(enrolled.password))
        namespace = self.namespace or str(data.get("namespace") or "hub")
        if not url:
            raise ConfigurationError(f"{self.broker_path} names no broker url")
        return url, namespace

    def store_target(self) -> tuple[str, str]:
        """("sqlite", path) or ("postgresql", dsn)."""
        s = self.store
        if not s:
            return "sqlite", str(self.home / "handled.sqlite3")
        if s.startswith("sqlite:///"):
            return "sqlite", s[len("sqlite:///") :]
        if s == ":memory:":
            return "sqlite", s
        if s.startswith(("postgresql://", "postgres://")):
            return "postgresql", s
        raise ConfigurationError(f"store {s!r}: use sqlite:///PATH or a postgresql:// DSN")

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> AdapterSettings:
        """Read a TOML file (``system``, ``home`` relative to the file, the tunables; ``[adapter]`` for the
        adapter's own values), then ``HUB_ADAPTER_<NAME>`` variables, then ``overrides``."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"no settings file at {path}") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
        extra = data.pop("adapter", {})
        if "home" in data:
            data["home"] = (path.parent / str(data["home"])).resolve()
        return cls.from_mapping({**data, "extra": extra}, **overrides)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], **overrides: Any) -> AdapterSettings:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigurationError(f"unknown setting {key!r} (known: {', '.join(sorted(known))})")
            values[key] = value
        for name, f in known.items():
            raw = os.environ.get(_ENV_PREFIX + name.upper())
            if raw is None or name == "extra":
                continue
            values[name] = _coerce(f.type, raw, name)
        values.update(overrides)
        for required in ("system", "home"):
            if not values.get(required):
                raise ConfigurationError(f"setting {required!r} is required")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from None

    def with_(self, **changes: Any) -> AdapterSettings:
        return replace(self, **changes)


def _https_address(given: str) -> bool:
    """``https://host[:port]`` and nothing more (no path, no query)."""
    from yarl import URL

    try:
        url = URL(given)
    except ValueError:
        return False
    return url.scheme == "https" and bool(url.host) and url.path in ("", "/") and not url.query_string


def _coerce(kind: Any, raw: str, name: str) -> Any:
    text = str(kind)
    try:
        if text == "int":
            return int(raw)
        if text == "float":
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a number") from None
    return raw
