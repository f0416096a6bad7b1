"""The event store against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from contracts.envelope import EventMeta
from contracts.events import JobPaused, JobResumed
from shared.eventstore import ANY_VERSION, NO_STREAM, ConcurrencyError, EventStore
from shared.eventstore.store import EVENTS_CHANNEL, announced_events
from shared.settings import Settings
from shared.tracking import load_position, save_position_lazily

META = EventMeta(actor="tester", correlation_id="corr-1")


def paused(job_id: uuid.UUID) -> JobPaused:
    return JobPaused(job_id=job_id, reason="test")


async def test_append_assigns_versions_and_increasing_positions(store: EventStore) -> None:
    job = uuid.uuid4()
    first = await store.append(
        f"job-{job}", [paused(job), JobResumed(job_id=job)], expected_version=NO_STREAM, meta=META
    )
    second = await store.append(f"job-{job}", [paused(job)], expected_version=2, meta=META)
    assert [e.stream_version for e in first + second] == [1, 2, 3]
    positions = [e.position for e in first + second]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert [e.type for e in await store.read_stream(f"job-{job}")] == ["JobPaused", "JobResumed", "JobPaused"]
    assert first[0].actor == "tester" and first[0].correlation_id == "corr-1"


async def test_fifty_concurrent_appends_at_one_version_exactly_one_wins(store: EventStore) -> None:
    job = uuid.uuid4()
    await store.append(f"job-{job}", [paused(job)], expected_version=NO_STREAM, meta=META)
    results = await asyncio.gather(
        *(
            store.append(f"job-{job}", [JobResumed(job_id=job)], expected_version=1, meta=META)
            for _ in range(50)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, list)]
    losers = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(winners) == 1 and len(losers) == 49
    assert all(err.expected == 1 and err.actual == 2 for err in losers)
    assert await store.stream_version(f"job-{job}") == 2


async def test_fifty_appends_from_separate_stores_exactly_one_wins(pool: asyncpg.Pool) -> None:
    """Separate EventStore objects commit in separate transactions, like separate processes do."""
    job = uuid.uuid4()
    stores = [EventStore(pool) for _ in range(50)]
    await stores[0].append(f"job-{job}", [paused(job)], expected_version=NO_STREAM, meta=META)
    results = await asyncio.gather(
        *(s.append(f"job-{job}", [JobResumed(job_id=job)], expected_version=1, meta=META) for s in stores),
        return_exceptions=True,
    )
    assert sum(isinstance(r, list) for r in results) == 1
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 49
    for s in stores:
        await s.close()


async def test_append_with_any_version_skips_the_check(store: EventStore) -> None:
    job = uuid.uuid4()
    await store.append(f"job-{job}", [paused(job)], expected_version=NO_STREAM, meta=META)
    recorded = await store.append(f"job-{job}", [paused(job)], expected_version=ANY_VERSION, meta=META)
    assert recorded[0].stream_version == 2


async def test_expected_version_ahead_of_the_stream_is_refused(store: EventStore) -> None:
    job = uuid.uuid4()
    with pytest.raises(ConcurrencyError):
        await store.append(f"job-{job}", [paused(job)], expected_version=3, meta=META)
    assert await store.read_stream(f"job-{job}") == []


async def test_events_cannot_be_updated_or_deleted(store: EventStore, pool: asyncpg.Pool) -> None:
    job = uuid.uuid4()
    await store.append(f"job-{job}", [paused(job)], expected_version=NO_STREAM, meta=META)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE events SET actor = 'mallory'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM events")


async def test_concurrent_writers_never_let_a_tail_reader_skip_a_position(pool: asyncpg.Pool) -> None:
    """Eight writers in separate transactions while a reader tails by position: it must see every event."""
    writers = [EventStore(pool) for _ in range(8)]
    reader = EventStore(pool)
    seen: list[int] = []
    done = asyncio.Event()

    async def write(store: EventStore, n: int) -> None:
        job = uuid.uuid4()
        for version in range(n):
            await store.append(f"job-{job}", [paused(job)], expected_version=version, meta=META)

    async def tail() -> None:
        after = 0
        while True:
            page = await reader.read_all(after=after, limit=50)
            seen.extend(e.position for e in page)
            if page:
                after = page[-1].position
            elif done.is_set():
                return
            await asyncio.sleep(0)

    tailer = asyncio.create_task(tail())
    await asyncio.gather(*(write(w, 60) for w in writers))
    done.set()
    await tailer
    everything = [e.position for e in await reader.read_all(limit=10_000)]
    assert len(everything) == 480
    assert seen == everything
    for s in [*writers, reader]:
        await s.close()


async def _notifications(dsn: str) -> tuple[asyncpg.Connection, asyncio.Queue[str]]:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(EVENTS_CHANNEL, lambda *args: received.put_nowait(args[3]))
    return listener, received


async def test_a_commit_notification_announces_its_events_exactly_as_the_store_reads_them(
    store: EventStore, settings: Settings
) -> None:
    listener, received = await _notifications(settings.pg_dsn)
    try:
        job = uuid.uuid4()
        recorded = await store.append(
            f"job-{job}", [paused(job), JobResumed(job_id=job)], expected_version=NO_STREAM, meta=META
        )
        announced = announced_events(await asyncio.wait_for(received.get(), 5))
    finally:
        await listener.close()
    assert announced == await store.read_all(after=recorded[0].position - 1)
    assert [e.id for e in announced] == [e.id for e in recorded]


async def test_a_batch_too_big_to_announce_notifies_only_its_head_position(
    store: EventStore, settings: Settings
) -> None:
    listener, received = await _notifications(settings.pg_dsn)
    try:
        job = uuid.uuid4()
        big = JobPaused(job_id=job, reason="x" * 7000)
        recorded = await store.append(f"job-{job}", [big], expected_version=NO_STREAM, meta=META)
        payload = await asyncio.wait_for(received.get(), 5)
    finally:
        await listener.close()
    assert payload == str(recorded[-1].position)
    assert announced_events(payload) == []


async def test_read_streams_answers_several_streams_in_one_read_each_in_stream_order(
    store: EventStore,
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    a = await store.append(f"job-{first}", [paused(first)], expected_version=NO_STREAM, meta=META)
    b = await store.append(f"job-{second}", [paused(second)], expected_version=NO_STREAM, meta=META)
    a += await store.append(f"job-{first}", [JobResumed(job_id=first)], expected_version=1, meta=META)
    found = await store.read_streams([f"job-{first}", f"job-{second}", "job-none"])
    assert found == {f"job-{first}": a, f"job-{second}": b, "job-none": []}


async def test_a_lazily_saved_position_is_committed_and_leaves_the_connection_synchronous(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await save_position_lazily(conn, "relay:test", 41)
        await save_position_lazily(conn, "relay:test", 42)
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    async with pool.acquire() as other:
        assert await load_position(other, "relay:test") == 42
