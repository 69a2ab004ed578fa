"""Routing: the route table (routes as data), the router (envelope → decision, default deny) and the
classification gate. Pure: no I/O beyond reading route files."""

from hub.routing.gate import Blocked, GateResult, Marking, egress_allowed, find_markings, gate
from hub.routing.router import Decision, Router, Target
from hub.routing.routes import (
    Retry,
    Route,
    RoutePolicy,
    RouteTable,
    Selector,
    UrgencyRule,
    check_routes,
    load_routes,
    route_files,
)

__all__ = [
    "Blocked",
    "Decision",
    "GateResult",
    "Marking",
    "Retry",
    "Route",
    "RoutePolicy",
    "RouteTable",
    "Router",
    "Selector",
    "Target",
    "UrgencyRule",
    "check_routes",
    "egress_allowed",
    "find_markings",
    "gate",
    "load_routes",
    "route_files",
]
