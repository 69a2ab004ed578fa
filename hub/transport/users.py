"""One RabbitMQ user per agency system, provisioned through RabbitMQ's management HTTP API.

Each system's user (``Names.user(system)``) may

- configure nothing (``^$``: it cannot declare, delete or bind anything),
- write only to the submit exchange ``ns.submit``, the dead-letter exchange ``ns.dead`` and ``ns.later`` (so it
  cannot publish to the delivery exchange, the shared inbound exchange the hub's own copies use, the default
  exchange or another system's queue; ``ns.dead`` is where it parks a delivery it refused as unverifiable, with the
  reason in headers and its own ``user_id``: ``hub receive``, the adapter SDK),
- publish on ``ns.submit`` only with the routing keys ``normal.<system>`` and ``emergency.<system>`` (a RabbitMQ
  *topic permission*; ``topic_permissions_for``): its messages land in its own inbound lanes, never in another
  system's, so a flood of one system cannot stand in front of the others' (``hub.transport.names``),
- publish on ``ns.later`` only with its own ``Names.later_key``s (``later_topic_permissions_for``): a delivery it
  puts off comes back (the hub delivers it again by its ``user_id``) into its own queue and nobody else's,
- read only its own queue (``ns.q.<system>``).

RabbitMQ checks these on every operation, and checks that a message's ``user_id`` property equals the user that
published it: the pipeline compares that user with the signed sender. A message published without ``user_id`` is
still named by its routing key, which only its publisher's topic permission allows (``Incoming.publisher``).
Nothing reads ``ns.dead`` automatically (an operator does), so what a system writes there reaches no other system.

Passwords are generated once (``secrets.token_urlsafe``), kept in ``Settings.state_dir/amqp-users/<system>.password``
(mode 0600, created exclusively, never logged) and re-applied on every ``provision`` so the broker and the file
agree. The management URL's credentials (``Settings.amqp_management_url``) are the hub operator's.

``queue_stats`` reads the depth and consumers of the namespace's queues for the ops page and ``/ready``;
``consumers_by_queue`` which users consume them (the gateway's one-link-per-system guard, ``hub.gateway.links``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from hub.errors import BrokerUnavailable, ConfigError
from hub.settings import Settings
from hub.transport.names import LANES, LATER_DELAYS_S, Names, check_system_id

__all__ = [
    "QueueStats",
    "amqp_url_for",
    "close_connections",
    "consumers_by_queue",
    "later_topic_permissions_for",
    "password_path",
    "permissions_for",
    "provision",
    "queue_stats",
    "read_password",
    "remove",
    "teardown_namespace",
    "topic_permissions_for",
]

_VHOST = "/"


def password_path(settings: Settings, system_id: str) -> Path:
    return settings.state_dir / "amqp-users" / f"{check_system_id(system_id)}.password"


def read_password(settings: Settings, system_id: str) -> str:
    """The stored AMQP password of a system (ConfigError when it was never provisioned here)."""
    path = password_path(settings, system_id)
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        raise ConfigError(f"no AMQP password stored for system {system_id}; run `hub directory load`") from None


def _store_password(path: Path, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: never overwrite a password another process just wrote; 0600 from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(password)


def _password_for(settings: Settings, system_id: str, given: str | None) -> str:
    path = password_path(settings, system_id)
    if given is not None:
        if not path.exists():
            _store_password(path, given)
        return given
    if path.exists():
        return read_password(settings, system_id)
    password = secrets.token_urlsafe(32)
    try:
        _store_password(path, password)
    except FileExistsError:
        return read_password(settings, system_id)
    return password


def permissions_for(names: Names, system_id: str) -> dict[str, str]:
    """The vhost permissions of a system's user (anchored regexes over escaped names)."""
    return {
        "configure": "^$",
        "write": "^(?:"
        + "|".join(re.escape(x) for x in (names.submit_exchange, names.dead_letter_exchange, names.later_exchange))
        + ")$",
        "read": _read_pattern(names.system_queues(system_id)),
    }


def topic_permissions_for(names: Names, system_id: str) -> dict[str, str]:
    """The topic permission of a system's user on the submit exchange: publish only with ``<lane>.<system>``
    (RabbitMQ checks the routing key of every publish; a refused one closes the channel, ``AMQP_ACCESS_REFUSED``)."""
    keys = "|".join(re.escape(names.inbound_key(lane, system_id)) for lane in LANES)
    return {"exchange": names.submit_exchange, "write": f"^(?:{keys})$", "read": "^$"}


def later_topic_permissions_for(names: Names, system_id: str) -> dict[str, str]:
    """The topic permission of a system's user on ``ns.later``: only its own ``Names.later_key``s (``<system>.<d>s``
    for each of ``LATER_DELAYS_S``). The key only chooses the delay (and says whose it is in the broker's lists):
    the hub delivers what comes out of ``ns.later`` by its ``user_id``, never by a key."""
    delays = "|".join(str(d) for d in LATER_DELAYS_S)
    key = f"{re.escape(check_system_id(system_id))}\\.(?:{delays})s"
    return {"exchange": names.later_exchange, "write": f"^{key}$", "read": "^$"}


def _read_pattern(queues: tuple[str, ...]) -> str:
    """The anchored regex over a system's queues (one with classic queues, its urgent lane too with quorum)."""
    if len(queues) == 1:
        return f"^{re.escape(queues[0])}$"
    return "^(?:" + "|".join(re.escape(q) for q in queues) + ")$"


def amqp_url_for(settings: Settings, system_id: str) -> str:
    """The AMQP URL a system's client connects with: the hub's broker address, the system's user and password."""
    base = URL(settings.amqp_url)
    user = Names(settings.namespace).user(system_id)
    return str(base.with_user(user).with_password(read_password(settings, system_id)))


class _Api:
    """A thin client of the management API that translates its failures."""

    def __init__(self, session: aiohttp.ClientSession, base: URL) -> None:
        self._session = session
        self._base = base

    async def call(self, method: str, path: str, json: Any = None, *, missing_ok: bool = False) -> Any:
        url = str(self._base) + path
        try:
            async with self._session.request(method, url, json=json) as resp:
                if resp.status == 404 and missing_ok:
                    return None
                if resp.status in (401, 403):
                    raise ConfigError(
                        "the RabbitMQ management API refused the hub's credentials", code="AMQP_ACCESS_REFUSED"
                    )
                if resp.status >= 300:
                    raise ConfigError(
                        f"the RabbitMQ management API answered {resp.status} to {method} {path.split('?')[0]}",
                        code="AMQP_MANAGEMENT",
                    )
                if resp.status == 204 or resp.content_length == 0:
                    return None
                return await resp.json()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"the RabbitMQ management API is unreachable ({type(exc).__name__})") from None


@contextlib.asynccontextmanager
async def _api(settings: Settings, *, timeout: float = 30.0) -> AsyncIterator[_Api]:
    url = URL(settings.amqp_management_url)
    # The Authorization header by hand: aiohttp.BasicAuth is deprecated and its successor is only in recent aiohttp.
    token = base64.b64encode(f"{url.user or 'guest'}:{url.password or 'guest'}".encode()).decode("ascii")
    base = url.with_user(None).with_password(None).with_path(url.path.rstrip("/") + "/api")
    headers = {"Authorization": f"Basic {token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        yield _Api(session, base)


def _q(name: str) -> str:
    return quote(name, safe="")


async def provision(settings: Settings, directory_systems: Iterable[tuple[str, str | None]]) -> list[str]:
    """Create or update the user of every ``(system_id, password or None)`` and set its permissions; returns the
    user names. Idempotent. A None password means: the stored one, or a new one stored now."""
    names = Names(settings.namespace, settings.queue_type)  # with quorum queues a system reads its urgent lane too
    users: list[str] = []
    async with _api(settings) as api:
        for system_id, given in directory_systems:
            user = names.user(system_id)
            password = _password_for(settings, system_id, given)
            await api.call("PUT", f"/users/{_q(user)}", {"password": password, "tags": ""})
            await api.call("PUT", f"/permissions/{_q(_VHOST)}/{_q(user)}", permissions_for(names, system_id))
            await api.call(
                "PUT", f"/topic-permissions/{_q(_VHOST)}/{_q(user)}", topic_permissions_for(names, system_id)
            )
            await api.call(
                "PUT", f"/topic-permissions/{_q(_VHOST)}/{_q(user)}", later_topic_permissions_for(names, system_id)
            )
            users.append(user)
    return users


async def remove(settings: Settings, system_ids: Iterable[str], *, forget_passwords: bool = False) -> None:
    """Delete the users of these systems (missing ones are fine); optionally their stored passwords too."""
    names = Names(settings.namespace)
    async with _api(settings) as api:
        for system_id in system_ids:
            await api.call("DELETE", f"/users/{_q(names.user(system_id))}", missing_ok=True)
            if forget_passwords:
                password_path(settings, system_id).unlink(missing_ok=True)


async def teardown_namespace(settings: Settings, namespace: str | None = None) -> int:
    """Delete every queue, exchange and user whose name starts with ``<namespace>.`` (tests and uninstall); returns
    how many objects were deleted. Refuses the production default namespace ``hub`` unless passed explicitly."""
    ns = namespace or settings.namespace
    if namespace is None and ns == "hub":
        raise ConfigError("refusing to tear down the default namespace 'hub' implicitly")
    prefix = Names(ns).prefix
    deleted = 0
    vhost = _q(_VHOST)
    async with _api(settings) as api:
        # Sixteen requests at once: one after the other, a namespace of the demo directory's 50 systems took half a
        # second to remove.
        room = asyncio.Semaphore(16)

        async def delete(path: str) -> None:
            async with room:
                await api.call("DELETE", path, missing_ok=True)

        for listing, base in (
            (f"/queues/{vhost}?columns=name", f"/queues/{vhost}/"),
            (f"/exchanges/{vhost}?columns=name", f"/exchanges/{vhost}/"),
            ("/users?columns=name", "/users/"),
        ):
            names = [o["name"] for o in await api.call("GET", listing) or [] if o["name"].startswith(prefix)]
            await asyncio.gather(*(delete(base + _q(name)) for name in names))
            deleted += len(names)
    return deleted


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue as the broker sees it: messages ready, delivered but unacknowledged, and its consumers."""

    name: str
    ready: int
    unacked: int
    consumers: int


async def queue_stats(settings: Settings, *, timeout: float = 5.0) -> list[QueueStats]:
    """Every queue of the namespace, by name (one management API request, filtered by the broker). Raises
    ``BrokerUnavailable`` when the API cannot be reached, ``ConfigError`` when it refuses."""
    prefix = Names(settings.namespace).prefix
    query = (
        f"/queues/{_q(_VHOST)}?page=1&page_size=500&use_regex=true&name={_q('^' + re.escape(prefix))}"
        "&columns=name,messages_ready,messages_unacknowledged,consumers"
    )
    async with _api(settings, timeout=timeout) as api:
        page = await api.call("GET", query) or {}
    items = page.get("items", []) if isinstance(page, dict) else page
    return sorted(
        (
            QueueStats(
                q["name"],
                int(q.get("messages_ready") or 0),
                int(q.get("messages_unacknowledged") or 0),
                int(q.get("consumers") or 0),
            )
            for q in items
            if q.get("name", "").startswith(prefix)
        ),
        key=lambda q: q.name,
    )


async def consumers_by_queue(settings: Settings, *, timeout: float = 5.0) -> dict[str, frozenset[str]]:
    """Queue → the broker users with a consumer on it, for every queue of the namespace that has one (one management
    API request for the consumers of the vhost, two fields each). Raises ``BrokerUnavailable`` when the API cannot be
    reached, ``ConfigError`` when it refuses."""
    prefix = Names(settings.namespace).prefix
    async with _api(settings, timeout=timeout) as api:
        listed = await api.call("GET", f"/consumers/{_q(_VHOST)}?columns=queue.name,channel_details.user") or []
    found: dict[str, set[str]] = {}
    for c in listed if isinstance(listed, list) else []:
        queue = str((c.get("queue") or {}).get("name") or "")
        user = str((c.get("channel_details") or {}).get("user") or "")
        if queue.startswith(prefix) and user:
            found.setdefault(queue, set()).add(user)
    return {q: frozenset(users) for q, users in found.items()}


async def close_connections(settings: Settings, *, user: str | None = None, client_name: str | None = None) -> int:
    """Force-close the broker connections of ``user`` and/or with connection name ``client_name`` (the
    ``client_name`` given to ``Transport.connect``): simulates a network failure in tests and lets an operator cut
    off a system. At least one filter is required. Returns how many were closed."""
    if user is None and client_name is None:
        raise ValueError("give a user or a client name: closing every connection of the broker is never intended")
    closed = 0
    async with _api(settings) as api:
        for conn in await api.call("GET", "/connections?columns=name,user,user_provided_name") or []:
            if user is not None and conn.get("user") != user:
                continue
            if client_name is not None and conn.get("user_provided_name") != client_name:
                continue
            await api.call("DELETE", f"/connections/{_q(conn['name'])}", missing_ok=True)
            closed += 1
    return closed
