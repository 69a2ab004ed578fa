"""国家林草局报送适配器 The national administration's reporting adapter (system ``nation-100000-oa``).

    hub adapter run national_forestry --config settings.toml

Two folders shared with the national reporting system (the contract is README.md):

- **outbox** (发件): the national system writes ``*.xml`` files (write under a temporary name, then rename); each
  complete file is sent as one message (its id derived from the file name and content: a resend after a crash is
  a hub duplicate) and moved to ``sent/`` with the hub's signed receipt, or to ``failed/`` with a reason file.
- **inbox** (收件): every message the hub delivers to the nation is written atomically as
  ``<service>_<message id>.xml`` (the signed delivery as received) before the delivery is acknowledged; a
  redelivery rewrites the same file. An inbox that cannot be written (the share is down) is retried, with
  growing pauses, until it can.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from adapters.national_forestry.folders import Folders, InboxLedger, OutboxWatcher, deliver_to_inbox
from adapters.national_forestry.mapping import inbox_name
from adapters.sdk import Adapter, ConfigurationError, Context, HubRefused, Receipt, Retry, SdkError

SYSTEM = "nation-100000-oa"
#: What the hub delivers to the nation and lands in the inbox (the directory: document.* info.* emergency.*
#: meeting.notice, and refusals of what the nation sent).
INBOX_SERVICES: tuple[str, ...] = (
    "info.report",
    "document.official",
    "document.receipt",
    "emergency.alert",
    "emergency.update",
    "emergency.ack",
    "meeting.notice",
    "delivery.refusal",
)

log = logging.getLogger("adapters.national_forestry")

adapter = Adapter(SYSTEM)
_state: dict[str, Any] = {}


def folders() -> Folders:
    f = _state.get("folders")
    if f is None:
        s = adapter.settings
        if s is None:
            raise ConfigurationError("national_forestry: no settings ([adapter] outbox/inbox)", code="NF_CONFIG")
        f = _state["folders"] = Folders.from_extra(dict(s.extra))
    return f  # type: ignore[no-any-return]


def ledger() -> InboxLedger | None:
    """The inbox ledger in the enrolment directory (beside the SDK's handled-id store). Open until the process
    ends: the SDK still hands over deliveries after the shut-down hooks (its drain)."""
    led = _state.get("ledger")
    if led is None and adapter.settings is not None:
        led = _state["ledger"] = InboxLedger(Path(adapter.settings.home) / "inbox-ledger.sqlite3")
    return led  # type: ignore[no-any-return]


@adapter.on_startup
async def open_folders() -> None:
    f = Folders.from_extra(dict(adapter.settings.extra) if adapter.settings else {})
    f.check()
    _state["folders"] = f
    watcher = _state["watcher"] = OutboxWatcher(adapter, f)
    watcher.start()
    log.info(
        "national reporting folders open", extra={"system": SYSTEM, "outbox": str(f.outbox), "inbox": str(f.inbox)}
    )


@adapter.on_shutdown
async def close_folders() -> None:
    watcher: OutboxWatcher | None = _state.pop("watcher", None)
    if watcher is not None:  # the start-up hook may never have run
        await watcher.stop()
        log.info("outbox closed", extra={"system": SYSTEM, **{f"files_{k}": v for k, v in watcher.counts.items()}})


async def to_inbox(msg: Any, ctx: Context) -> None:
    """Write the delivery into the inbox (before it is acknowledged); a share that is down is retried."""
    f = folders()
    name = inbox_name(ctx.service, ctx.message_id)
    try:
        await asyncio.to_thread(deliver_to_inbox, Path(f.inbox), name, ctx.raw, ctx.message_id, ledger())
    except OSError as exc:
        delay = min(0.5 * 2 ** min(ctx.attempt, 10), f.max_retry_delay)
        raise Retry(delay, f"收件目录不可写 the inbox cannot be written ({type(exc).__name__})") from None


for _service in INBOX_SERVICES:
    adapter.handles(_service, version=1)(to_inbox)


def late_answer(answer: Receipt | HubRefused) -> None:
    """A hub answer no ``send`` waits for any more. A refusal (e.g. a quarantined file rejected by the reviewer,
    ``GATE_REJECTED``) goes into the inbox as ``hub.error_<id>.xml`` so that the national staff learn of it; late
    receipts (after a restart, for files already moved) are only logged."""
    if not isinstance(answer, HubRefused):
        return
    opened = answer.error
    data = getattr(opened, "data", b"") or b""
    env = getattr(opened, "envelope", None)
    if not data or env is None:
        return
    try:
        deliver_to_inbox(folders().inbox, inbox_name("hub.error", env.message_id), data, env.message_id, ledger())
    except (OSError, SdkError) as exc:
        log.warning(
            "a late hub refusal could not be written to the inbox (%s)",
            type(exc).__name__,
            extra={"system": SYSTEM, "message_id": answer.message_id, "code": answer.code},
        )
    else:
        log.warning(
            "late hub refusal written to the inbox: %s",
            answer.code,
            extra={"system": SYSTEM, "message_id": answer.message_id, "code": answer.code},
        )


adapter.on_answer = late_answer
