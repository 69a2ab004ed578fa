"""A loaded directory with one system changed, for tests that give a system gateway limits, addresses or registered
certificates without writing a directory file."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hub.directory import Directory


def with_system(directory: Directory, system_id: str, **changes: Any) -> Directory:
    """``directory`` with the fields ``changes`` of system ``system_id`` replaced (the rest as it was)."""
    return Directory(
        directory.agencies(),
        [replace(s, **changes) if s.id == system_id else s for s in directory.systems()],
        directory.groups(),
        hub_system=directory.hub_system,
        hub_zone=directory.hub_zone,
        hub_ceiling=directory.hub_ceiling,
    )
