"""The evidence-chain page (``/evidence``): the chain's status, and its verification on demand.

Status (``hub.store.ops.evidence_status``): the head (seq and hash), the records staged but not yet chained, and the
last signed checkpoint with its time and signer. "Verify now" (``/evidence/verify``, a read: permission ``view``) runs
what ``hub evidence verify`` runs: ``verify_chain`` with this installation's checkpoint verifier (every hash, link
and checkpoint signature, with the hub certificate recorded for it), ``verify_messages`` (a message changed
after it was recorded, named with the field) and ``verify_anchors`` (each checkpoint written down in the state
directory's ``evidence/anchors.log`` still in the chain, with its hash), then shows every problem or 完好 intact.
One verification runs at a time (it reads the whole chain and every message): asked while one runs, the page says
so (429 ``OPS_VERIFY_BUSY``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from hub.errors import HubError
from monitoring.app import POOL, SETTINGS
from monitoring.auth import render, require
from monitoring.views.messages import CN_TZ

__all__ = ["VERIFYING", "run_verification", "setup"]

#: Held while a verification runs (one at a time: each reads the whole chain and every message).
VERIFYING = web.AppKey("evidence_verifying", asyncio.Lock)
BUSY = {
    "code": "OPS_VERIFY_BUSY",
    "zh": "另一次校验正在进行，请稍后再试",
    "en": "another verification is running; try again shortly",
}


async def _status(pool: Any) -> Any:
    from hub.store.ops import evidence_status

    status = await evidence_status(pool)
    return {
        "head_seq": status.head_seq,
        "head_hash": status.head_hash.hex(),
        "pending": status.pending,
        "checkpoints": status.checkpoints,
        "last_checkpoint_seq": status.last_checkpoint_seq,
        "last_checkpoint_at": status.last_checkpoint_at,
        "last_checkpoint_signer": status.last_checkpoint_signer,
        "last_checkpoint_covers": status.last_checkpoint_covers,
    }


async def run_verification(settings: Any, pool: Any) -> dict[str, Any]:
    """What ``hub evidence verify`` does (``hub.store.evidence_cli``), on the page's pool."""
    from hub.commands.trust_admin import default_pki_dir, installation_checkpoint_verifier
    from hub.store.anchors import anchors_path, read_anchors, verify_anchors
    from hub.store.evidence import head, verify_chain, verify_messages

    started = time.monotonic()
    verifier = await installation_checkpoint_verifier(settings, default_pki_dir(settings))
    anchors = anchors_path(settings.state_dir)
    problems = await verify_chain(pool, verifier)
    problems += await verify_messages(pool)
    problems += await verify_anchors(pool, anchors)  # the checkpoints written down outside the database
    seq, _ = await head(pool)
    checkpoints = await pool.fetchval("SELECT count(*) FROM evidence WHERE kind = 'checkpoint'")
    return {
        "problems": [{"kind": p.kind, "seq": p.seq, "message": p.message} for p in problems],
        "records": seq,
        "anchored": len({a.seq for a in read_anchors(anchors)[0]}),
        "checkpoints": int(checkpoints),
        "ms": round((time.monotonic() - started) * 1000),
    }


@require("view")
async def evidence_page(request: web.Request) -> web.StreamResponse:
    return render(
        request,
        "evidence.html",
        {"status": await _status(request.app[POOL]), "result": None, "notice": None, "cn_tz": CN_TZ},
    )


@require("view")
async def evidence_verify(request: web.Request) -> web.StreamResponse:
    settings, pool = request.app[SETTINGS], request.app[POOL]
    notice: dict[str, str] | None = None
    result = None
    lock = request.app[VERIFYING]
    if lock.locked():
        notice = BUSY
    else:
        async with lock:
            try:
                result = await run_verification(settings, pool)
            except HubError as exc:
                notice = {"code": exc.code, "zh": exc.title, "en": exc.detail}
    return render(
        request,
        "evidence.html",
        {"status": await _status(pool), "result": result, "notice": notice, "cn_tz": CN_TZ},
        status=429 if notice is BUSY else 200,
    )


def setup(app: web.Application) -> None:
    app[VERIFYING] = asyncio.Lock()
    app.router.add_get("/evidence", evidence_page)
    app.router.add_get("/evidence/verify", evidence_verify)
