"""A process that only relays: `python -m shared.bus.relay_main`, configured by `BATCHYARD_*` variables.

Every service already stands as a relay candidate; this entry exists for deployments that want the relay
in a process of its own, and for the tests that SIGKILL a relay at random moments. Its CloudEvents
`source` names the instance, so one can tell which candidate published an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from shared.bus.relay import Relay
from shared.bus.streams import connect, ensure_streams
from shared.eventstore.store import EventStore, create_pool, migrate
from shared.logging import setup_logging
from shared.settings import Settings


async def relay_until_stopped(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(settings.pg_dsn, 2)
    await migrate(pool)
    nc = await connect(settings.nats_url, f"relay@{settings.instance}")
    js = nc.jetstream()
    await ensure_streams(js, settings.bus_prefix)
    store = EventStore(pool)
    relay = Relay(store, js, settings.pg_dsn, settings.bus_prefix, f"batchyard/relay@{settings.instance}")
    task = asyncio.create_task(relay.run(), name="relay")
    try:
        await stop.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
        with contextlib.suppress(Exception):
            await nc.drain()
        await pool.close()


def main() -> None:
    settings = Settings()
    setup_logging("relay", settings.log_level)
    asyncio.run(relay_until_stopped(settings))


if __name__ == "__main__":
    main()
