"""Everything the message path needs, loaded once per process: schemas, the directory (from PostgreSQL, as
last loaded by ``hub directory load``), routes, the trust store and the hub's own signing key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub import clock
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.directory import Directory
    from hub.pipeline.processor import Processor
    from hub.routing import Router
    from hub.trust import Signer, TrustStore, Verifier
    from hub.validation import SchemaRegistry


@dataclass(slots=True)
class Context:
    """What a worker loads once: the schemas, the directory and routes, the trust store, the hub's own key."""

    settings: Settings
    registry: SchemaRegistry
    directory: Directory
    router: Router
    trust_store: TrustStore
    verifier: Verifier
    signer: Signer

    @property
    def pki_dir(self) -> Path:
        return pki_dir(self.settings)

    def processor(
        self, *, amqp_admin_user: str | None, user_to_system: Callable[[str], str | None] | None = None
    ) -> Processor:
        from hub.pipeline.processor import Processor
        from hub.routing import gate

        return Processor(
            registry=self.registry,
            verifier=self.verifier,
            signer=self.signer,
            directory=self.directory,
            router=self.router,
            gate=gate,
            hub_ceiling=self.directory.hub_ceiling,
            max_bytes=self.settings.max_message_bytes,
            clock_skew=timedelta(seconds=self.settings.clock_skew_s),
            cost_budget_s=self.settings.message_budget_ms / 1000,
            amqp_admin_user=amqp_admin_user,
            user_to_system=user_to_system or (lambda user: None),
            now=_cn_now,
        )


def _cn_now() -> datetime:
    """The hub clock (``hub.clock``) in China Standard Time, as the processor judges Created/Expires."""
    from hub.pipeline.processor import CN_TZ

    return clock.now().astimezone(CN_TZ)


def pki_dir(settings: Settings) -> Path:
    return settings.state_dir / "pki"


async def load_context(settings: Settings, db: Any) -> Context:
    """Load the context; ``db`` is an asyncpg pool or connection (the directory is read from it)."""
    from hub.routing import Router, load_routes, route_files
    from hub.store.directory import DirectoryRepository
    from hub.trust import Signer, TrustStore, Verifier
    from hub.trust.lifecycle import check_installation
    from hub.trust.pki import PkiPaths
    from hub.validation import SchemaRegistry

    # One installation per store: a state directory (root CA) or namespace of another installation is refused
    # before anything is read or written (STORE_FOREIGN_INSTALLATION).
    await check_installation(settings, db, pki_dir(settings))
    directory = await DirectoryRepository(db).load()
    routes = load_routes(route_files(settings.routes_dir), directory)
    paths = PkiPaths(pki_dir(settings))
    store = TrustStore.load(paths.root)
    return Context(
        settings=settings,
        registry=SchemaRegistry(settings.schemas_dir),
        directory=directory,
        router=Router(directory, routes),
        trust_store=store,
        verifier=Verifier(store, now=clock.now, complete_chain=True),
        signer=Signer.load(paths.hub_key, paths.hub_cert, passphrase=settings.ca_passphrase.encode()),
    )
