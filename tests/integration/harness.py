"""A whole hub for integration tests, on the real RabbitMQ and PostgreSQL: a fresh database and namespace, a CA,
the demo directory stored in PostgreSQL, enrolled agency systems, and the pipeline running either in this
process (fast to start, same code) or as ``hub run`` worker processes (for crash tests)."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lxml import etree

from hub.envelope import Envelope, Party, Recipient, build, parse, to_bytes
from hub.pipeline.client import Inbox, enroll, load_signer, outgoing, read_reply
from hub.pipeline.processor import CN_TZ
from hub.settings import PROJECT_ROOT, Settings

SAMPLES = PROJECT_ROOT / "schemas" / "services"
DIRECTORY_XML = PROJECT_ROOT / "routes" / "directory.xml"
PROVINCE = "11220000013544357T"

#: Systems the tests send from or read (enrolled once per session).
SYSTEMS = {
    "county-220122-oa": "11220122013550216R",  # 农安县 (under 长春)
    "county-220182-oa": "11220182013552847D",  # 榆树市 (under 长春)
    "county-220183-oa": "11220183013553609R",  # 德惠市 (under 长春)
    "city-220100-oa": "11220100013544550M",  # 长春市
    "prov-220000-oa": PROVINCE,
    "prov-220000-secure": PROVINCE,
    "prov-220000-portal": PROVINCE,
}


def sample_body(service: str, name: str | None = None) -> etree._Element:
    """The body element of a valid sample of ``service`` (a fresh copy)."""
    folder = SAMPLES / service / "1" / "samples" / "valid"
    if name is None and service == "document.official":
        name = "typical-notice.xml"  # public content; classified-notice.xml carries a 秘密 marking
    path = folder / name if name else sorted(folder.glob("*.xml"))[0]
    root = parse(path.read_bytes())
    return copy.deepcopy(root[1][0])


def document(
    sender: str,
    recipients: Iterable[Recipient],
    *,
    classification: str = "公开",
    urgency: str = "平件",
    service: str = "document.official",
    body: etree._Element | None = None,
    created: datetime | None = None,
    expires: datetime | None = None,
    message_id: str | None = None,
) -> etree._Element:
    body = body if body is not None else sample_body(service)
    if service == "document.official":
        # The body repeats the header's 密级 and 紧急程度 (GB/T 9704); keep them consistent.
        ns = body.nsmap.get(None) or etree.QName(body).namespace
        for el in body.iter(f"{{{ns}}}Classification"):
            el.text = classification
        for el in body.iter(f"{{{ns}}}Urgency"):
            el.text = urgency
    return build(
        service=service,
        sender=Party(SYSTEMS[sender], sender),
        recipients=list(recipients),
        body=body,
        classification=classification,
        period="10年" if classification in ("秘密", "机密", "绝密") else None,
        urgency=urgency,
        created=created,
        expires=expires,
        message_id=message_id,
    )


@dataclass
class Hub:
    settings: Settings
    signers: dict[str, Any] = field(default_factory=dict)
    transport: Any = None
    worker: Any = None
    inbox_verifier: Any = None
    registry: Any = None
    pool: Any = None

    # -- set-up ----------------------------------------------------------------------------------------------

    async def setup(self) -> None:
        from hub.commands import trust_admin as admin
        from hub.directory import load_directory
        from hub.store.db import create_pool, migrate
        from hub.store.directory import DirectoryRepository
        from hub.transport import Transport
        from hub.trust import TrustStore, Verifier
        from hub.validation import SchemaRegistry

        s = self.settings
        await migrate(s.pg_dsn)
        await admin.init(s, s.state_dir / "pki", agency=PROVINCE)
        self.pool = await create_pool(s.pg_dsn, min_size=1, max_size=4)
        directory = load_directory(DIRECTORY_XML)
        await DirectoryRepository(self.pool).save(directory)
        for system, agency in SYSTEMS.items():
            await enroll(s, system, agency)
            self.signers[system] = load_signer(s, system)
        self.transport = await Transport.connect(s, client_name="test-client")
        await self.transport.declare_topology(sys.id for sys in directory.systems())
        self.inbox_verifier = Verifier(TrustStore.load(s.state_dir / "pki"))
        self.registry = SchemaRegistry(s.schemas_dir)

    async def start_worker(self) -> None:
        from hub.pipeline.worker import Worker

        self.worker = Worker(self.settings, 0)
        await self.worker.start()

    async def stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None

    async def close(self) -> None:
        await self.stop_worker()
        if self.transport is not None:
            from hub.transport.users import teardown_namespace

            await self.transport.close()
            await teardown_namespace(self.settings)
        if self.pool is not None:
            await self.pool.close()

    # -- sending and reading -------------------------------------------------------------------------------

    def sign(self, system: str, root: etree._Element) -> bytes:
        self.signers[system].sign(root)
        return to_bytes(root)

    async def publish(self, payloads: Iterable[tuple[Envelope | None, bytes]], *, lane: str | None = None) -> None:
        """Publish to the inbound exchange, on the lane the sender's client would choose unless ``lane`` is given."""
        import dataclasses

        from hub.transport import Outgoing

        items = []
        for env, body in payloads:
            if env is not None:
                item = outgoing(self.transport, env, body, as_system=False)
                items.append(item if lane is None else dataclasses.replace(item, routing_key=lane))
            else:
                items.append(Outgoing(self.transport.names.inbound_exchange, lane or "normal", body, {}, 0, "raw"))
        await self.transport.publish_many(items)

    async def send(self, system: str, root: etree._Element) -> Envelope:
        data = self.sign(system, root)
        env = Envelope.from_tree(parse(data))
        await self.publish([(env, data)])
        return env

    def inbox(self, system: str) -> Inbox:
        return Inbox(self.settings, self.transport, system, verifier=self.inbox_verifier, registry=self.registry)

    async def reply(self, system: str, message_id: str, timeout: float = 20.0) -> Any:
        replies = await self.inbox(system).replies_for([message_id], timeout=timeout)
        assert message_id in replies, f"no answer from the hub for {message_id} within {timeout} s"
        return replies[message_id]

    async def drain(self, system: str, *, expect: int | None = None, timeout: float = 10.0) -> list[tuple[Any, Any]]:
        """Take every message waiting in a system's queue (waiting until ``expect`` arrived): (incoming, envelope)."""
        box = self.inbox(system)
        got: list[tuple[Any, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await box.take()
            for m in batch:
                got.append((m, box.open(m.body)))
            if batch:
                await self.transport.ack(batch)
            if expect is not None and len(got) >= expect:
                break
            if not batch:
                if expect is None and got:
                    break
                await asyncio.sleep(0.05)
        return got

    async def depth(self, system: str) -> int:
        return await self.transport.queue_depth(self.transport.names.system_queue(system))

    # -- hub run as processes ------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return self.settings.to_env()

    def run_hub(
        self, workers: int = 2, *, processes: bool = False, extra: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """``hub run`` as an operator starts it (without the process engine unless ``processes``: the tests that count
        worker processes count exactly the workers); its JSON log lines go to <state_dir>/hub.log."""
        self.log_path = self.settings.state_dir / "hub.log"
        flags = [] if processes else ["--no-processes"]
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "run", "--workers", str(workers), *flags, *extra],
                env=self.env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def hub_cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``hub <args>`` as an operator runs it, waited for. Blocking, so refused on a running event loop: there it
        would stop this process's own pipeline mid-transaction (a chainer holding the evidence head, say) while the
        command waits for that lock, and both wait until the timeout. From a coroutine: ``await hub.cli(...)``."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("hub_cli blocks the event loop this hub runs on: use `await hub.cli(...)`")
        return subprocess.run(
            [sys.executable, "-m", "hub.cli", *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    async def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``hub_cli`` from a coroutine: the command runs while this event loop goes on serving the pipeline."""
        return await asyncio.to_thread(self.hub_cli, *args, timeout=timeout)


def now() -> datetime:
    return datetime.now(CN_TZ)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


__all__ = ["SYSTEMS", "Hub", "Path", "document", "hours", "now", "read_reply", "sample_body"]


async def until(check: Any, what: str, timeout: float = 15.0, interval: float = 0.2) -> Any:
    """Await ``check()`` every ``interval`` s until it returns something true (returned); AssertionError naming
    ``what`` and the last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")
