"""``TestHub``: an adapter's tests without a broker — and the same tests against the real one by a switch.

    async with TestHub(adapter) as hub:
        county = hub.client("county-220122-oa")            # another system, to send from and receive as
        receipt = await county.send(notice, to=to(CITY, "city-220100-oa"))
        await hub.wait_until(lambda: handled)                # the adapter's handler ran

In memory (the default) the hub is the real pipeline — ``hub.pipeline.worker.Worker`` with the processor and the
answer logic of ``hub run`` — on the in-memory transport and store doubles of ``hub.transport.memory`` and
``hub.store.memory``, with a throw-away CA and the demo directory and routes: the adapter's messages are parsed,
validated, verified, routed, gated, re-signed and answered exactly as in production, in milliseconds.

``TestHub(adapter, real=True)`` — or ``HUB_TEST_REAL=1`` in the environment — runs the same test against the real
RabbitMQ and PostgreSQL of the machine (``HUB_AMQP_URL``, ``HUB_PG_DSN``): a fresh database and namespace, the
pipeline worker in this process, each adapter enrolled into an enrolment directory of its own and connecting
with its own broker user, exactly as an agency's adapter does. Everything is removed afterwards.

``TestHub(adapter, https=True)`` — or ``HUB_TEST_HTTPS=1`` — does that and also serves the hub's HTTPS gateway
(``hub.gateway``, mutual TLS, its server certificate issued by the test CA) in this process, and every adapter and
client takes part over it (``AdapterSettings.gateway_url``) instead of RabbitMQ: the same test proves the same
behaviour for a system that can reach only HTTPS.

``TestHub(installation=settings)`` joins a hub that is already running (``make demo``'s): no database, namespace
or worker of its own; its clients and enrolment directories are made in that installation, and only the
enrolment directories are removed afterwards. ``AdapterProcess`` runs ``hub adapter run NAME --config FILE`` in a
process of its own (to SIGKILL it mid-stream, as a crash does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from adapters.sdk._adapter import Adapter
from adapters.sdk._context import Context
from adapters.sdk._errors import ConfigurationError, RequestTimeout
from adapters.sdk._home import write_home
from adapters.sdk._settings import AdapterSettings
from adapters.sdk._store import HandledStore, SqliteHandledStore, open_store
from adapters.sdk._trust import AgencyTrust

__all__ = ["AdapterProcess", "Delivered", "TestHub"]

log = logging.getLogger("adapters.sdk.testing")

_PASSPHRASE = "test-hub-passphrase"  # noqa: S105 — a throw-away CA for tests


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a ``TestHub.client`` system received and had no handler for: the typed message and its context."""

    message: Any
    context: Context


class TestHub:
    """A whole hub for an adapter's tests. Use as an async context manager."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *adapters: Adapter,
        real: bool | None = None,
        directory: Path | None = None,
        routes: Path | None = None,
        installation: Any = None,
        https: bool | None = None,
    ) -> None:
        from hub.settings import PROJECT_ROOT

        self.adapters = list(adapters)
        #: The ``hub.settings.Settings`` of a running hub to join instead of making one (implies real services).
        self.installation = installation
        #: Every adapter over the HTTPS gateway (implies real services).
        self.https = https if https is not None else os.environ.get("HUB_TEST_HTTPS", "") not in ("", "0")
        if self.https and installation is not None:
            raise ConfigurationError("https=True serves a gateway of its own: no installation=", code="SDK_CONFIG")
        self.real = (
            installation is not None
            or self.https
            or (real if real is not None else os.environ.get("HUB_TEST_REAL", "") not in ("", "0"))
        )
        #: The gateway's URL with ``https`` (``https://127.0.0.1:<port>``), else empty.
        self.gateway_url = ""
        self._gateway: Any = None
        self.directory_file = Path(directory or PROJECT_ROOT / "routes" / "directory.xml")
        self.routes_dir = Path(routes or PROJECT_ROOT / "routes")
        self.base = Path()  # a temporary folder of its own from __aenter__ on
        self.namespace = f"testhub-{uuid.uuid4().hex[:8]}"
        self.settings: Any = None
        self._clients: dict[str, Adapter] = {}
        self._delivered: dict[str, list[Delivered]] = {}
        self._worker: Any = None
        self._broker: Any = None
        self._directory: Any = None
        self._dsn_admin: str | None = None
        self._db: str | None = None
        self._admin_transport: Any = None
        self._started: list[Adapter] = []

    # ------------------------------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> TestHub:
        self.base = Path(tempfile.mkdtemp(prefix="testhub-"))
        try:
            if self.real:
                await self._start_real()
            else:
                await self._start_memory()
            for adapter in self.adapters:
                await self._start_adapter(adapter)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for adapter in reversed(self._started):
            try:
                await adapter.stop()
            except Exception:  # keep tearing down
                log.exception("stopping %s failed", adapter.system)
        self._started.clear()
        if self._gateway is not None:
            await self._gateway.cleanup()
            self._gateway = None
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self.real:
            await self._teardown_real()
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ systems

    async def client(self, system: str) -> Adapter:
        """Another system of the directory, started on this hub: send as it (``await (await hub.client(x)).send``);
        what it receives and has no handler for is kept in ``delivered(system)``. The same object comes back each
        time."""
        adapter = self._clients.get(system)
        if adapter is None:
            adapter = self._clients[system] = Adapter(system)
            adapter._fallback = self._recorder(system)
        if adapter not in self._started:
            await self._start_adapter(adapter)
        return adapter

    async def restart(self, adapter: Adapter) -> None:
        """Stop ``adapter`` and start it again on the same store (as after a crash or a deployment): what it
        handled before stays handled."""
        await adapter.stop()
        if adapter in self._started:
            self._started.remove(adapter)
        await self._start_adapter(adapter)

    def delivered(self, system: str) -> list[Delivered]:
        return self._delivered.setdefault(system, [])

    def _recorder(self, system: str) -> Callable[[Any, Context], Any]:
        async def record(message: Any, ctx: Context) -> None:
            self.delivered(system).append(Delivered(message, ctx))

        return record

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
        """Wait until ``predicate()`` is true (checked every 5 ms); ``RequestTimeout`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RequestTimeout(f"not within {timeout:g} s: {what or getattr(predicate, '__name__', 'condition')}")
            await asyncio.sleep(0.005)

    async def received(self, system: str, count: int = 1, timeout: float = 10.0) -> list[Delivered]:
        """Wait until ``client(system)`` received ``count`` messages (starting it if needed); return them."""
        await self.client(system)
        await self.wait_until(lambda: len(self.delivered(system)) >= count, timeout, f"{count} deliveries to {system}")
        return self.delivered(system)[:count]

    async def depth(self, system: str) -> int:
        """Deliveries waiting in ``system``'s queue (not counting those handed to its adapter and unacknowledged)."""
        t = self._admin_transport
        return int(await t.queue_depth(t.names.system_queue(system)))

    async def put_off(self) -> dict[str, int]:
        """The deliveries a ``Retry`` put off that wait in the broker for their delay, by queue (``ns.later.<d>s``,
        the non-empty ones only): where a delivery an adapter could not handle yet is, while it is nowhere else."""
        from hub.transport.names import LATER_DELAYS_S

        t = self._admin_transport
        queues = [t.names.later_queue(d) for d in LATER_DELAYS_S]
        depths = [int(await t.queue_depth(q)) for q in queues]
        return {q: n for q, n in zip(queues, depths, strict=True) if n}

    async def inject(self, system: str, data: bytes, *, message_id: str = "injected") -> None:
        """Put ``data`` into ``system``'s queue as if the hub had delivered it (to test what an adapter does with
        a tampered, foreign or repeated delivery)."""
        from hub.transport.topology import Outgoing

        t = self._admin_transport
        await t.publish_many([Outgoing(t.names.deliver_exchange, system, data, {}, 2, message_id)])

    async def dead_letters(self) -> list[Any]:
        """Take what was dead-lettered (with its headers: x-refused-code, x-refused-reason …)."""
        t = self._admin_transport
        got = await t.fetch(t.names.dead_letter_queue, max_messages=1000)
        if got:
            await t.ack(got)
        return got

    # ------------------------------------------------------------------------------------------ in memory

    async def _start_memory(self) -> None:
        from adapters.sdk._trust import registry
        from hub.directory import load_directory
        from hub.pipeline.context import Context as HubContext
        from hub.pipeline.worker import Worker
        from hub.routing import Router, load_routes, route_files
        from hub.settings import Settings
        from hub.store.memory import MemoryStore
        from hub.transport.memory import MemoryBroker, MemoryTransport
        from hub.trust import Signer, TrustStore, Verifier, pki
        from hub.validation import SchemaRegistry

        created = pki.init_ca(self.base / "state" / "pki", _PASSPHRASE)
        self._issuing = pki.load_ca(created.paths.root, _PASSPHRASE)
        self._pki_dir = created.paths.root
        self.settings = Settings(namespace=self.namespace, state_dir=self.base / "state", ca_passphrase=_PASSPHRASE)
        directory = self._directory = load_directory(self.directory_file)
        router = Router(directory, load_routes(route_files(self.routes_dir), directory))
        store = TrustStore.load(created.paths.root)
        reg: SchemaRegistry = registry()
        ctx = HubContext(
            self.settings,
            reg,
            directory,
            router,
            store,
            Verifier(store, complete_chain=True),  # what the real hub's intake asks (hub.pipeline.context)
            Signer.load(created.paths.hub_key, created.paths.hub_cert, passphrase=_PASSPHRASE.encode()),
        )
        # The hub's retries a thousand times faster; an adapter's own Retry delays (ns.later) in real time.
        self._broker = broker = MemoryBroker(ttl_scale=0.001, later_scale=1.0)
        from hub.transport.names import Names

        names = Names(self.namespace)
        self._worker = Worker(
            self.settings,
            0,
            context=ctx,
            transport=MemoryTransport(names, broker),
            urgent_transport=MemoryTransport(names, broker),
            store=MemoryStore(),
        )
        await self._worker.start()
        self._admin_transport = MemoryTransport(names, broker)

    def _enrol_memory(self, system: str) -> Any:
        from hub.trust import Signer, keys, pki

        entry = self._system_entry(system)
        key = keys.generate_private_key()
        issued = pki.issue_from_csr(
            self._pki_dir, _PASSPHRASE, pki.make_csr(key, entry.agency, system), ca=self._issuing
        )
        return Signer(key, [issued.certificate, self._issuing[0]])

    def _system_entry(self, system: str) -> Any:
        try:
            return self._directory.system(system)
        except Exception:
            raise ConfigurationError(
                f"system {system!r} is not in the test hub's directory ({self.directory_file})", code="SDK_CONFIG"
            ) from None

    async def _start_adapter(self, adapter: Adapter) -> None:
        if self.real:
            await self._start_adapter_real(adapter)
        else:
            from hub.transport.memory import MemoryTransport
            from hub.trust import TrustStore, Verifier

            signer = self._enrol_memory(adapter.system)
            names = self._admin_transport.names
            from hub.trust.pki import PkiPaths

            paths = PkiPaths(self._pki_dir)  # the agency side sees only the root and the CRLs
            store = TrustStore.from_files(paths.root_cert, paths.crl_dir)
            trust = AgencyTrust(Verifier(store), max_bytes=self.settings.max_message_bytes)
            adapter.attach(
                transport=MemoryTransport(names, self._broker, user=names.user(adapter.system)),
                signer=signer,
                trust=trust,
                store=self._store_for(adapter),
            )
            await adapter.start()
        self._started.append(adapter)

    def _store_for(self, adapter: Adapter) -> HandledStore:
        """The store the adapter's settings name when they name PostgreSQL (the agency's own database), else SQLite
        in the test hub's folder."""
        if adapter.settings is not None and adapter.settings.store_target()[0] == "postgresql":
            return open_store(*adapter.settings.store_target())
        return SqliteHandledStore(str(self.base / f"{adapter.system}.sqlite3"))

    # ------------------------------------------------------------------------------------------ real services

    async def _start_real(self) -> None:
        from hub.commands import trust_admin as admin
        from hub.directory import load_directory
        from hub.pipeline.worker import Worker
        from hub.settings import Settings
        from hub.store.db import connection, create_migrated_database
        from hub.store.directory import DirectoryRepository
        from hub.transport import Transport

        if self.installation is not None:  # join a running hub: its database, namespace, CA and worker
            self.settings = self.installation
            self.namespace = self.settings.namespace
            self._directory = load_directory(self.directory_file)
            self._admin_transport = await Transport.connect(self.settings, client_name="testhub-join")
            return
        base = Settings.from_env()
        self._dsn_admin = base.pg_dsn
        self._db = f"testhub_{uuid.uuid4().hex[:10]}"
        dsn = await create_migrated_database(base.pg_dsn, self._db)  # a copy of a migrated template
        self.settings = Settings.from_env(
            pg_dsn=dsn, namespace=self.namespace, state_dir=self.base / "state", routes_dir=self.routes_dir
        )
        await admin.init(self.settings, self.settings.state_dir / "pki")
        directory = self._directory = load_directory(self.directory_file)
        async with connection(dsn) as conn:
            await DirectoryRepository(conn).save(directory)
        self._admin_transport = await Transport.connect(self.settings, client_name="testhub-admin")
        await self._admin_transport.declare_topology(s.id for s in directory.systems())
        self._worker = Worker(self.settings, 0)
        await self._worker.start()
        if self.https:
            await self._start_gateway()

    async def _start_gateway(self) -> None:
        """The hub's HTTPS gateway on a free local port, as ``hub gateway`` serves it (in this process)."""
        from hub.gateway import GatewaySettings, start_gateway
        from hub.trust import pki

        pki.issue_server_certificate(
            self.settings.state_dir / "pki", self.settings.ca_passphrase, ["127.0.0.1", "localhost"]
        )
        config = GatewaySettings.for_state(self.settings.state_dir, port=0)
        self._gateway = await start_gateway(self.settings, config)
        self.gateway_url = f"https://127.0.0.1:{self._gateway.addresses[0][1]}"

    async def enrol_home(self, system: str) -> Path:
        """(Real services only.) Enrol ``system`` with this hub's CA and broker and lay out its enrolment directory
        as ``hub adapter enrol --accept`` does: for an adapter run in another process (``AdapterSettings(system=…,
        home=…)``)."""
        if not self.real:
            raise ConfigurationError("enrolment directories exist only with real=True", code="SDK_CONFIG")
        return await enrolled_home(
            self.settings, system, self._system_entry(system).agency, self.base / "homes" / system
        )

    async def _start_adapter_real(self, adapter: Adapter) -> None:
        home = await self.enrol_home(adapter.system)
        given = adapter.settings
        if given is None:
            adapter.settings = AdapterSettings(system=adapter.system, home=home, gateway_url=self.gateway_url)
        else:  # the adapter's own tunables, with this hub's enrolment (and its PostgreSQL store, if it names one)
            store = given.store if given.store_target()[0] == "postgresql" else ""
            adapter.settings = given.with_(
                home=home,
                store=store,
                amqp_url="",
                namespace="",
                gateway_url=self.gateway_url,
                tracking_url="",  # the test hub's gateway (https=True) or none: never the production one
                gateway_proxy="",  # the test gateway is on this machine: never through the agency's proxy
            )
        adapter._wiring = None
        await adapter.start()

    async def _teardown_real(self) -> None:
        from hub.store.db import connection
        from hub.transport.users import teardown_namespace

        if self._admin_transport is not None:
            await self._admin_transport.close()
            self._admin_transport = None
            if self.installation is None:
                await teardown_namespace(self.settings)
        if self._db and self._dsn_admin:
            async with connection(self._dsn_admin) as conn:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self._db}" WITH (FORCE)')


async def enrolled_home(settings: Any, system: str, agency: str, home: Path) -> Path:
    """Enrol ``system`` with the CA and broker of the installation ``settings`` names (its certificate and its own
    broker user, as ``hub adapter approve`` makes them) and lay out its enrolment directory in ``home`` as
    ``hub adapter enrol --accept`` does. For tests and benches, which play the agency and the operator at once."""
    from hub.pipeline.client import credential_paths, enroll
    from hub.transport.users import amqp_url_for, provision
    from hub.trust.pki import PkiPaths

    await enroll(settings, system, agency)
    await provision(settings, [(system, None)])
    key_path, cert_path = credential_paths(settings, system)
    paths = PkiPaths(settings.state_dir / "pki")
    return write_home(
        home,
        key_pem=key_path.read_bytes(),
        cert_pem=cert_path.read_bytes(),
        root_pem=paths.root_cert.read_bytes(),
        crls={p.name: p.read_bytes() for p in paths.crl_dir.glob("*.crl")},
        amqp_url=amqp_url_for(settings, system),
        namespace=settings.namespace,
    )


class AdapterProcess:
    """``hub adapter run NAME --config CONFIG`` in a process of its own, its JSON log appended to ``log``.

    ``await start()`` returns once the adapter logged that it is ready (connected, consuming, its start-up hooks
    run); ``kill()`` is SIGKILL (no goodbye, as a crash); ``await stop()`` is SIGTERM (the graceful stop) and
    returns the exit code."""

    #: Every instance whose process was started and may still run (``kill_leftovers``).
    _started: ClassVar[weakref.WeakSet[AdapterProcess]] = weakref.WeakSet()

    def __init__(self, name: str, config: Path, *, env: dict[str, str], log: Path) -> None:
        self.name, self.config, self.env, self.log = name, Path(config), env, Path(log)
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def kill_leftovers(cls) -> list[str]:
        """SIGKILL every adapter process still running (a test that failed before its own stop); their names."""
        killed = []
        for p in list(cls._started):
            if p.alive:
                p.kill()
                killed.append(p.name)
        return killed

    async def start(self, timeout: float = 60.0) -> AdapterProcess:
        from hub.settings import PROJECT_ROOT

        self.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "hub.cli", "adapter", "run", self.name, "--config", str(self.config)]
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=out)
        AdapterProcess._started.add(self)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_bytes()[offset:].decode("utf-8", errors="replace")
            if " ready: handles " in text:
                return self
            code = self.proc.poll()
            if code is not None:
                raise ConfigurationError(f"adapter {self.name} exited {code} before it was ready: {text[-600:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise RequestTimeout(f"adapter {self.name} not ready within {timeout:g} s: {text[-600:]}")
            await asyncio.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the graceful stop (SIGKILL after ``timeout``), return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        return int(self.proc.returncode if self.proc.returncode is not None else -9)
