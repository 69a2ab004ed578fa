"""``hub evidence verify`` (and ``hub evidence checkpoint``): check and seal the evidence log.

The store never imports hub.trust, so whoever wires the CLI passes the trust layer's functions in::

    evidence_cli.register(sub, verifier_factory=lambda s: <VerifySignature>, signer_factory=lambda s: (<Sign>, fp))

Without a verifier, ``verify`` still checks every hash, link and what each checkpoint seals, and says on stderr
that checkpoint signatures were not checked. Without a signer there is no ``checkpoint`` subcommand.

Exit codes: 0 the chain is intact (``证据链完整``); 1 one line per problem; 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from hub.settings import Settings
from hub.store.evidence import Sign, VerifySignature

VerifierFactory = Callable[[Settings], VerifySignature]
SignerFactory = Callable[[Settings], tuple[Sign, str]]


async def _verify(settings: Settings, verifier: VerifySignature | None) -> tuple[list[str], int, int, int]:
    from hub.store.anchors import anchors_path, read_anchors, verify_anchors
    from hub.store.db import connection
    from hub.store.evidence import head, verify_chain, verify_messages

    anchors = anchors_path(settings.state_dir)
    async with connection(settings.pg_dsn) as conn:
        problems = await verify_chain(conn, verifier)
        problems += await verify_messages(conn)  # a message changed by hand is named with its field
        problems += await verify_anchors(conn, anchors)  # checkpoints written down outside the database
        seq, _ = await head(conn)
        checkpoints = await conn.fetchval("SELECT count(*) FROM evidence WHERE kind = 'checkpoint'")
    return [str(p) for p in problems], seq, int(checkpoints), len(read_anchors(anchors)[0])


def _cmd_verify(verifier_factory: VerifierFactory | None) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        verifier = verifier_factory(settings) if verifier_factory is not None else None
        problems, seq, checkpoints, anchored = asyncio.run(_verify(settings, verifier))
        if problems:
            for line in problems:
                print(line)
            print(f"证据链被篡改 evidence chain broken: {len(problems)} problem(s)", file=sys.stderr)
            return 1
        if verifier is None and checkpoints:
            print("注意：未校验检查点签名 checkpoint signatures were not checked (no verifier wired)", file=sys.stderr)
        if checkpoints and not anchored:
            print(
                f"注意：没有锚定记录 no checkpoint is anchored in {settings.state_dir}/evidence/anchors.log (a store "
                "checked away from its hub's state directory): a chain rewritten with its checkpoints left out "
                "cannot be told from this one",
                file=sys.stderr,
            )
        print(
            f"证据链完整 evidence chain intact: {seq} records, {checkpoints} checkpoints, {anchored} anchored outside "
            "the database"
        )
        return 0

    return run


def _cmd_checkpoint(signer_factory: SignerFactory) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from hub.store.db import connection
        from hub.store.evidence import checkpoint

        sign, fingerprint = signer_factory(settings)

        async def go() -> int | None:
            from hub.store.anchors import anchor_checkpoint

            async with connection(settings.pg_dsn) as conn:
                seq = await checkpoint(conn, sign, fingerprint)
                await anchor_checkpoint(conn, settings.state_dir, seq)
                return seq

        seq = asyncio.run(go())
        print("证据链为空 evidence chain is empty" if seq is None else f"检查点 checkpoint at record {seq}")
        return 0

    return run


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    *,
    verifier_factory: VerifierFactory | None = None,
    signer_factory: SignerFactory | None = None,
) -> None:
    ev = sub.add_parser("evidence", help="the evidence log (证据链)")
    evsub = ev.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)
    p = evsub.add_parser("verify", help="check every record, link and checkpoint of the evidence chain")
    p.set_defaults(handler=_cmd_verify(verifier_factory))
    if signer_factory is not None:
        p = evsub.add_parser("checkpoint", help="seal the evidence chain with a hub-signed checkpoint")
        p.set_defaults(handler=_cmd_checkpoint(signer_factory))
