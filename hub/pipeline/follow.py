"""Following ``hub directory load`` without a restart: the directory and routes a worker examines with.

Before, the pipeline workers and the gateway's examination read the directory once, at start: after an operator
added a system or a group member with ``hub directory load``, the gateway identified the new system's client
certificate within 30 s (it reads the directory again for that), but its messages were still refused by the
examination, and messages to it were not routed to it, until ``hub run`` and ``hub gateway`` were restarted.

Now each worker (``hub run``'s, the gateway's in-process one and every examiner process) asks PostgreSQL for the
directory's latest version every ``Settings.directory_refresh_s`` (one small statement). When it changed, it loads
the new directory and the routes files against it, declares the queues of systems it did not know (before anything
is routed to them), and only then switches its context and processor to them, between two of the processor's
calls: a batch being examined keeps the directory it started with for messages already examined and uses the new
one for the rest. A ``hub run`` worker also starts reading the new systems' own inbound lanes.

A directory or routes file that cannot be loaded (routes naming a system the new directory no longer has, say)
leaves the worker on what it has, with a warning naming the problem each time it looks; the next good version is
taken. Nothing here runs on the message path but one assignment. The process engine follows with the same loader
(``newer_directory``) between two of its passes (``hub.processes.engine.ProcessEngine.follow_directory``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.directory import Directory
    from hub.routing import Router
    from hub.settings import Settings

log = logging.getLogger("hub.pipeline")


async def directory_version(db: Any) -> int | None:
    """The latest stored directory's version, read before a worker loads its context (a version stored in between
    is then taken on the first look). None when none is stored, or when the store cannot say: loading the context
    then explains what is wrong with it (not migrated, another installation's) in its own words."""
    from hub.store.directory import DirectoryRepository

    try:
        current = await DirectoryRepository(db).current()
    except Exception:  # load_context reports the store's problem right after
        return None
    return None if current is None else current.version


async def follow_directory(worker: Any) -> bool:
    """Switch ``worker`` (a ``hub.pipeline.worker.Worker``) to the directory stored since it loaded its own; True
    when it switched. Never raises: a failure is logged and the worker keeps what it has."""
    try:
        return await _follow(worker)
    except Exception as exc:  # a periodic job must not die of it
        log.warning(
            "%s could not take the new directory (%s: %s); it keeps version %s",
            _label(worker),
            type(exc).__name__,
            str(exc)[:300],
            worker.directory_version,
        )
        return False


async def newer_directory(db: Any, settings: Settings, version: int | None) -> tuple[int, Directory, Router] | None:
    """The stored directory and the routes files loaded against it, when its version is not ``version``: (version,
    directory, router); None when it is. Raises what loading them raises (a ``ConfigProblems`` for routes that name
    what the new directory no longer has): the caller keeps what it has."""
    from hub.routing import Router, load_routes, route_files
    from hub.store.directory import DirectoryRepository

    repository = DirectoryRepository(db)
    current = await repository.current()
    if current is None or current.version == version:
        return None
    directory: Directory = await repository.load()  # the latest: at least ``current``
    routes = load_routes(route_files(settings.routes_dir), directory)
    return current.version, directory, Router(directory, routes)


async def _follow(worker: Any) -> bool:
    got = await newer_directory(worker.pool, worker.settings, worker.directory_version)
    if got is None:
        return False
    version, directory, router = got
    before = {s.id for s in worker.directory.systems()}
    added = [s.id for s in directory.systems() if s.id not in before]
    if added:  # their queues exist before anything is routed to them
        await worker.transport.declare_topology(s.id for s in directory.systems())
    ctx = worker.context
    ctx.directory, ctx.router = directory, router
    processor = worker.processor
    processor.directory, processor.router, processor.hub_ceiling = directory, router, directory.hub_ceiling
    processor.forget_lane_grants()
    worker.directory = directory
    worker.directory_version = version
    if added:
        await worker.read_lanes_of(added)
    log.info(
        "%s now works with directory version %s (%d systems%s)",
        _label(worker),
        version,
        len(list(directory.systems())),
        f"; new: {', '.join(added)}" if added else "",
    )
    return True


def _label(worker: Any) -> str:
    return getattr(worker, "label", None) or f"worker {getattr(worker, 'index', '?')}"
