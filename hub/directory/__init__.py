"""The directory: agencies, their systems, named and computed groups, network zones and their ceilings.

Pure model and loading (no I/O beyond reading the directory file); PostgreSQL persistence lives in
``hub.store.directory``."""

from hub.directory.load import ConfigProblems, Problem, check_directory, load_directory
from hub.directory.model import (
    COMPUTED_GROUPS,
    LEVELS,
    ZONE_MAX,
    ZONE_NAMES,
    ZONES,
    Agency,
    Directory,
    Group,
    GroupMember,
    System,
    service_matches,
)

__all__ = [
    "COMPUTED_GROUPS",
    "LEVELS",
    "ZONES",
    "ZONE_MAX",
    "ZONE_NAMES",
    "Agency",
    "ConfigProblems",
    "Directory",
    "Group",
    "GroupMember",
    "Problem",
    "System",
    "check_directory",
    "load_directory",
    "service_matches",
]
