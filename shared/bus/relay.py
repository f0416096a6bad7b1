"""The outbox relay: publishes every committed event to JetStream, in store order, at least once.

One relay is active per database (a session advisory lock elects it), so replicas of its host service
stand by instead of publishing twice. Its position is saved only after JetStream acknowledged the batch;
after a crash it republishes from there, and the `Nats-Msg-Id` header (the event id) makes JetStream
drop what it already stored within the duplicate window. Beyond that window consumers are idempotent.
For the same reason the position is saved without waiting for the disk (`save_position_lazily`): a
database crash can only take it back to an earlier position, which means republishing.

A commit's notification usually carries its events (`announced_events`); when they follow on directly
from the relay's position, the relay publishes them as they are instead of reading them back, which
saves a database round trip on every hop of a run (docs/decisions/0176). Anything else (a hole left by a
rolled-back transaction, a batch too big to announce, notifications missed) falls back to reading the
store, so the order and the gap-safety of the tail are those of the store either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from nats.js import JetStreamContext

from contracts.envelope import CloudEvent, RecordedEvent
from contracts.subjects import events_subject
from shared.bus.cancellation import raise_if_cancelling
from shared.bus.leader import lead_when_elected, leader_lock_key
from shared.eventstore.store import EVENTS_CHANNEL, EventStore, announced_events
from shared.tracking import load_position, save_position_lazily

log = logging.getLogger(__name__)

BATCH = 500
IDLE_POLL_S = 1.0
MAX_ANNOUNCED = 2 * BATCH
"""Announced events kept while the relay is busy; past that it forgets them and reads the store."""


class Relay:
    def __init__(self, store: EventStore, js: JetStreamContext, dsn: str, prefix: str, source: str) -> None:
        self.store = store
        self.js = js
        self.dsn = dsn
        self.prefix = prefix
        self.source = source
        self.tracking_name = f"relay:{prefix}"
        self.lock_key = leader_lock_key("relay", prefix)
        self._wakeup = asyncio.Event()
        self._announced: list[RecordedEvent] = []
        self.position = 0

    async def run(self) -> None:
        await lead_when_elected(self.dsn, self.lock_key, self._lead, role=f"relay {self.prefix}")

    async def _lead(self, leader: asyncpg.Connection) -> None:
        await leader.add_listener(EVENTS_CHANNEL, self._notified)
        await self._relay_while_leader(leader)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            announced = announced_events(payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("relay: unreadable commit notification, reading the store instead: %s", exc)
            announced = []
        if len(self._announced) + len(announced) > MAX_ANNOUNCED:
            self._announced.clear()
        else:
            self._announced.extend(announced)
        self._wakeup.set()

    def _next_announced(self) -> list[RecordedEvent]:
        """The announced events that continue the relay's position without a hole, in order; empty when
        the next event must be read from the store."""
        pending = [event for event in self._announced if event.position > self.position]
        pending.sort(key=lambda event: event.position)
        following: list[RecordedEvent] = []
        expected = self.position + 1
        for event in pending[:BATCH]:
            if event.position != expected:
                break
            following.append(event)
            expected += 1
        self._announced = pending[len(following) :] if following else []
        return following

    async def _relay_while_leader(self, leader: asyncpg.Connection) -> None:
        async with self.store.pool.acquire() as conn:
            self.position = await load_position(conn, self.tracking_name)
        while not leader.is_closed():
            raise_if_cancelling()
            self._wakeup.clear()
            events = self._next_announced() or await self.store.read_all(after=self.position, limit=BATCH)
            if not events:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), IDLE_POLL_S)
                continue
            try:
                await self._publish(events)
            except Exception as exc:
                log.warning("relay publish failed at position %d, retrying: %s", self.position, exc)
                await asyncio.sleep(0.5)
                continue
            async with self.store.pool.acquire() as conn:
                await save_position_lazily(conn, self.tracking_name, events[-1].position)
            self.position = events[-1].position

    async def _publish(self, events: list[RecordedEvent]) -> None:
        prev = self.position
        acks = []
        for event in events:
            envelope = CloudEvent.from_recorded(event, self.source, prev)
            acks.append(
                await self.js.publish_async(
                    events_subject(self.prefix, event.stream_type, event.type),
                    envelope.model_dump_json().encode(),
                    headers={"Nats-Msg-Id": str(event.id)},
                )
            )
            prev = event.position
        await asyncio.wait_for(asyncio.gather(*acks), timeout=10)
