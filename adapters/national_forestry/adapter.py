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
import contextlib
import logging
from pathlib import Path
from typing import Any

from adapters.national_forestry.folders import (
    Folders,
    InboxLedger,
    OutboxWatcher,
    deliver_to_inbox,
    flush_pending,
)
from adapters.national_forestry.mapping import inbox_name
from adapters.sdk import Adapter, ConfigurationError, Context, HubRefused, Receipt, Retry, SdkError

SYSTEM = "nation-100000-oa"
#: What the hub delivers to the nation and lands in the inbox (the directory: document.* info.* emergency.*
#: meeting.notice, refusals of what the nation sent, and the hub's own notices).
INBOX_SERVICES: tuple[str, ...] = (
    "info.report",
    "document.official",
    "document.receipt",
    "emergency.alert",
    "emergency.update",
    "emergency.ack",
    "meeting.notice",
    "delivery.refusal",
    "hub.notice",  # the hub's process notices: emergency forwards and resends, reminders (催办) …
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
    _state["flusher"] = asyncio.get_running_loop().create_task(_flush_late_refusals(f), name="nf-late-refusals")
    log.info(
        "national reporting folders open", extra={"system": SYSTEM, "outbox": str(f.outbox), "inbox": str(f.inbox)}
    )


@adapter.on_shutdown
async def close_folders() -> None:
    flusher: asyncio.Task[None] | None = _state.pop("flusher", None)
    if flusher is not None:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
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


async def late_answer(answer: Receipt | HubRefused) -> None:
    """A hub answer no ``send`` waits for any more. A refusal (e.g. a quarantined file rejected by the reviewer,
    ``GATE_REJECTED``) goes into the inbox as ``hub.error_<id>.xml`` so that the national staff learn of it; late
    receipts (after a restart, for files already moved) are only logged. The inbox is on the network share: written
    in a thread, as every other share access here (a share that hangs must not stop the event loop, its broker
    heartbeats and the other deliveries with it); the SDK acknowledges the answer once this returns."""
    if isinstance(answer, HubRefused):
        await asyncio.to_thread(_late_refusal, answer)


def _late_refusal(answer: HubRefused) -> None:
    opened = answer.error
    data = getattr(opened, "data", b"") or b""
    env = getattr(opened, "envelope", None)
    if not data or env is None:
        return
    name = inbox_name("hub.error", env.message_id)
    led = ledger()
    try:
        deliver_to_inbox(folders().inbox, name, data, env.message_id, led)
    except (OSError, SdkError) as exc:
        # The SDK acknowledges the hub.error whatever happens here (nothing delivers it again): owe it to the inbox
        # in the ledger, written by ``flush_late_refusals`` once the share takes files again.
        fields = {"system": SYSTEM, "message_id": answer.message_id, "code": answer.code}
        if led is None:
            log.error("a late hub refusal could not be written to the inbox (%s)", type(exc).__name__, extra=fields)
            return
        led.keep(env.message_id, name, data)
        log.warning(
            "a late hub refusal could not be written to the inbox (%s); kept, written when it can be",
            type(exc).__name__,
            extra=fields,
        )
    else:
        log.warning(
            "late hub refusal written to the inbox: %s",
            answer.code,
            extra={"system": SYSTEM, "message_id": answer.message_id, "code": answer.code},
        )


adapter.on_answer = late_answer


def flush_late_refusals() -> int:
    """Write the late hub refusals the inbox could not take when they came (kept in the ledger); the number
    written. ``OSError`` when the inbox still cannot be written (they stay kept)."""
    led = ledger()
    if led is None:
        return 0
    n = flush_pending(folders().inbox, led)
    if n:
        log.warning("%d late hub refusal(s) written to the inbox", n, extra={"system": SYSTEM})
    return n


async def _flush_late_refusals(f: Folders) -> None:
    """Every ``max(poll_interval, 1)`` s while running: what the ledger owes the inbox, once it can be written."""
    while True:
        await asyncio.sleep(max(f.poll_interval, 1.0))
        try:
            await asyncio.to_thread(flush_late_refusals)
        except OSError:
            pass  # the share is still down: next time
        except Exception:
            log.exception("could not write the kept late hub refusals", extra={"system": SYSTEM})
