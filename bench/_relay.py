"""The raw baseline for bench/e2e.py: a bare aio-pika relay on the same broker — consume from a queue, publish
each message to the next queue with publisher confirms, ack after the confirm. No parsing, no crypto, no
database. Prefetch and confirm batching are as generous as the hub's, so the comparison is fair."""

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
                        aio_pika.Message(m.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=m.message_id),
                        routing_key=target,
                    )
                    for m in batch
                )
            )
            await batch[-1].ack(multiple=True)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        pending.append(message)
        if len(pending) >= 64:
            await flush()

    async def ticker() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.002)
            await flush()

    tag = await src.consume(on_message)
    tick = asyncio.create_task(ticker())
    await stop.wait()
    await src.cancel(tag)
    await flush()
    tick.cancel()
    await conn.close()


def main() -> None:
    url, source, target, prefetch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await relay(url, source, target, prefetch, stop)

    asyncio.run(run())
    os._exit(0)


if __name__ == "__main__":
    main()
