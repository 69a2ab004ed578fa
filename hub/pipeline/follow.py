"""Following ``hub directory load`` and edited routes files without a restart: the directory and routes a worker
examines with.

Before, the pipeline workers and the gateway's examination read the directory once, at start: after an operator
added a system or a group member with ``hub directory load``, the gateway identified the new system's client
certificate within 30 s (it reads the directory again for that), but its messages were still refused by the
examination, and messages to it were not routed to it, until ``hub run`` and ``hub gateway`` were restarted. The
routes files (``routes/*.xml``) were read at start only too.

Now each worker (``hub run``'s, the gateway's in-process one and every examiner process) asks PostgreSQL for the
directory's latest version every ``Settings.directory_refresh_s`` (one small statement) and reads the routes files'
fingerprint (their names and contents: a few kilobytes). When either changed, it loads the directory and the routes
files against it, declares the queues of systems it did not know (before anything is routed to them), and only then
switches its context and processor to them, between two of the processor's calls: a batch being examined keeps the
directory it started with for messages already examined and uses the new one for the rest. A ``hub run`` worker also
starts reading the new systems' own inbound lanes.

A directory or routes file that cannot be loaded (routes naming a system the new directory no longer has, a routes
file saved half-way, say) leaves the worker on what it has, with a warning naming the problem each time it looks;
the next good version is taken. Nothing here runs on the message path but one assignment. The process engine follows
with the same loader (``newer_directory``) between two of its passes
(``hub.processes.engine.ProcessEngine.follow_directory``)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
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


async def starting_view(db: Any, settings: Settings) -> tuple[int | None, str | None]:
    """The directory's version and the routes files' fingerprint, read before a worker loads its context (a change
    in between is then taken on the first look). None for what cannot be read: loading the context reports why."""
    try:
        routes: str | None = routes_fingerprint(settings.routes_dir)
    except OSError:
        routes = None
    return await directory_version(db), routes


async def follow_directory(worker: Any) -> bool:
    """Switch ``worker`` (a ``hub.pipeline.worker.Worker``) to the directory stored since it loaded its own; True
    when it switched. Never raises: a failure is logged and the worker keeps what it has."""
    try:
        return await _follow(worker)
    except Exception as exc:  # a periodic job must not die of it
        log.warning(
            "%s could not take the new directory or routes files (%s: %s); it keeps version %s and the routes it has",
            _label(worker),
            type(exc).__name__,
            str(exc)[:300],
            worker.directory_version,
        )
        return False


def files_fingerprint(paths: Iterable[Path]) -> str:
    """What files are now: a SHA-256 over their paths and contents, a missing file counting as such (the routes files
    here, the processes' own files in ``hub.processes.runner.ProcessFiles``)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except FileNotFoundError:  # removed since it was listed, or not (yet) there
            h.update(b"\1missing")
        h.update(b"\0")
    return h.hexdigest()


def routes_fingerprint(routes_dir: Path) -> str:
    """What the routes files are now (``hub.routing.route_files``): ``files_fingerprint``."""
    from hub.routing import route_files

    return files_fingerprint(route_files(routes_dir))


@dataclass(frozen=True, slots=True)
class View:
    """A directory version and the routes files loaded against it."""

    version: int
    routes: str  # routes_fingerprint
    directory: Directory
    router: Router
    #: False when only the routes files changed.
    new_directory: bool


async def newer_directory(db: Any, settings: Settings, version: int | None, routes: str | None = None) -> View | None:
    """The stored directory and the routes files loaded against it, when its version is not ``version`` or the
    routes files' fingerprint is not ``routes`` (None: the routes are not compared); None when neither changed.
    Raises what loading them raises (a ``ConfigProblems`` for routes that name what the directory does not have, an
    ``OSError`` for a file that cannot be read): the caller keeps what it has."""
    from hub.routing import Router, load_routes, route_files
    from hub.store.directory import DirectoryRepository

    repository = DirectoryRepository(db)
    current = await repository.current()
    if current is None:
        return None
    fingerprint = routes_fingerprint(settings.routes_dir)
    if current.version == version and (routes is None or fingerprint == routes):
        return None
    directory: Directory = await repository.load()  # the latest: at least ``current``
    loaded = load_routes(route_files(settings.routes_dir), directory)
    return View(current.version, fingerprint, directory, Router(directory, loaded), current.version != version)


def describe(view: View, before: set[str]) -> str:
    """What a log line says was taken: ``directory version V (N systems; new: …)``, or that the routes changed."""
    systems = [s.id for s in view.directory.systems()]
    added = [s for s in systems if s not in before]
    if not view.new_directory:
        return f"the routes files as changed (directory version {view.version}, {len(systems)} systems)"
    return f"directory version {view.version} ({len(systems)} systems{'; new: ' + ', '.join(added) if added else ''})"


async def _follow(worker: Any) -> bool:
    view = await newer_directory(
        worker.pool, worker.settings, worker.directory_version, getattr(worker, "routes_fingerprint", None)
    )
    if view is None:
        return False
    directory, router = view.directory, view.router
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
    worker.directory_version = view.version
    worker.routes_fingerprint = view.routes
    from hub.metrics import directory_taken

    directory_taken(worker.metrics_role, worker.metrics_index, view.version)
    if added:
        await worker.read_lanes_of(added)
    log.info("%s now works with %s", _label(worker), describe(view, before))
    return True


def _label(worker: Any) -> str:
    return getattr(worker, "label", None) or f"worker {getattr(worker, 'index', '?')}"
