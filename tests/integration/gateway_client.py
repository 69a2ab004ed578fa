"""A gateway under test as its clients see it: the served URL, each system's client certificate, HTTPS sessions
that present it, ``post`` of a signed envelope, and an SDK adapter over it (``over_https``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from gateway_certs import client_certificate, client_ssl_context, server_certificate

from hub.gateway import STATE

__all__ = ["XML", "Gateway", "enrolment_home", "over_https", "post", "running_gateway"]

XML = {"Content-Type": "application/xml"}


@dataclass
class Gateway:
    hub: Any
    runner: Any
    url: str
    pki_dir: Path
    certs: dict[str, tuple[Path, Path]]
    sessions: list[aiohttp.ClientSession]

    def session(self, system: str | None) -> aiohttp.ClientSession:
        """An HTTPS session presenting ``system``'s client certificate (None: no certificate); closed by the
        fixture."""
        cert, key = self.certs[system] if system is not None else (None, None)
        ctx = client_ssl_context(self.pki_dir, cert, key)
        s = aiohttp.ClientSession(self.url, connector=aiohttp.TCPConnector(ssl=ctx))
        self.sessions.append(s)
        return s

    @property
    def state(self) -> Any:
        return self.runner.app[STATE]


async def post(session: aiohttp.ClientSession, data: bytes) -> tuple[int, dict[str, str], bytes]:
    async with session.post("/v1/messages", data=data, headers=XML) as r:
        return r.status, dict(r.headers), await r.read()


@contextlib.asynccontextmanager
async def running_gateway(hub: Any, clients: Mapping[str, str], **config: Any) -> AsyncIterator[Gateway]:
    """The HTTPS gateway of ``hub``'s installation on a free port, as ``hub gateway`` starts it: its server
    certificate issued by the hub CA, a TLS client certificate for each system of ``clients`` (system → agency code),
    ``config`` passed to ``GatewaySettings.for_state``. Its sessions and the gateway are closed on the way out (the
    hub is the caller's)."""
    from hub.gateway import GatewaySettings, start_gateway

    settings = hub.settings
    pki_dir = settings.state_dir / "pki"
    cert, key = server_certificate(pki_dir, settings.ca_passphrase, pki_dir / "gateway")
    certs = {
        system: client_certificate(pki_dir, settings.ca_passphrase, agency, system, settings.state_dir / "tls")[:2]
        for system, agency in clients.items()
    }
    gateway_settings = GatewaySettings.for_state(settings.state_dir, port=0, **config)
    assert (gateway_settings.cert_file, gateway_settings.key_file) == (cert, key)  # where hub pki issue-server puts it
    runner = await start_gateway(settings, gateway_settings)
    g = Gateway(hub, runner, f"https://127.0.0.1:{runner.addresses[0][1]}", pki_dir, certs, [])
    try:
        yield g
    finally:
        for s in g.sessions:
            await s.close()
        await runner.cleanup()


def enrolment_home(gw: Gateway, system: str, base: Path) -> Path:
    """The system's enrolment directory, as ``hub adapter enrol --accept`` writes it (no broker is used)."""
    from adapters.sdk._home import write_home
    from hub.pipeline.client import credential_paths
    from hub.trust.pki import PkiPaths

    s = gw.hub.settings
    key, cert = credential_paths(s, system)
    paths = PkiPaths(s.state_dir / "pki")
    return write_home(
        base / system,
        key_pem=key.read_bytes(),
        cert_pem=cert.read_bytes(),
        root_pem=paths.root_cert.read_bytes(),
        crls={p.name: p.read_bytes() for p in paths.crl_dir.glob("*.crl")},
        amqp_url="",
        namespace=s.namespace,
    )


def over_https(gw: Gateway, system: str, base: Path, *, url: str | None = None, **tunables: Any) -> Any:
    """``system``'s SDK adapter over ``gw`` (or the gateway at ``url``), with ``tunables`` over the defaults."""
    from adapters.sdk import Adapter, AdapterSettings

    given = {"gateway_wait": 2, "request_timeout": 20, **tunables}
    settings = AdapterSettings(system=system, home=enrolment_home(gw, system, base), gateway_url=url or gw.url, **given)
    return Adapter(system, settings)
