"""The speed layer (hub/transport/_aiormq_fast.py, issue 18) against the real RabbitMQ: with ``amqp_fast`` on, each
fast path is really in effect (the frame reader, the frame decoding, in-line delivery, the frame-queue bound, the
batch publish with its confirms and frame caches); with it off, aiormq's own code runs and none of the hub's; a
fast path whose aiormq internal is missing (renamed in another aiormq) falls back to aiormq's own code with one
WARNING naming it; and the process-wide frame reader is installed by ``hub run``'s worker processes only.

These tests set ``amqp_fast`` themselves, so they mean the same under ``HUB_AMQP_FAST=0``."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiormq
import aiormq.connection
import pytest
import pytest_asyncio

from hub.settings import PROJECT_ROOT, Settings
from hub.transport import Incoming, Names, Outgoing, Transport
from hub.transport import _aiormq_fast as fast_paths
from hub.transport.amqp import Consumer
from hub.transport.users import teardown_namespace

pytestmark = pytest.mark.integration

SYSTEM = "sys-f"


@pytest.fixture(scope="module")
def settings(integration_settings: Settings) -> Settings:
    return integration_settings.with_(namespace=f"{integration_settings.namespace}.fast")


@pytest_asyncio.fixture(scope="module")
async def topology(settings: Settings) -> AsyncIterator[Names]:
    transport = await Transport.connect(settings, client_name=f"{settings.namespace}-setup")
    try:
        await transport.declare_topology([SYSTEM])
    finally:
        await transport.close()
    yield Names(settings.namespace)
    await teardown_namespace(settings)


@pytest.fixture
def warnings_once(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process that has not fallen back yet (each path's WARNING is logged once per process)."""
    monkeypatch.setattr(fast_paths, "_fallen_back", set())
    yield


@pytest.fixture
def reader() -> Iterator[None]:
    """The frame reader installed as ``hub run``'s workers install it, and removed afterwards."""
    assert fast_paths.install_reader()
    try:
        yield
    finally:
        fast_paths.uninstall_reader()
    assert not fast_paths.reader_installed()


class Spy:
    """Counts calls of a function or method while passing them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
        self.calls = 0
        original = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)


def _items(names: Names, n: int) -> list[Outgoing]:
    return [Outgoing(names.deliver_exchange, SYSTEM, b"<m/>" * 300, {"k": "v"}, 0, str(uuid.uuid4())) for _ in range(n)]


async def _round_trip(transport: Transport, names: Names, n: int = 120) -> tuple[Consumer, list[Incoming]]:
    """Publish n messages in two batches, then consume them all (acked); the consumer is stopped at the end."""
    items = _items(names, n)
    await transport.publish_many(items[: n // 2])
    await transport.publish_many(items[n // 2 :])
    got: list[Incoming] = []
    done = asyncio.Event()

    async def handler(batch: list[Incoming]) -> None:
        got.extend(batch)
        await transport.ack(batch)
        if len(got) >= n:
            done.set()

    consumer = await transport.consume(names.system_queue(SYSTEM), handler, prefetch=64, max_batch=16, linger=0.005)
    await asyncio.wait_for(done.wait(), 30)
    assert consumer._tracker is not None
    channel = consumer._tracker.channel
    consumer.channel_seen = channel  # type: ignore[attr-defined]
    await consumer.stop()
    assert sorted(m.message_id for m in got) == sorted(i.message_id for i in items)
    assert got[0].headers == {"k": "v"} and got[0].body == b"<m/>" * 300
    return consumer, got


async def test_with_the_switch_on_each_fast_path_is_in_effect(
    settings: Settings, topology: Names, reader: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    decoded = Spy(monkeypatch, fast_paths, "decode")  # the frame reader's decoder (looked up at each frame)
    settled = Spy(monkeypatch, fast_paths._Confirms, "settle")  # aiormq answering the hub's confirm objects
    task_path = Spy(monkeypatch, Consumer, "_on_message")  # aiormq's consumer callback: a task per delivery
    cached = fast_paths._method_frame.cache_info().hits
    caplog.set_level(logging.WARNING, logger="hub.transport")

    transport = await Transport.connect(settings.with_(amqp_fast=True), client_name=f"{settings.namespace}-on")
    try:
        assert transport.fast
        assert aiormq.connection.FrameReceiver.get_frame is fast_paths._get_frame  # type: ignore[comparison-overlap]
        consumer, got = await _round_trip(transport, topology)
        channel: Any = consumer.channel_seen  # type: ignore[attr-defined]
        # in-line delivery: the channel's deliver handler is the hub's, and aiormq's consumer callback never ran
        assert consumer.in_line and channel._on_deliver_frame.__module__ == "hub.transport._aiormq_fast"
        assert task_path.calls == 0
        # frame-queue bound: the consumer channel's frame queue is bounded by the prefetch alone
        assert consumer.unbounded and channel.frames.maxsize == 0
        # batch publish: every confirm reached the hub's batch objects; the method frames came from the cache
        assert settled.calls == len(got)
        assert fast_paths._method_frame.cache_info().hits > cached
        # frame reader + decoding: the hub decoded the deliveries (3 frames each) and the acks
        assert decoded.calls >= 3 * len(got)
    finally:
        await transport.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "no fast path fell back"


async def test_with_the_switch_off_only_aiormqs_own_code_runs(
    settings: Settings, topology: Names, monkeypatch: pytest.MonkeyPatch
):
    decoded = Spy(monkeypatch, fast_paths, "decode")
    settled = Spy(monkeypatch, fast_paths._Confirms, "settle")
    batch = Spy(monkeypatch, fast_paths, "publish_batch")
    task_path = Spy(monkeypatch, Consumer, "_on_message")

    transport = await Transport.connect(settings.with_(amqp_fast=False), client_name=f"{settings.namespace}-off")
    try:
        assert not transport.fast
        consumer, got = await _round_trip(transport, topology)
        channel: Any = consumer.channel_seen  # type: ignore[attr-defined]
        assert not consumer.in_line and not consumer.unbounded
        assert channel._on_deliver_frame.__module__ == "aiormq.channel"
        assert channel.frames.maxsize == 10  # aiormq's bound
        assert task_path.calls == len(got)
        assert decoded.calls == settled.calls == batch.calls == 0
        assert aiormq.connection.FrameReceiver.get_frame.__module__ == "aiormq.connection"
    finally:
        await transport.close()


# -- a fast path that cannot be installed ----------------------------------------------------------------------------


class _OtherQueue:
    """A frame queue that is no asyncio.Queue (as another aiormq might have), delegating to one."""

    def __init__(self, inner: asyncio.Queue[Any]) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _renamed(name: str) -> Any:
    def gone(self: Any) -> Any:
        raise AttributeError(name)

    return gone


class _RenamedChannel(aiormq.Channel):
    """aiormq as if a release had renamed three internals the fast paths rely on, its own code following the new
    names: ``_read_content`` → ``_read_message`` (in-line delivery), ``max_content_size`` → ``max_body_size`` (batch
    publish) and a frame queue that is no asyncio.Queue (frame-queue bound)."""

    _read_message = aiormq.Channel._read_content
    _read_content = property(_renamed("_read_content"))  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames = _OtherQueue(self.frames)  # type: ignore[assignment]

    def _set_max(self, value: int) -> None:
        self.max_body_size = value

    max_content_size = property(_renamed("max_content_size"), _set_max)  # type: ignore[assignment]

    def _split_body(self, body: bytes) -> list[Any]:
        from pamqp.body import ContentBody

        size = self.max_body_size
        return [ContentBody(body[i : i + size]) for i in range(0, len(body), size)]

    async def _on_deliver_frame(self, frame: Any) -> None:
        message = await self._read_message(frame, await self._Channel__get_content_header())  # type: ignore[attr-defined]
        consumer = self.consumers.get(frame.consumer_tag)
        if consumer is not None:
            self.create_task(consumer(message))

    async def _on_get_frame(self, frame: Any) -> None:  # not used by these tests
        raise NotImplementedError

    async def _on_return_frame(self, frame: Any) -> None:  # not used by these tests
        raise NotImplementedError


async def test_a_missing_aiormq_internal_falls_back_with_one_warning_naming_the_path(
    settings: Settings,
    topology: Names,
    warnings_once: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    monkeypatch.setattr(aiormq.connection, "Channel", _RenamedChannel)
    batch = Spy(monkeypatch, fast_paths, "publish_batch")
    caplog.set_level(logging.WARNING, logger="hub.transport")
    transport = await Transport.connect(settings.with_(amqp_fast=True), client_name=f"{settings.namespace}-renamed")
    try:
        for _ in range(2):  # twice: each WARNING is logged once
            consumer, _got = await _round_trip(transport, topology, n=40)  # everything still arrives
            assert not consumer.in_line and not consumer.unbounded
        assert batch.calls == 0
    finally:
        await transport.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for path in ("in-line delivery", "frame-queue bound", "batch publish"):
        assert len([w for w in warned if f"fast path {path!r}" in w]) == 1, (path, warned)
    assert len(warned) == 3, warned
    assert "max_content_size" in " ".join(warned) and "aiormq's own code runs instead" in warned[0]


def test_a_missing_frame_receiver_leaves_aiormqs_reader_with_one_warning(
    warnings_once: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="hub.transport")
    receiver = aiormq.connection.FrameReceiver
    monkeypatch.delattr(aiormq.connection, "FrameReceiver")  # renamed in another aiormq
    assert not fast_paths.install_reader()
    assert not fast_paths.install_reader()
    monkeypatch.setattr(aiormq.connection, "FrameReceiver", receiver, raising=False)
    monkeypatch.setattr(receiver, "__init__", lambda self, reader: None)  # sets neither reader nor started
    assert not fast_paths.install_reader()
    assert receiver.get_frame.__module__ == "aiormq.connection"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "fast path 'frame reader'" in warned[0], warned


# -- who installs the process-wide frame reader ----------------------------------------------------------------------


def _python(code: str, settings: Settings) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=PROJECT_ROOT,
        env=settings.to_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cli_that_imports_the_transport_and_connects_leaves_aiormq_unpatched(settings: Settings, topology: Names):
    state = _python(
        """
        import asyncio, json
        import aiormq.connection
        import hub.transport, hub.pipeline.client, hub.cli  # what a CLI or an SDK user imports
        from hub.settings import Settings
        from hub.transport import Outgoing, Transport, _aiormq_fast

        async def main():
            settings = Settings.from_env()
            transport = await Transport.connect(settings, client_name=settings.namespace + "-cli")
            try:
                n = transport.names
                await transport.publish_many([Outgoing(n.deliver_exchange, "sys-f", b"<m/>", {}, 0, "cli-1")])
                got = await transport.fetch(n.system_queue("sys-f"))
                await transport.ack(got)
            finally:
                await transport.close()
            return transport.fast

        fast = asyncio.run(main())
        print(json.dumps({
            "fast": fast,
            "installed": _aiormq_fast.reader_installed(),
            "get_frame": aiormq.connection.FrameReceiver.get_frame.__module__,
        }))
        """,
        settings.with_(amqp_fast=True),
    )
    assert state == {"fast": True, "installed": False, "get_frame": "aiormq.connection"}


@pytest.mark.parametrize("fast", [True, False])
def test_hub_runs_worker_processes_install_the_reader_when_the_switch_is_on(settings: Settings, fast: bool):
    """``worker_main`` (the entry point of every ``hub run`` worker process) installs it first thing; a store that
    cannot be reached then ends the worker, which is all this test needs."""
    state = _python(
        """
        import json
        from hub.settings import Settings
        from hub.pipeline.worker import worker_main
        from hub.transport import _aiormq_fast

        assert not _aiormq_fast.reader_installed()
        try:
            worker_main(Settings.from_env(pg_dsn="postgresql://postgres@127.0.0.1:1/none"), 0)
        except BaseException:
            pass
        print(json.dumps({"installed": _aiormq_fast.reader_installed()}))
        """,
        settings.with_(amqp_fast=fast),
    )
    assert state == {"installed": fast}
