"""The one place a service process is wired: settings, logging, database, bus, relay, shutdown.

Every service's `main.py` hands `run_service` a function that starts its own tasks; this keeps start-up
and shutdown identical across services. Each process also stands as a relay candidate, so events keep
reaching the bus as long as any service of the installation runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared.bus.relay import Relay
from shared.bus.streams import connect, ensure_streams
from shared.eventstore.store import EventStore, create_pool, migrate
from shared.logging import setup_logging
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a running service holds: its connections and the background tasks it started."""

    settings: Settings
    service: str
    pool: asyncpg.Pool
    store: EventStore
    nc: Client
    js: JetStreamContext
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(_log_unexpected_exit)
        self.tasks.append(task)
        return task


def _log_unexpected_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s died", task.get_name(), exc_info=task.exception())


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, service: str, *, relay: bool = True) -> AsyncIterator[Runtime]:
    pool = await create_pool(settings.pg_dsn, settings.pg_pool_size)
    await migrate(pool)
    store = EventStore(pool)
    nc = await connect(settings.nats_url, f"{service}@{settings.instance}")
    js = nc.jetstream()
    await ensure_streams(js, settings.bus_prefix)
    runtime = Runtime(settings, service, pool, store, nc, js)
    if relay:
        runtime.spawn(
            Relay(store, js, settings.pg_dsn, settings.bus_prefix, f"batchyard/{service}").run(), "relay"
        )
    try:
        yield runtime
    finally:
        for task in runtime.tasks:
            task.cancel()
        await asyncio.gather(*runtime.tasks, return_exceptions=True)
        await store.close()
        with contextlib.suppress(Exception):
            await nc.drain()
        await pool.close()


Starter = Callable[[Runtime], Awaitable[Callable[[], Awaitable[None]] | None]]


def run_service(service: str, start: Starter) -> None:
    """Run a service until SIGTERM or SIGINT; `start` may return a coroutine function run on shutdown."""
    settings = Settings()
    setup_logging(service, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_runtime(settings, service) as runtime:
            shutdown = await start(runtime)
            log.info("%s started (instance %s)", service, settings.instance)
            await stop.wait()
            log.info("%s stopping", service)
            if shutdown is not None:
                await shutdown()
        log.info("%s stopped", service)

    asyncio.run(main())
