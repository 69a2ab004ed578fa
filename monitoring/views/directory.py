"""The directory page (``/directory``), read-only: what the hub runs with and what the route files say.

- The directory stored in PostgreSQL (``hub directory load`` put it there; the workers read it): its version,
  agencies, systems (zone, ceiling, the gateway's rate and concurrency), named groups, and the network zones with
  their ceilings.
- The route files in ``settings.routes_dir`` checked exactly as ``hub routes check`` checks them (the directory
  file, the routes schema, the directory and the service schemas): every problem with file, line, code and its
  Chinese title, and the route table when it loads.

Nothing on this page changes anything; edit the files and run ``hub directory load`` / restart the workers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.errors import HubError, title_of
from monitoring.app import POOL, SETTINGS
from monitoring.auth import render, require

__all__ = ["check_route_files", "setup"]


def check_route_files(settings: Any) -> tuple[list[Any], list[Any], int]:
    """(routes, problems sorted by file and line, number of route files) — what ``hub routes check`` reports."""
    from hub.directory.load import check_directory
    from hub.routing.routes import check_routes, known_services, route_files

    files = route_files(settings.routes_dir)
    directory, problems = check_directory(Path(settings.routes_dir) / "directory.xml")
    services = known_services(settings.schemas_dir) if Path(settings.schemas_dir).is_dir() else None
    table, route_problems = check_routes(files, directory, services=services)
    problems = sorted(problems + route_problems, key=lambda p: (p.file, p.line))
    return (list(table) if table is not None else []), problems, len(files)


@require("view")
async def directory_page(request: web.Request) -> web.StreamResponse:
    from hub.directory.model import ZONE_MAX, ZONE_NAMES, ZONES
    from hub.envelope.model import CLASSIFICATIONS
    from hub.routing.routes import format_duration
    from hub.store.directory import DirectoryRepository

    settings = request.app[SETTINGS]
    repo = DirectoryRepository(request.app[POOL])
    directory = None
    version = None
    load_error = None
    try:
        version = await repo.current()
        directory = await repo.load()
    except HubError as exc:
        load_error = {"code": exc.code, "zh": exc.title, "en": exc.detail}
    routes, problems, nfiles = await asyncio.to_thread(check_route_files, settings)
    zones = []
    for z in ZONES:
        count = sum(1 for s in directory.systems() if s.zone == z) if directory is not None else 0
        zones.append({"id": z, "name": ZONE_NAMES[z], "ceiling": CLASSIFICATIONS[ZONE_MAX[z]], "systems": count})
    return render(
        request,
        "directory.html",
        {
            "directory": directory,
            "agencies": list(directory.agencies()) if directory is not None else [],
            "systems": list(directory.systems()) if directory is not None else [],
            "groups": list(directory.groups()) if directory is not None else [],
            "version": version,
            "load_error": load_error,
            "zones": zones,
            "zone_names": ZONE_NAMES,
            "routes": routes,
            "problems": [
                {"file": p.file, "line": p.line, "code": p.code, "title": title_of(p.code), "message": p.message}
                for p in problems
            ],
            "route_files": nfiles,
            "routes_dir": str(settings.routes_dir),
            "format_duration": format_duration,
        },
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/directory", directory_page)
