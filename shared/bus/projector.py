"""Ordered projection of the whole event stream into read models, exactly once per event.

A projection must see events in global order. The relay stamps every message with the position of the
event it published before (`prevposition`); the projector applies a message only when that equals its
tracking position. A redelivered or republished message is behind the tracking position and skipped;
a message that arrives ahead of a missing one makes the projector read the missing events from the store,
which is the source of truth. Effects and the new tracking position commit in one transaction, and one
replica at a time projects (an advisory lock elects it), since order cannot be shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Protocol

import asyncpg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.envelope import CloudEvent, RecordedEvent
from contracts.subjects import events_stream_name, events_wildcard
from shared.bus.cancellation import raise_if_cancelling
from shared.bus.leader import lead_when_elected, leader_lock_key
from shared.eventstore.store import EventStore
from shared.tracking import load_position, save_position

log = logging.getLogger(__name__)

PROJECTED_CHANNEL = "batchyard_projected"
CATCH_UP_PAGE = 1000
FETCH_BATCH = 500
BUS_START_MARGIN_S = 10.0
INACTIVE_THRESHOLD_S = 30.0


class Projection(Protocol):
    name: str

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None: ...


async def apply_in_order(
    conn: asyncpg.Connection,
    store: EventStore,
    projection: Projection,
    envelopes: list[CloudEvent],
) -> int:
    """Apply a fetched batch inside the caller's transaction; returns the new tracking position."""
    position = await load_position(conn, projection.name)
    for envelope in envelopes:
        if envelope.position <= position:
            continue
        if envelope.prevposition != position:
            for missing in await store.read_all(after=position, up_to=envelope.position - 1, limit=100_000):
                await projection.apply(conn, missing)
                position = missing.position
        await projection.apply(conn, envelope.to_recorded())
        position = envelope.position
    await save_position(conn, projection.name, position)
    return position


class Projector:
    """Keeps one projection up to date: catches up from the store, then follows the bus.

    The active replica reads the bus through an ephemeral consumer without acknowledgements, started
    shortly before the last event it applied. A durable consumer would hand messages a dead replica had
    fetched to nobody until their ack wait ran out, and the projection would stall; order, duplicates
    and gaps are the projector's own business anyway (tracking position, `prevposition`, the store).
    """

    def __init__(
        self, store: EventStore, js: JetStreamContext, dsn: str, prefix: str, projection: Projection
    ) -> None:
        self.store = store
        self.js = js
        self.dsn = dsn
        self.prefix = prefix
        self.projection = projection
        self.lock_key = leader_lock_key("projector", f"{prefix}:{projection.name}")

    async def run(self) -> None:
        role = f"projector {self.projection.name}"
        await lead_when_elected(self.dsn, self.lock_key, self._project_while_leader, role=role)

    async def _project_while_leader(self, leader: asyncpg.Connection) -> None:
        position = await self._catch_up_from_store()
        subscription = await self.js.pull_subscribe(
            events_wildcard(self.prefix),
            stream=events_stream_name(self.prefix),
            config=await self._bus_start(position),
        )
        try:
            while not leader.is_closed():
                raise_if_cancelling()
                try:
                    messages = await subscription.fetch(FETCH_BATCH, timeout=1.0)
                except (TimeoutError, NatsTimeoutError):
                    continue
                await self._apply([CloudEvent.model_validate_json(m.data) for m in messages])
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _catch_up_from_store(self) -> int:
        """Apply what the store holds beyond the tracking position, page by page; returns the position."""
        while True:
            async with self.store.pool.acquire() as conn, conn.transaction():
                position = await load_position(conn, self.projection.name)
                events = await self.store.read_all(after=position, limit=CATCH_UP_PAGE)
                for event in events:
                    await self.projection.apply(conn, event)
                    position = event.position
                if events:
                    await save_position(conn, self.projection.name, position)
                    await conn.execute("SELECT pg_notify($1, $2)", PROJECTED_CHANNEL, str(position))
            if len(events) < CATCH_UP_PAGE:
                return position

    async def _bus_start(self, position: int) -> ConsumerConfig:
        """Where on the bus to start: a margin before the publication of the event at `position`.

        Every later event was committed, hence published, after that event was recorded; the margin
        absorbs clock skew between writers and the NATS server. Messages from before are skipped as
        duplicates, and anything a larger skew hid is read from the store when the next message shows
        the gap.
        """
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=INACTIVE_THRESHOLD_S)
        if position:
            (last,) = await self.store.read_all(after=position - 1, up_to=position, limit=1)
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = last.time - timedelta(seconds=BUS_START_MARGIN_S)
        return config

    async def _apply(self, envelopes: list[CloudEvent]) -> None:
        async with self.store.pool.acquire() as conn, conn.transaction():
            position = await apply_in_order(conn, self.store, self.projection, envelopes)
            await conn.execute("SELECT pg_notify($1, $2)", PROJECTED_CHANNEL, str(position))


class ProjectionWatcher:
    """Lets a command handler wait until the read models include the events it appended."""

    def __init__(self, dsn: str, tracking_name: str) -> None:
        self.dsn = dsn
        self.tracking_name = tracking_name
        self.position = 0
        self._changed = asyncio.Condition()
        self._conn: asyncpg.Connection | None = None
        self._wakers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        await self._conn.add_listener(PROJECTED_CHANNEL, self._notified)
        self.position = await load_position(self._conn, self.tracking_name)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def _notified(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        self.position = max(self.position, int(str(payload)))
        task = asyncio.get_running_loop().create_task(self._wake())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, position: int, within_s: float) -> bool:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.position >= position), within_s)
        return self.position >= position
