"""The projector against real NATS and PostgreSQL: ordered, exactly-once, and crash-safe.

The projection under test writes one row per application into a table, so a double application or a
skipped event shows up as a wrong row list. Run as a module, this file is the projector process the
SIGKILL test kills: `python -m tests.integration.test_projector` with `BATCHYARD_*` settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from contracts.envelope import CloudEvent, EventMeta, RecordedEvent
from contracts.events import JobPaused
from contracts.subjects import events_stream_name, events_subject
from shared.bus.projector import Projector
from shared.bus.relay import Relay
from shared.bus.streams import connect
from shared.eventstore import NO_STREAM, EventStore
from shared.eventstore.store import create_pool, migrate
from shared.settings import Settings
from shared.tracking import load_position

META = EventMeta(actor="tester", correlation_id="corr-projector")
ATTEMPTS_FILE_VARIABLE = "BATCHYARD_TEST_ATTEMPTS_FILE"
PROJECTED_TABLE = """CREATE TABLE IF NOT EXISTS projected (
    seq bigserial PRIMARY KEY, position bigint NOT NULL, event_id uuid NOT NULL, replica text NOT NULL)"""


class RowPerEvent:
    """A read model that remembers every application, in the order it happened, and who applied it."""

    name = "rows"

    def __init__(self, replica: str = "only", delay_s: float = 0.0, attempts: Path | None = None) -> None:
        self.replica = replica
        self.delay_s = delay_s
        self.attempts = attempts

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.attempts is not None:
            with self.attempts.open("a") as attempts:
                attempts.write(f"{event.position}\n")
        await conn.execute(
            "INSERT INTO projected (position, event_id, replica) VALUES ($1, $2, $3)",
            event.position,
            event.id,
            self.replica,
        )


async def projected(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT position, event_id, replica FROM projected ORDER BY seq"))


async def tracking(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await load_position(conn, RowPerEvent.name)


async def wait_for_tracking(pool: asyncpg.Pool, position: int, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await tracking(pool) >= position:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"projection tracking is at {await tracking(pool)}, expected {position}")


async def wait_until_following_the_bus(js: JetStreamContext, prefix: str, within_s: float = 10.0) -> None:
    """The active projector has caught up from the store once its bus consumer exists."""
    deadline = time.monotonic() + within_s
    while (await js.stream_info(events_stream_name(prefix))).state.consumer_count < 1:
        assert time.monotonic() < deadline, "no projector became active"
        await asyncio.sleep(0.05)


async def append_paused(store: EventStore, count: int, streams: int = 1) -> list[RecordedEvent]:
    jobs = [uuid.uuid4() for _ in range(streams)]
    versions = dict.fromkeys(jobs, NO_STREAM)
    recorded: list[RecordedEvent] = []
    for n in range(count):
        job = jobs[n % streams]
        recorded += await store.append(
            f"job-{job}", [JobPaused(job_id=job)], expected_version=versions[job], meta=META
        )
        versions[job] += 1
    return recorded


async def publish_by_hand(
    js: JetStreamContext, prefix: str, event: RecordedEvent, prev_position: int, msg_id: str | None = None
) -> None:
    envelope = CloudEvent.from_recorded(event, "batchyard/test", prev_position)
    await js.publish(
        events_subject(prefix, event.stream_type, event.type),
        envelope.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or str(event.id)},
    )


@contextlib.asynccontextmanager
async def running(*tasks: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[list[asyncio.Task[None]]]:
    started = [asyncio.create_task(task()) for task in tasks]
    try:
        yield started
    finally:
        for task in started:
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)


async def append_in_one_transaction(store: EventStore, count: int) -> list[RecordedEvent]:
    job = uuid.uuid4()
    events = [JobPaused(job_id=job) for _ in range(count)]
    return await store.append(f"job-{job}", events, expected_version=NO_STREAM, meta=META)


async def start_slow_projector(settings: Settings, attempts: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "BATCHYARD_PG_DSN": settings.pg_dsn,
        "BATCHYARD_NATS_URL": settings.nats_url,
        "BATCHYARD_BUS_PREFIX": settings.bus_prefix,
        ATTEMPTS_FILE_VARIABLE: str(attempts),
    }
    return await asyncio.create_subprocess_exec(sys.executable, "-m", __name__, env=env)


async def sigkill(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGKILL)
    await process.wait()


def read_attempts(attempts: Path) -> list[int]:
    return [int(line) for line in attempts.read_text().split()] if attempts.exists() else []


async def wait_for_attempts(
    attempts: Path, enough: Callable[[list[int]], bool], within_s: float = 15.0
) -> None:
    deadline = time.monotonic() + within_s
    while not enough(read_attempts(attempts)):
        assert time.monotonic() < deadline, "the projector process did not get that far"
        await asyncio.sleep(0.01)


def relay(store: EventStore, js: JetStreamContext, settings: Settings) -> Relay:
    return Relay(store, js, settings.pg_dsn, settings.bus_prefix, "batchyard/test")


def projector(
    store: EventStore, js: JetStreamContext, settings: Settings, projection: RowPerEvent
) -> Projector:
    return Projector(store, js, settings.pg_dsn, settings.bus_prefix, projection)


async def create_table(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(PROJECTED_TABLE)


async def test_projector_applies_every_event_once_in_global_order_and_tracks_the_position(
    store: EventStore, js: JetStreamContext, settings: Settings, pool: asyncpg.Pool
) -> None:
    await create_table(pool)
    events = await append_paused(store, 300, streams=30)
    async with running(relay(store, js, settings).run, projector(store, js, settings, RowPerEvent()).run):
        await wait_for_tracking(pool, events[-1].position)
    assert [r["position"] for r in await projected(pool)] == [e.position for e in events]


async def test_a_duplicate_message_is_skipped(
    store: EventStore, js: JetStreamContext, settings: Settings, pool: asyncpg.Pool
) -> None:
    await create_table(pool)
    prefix = settings.bus_prefix
    async with running(projector(store, js, settings, RowPerEvent()).run):
        await wait_until_following_the_bus(js, prefix)
        first, second = await append_paused(store, 2)
        await publish_by_hand(js, prefix, first, 0)
        await publish_by_hand(js, prefix, second, first.position)
        await publish_by_hand(js, prefix, second, first.position, msg_id="republished-after-the-window")
        await publish_by_hand(js, prefix, first, 0, msg_id="republished-after-the-window-too")
        await wait_for_tracking(pool, second.position)
        await asyncio.sleep(0.3)
    assert [r["event_id"] for r in await projected(pool)] == [first.id, second.id]


async def test_a_message_ahead_of_a_missing_one_makes_the_projector_fill_the_gap_from_the_store(
    store: EventStore, js: JetStreamContext, settings: Settings, pool: asyncpg.Pool
) -> None:
    await create_table(pool)
    prefix = settings.bus_prefix
    async with running(projector(store, js, settings, RowPerEvent()).run):
        await wait_until_following_the_bus(js, prefix)
        events = await append_paused(store, 4, streams=2)
        await publish_by_hand(js, prefix, events[2], events[1].position)
        await wait_for_tracking(pool, events[2].position)
        await publish_by_hand(js, prefix, events[0], 0)
        await publish_by_hand(js, prefix, events[1], events[0].position)
        await publish_by_hand(js, prefix, events[3], events[2].position)
        await wait_for_tracking(pool, events[3].position)
    assert [r["event_id"] for r in await projected(pool)] == [e.id for e in events]


async def test_a_projector_killed_mid_batch_resumes_without_applying_anything_twice(
    store: EventStore, js: JetStreamContext, settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A slow projector process is SIGKILLed while its transaction is open: once while catching up
    from the store, once while following the bus after a committed catch-up. Its work dies with it,
    and the next projector carries on from the tracking position, applying each event once."""
    await create_table(pool)
    rng = random.Random(7)
    events = await append_in_one_transaction(store, 400)

    attempts = tmp_path / "attempts-catching-up"
    process = await start_slow_projector(settings, attempts)
    await wait_for_attempts(attempts, lambda tried: len(tried) >= rng.randint(20, 300))
    await sigkill(process)
    assert await tracking(pool) == 0 and await projected(pool) == [], "a killed transaction left traces"

    attempts = tmp_path / "attempts-following-the-bus"
    process = await start_slow_projector(settings, attempts)
    async with running(relay(store, js, settings).run):
        await wait_for_tracking(pool, events[-1].position)
        more = await append_in_one_transaction(store, 300)
        await wait_for_attempts(
            attempts, lambda tried: len([p for p in tried if p > events[-1].position]) >= 20
        )
        await sigkill(process)
        committed = await tracking(pool)
        tried = read_attempts(attempts)
        assert committed < max(tried), "the kill did not land inside a transaction"
        events += more
        assert [r["position"] for r in await projected(pool)] == [
            e.position for e in events if e.position <= committed
        ]

        async with running(projector(store, js, settings, RowPerEvent()).run):
            await wait_for_tracking(pool, events[-1].position)
    assert [r["position"] for r in await projected(pool)] == [e.position for e in events]


async def test_of_two_projector_replicas_one_is_active_and_the_other_takes_over_when_it_stops(
    store: EventStore, js: JetStreamContext, settings: Settings, pool: asyncpg.Pool
) -> None:
    await create_table(pool)
    first = await append_paused(store, 50, streams=5)
    async with running(relay(store, js, settings).run):
        replicas = {
            name: asyncio.create_task(projector(store, js, settings, RowPerEvent(name)).run())
            for name in ("replica-1", "replica-2")
        }
        try:
            await wait_for_tracking(pool, first[-1].position)
            active = {r["replica"] for r in await projected(pool)}
            assert len(active) == 1, f"both replicas projected: {active}"
            (leader,) = active
            replicas[leader].cancel()
            await asyncio.gather(replicas[leader], return_exceptions=True)
            second = await append_paused(store, 50, streams=5)
            await wait_for_tracking(pool, second[-1].position)
        finally:
            for task in replicas.values():
                task.cancel()
            await asyncio.gather(*replicas.values(), return_exceptions=True)
    rows = await projected(pool)
    assert [r["position"] for r in rows] == [e.position for e in first + second]
    assert {r["replica"] for r in rows[len(first) :]} == set(replicas) - {leader}


async def _project_until_killed() -> None:
    """The projector process of the SIGKILL test: slow enough that a kill lands inside a batch."""
    settings = Settings()
    pool = await create_pool(settings.pg_dsn, 2)
    await migrate(pool)
    nc = await connect(settings.nats_url, "projector-under-test")
    projection = RowPerEvent("killed", delay_s=0.002, attempts=Path(os.environ[ATTEMPTS_FILE_VARIABLE]))
    await Projector(EventStore(pool), nc.jetstream(), settings.pg_dsn, settings.bus_prefix, projection).run()


if __name__ == "__main__":
    asyncio.run(_project_until_killed())
