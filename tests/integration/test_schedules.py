"""The scheduler in dispatcher replicas against real NATS and PostgreSQL: ticks fire once however many
replicas run, overlap policies decide what a tick becomes, and missed ticks are recorded as ranges."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from contracts import streams
from contracts.envelope import EventMeta, RecordedEvent
from contracts.events import JobCreated, JobPaused, JobResumed, RunRejected, RunRendered, RunRequested
from contracts.specs import JobSpec
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.job_index import JobIndex
from services.dispatcher.schedules import Scheduler
from services.dispatcher.service import DispatcherService
from shared.domain.missed import SkippedTicks, TickSpan
from shared.domain.schedule import CronSchedule
from shared.eventstore.store import NO_STREAM, EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.integration.test_dispatcher_crash import dispatcher_process
from tests.polling import eventually

USER = EventMeta(actor="alice", correlation_id="req-1")
FAST = DispatcherSettings(lease_ttl_s=1.5, shutdown_grace_s=5, schedule_poll_s=0.05)
TICK_TYPES = ("RunRequested", "RunSkipped", "RunQueued")


@asynccontextmanager
async def replica(settings: Settings, name: str) -> AsyncIterator[DispatcherService]:
    async with open_runtime(settings.model_copy(update={"instance": name}), "dispatcher") as runtime:
        service = DispatcherService(runtime, FAST)
        await service.start()
        try:
            yield service
        finally:
            await service.shutdown()


async def create_job(store: EventStore, **spec: Any) -> uuid.UUID:
    job_id = uuid.uuid4()
    job = JobSpec.model_validate({"name": "tick", "execution": "x", **spec})
    await store.append(
        streams.stream_id(streams.JOB, job_id),
        [JobCreated(job_id=job_id, spec=job)],
        expected_version=NO_STREAM,
        meta=USER,
    )
    return job_id


async def tick_events(store: EventStore, job_id: uuid.UUID) -> list[RecordedEvent]:
    events = await store.read_all(types=TICK_TYPES, limit=100_000)
    return [e for e in events if e.data.get("job_id") == str(job_id) and e.data.get("trigger") == "schedule"]


def instant(event: RecordedEvent) -> datetime:
    return datetime.fromisoformat(str(event.data["scheduled_at"]))


async def test_three_replica_processes_fire_every_tick_exactly_once_even_when_one_is_sigkilled(
    settings: Settings, store: EventStore
) -> None:
    job_id = await create_job(store, schedule={"cron": "* * * * * *"}, overlap={"policy": "allow"})
    with contextlib.ExitStack() as stack:
        replicas = [
            stack.enter_context(dispatcher_process(settings, instance=f"replica-{n}")) for n in range(3)
        ]
        await eventually(lambda: fired_by(store, job_id, "replica-0"), timeout_s=30)
        await asyncio.sleep(2)
        replicas[0].send_signal(signal.SIGKILL)
        replicas[0].wait()
        killed_at = datetime.now(UTC)
        await asyncio.sleep(3.5)
    events = await tick_events(store, job_id)
    assert {e.type for e in events} == {"RunRequested"}
    ticks = sorted(instant(e) for e in events)
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks)), ticks
    assert ticks[-1] > killed_at + timedelta(seconds=2), "ticks stopped after the replica was killed"
    # By commit time, not tick: a replica stages a tick up to half a period ahead, before it is due.
    after_kill = {e.actor.split(":")[1] for e in events if e.time > killed_at}
    assert "replica-0" not in after_kill and after_kill, after_kill
    for event in events:
        assert len(await store.read_stream(event.stream_id)) == 1


async def fired_by(store: EventStore, job_id: uuid.UUID, instance: str) -> bool:
    return any(e.actor.split(":")[1] == instance for e in await tick_events(store, job_id))


async def test_forbid_skips_a_tick_while_a_run_is_active_and_says_why(
    settings: Settings, store: EventStore
) -> None:
    job_id = await create_job(store, schedule={"cron": "* * * * * *"}, overlap={"policy": "forbid"})
    async with replica(settings, "solo"):
        events = await eventually(
            lambda: _at_least(store, job_id, lambda es: sum(e.type == "RunSkipped" for e in es) >= 2)
        )
    requested = [e for e in events if e.type == "RunRequested"]
    skipped = [e for e in events if e.type == "RunSkipped"]
    assert len(requested) == 1, "the first run never ended, so no second one may start"
    assert skipped[0].data["code"] == "overlap_forbidden"
    assert requested[0].data["run_id"] in skipped[0].data["reason"]


async def test_replace_requests_a_stop_of_the_running_run_and_starts_the_new_one(
    settings: Settings, store: EventStore
) -> None:
    job_id = await create_job(store, schedule={"cron": "* * * * * *"}, overlap={"policy": "replace"})
    async with replica(settings, "solo"):
        events = await eventually(
            lambda: _at_least(store, job_id, lambda es: sum(e.type == "RunRequested" for e in es) >= 2)
        )
        first = events[0]
        stopped = await eventually(lambda: _has_type(store, first.stream_id, "RunStopRequested"))
    assert stopped.actor.startswith("scheduler:")


async def test_queue_lets_one_run_wait_skips_further_ticks_and_starts_it_when_the_active_run_ends(
    settings: Settings, store: EventStore
) -> None:
    job_id = await create_job(store, schedule={"cron": "* * * * * *"}, overlap={"policy": "queue"})
    async with replica(settings, "solo"):
        events = await eventually(
            lambda: _at_least(store, job_id, lambda es: any(e.type == "RunSkipped" for e in es))
        )
        kinds = [e.type for e in events]
        assert kinds[:2] == ["RunRequested", "RunQueued"]
        assert next(e for e in events if e.type == "RunSkipped").data["code"] == "queue_full"
        first, waiting = events[0], events[1]
        await store.append(
            first.stream_id,
            [RunRejected(run_id=uuid.UUID(first.data["run_id"]), reason="test ends it")],
            expected_version=1,
            meta=USER,
        )
        requested = await eventually(lambda: _has_type(store, waiting.stream_id, "RunRequested"))
    assert requested.data["scheduled_at"] == waiting.data["scheduled_at"]


async def test_ticks_of_a_pause_are_recorded_as_skipped_and_not_caught_up_on_resume(
    settings: Settings, store: EventStore
) -> None:
    job_id = await create_job(store, schedule={"cron": "* * * * * *"}, overlap={"policy": "allow"})
    stream = streams.stream_id(streams.JOB, job_id)
    async with replica(settings, "solo"):
        await eventually(lambda: _at_least(store, job_id, lambda es: len(es) >= 1))
        paused = await store.append(stream, [JobPaused(job_id=job_id)], expected_version=1, meta=USER)
        await asyncio.sleep(2.5)
        resumed = await store.append(stream, [JobResumed(job_id=job_id)], expected_version=2, meta=USER)
        skipped = await eventually(lambda: _schedule_events(store, job_id))
        await eventually(
            lambda: _at_least(store, job_id, lambda es: any(instant(e) > resumed[0].time for e in es))
        )
    record = skipped[0].data
    assert record["reason"] == "paused" and record["count"] >= 2
    fired = await tick_events(store, job_id)
    # A tick may have been staged just before the pause; it is withdrawn at its time (tested below).
    during = [e for e in fired if paused[0].time < instant(e) < resumed[0].time and e.time > paused[0].time]
    assert during == [], "a tick of the pause was fired"
    first, last = datetime.fromisoformat(record["first"]), datetime.fromisoformat(record["last"])
    assert first <= paused[0].time + timedelta(seconds=2) and last <= resumed[0].time


async def test_missed_ticks_while_no_dispatcher_ran_are_recorded_and_the_latest_one_runs(
    settings: Settings, store: EventStore
) -> None:
    job_id = await create_job(
        store,
        schedule={"cron": "* * * * * *", "missed": {"policy": "latest", "grace_s": 0}},
        overlap={"policy": "allow"},
    )
    await asyncio.sleep(3.2)
    async with replica(settings, "late"):
        skipped = await eventually(lambda: _schedule_events(store, job_id))
        fired = await eventually(lambda: tick_events(store, job_id))
    record = skipped[0].data
    assert record["reason"] == "superseded" and record["count"] >= 2
    caught_up = min(instant(e) for e in fired)
    assert caught_up > datetime.fromisoformat(record["last"]), "a skipped tick also ran"


async def _at_least(
    store: EventStore, job_id: uuid.UUID, enough: Callable[[list[RecordedEvent]], bool]
) -> list[RecordedEvent] | None:
    events = await tick_events(store, job_id)
    return events if enough(events) else None


async def _has_type(store: EventStore, stream_id: str, event_type: str) -> RecordedEvent | None:
    return next((e for e in await store.read_stream(stream_id) if e.type == event_type), None)


async def _schedule_events(store: EventStore, job_id: uuid.UUID) -> list[RecordedEvent]:
    return await store.read_stream(streams.stream_id(streams.SCHEDULE, job_id))


async def test_a_failed_run_is_retried_with_backoff_and_attempts_link_to_the_first_run(
    settings: Settings, store: EventStore
) -> None:
    retry = {"max_attempts": 3, "initial_delay_s": 0.3, "multiplier": 2, "max_delay_s": 10, "jitter": 0}
    job_id = await create_job(store, retry=retry)
    first_id = uuid.uuid4()
    failing = {"command": "exit 3"}
    async with replica(settings, "solo"):
        stream = streams.stream_id(streams.RUN, first_id)
        await store.append(
            stream,
            [
                RunRequested(run_id=first_id, job_id=job_id, execution="x"),
                RunRendered(run_id=first_id, driver="local", payload=failing, execution_version=1),
            ],
            expected_version=NO_STREAM,
            meta=USER,
        )
        chain = [stream]
        for attempt in (2, 3):
            scheduled = await eventually(functools.partial(_has_type, store, chain[-1], "RunRetryScheduled"))
            next_stream = streams.stream_id(streams.RUN, scheduled.data["next_run_id"])
            requested = await eventually(functools.partial(_has_type, store, next_stream, "RunRequested"))
            assert requested.data["attempt"] == attempt and requested.data["trigger"] == "retry"
            assert requested.data["first_run_id"] == str(first_id)
            ended = next(e for e in await store.read_stream(chain[-1]) if e.type == "RunFailed")
            delay = datetime.fromisoformat(scheduled.data["due_at"]) - ended.time
            assert delay == timedelta(seconds=0.3 * 2 ** (attempt - 2))
            assert requested.time >= datetime.fromisoformat(scheduled.data["due_at"])
            await store.append(
                next_stream,
                [
                    RunRendered(
                        run_id=uuid.UUID(scheduled.data["next_run_id"]),
                        driver="local",
                        payload=failing,
                        execution_version=1,
                    )
                ],
                expected_version=1,
                meta=USER,
            )
            chain.append(next_stream)
        await eventually(lambda: _has_type(store, chain[-1], "RunFailed"))
        await asyncio.sleep(0.5)
    assert await _has_type(store, chain[-1], "RunRetryScheduled") is None, "max_attempts counts the first run"


async def test_a_concurrency_limit_lets_that_many_runs_overlap_and_skips_the_next_tick(
    settings: Settings, store: EventStore
) -> None:
    overlap = {"policy": "allow", "concurrency_limit": 2}
    job_id = await create_job(store, schedule={"cron": "* * * * * *"}, overlap=overlap)
    async with replica(settings, "solo"):
        events = await eventually(
            lambda: _at_least(store, job_id, lambda es: any(e.type == "RunSkipped" for e in es))
        )
    assert [e.type for e in events[:3]] == ["RunRequested", "RunRequested", "RunSkipped"]
    assert events[2].data["code"] == "concurrency_limit_reached"


async def test_a_year_of_skipped_every_second_ticks_is_one_range_recorded_at_once(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    job_id = await create_job(store, schedule={"cron": "* * * * * *"})
    index = JobIndex()
    for event in await store.read_stream(streams.stream_id(streams.JOB, job_id)):
        index.apply(event)
    scheduler = Scheduler(store, pool, index, "scheduler:test")
    now = datetime.now(UTC).replace(microsecond=0)
    year = SkippedTicks(TickSpan(now - timedelta(days=365), now), "missed")
    schedule = CronSchedule.parse("* * * * * *")
    began = time.monotonic()
    await scheduler.record_skipped(index.jobs[job_id], schedule, [year])
    await scheduler.record_skipped(index.jobs[job_id], schedule, [year])
    assert time.monotonic() - began < 5
    [record] = await _schedule_events(store, job_id)
    assert record.data["count"] is None, "too many to count, but the range names every tick"
    assert datetime.fromisoformat(record.data["first"]) == now - timedelta(days=365) + timedelta(seconds=1)
    assert datetime.fromisoformat(record.data["last"]) == now
