"""What every handler reaches through the application: the runtime, the writer, the live event feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from contracts.base import Event
from contracts.envelope import EventMeta, RecordedEvent
from services.api.problems import ReadModelsBehind
from services.api.secrets import SecretDoor
from shared.archive.reader import LogReader
from shared.bus.projector import ProjectionWatcher
from shared.eventstore.store import EVENTS_CHANNEL, EventStore
from shared.service import Runtime

log = logging.getLogger(__name__)


class EventFeed:
    """Wakes SSE tails when the store commits, from one LISTEN connection shared by all of them."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.generation = 0
        self._changed = asyncio.Condition()
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        await self._conn.add_listener(EVENTS_CHANNEL, self._notified)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def _notified(self, *_: object) -> None:
        self.generation += 1
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_past(self, generation: int, within_s: float) -> bool:
        """Wait for a commit notified after `generation` was read; a caller that reads `generation` before
        scanning the store therefore never sleeps through a commit it did not see."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.generation != generation), within_s
                )
        return self.generation != generation


@dataclass
class ApiContext:
    runtime: Runtime
    watcher: ProjectionWatcher
    feed: EventFeed
    projector: asyncio.Task[None]
    command_wait_s: float
    logs: LogReader
    """One per process: it remembers where readers stopped, so following a log is cheap (0062)."""
    door: SecretDoor = field(default_factory=SecretDoor)

    @property
    def store(self) -> EventStore:
        return self.runtime.store

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    async def append(
        self, stream_id: str, events: Sequence[Event], *, expected_version: int, meta: EventMeta
    ) -> list[RecordedEvent]:
        """Append, then wait until the read models include the append (read-your-writes).

        A command that records nothing still waits for the store's head: the state it decided on may be
        newer than the read models it answers from."""
        recorded = await self.store.append(stream_id, events, expected_version=expected_version, meta=meta)
        head = recorded[-1].position if recorded else await self.store.head_position()
        await self.settle(head)
        return recorded

    async def settle(self, position: int) -> None:
        if not await self.watcher.wait_for(position, self.command_wait_s):
            log.warning("read models did not reach position %d within %.1f s", position, self.command_wait_s)
            raise ReadModelsBehind(position, self.command_wait_s)


CONTEXT = web.AppKey("api_context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
