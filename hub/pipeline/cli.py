"""``hub run``, ``hub send``, ``hub receive``, ``hub quarantine …`` and ``hub evidence …``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

from hub.errors import ConfigError, HubError
from hub.settings import Settings

# ---------------------------------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from hub import logs
    from hub.pipeline.supervisor import Supervisor
    from hub.pipeline.worker import worker_main
    from hub.store.db import migrate

    async def prepare() -> None:
        from hub.store.db import connection
        from hub.trust.lifecycle import check_installation

        await migrate(settings.pg_dsn)
        async with connection(settings.pg_dsn) as conn:
            # Before any worker starts: a store of another installation is refused once, with its reason, instead
            # of workers failing and being restarted (STORE_FOREIGN_INSTALLATION).
            await check_installation(settings, conn)

    from hub.pipeline.supervisor import default_workers

    target: Any = None
    n = args.workers
    if getattr(args, "gateway", False):
        # The gateway as one more supervised process beside the workers (restarted when it dies, SIGTERM with
        # them); its server certificate is checked before anything else is touched.
        from hub.commands.gateway import gateway_settings
        from hub.gateway.server import WithGateway

        n = args.workers or default_workers(settings)
        gateway = gateway_settings(args, settings, prefix="gateway-")
        for f in (gateway.cert_file, gateway.key_file):
            if not f.is_file():
                raise ConfigError(f"hub run --gateway needs the gateway's server certificate and key: no {f}")
        # What the gateway process would refuse at its start, refused here once with its reason: from inside it the
        # supervisor restarted it every two seconds without end (a key that does not match the certificate, a
        # load balancer's address that is not one).
        from hub.gateway.proxy_header import networks
        from hub.gateway.tls import server_ssl_context

        networks(gateway.proxy_from)
        server_ssl_context(
            settings.state_dir / "pki", gateway.cert_file, gateway.key_file, key_password=settings.ca_passphrase
        )
        target = WithGateway(n, gateway)
    logs.setup()
    asyncio.run(prepare())
    if target is None:
        target, n = worker_main, args.workers or default_workers(settings)
    else:
        n += 1
    if not args.no_processes:
        # The process engine (hub/processes) as one more supervised process: off the message path, it reads what
        # the workers recorded. Several hub instances may each run one (the engines share the work safely).
        from hub.processes.runner import WithProcesses

        target, n = WithProcesses(target, n), n + 1
    return Supervisor(settings, target, workers=n).run()


# ---------------------------------------------------------------------------------------------------- send


async def _send(args: argparse.Namespace, settings: Settings) -> int:
    from hub.pipeline.client import Inbox, connect_as, load_signer, outgoing, sign_envelope
    from hub.trust import TrustStore, Verifier
    from hub.validation import SchemaRegistry

    signer = load_signer(settings, args.system)
    registry = SchemaRegistry(settings.schemas_dir)
    prepared = []
    failed = False
    for name in args.files:
        try:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
            env, body = sign_envelope(signer, data, max_bytes=settings.max_message_bytes, registry=registry)
        except OSError as exc:
            print(f"{name}: IO_READ: {exc.strerror}")
            failed = True
            continue
        except HubError as exc:
            print(f"{name}: {exc.describe()}")
            failed = True
            continue
        prepared.append((name, env, body))
    if not prepared:
        return 1
    transport = await connect_as(settings, args.system)
    try:
        as_system = transport.user != _admin_user(settings)
        await transport.publish_many([outgoing(transport, env, body, as_system=as_system) for _, env, body in prepared])
        if args.no_wait:
            for name, env, _ in prepared:
                print(f"{name}: {env.message_id} 已发送 sent")
            return 1 if failed else 0
        store = TrustStore.load(settings.state_dir / "pki")
        inbox = Inbox(settings, transport, args.system, verifier=Verifier(store), registry=registry)
        replies = await inbox.replies_for([env.message_id for _, env, _ in prepared], timeout=args.wait)
    finally:
        await transport.close()
    for name, env, _ in prepared:
        reply = replies.get(env.message_id)
        if reply is None:
            print(f"{name}: {env.message_id}: 未收到回执 no answer within {args.wait:g} s (the hub may be stopped)")
            failed = True
        else:
            print(f"{name}: {reply.line()}")
            failed = failed or reply.kind == "error"
    return 1 if failed else 0


def _admin_user(settings: Settings) -> str:
    from yarl import URL

    return URL(settings.amqp_url).user or "guest"


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_send(args, settings))


# ---------------------------------------------------------------------------------------------------- receive


async def _receive(args: argparse.Namespace, settings: Settings) -> int:
    from hub.pipeline.client import Inbox, connect_as, read_reply
    from hub.trust import TrustStore, Verifier
    from hub.validation import SchemaRegistry

    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    transport = await connect_as(settings, args.system)
    inbox = Inbox(
        settings,
        transport,
        args.system,
        verifier=Verifier(TrustStore.load(settings.state_dir / "pki")),
        registry=SchemaRegistry(settings.schemas_dir),
    )
    seen = 0
    bad = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.wait
    try:
        while (args.count is None or seen < args.count) and loop.time() < deadline:
            batch = await inbox.take(max_messages=min(100, (args.count or 100) - seen) or 1)
            if not batch:
                await asyncio.sleep(0.1)
                continue
            refused: list[tuple[Any, HubError]] = []
            for m in batch:
                seen += 1
                try:
                    env = inbox.open(m.body)
                except HubError as exc:
                    bad += 1
                    print(f"{m.message_id}: 拒收 refused: {exc.describe()}")
                    refused.append((m, exc))
                    continue
                reply = read_reply(env)
                what = (
                    reply.line()
                    if reply is not None
                    else (f"{env.service_id} 来自 from {env.sender} 密级 {env.classification} 紧急 {env.urgency}")
                )
                print(f"{env.message_id}: {what}")
                if out is not None:
                    (out / f"{env.message_id}.xml").write_bytes(m.body)
            failed = await dead_letter_refused(transport, args.system, refused)
            await transport.ack([m for m in batch if m not in failed])
            deadline = loop.time() + args.wait  # --wait is a time with nothing arriving, not the whole run's
            if failed:
                await transport.nack(failed, requeue=False)
    finally:
        await transport.close()
    return 1 if bad else 0


async def dead_letter_refused(transport: Any, system: str, refused: list[tuple[Any, HubError]]) -> list[Any]:
    """``hub.pipeline.client.park_refused`` for deliveries refused with a ``HubError``; says so when the publish
    failed (the caller then rejects them without requeue)."""
    from hub.pipeline.client import park_refused

    failed = await park_refused(transport, system, [(m, exc.code, exc.detail) for m, exc in refused])
    if failed:
        print(f"could not dead-letter {len(failed)} refused deliveries; rejecting them instead")
    return failed


def cmd_receive(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_receive(args, settings))


# ---------------------------------------------------------------------------------------------------- quarantine


async def _quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from hub.store import messages
    from hub.store.db import create_pool

    pool = await create_pool(settings.pg_dsn, min_size=1, max_size=2)
    try:
        if args.q_command == "list":
            items = await messages.quarantine_list(pool, None if args.all else "pending")
            if not items:
                print("没有待审报文 nothing in quarantine")
            for it in items:
                marks = "、".join(it.markings)
                print(
                    f"{it.message_id}  {it.status:<8}  {it.received_at:%Y-%m-%d %H:%M}  {it.service:<20} "
                    f"{it.sender_system:<24} 标注密级 {it.classification_label}  发现标志 {marks}"
                )
            return 0
        if args.q_command == "show":
            it = await messages.quarantine_show(pool, args.id)
            rows = [
                ("报文 message", it.message_id),
                ("状态 status", it.status),
                ("类型 service", it.service),
                ("发送方 sender", f"{it.sender_agency}/{it.sender_system}"),
                ("标注密级 label", it.classification_label),
                ("发现标志 found", "、".join(it.markings)),
                ("收到 received", it.received_at.isoformat()),
            ]
            for label, value in rows:
                print(f"{label:<16}{value}")
            for d in it.deliveries:
                print(f"  收件 recipient {d.recipient_system:<24} {d.state}")
            if it.reviewer:
                print(f"审核 reviewer     {it.reviewer}: {it.reason}")
            return 0
        reviewer = args.reviewer or getpass.getuser()
        from hub.pipeline.release import reject, release
        from hub.store.audit import Actor, role_of

        # Recorded as the reviewer's action (the ops page's auditor reads it), with the decision.
        actor = Actor(reviewer, await role_of(pool, reviewer), "cli")
        if args.q_command == "release":
            n = await release(settings, pool, args.id, reviewer, args.reason, actor=actor)
            print(f"{args.id}: 已放行 released, delivered to {n} system(s)")
        else:
            await reject(settings, pool, args.id, reviewer, args.reason, actor=actor)
            print(f"{args.id}: 已驳回 rejected; the sender was sent a signed hub.error (GATE_REJECTED)")
        return 0
    finally:
        await pool.close()


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_quarantine(args, settings))


# ---------------------------------------------------------------------------------------------------- evidence


def _evidence_verifier(settings: Settings) -> Any:
    from hub.commands.trust_admin import installation_checkpoint_verifier

    return asyncio.run(installation_checkpoint_verifier(settings, settings.state_dir / "pki"))


def _evidence_signer(settings: Settings) -> tuple[Any, str]:
    from hub.store.db import connection
    from hub.trust import Signer
    from hub.trust.lifecycle import check_installation
    from hub.trust.pki import PkiPaths

    async def check() -> None:
        async with connection(settings.pg_dsn) as conn:
            await check_installation(settings, conn, settings.state_dir / "pki")

    asyncio.run(check())
    paths = PkiPaths(settings.state_dir / "pki")
    signer = Signer.load(paths.hub_key, paths.hub_cert, passphrase=settings.ca_passphrase.encode())
    return signer.sign_bytes, signer.identity.fingerprint


# ---------------------------------------------------------------------------------------------------- wiring


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from hub.store import evidence_cli

    p = sub.add_parser("run", help="start the pipeline workers (启动枢纽)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: HUB_WORKERS or one per core)")
    p.add_argument("--gateway", action="store_true", help="also serve the HTTPS gateway (hub gateway) as a process")
    p.add_argument(
        "--no-processes",
        action="store_true",
        help="do not start the process engine (document tracking, approvals, emergencies, meetings; hub processes)",
    )
    from hub.commands.gateway import add_gateway_arguments

    add_gateway_arguments(p, prefix="gateway-")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("send", help="sign envelope files as a system and send them; print the hub's answers (发送)")
    p.add_argument("--system", required=True, help="the sending system id")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for receipts (default 30)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for receipts")
    p.add_argument("files", nargs="+", metavar="FILE", help="unsigned (or already signed) envelopes; - for stdin")
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser(
        "receive",
        help="print (and save) what the hub delivered to a system (the hub's and the sender's signatures verified), "
        "and acknowledge; a refused delivery is parked in the dead-letter queue with its reason (接收)",
    )
    p.add_argument("--system", required=True)
    p.add_argument("--out", help="write each delivery to OUT/<message-id>.xml")
    p.add_argument("--count", type=int, default=None, help="stop after this many messages")
    p.add_argument("--wait", type=float, default=2.0, help="stop when nothing arrives for this long (default 2 s)")
    p.set_defaults(handler=cmd_receive)

    q = sub.add_parser("quarantine", help="messages held by the classification gate (隔离审核)")
    qs = q.add_subparsers(dest="q_command", metavar="ACTION", required=True)
    p = qs.add_parser("list", help="pending quarantined messages")
    p.add_argument("--all", action="store_true", help="also released and rejected ones")
    p = qs.add_parser("show", help="one quarantined message")
    p.add_argument("id")
    for action, text in (("release", "release and deliver (放行)"), ("reject", "reject; the sender is told (驳回)")):
        p = qs.add_parser(action, help=text)
        p.add_argument("id")
        p.add_argument("--reason", required=True, help="why (recorded in the evidence log)")
        p.add_argument("--reviewer", help="who decides (default: the login name)")
    q.set_defaults(handler=cmd_quarantine)

    evidence_cli.register(sub, verifier_factory=_evidence_verifier, signer_factory=_evidence_signer)
