"""Append and read events with asyncpg; see docs/decisions/0001-event-store-on-asyncpg.md.

Appends from one process are group-committed: concurrent `append` calls queue up, and one writer task
commits all of them in a single transaction. Inside it, a transaction-scoped advisory lock serialises
position assignment across processes until commit, so positions become visible in order and a reader
tailing by position can never skip an event that commits later. Each queued append keeps its own
optimistic-concurrency check; a conflicting one fails alone and the others in its batch still commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources

import asyncpg

from contracts.base import Event
from contracts.envelope import EventMeta, RecordedEvent
from shared.eventstore.errors import ConcurrencyError

log = logging.getLogger(__name__)

NO_STREAM = 0
ANY_VERSION = -1

APPEND_LOCK_KEY = 0x0BA7C4_0001
MIGRATION_LOCK_KEY = 0x0BA7C4_0002
EVENTS_CHANNEL = "batchyard_events"
MAX_BATCH_EVENTS = 5000

_COLUMNS = (
    "position, event_id, stream_id, stream_version, type, schema_version, data, actor, "
    "correlation_id, causation_id, recorded_at"
)


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, init=init_connection)
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool) -> None:
    """Create the store's tables; safe when several services start at once."""
    sql = resources.files("shared.eventstore").joinpath("schema.sql").read_text()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(sql)


def record_from_row(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        id=row["event_id"],
        stream_id=row["stream_id"],
        stream_version=row["stream_version"],
        position=row["position"],
        type=row["type"],
        schema_version=row["schema_version"],
        time=row["recorded_at"],
        actor=row["actor"],
        correlation_id=row["correlation_id"],
        causation_id=row["causation_id"],
        data=row["data"],
    )


def announced_events(payload: str) -> list[RecordedEvent]:
    """The events a commit notification on EVENTS_CHANNEL carries: its rows, as `read_all` would return
    them, when the batch was small enough to announce whole; none when it names only the head position
    (then a reader reads the store, as it must anyway after missing notifications)."""
    if not payload.startswith("["):
        return []
    return [
        RecordedEvent(
            id=uuid.UUID(row["event_id"]),
            stream_id=row["stream_id"],
            stream_version=row["stream_version"],
            position=row["position"],
            type=row["type"],
            schema_version=row["schema_version"],
            time=datetime.fromisoformat(row["recorded_at"]).astimezone(UTC),
            actor=row["actor"],
            correlation_id=row["correlation_id"],
            causation_id=row["causation_id"],
            data=row["data"],
        )
        for row in json.loads(payload)
    ]


@dataclass
class _Append:
    stream_id: str
    events: Sequence[Event]
    expected_version: int
    meta: EventMeta
    future: asyncio.Future[list[RecordedEvent]] = field(repr=False)


class EventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._queue: list[_Append] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int,
        meta: EventMeta,
    ) -> list[RecordedEvent]:
        """Append events to a stream at `expected_version` (NO_STREAM for a new stream, ANY_VERSION to skip
        the check) and return them as recorded. Raises ConcurrencyError when the stream has moved on."""
        if not events:
            return []
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="eventstore-writer")
        future: asyncio.Future[list[RecordedEvent]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Append(stream_id, list(events), expected_version, meta, future))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._take_batch()
                try:
                    await self._commit(batch)
                except asyncio.CancelledError:
                    for item in batch:
                        if not item.future.done():
                            item.future.cancel()
                    raise
                except Exception as exc:
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)

    def _take_batch(self) -> list[_Append]:
        batch: list[_Append] = []
        count = 0
        while self._queue and (not batch or count + len(self._queue[0].events) <= MAX_BATCH_EVENTS):
            item = self._queue.pop(0)
            if item.future.done():
                continue
            batch.append(item)
            count += len(item.events)
        return batch

    async def _commit(self, batch: list[_Append]) -> None:
        """Commit a batch with one statement (`events_append` in schema.sql): one round trip."""
        now = datetime.now(UTC)
        events = [
            (uuid.uuid4(), item, event.model_dump(mode="json"), event)
            for item in batch
            for event in item.events
        ]
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM events_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                APPEND_LOCK_KEY,
                [item.stream_id for item in batch],
                [item.expected_version for item in batch],
                [len(item.events) for item in batch],
                [event_id for event_id, _, _, _ in events],
                [event.event_type() for _, _, _, event in events],
                [event.schema_version for _, _, _, event in events],
                [json.dumps(data) for _, _, data, _ in events],
                [item.meta.actor for _, item, _, _ in events],
                [item.meta.correlation_id for _, item, _, _ in events],
                [item.meta.causation_id for _, item, _, _ in events],
                now,
                EVENTS_CHANNEL,
            )
        recorded: dict[int, list[RecordedEvent]] = {}
        failed: dict[int, int] = {}
        payloads = {event_id: (item, data, event) for event_id, item, data, event in events}
        for row in rows:
            index = row["out_item"] - 1
            if row["out_position"] is None:
                failed[index] = row["out_actual"]
                continue
            item, data, event = payloads[row["out_event_id"]]
            recorded.setdefault(index, []).append(
                RecordedEvent(
                    id=row["out_event_id"],
                    stream_id=item.stream_id,
                    stream_version=row["out_version"],
                    position=row["out_position"],
                    type=event.event_type(),
                    schema_version=event.schema_version,
                    time=now,
                    actor=item.meta.actor,
                    correlation_id=item.meta.correlation_id,
                    causation_id=item.meta.causation_id,
                    data=data,
                )
            )
        for index, item in enumerate(batch):
            if item.future.done():
                continue
            if index in failed:
                item.future.set_exception(
                    ConcurrencyError(item.stream_id, item.expected_version, failed[index])
                )
            else:
                item.future.set_result(recorded[index])

    async def read_stream(self, stream_id: str, *, up_to_version: int | None = None) -> list[RecordedEvent]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 "
                "AND ($2::int IS NULL OR stream_version <= $2) ORDER BY stream_version",
                stream_id,
                up_to_version,
            )
        return [record_from_row(r) for r in rows]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Several streams in one round trip, each in stream order; a stream without events maps to []."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = ANY($1::text[]) "
                "ORDER BY stream_id, stream_version",
                list(stream_ids),
            )
        found: dict[str, list[RecordedEvent]] = {stream_id: [] for stream_id in stream_ids}
        for row in rows:
            found[row["stream_id"]].append(record_from_row(row))
        return found

    async def read_all(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        up_to: int | None = None,
        stream_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """Events in global order after position `after`; only committed ones are ever visible."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM events
                    WHERE position > $1 AND ($2::bigint IS NULL OR position <= $2)
                      AND ($3::text IS NULL OR stream_id = $3)
                      AND ($4::text[] IS NULL OR type = ANY($4))
                    ORDER BY position LIMIT $5""",
                after,
                up_to,
                stream_id,
                list(types) if types else None,
                limit,
            )
        return [record_from_row(r) for r in rows]

    async def iterate_all(self, *, after: int = 0, up_to: int | None = None) -> AsyncIterator[RecordedEvent]:
        while True:
            page = await self.read_all(after=after, up_to=up_to, limit=1000)
            for event in page:
                yield event
            if len(page) < 1000:
                return
            after = page[-1].position

    async def head_position(self) -> int:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
        return int(value)

    async def stream_version(self, stream_id: str) -> int:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1", stream_id
            )
        return int(value)
