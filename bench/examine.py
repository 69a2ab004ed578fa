"""What the hub's own code costs per message, beside the primitives it cannot avoid, in one process (issue 11).

``handle``: ``hub.pipeline.worker.Worker.handle`` — the batch code ``hub run``'s workers and the gateway run — on
batches of signed ~2 KB ``document.official`` notices (``tests/hostile/costly.py``'s typical message, a fresh id
each), with the in-memory transport and store (``hub.transport.memory``, ``hub.store.memory``): examination,
routing and the gate, the record (in memory), the hub-signed delivery and receipt, the publish (in memory), the
decision lines. No broker, no database, no HTTP: the figure is the CPU of the examination itself, free of the noise
of the processes beside it that makes ``bench/gateway.py`` and ``bench/e2e.py`` move from run to run.

``floor``: on the same bytes, only the primitives every such message needs — lxml's parse (its default parser),
the service's compiled XSD over the whole envelope, the exclusive C14N of the document and its SHA-256, one ECDSA
P-256 verification and two ECDSA P-256 signatures (the hub's delivery and receipt). Everything else the hub does
(the hardened intake, the signature profile, the certificate path, the model, the gate, the decision, building the
answers, the record's rows, the decision line) is the difference.

Times are CPU time of this process (``time.process_time``), median of ``--rounds`` rounds. Last line::

    examine_us=<handle, per message> floor_us=<primitives, per message> examine_ratio=<handle / floor>

Usage: ``python bench/examine.py [--messages N] [--batch N] [--rounds N]``. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from lxml import etree  # noqa: E402

from hub import logs  # noqa: E402
from hub.pipeline.worker import Worker  # noqa: E402
from hub.transport.memory import MemoryBroker, MemoryTransport  # noqa: E402
from hub.transport.names import Names  # noqa: E402
from hub.transport.topology import Incoming  # noqa: E402
from tests.hostile import costly  # noqa: E402


class _Settled(MemoryTransport):
    """The in-memory transport, settling what ``Worker.handle`` is handed directly (as the gateway does): the
    batches are given to it here, not consumed from its queues."""

    async def ack(self, batch: Any) -> None:
        for m in batch:
            m.settled = True

    async def nack(self, batch: Any, *, requeue: bool = True) -> None:
        for m in batch:
            m.settled = True


def _floor(bodies: list[bytes], schema: etree.XMLSchema) -> float:
    """CPU seconds of the primitives alone over ``bodies`` (see the module docstring)."""
    sender = ec.generate_private_key(ec.SECP256R1())
    hub = ec.generate_private_key(ec.SECP256R1())
    algorithm = ec.ECDSA(hashes.SHA256())
    public = sender.public_key()
    # What is verified and signed: a SignedInfo's size (about 600 bytes), signed by the sender before the clock.
    signed_info = [hashlib.sha256(b).hexdigest().encode() * 9 for b in bodies]
    signatures = [sender.sign(s, algorithm) for s in signed_info]
    started = time.process_time()
    for body, info, signature in zip(bodies, signed_info, signatures, strict=True):
        root = etree.fromstring(body)
        if not schema.validate(root):
            raise RuntimeError(f"the floor's XSD refused a message the hub accepts: {schema.error_log.last_error}")
        hashlib.sha256(etree.tostring(root, method="c14n", exclusive=True)).digest()
        public.verify(signature, info, algorithm)
        hub.sign(info, algorithm)
        hub.sign(info, algorithm)
    return time.process_time() - started


async def _handle(worker: Worker, names: Names, bodies: list[bytes], batch: int) -> float:
    """CPU seconds of ``Worker.handle`` over ``bodies`` in batches of ``batch`` (each body a fresh submission, as the
    gateway hands it over)."""

    def incoming(data: bytes) -> Incoming:
        return Incoming(
            body=data,
            routing_key="normal",
            exchange=names.inbound_exchange,
            headers={},
            message_id=str(uuid.uuid4()),
            user_id=names.user(costly.SENDER[0]),
            priority=0,
            redelivered=True,
            queue=names.inbound_queue("normal"),
            delivery_tag=0,
        )

    started = time.process_time()
    for i in range(0, len(bodies), batch):
        await worker.handle([incoming(b) for b in bodies[i : i + batch]])
    return time.process_time() - started


async def run(args: argparse.Namespace) -> int:
    kit = costly.make_kit(args.tmp / "kit")
    worker, names, broker, _ = kit.memory_worker("examine", transport=_Settled)
    await worker.start()
    try:
        n = args.messages
        print(f"签名 signing {n * args.rounds + args.batch * 10} notices (the sender's cost, before any clock) …")
        warm = [kit.typical() for _ in range(args.batch * 10)]
        rounds = [[kit.typical() for _ in range(n)] for _ in range(args.rounds)]
        print(f"  {len(warm[0]) / 1024:.1f} KB each; {args.rounds} rounds of {n} in batches of {args.batch}")
        schema = kit.registry.service("document.official", 1).schema
        await _handle(worker, names, warm, args.batch)  # caches: the verifier's path, the schema lookups
        _floor(warm, schema)
        handle_us, floor_us = [], []
        for bodies in rounds:
            handle_us.append(await _handle(worker, names, bodies, args.batch) / n * 1e6)
            floor_us.append(_floor(bodies, schema) / n * 1e6)
            print(f"  round: handle {handle_us[-1]:7.1f} µs a message, floor {floor_us[-1]:7.1f} µs")
        sent = len(await broker_deliveries(broker, names))
        expected = n * args.rounds + len(warm)
        if sent != expected:
            print(f"失败 failed: {sent} deliveries published for {expected} notices", file=sys.stderr)
            return 1
    finally:
        await worker.stop()
    lines = sum(1 for _ in args.log_file.open("rb"))
    print(f"  {lines} decision and log lines written, as a worker writes them")
    h, f = statistics.median(handle_us), statistics.median(floor_us)
    print(f"examine_us={h:.0f} floor_us={f:.0f} examine_ratio={h / f:.2f}")
    return 0


async def broker_deliveries(broker: MemoryBroker, names: Names) -> list[Incoming]:
    """Every delivery the worker published to the recipient (each notice must have been delivered once)."""
    reader = MemoryTransport(names, broker, user="bench")
    got: list[Incoming] = []
    try:
        while batch := await reader.fetch(names.system_queue(costly.RECIPIENT[0]), max_messages=10_000):
            got += batch
            await reader.ack(batch)
    finally:
        await reader.close()
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--messages", type=int, default=1500, help="notices a round (1500)")
    ap.add_argument("--batch", type=int, default=30, help="batch size (30, as at saturation in bench/gateway.py)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is printed (3)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-examine-") as tmp:
        args.tmp = Path(tmp)
        # The worker's logging (its batched handler writes to standard error): pointed at a file while it is set up.
        args.log_file = args.tmp / "decisions.log"
        saved = os.dup(2)
        try:
            with args.log_file.open("wb") as f:
                os.dup2(f.fileno(), 2)
                logs.setup(batched=True)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
