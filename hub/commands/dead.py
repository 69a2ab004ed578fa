"""``hub dead list [--all] | show ID | replay ID --reason R [--operator NAME]``: the dead-letter queue for an operator
at a console (the ops page's dead-letter list does the same). Every subcommand first drains ``ns.dead`` into the
store (``hub.pipeline.dead.collect``), then reads the store; a replay is recorded as the operator's action (via
``cli``) with its reason, in the evidence chain."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json

from hub.errors import ConfigError
from hub.settings import Settings

#: The most ``hub dead list`` shows at once (what the store reads at most: ``hub.store.dead_letters.list_dead``).
MAX_LIST = 500
_STATE = {"pending": "待处理 pending", "replayed": "已重放 replayed", "discarded": "已丢弃 discarded"}
_KIND = {"inbound": "入站 inbound", "delivery": "投递 delivery", "other": "其他 other"}


async def _dead(args: argparse.Namespace, settings: Settings) -> int:
    from hub.pipeline import dead
    from hub.store.db import create_pool

    # Before anything is read or drained: a value that could not be acted on as asked.
    if args.d_command == "list" and not 1 <= args.limit <= MAX_LIST:
        raise ConfigError(f"--limit 应为 1 到 {MAX_LIST} · --limit must be 1 to {MAX_LIST}")
    if args.d_command == "replay" and not args.reason.strip():
        raise ConfigError("--reason 必须写明重放理由 · --reason must say why the letter is replayed")
    pool = await create_pool(settings.pg_dsn, min_size=1, max_size=2)
    try:
        new = await dead.collect(settings, pool)
        if args.d_command == "list":
            items = await dead.list_letters(pool, include_done=args.all, limit=args.limit)
            if new:
                print(f"新收死信 collected {new} new dead letter(s) from the queue")
            if not items:
                print("没有死信 no dead letters" + ("" if args.all else " pending"))
            for d in items:
                mid = d.message_id or (f"({d.claimed_message_id})" if d.claimed_message_id else "-")
                print(
                    f"{d.id:>6}  {d.first_seen:%Y-%m-%d %H:%M:%S}  {_STATE.get(d.state, d.state):<14} "
                    f"{_KIND.get(d.kind, d.kind):<12} {d.code or d.reason or '-':<22} {mid}"
                )
            return 0
        if args.d_command == "show":
            d = await dead.show(pool, args.id)
            rows = [
                ("死信 dead letter", str(d.id)),
                ("状态 state", _STATE.get(d.state, d.state)),
                ("类别 kind", _KIND.get(d.kind, d.kind)),
                ("收到 first seen", d.first_seen.isoformat()),
                ("来源队列 queue", d.source_queue or "-"),
                ("交换器 exchange", d.source_exchange or "-"),
                ("路由键 routing key", d.routing_key or "-"),
                ("原因 reason", d.reason or "-"),
                ("代码 code", d.code or "-"),
                ("说明 detail", d.detail or "-"),
                ("拒收方 refused by", d.refused_by or "-"),
                ("发布用户 publisher", d.publisher or "-"),
                ("报文 message", d.message_id or "-"),
                ("声称报文 claimed id", (d.claimed_message_id or "-") + " (未核验 unverified)"),
                ("大小 size", f"{d.body_size} bytes, SHA-256 {d.body_sha256}"),
            ]
            if d.state != "pending":
                rows.append(
                    ("重放 replayed", f"{d.replayed_at:%Y-%m-%d %H:%M:%S} by {d.replayed_by}: {d.replay_reason}")
                )
            for label, value in rows:
                print(f"{label:<20}{value}")
            if args.headers:
                print(json.dumps(json.loads(d.headers_json), ensure_ascii=False, indent=2))
            return 0
        from hub.store.audit import role_of

        operator = args.operator or getpass.getuser()
        result = await dead.replay(
            settings,
            pool,
            args.id,
            operator=operator,
            role=await role_of(pool, operator),
            via="cli",
            reason=args.reason,
        )
        print(
            f"{args.id}: 已重放 replayed to {result.queue} (exchange {result.exchange}, key {result.routing_key});"
            f" recorded as operator action {result.action_id}"
        )
        return 0
    finally:
        await pool.close()


def cmd_dead(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_dead(args, settings))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("dead", help="the dead-letter queue: list, show, replay (死信)")
    ds = d.add_subparsers(dest="d_command", metavar="ACTION", required=True)
    p = ds.add_parser("list", help="dead letters, newest first (pending ones; --all for every one)")
    p.add_argument("--all", action="store_true", help="also replayed and discarded ones")
    p.add_argument("--limit", type=int, default=100, help=f"at most this many (default 100, at most {MAX_LIST})")
    p = ds.add_parser("show", help="one dead letter")
    p.add_argument("id", type=int)
    p.add_argument("--headers", action="store_true", help="also print its AMQP headers (unverified)")
    p = ds.add_parser("replay", help="send it again where it was going (重放)")
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True, help="why (recorded with the operator's action)")
    p.add_argument("--operator", help="who replays it (default: the login name)")
    d.set_defaults(handler=cmd_dead)
