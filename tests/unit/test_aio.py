"""``hub.aio.stopped``: a stop always ends, even when a task swallowed its cancellation (Python 3.11's ``wait_for``
race, seen as a gateway stop that hung in CI), without cutting a task's own clean-up short."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from hub.aio import stopped


async def _started(coro: object, name: str = "task") -> asyncio.Task[None]:
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    return task


async def _beating(cleaned: list[str], clean_up_s: float) -> None:
    """As ``ProcessRecord.run``: runs until cancelled, then takes ``clean_up_s`` to remove its row."""
    try:
        await asyncio.sleep(10)
    finally:
        await asyncio.sleep(clean_up_s)
        cleaned.append("row removed")


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again_and_ends() -> None:
    swallowed: list[bool] = []

    async def once() -> None:  # as a loop whose library call swallowed the first cancellation
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)

    task = await _started(once())
    started = time.monotonic()
    await stopped(task, every_s=0.05)
    assert task.cancelled() and swallowed == [True] and time.monotonic() - started < 2


async def test_one_that_never_ends_is_left_after_the_limit_and_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def never() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    quick = await _started(asyncio.sleep(10), "quick")
    stubborn = await _started(never(), "stubborn refresh")
    with caplog.at_level(logging.ERROR, logger="hub.aio"):
        await stopped(quick, None, stubborn, every_s=0.05, limit_s=0.3)
    assert quick.cancelled() and not stubborn.done()
    assert [r.getMessage() for r in caplog.records if "did not end" in r.getMessage()] == [
        "1 task(s) did not end within 0.3 s of being cancelled (stubborn refresh); going on without them"
    ]
    release.set()
    stubborn.cancel()
    await asyncio.wait({stubborn}, timeout=1)
    assert stubborn.done()


async def test_a_clean_up_shorter_than_the_interval_is_not_cut_short() -> None:
    cleaned: list[str] = []
    task = await _started(_beating(cleaned, 0.3))
    await stopped(task, every_s=1.0)
    assert cleaned == ["row removed"] and task.cancelled()


async def test_a_task_that_had_died_before_its_stop_is_said_in_the_log_once(caplog: pytest.LogCaptureFixture) -> None:
    async def failing() -> None:
        raise RuntimeError("the store went away")

    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        task = await _started(failing())
        await asyncio.sleep(0)
        with caplog.at_level(logging.ERROR, logger="hub.aio"):
            await stopped(task)
        del task
        import gc

        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert errors == []  # no "Task exception was never retrieved"
    said = [r for r in caplog.records if r.name == "hub.aio"]
    assert len(said) == 1 and "before its stop" in said[0].getMessage() and said[0].exc_info is not None


async def test_a_stop_that_is_itself_cancelled_still_stops_its_tasks_then_is_cancelled() -> None:
    cleaned: list[str] = []
    task = await _started(_beating(cleaned, 0.2))
    stop = await _started(stopped(task, every_s=1.0), "stop")
    await asyncio.sleep(0.05)
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop
    assert task.done() and cleaned == ["row removed"]


async def test_a_heartbeat_whose_cancellation_came_back_as_a_store_error_ends_at_once() -> None:
    """``ProcessRecord.run``: its write, cut short by the stop, fails as a connection error (asyncpg's pool raises
    the error of its reset when it releases a connection whose query was cancelled); the loop, which takes store
    errors for a hiccup and tries again, sees that it was asked to stop and ends — at once, not at the re-cancel."""
    import contextlib

    from hub.aio import cancelling
    from hub.store.process_instances import _LEAVE, ProcessRecord

    writing = asyncio.Event()
    left: list[str] = []

    class Conn:
        async def execute(self, sql: str, *args: object) -> None:
            if sql == _LEAVE:
                left.append("row removed")
                return
            writing.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise ConnectionResetError("the reset after the cancelled query failed") from None

        def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
            return contextlib.nullcontext()  # type: ignore[return-value]

    class Pool:
        @contextlib.asynccontextmanager
        async def acquire(self):  # type: ignore[no-untyped-def]
            yield Conn()

        async def execute(self, sql: str, *args: object) -> None:
            await Conn().execute(sql, *args)

    task = await _started(ProcessRecord("worker", "7").run(Pool(), lambda: None))
    await asyncio.wait_for(writing.wait(), 5)
    assert not cancelling()
    started = time.monotonic()
    await stopped(task, every_s=30)
    assert task.cancelled() and left == ["row removed"] and time.monotonic() - started < 2


async def test_a_workers_periodic_job_whose_cancellation_became_a_store_error_ends() -> None:
    """``Worker._every`` (the evidence chaining, the dead letters' collection …): a job cut short by the stop fails
    as a store error; the loop, which logs such failures and goes on, ends instead — at once, not at the re-cancel."""
    from hub.errors import DeliveryError
    from hub.pipeline.worker import Worker

    runs: list[int] = []

    async def job() -> None:
        runs.append(1)
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise DeliveryError("PostgreSQL is unavailable", code="DELIVERY_STORE") from None

    worker = Worker.__new__(Worker)
    task = await _started(worker._every(0.01, job, "chaining evidence"))
    await asyncio.sleep(0.03)
    started = time.monotonic()
    await stopped(task, every_s=30)
    assert task.cancelled() and time.monotonic() - started < 2
    ran = len(runs)
    await asyncio.sleep(0.1)
    assert len(runs) == ran
