"""The raw baseline for bench/e2e.py: a bare aio-pika relay on the same broker — consume from a queue, publish
each message to the next queue with publisher confirms, ack after the confirm. No parsing, no crypto, no
database. Prefetch and confirm batching are as generous as the hub's, so the comparison is fair: a batch leaves when
64 messages are in hand or 2 ms after its first one (the hub consumer's max_batch and linger), all publishes of a
batch await their confirms together, then one multiple-ack. It publishes through aio-pika's public API
(``Exchange.publish`` per message): what a plain aio-pika relay costs, not the hub's hand-batched frame writer.

Usage (started by bench/e2e.py): ``python bench/_relay.py AMQP_URL SOURCE_QUEUE TARGET_QUEUE PREFETCH``; SIGTERM or
SIGINT stops it after the batch in hand."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aio_pika


async def relay(url: str, source: str, target: str, prefetch: int, stop: asyncio.Event) -> None:
    conn = await aio_pika.connect_robust(url)
    channel = await conn.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=prefetch)
    src = await channel.get_queue(source, ensure=True)
    exchange = channel.default_exchange
    pending: list[aio_pika.abc.AbstractIncomingMessage] = []
    flushing = asyncio.Lock()

    async def flush() -> None:
        async with flushing:
            if not pending:
                return
            batch = pending[:]
            del pending[:]
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            m.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=m.message_id
                        ),
                        routing_key=target,
                    )
                    for m in batch
                )
            )
            await batch[-1].ack(multiple=True)

    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = set()

    def flush_soon() -> None:
        nonlocal timer
        timer = None
        task = loop.create_task(flush())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        # A batch leaves when it is full or 2 ms after its first message (the hub's consumer lingers as long);
        # a timer rather than a polling loop, so an idle relay costs no CPU while the hub is measured.
        nonlocal timer
        pending.append(message)
        if len(pending) >= 64:
            if timer is not None:
                timer.cancel()
                timer = None
            await flush()
        elif timer is None:
            timer = loop.call_later(0.002, flush_soon)

    tag = await src.consume(on_message)
    await stop.wait()
    await src.cancel(tag)
    if timer is not None:
        timer.cancel()
    await asyncio.gather(*tasks)
    await flush()
    await conn.close()


def main() -> None:
    url, source, target, prefetch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await relay(url, source, target, prefetch, stop)

    asyncio.run(run())
    os._exit(0)


if __name__ == "__main__":
    main()
