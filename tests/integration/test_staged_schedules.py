"""Scheduled runs staged ahead of their tick (decision 0175), with the renderer and dispatcher replicas
against real NATS and PostgreSQL: requested and rendered before the tick, started on it and not before,
withdrawn when the job is paused meanwhile, ended at once when stopped, and handed to another replica
when the one holding them shuts down."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts import streams
from contracts.envelope import RecordedEvent
from contracts.events import JobPaused, JobUpdated, RunStopRequested
from contracts.specs import ExecutionSpec, JobSpec
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.service import DispatcherService
from services.renderer.service import start as start_renderer
from shared.eventstore.store import EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.integration.test_dispatcher import dispatcher, wait_for
from tests.integration.test_renderer import define_execution
from tests.integration.test_schedules import USER, create_job, tick_events
from tests.polling import eventually

LEAD_S = 2.0
STAGED = DispatcherSettings(lease_ttl_s=1.5, shutdown_grace_s=5, schedule_poll_s=0.05, schedule_lead_s=LEAD_S)
EVERY_4_S = {"cron": "*/4 * * * * *"}


@pytest.fixture
async def renderer(settings: Settings, store: EventStore, tmp_path: Path) -> AsyncIterator[Path]:
    """A renderer and an execution `stamp` whose run writes the time it really began to a file."""
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    template = "{command: ['sh', '-c', 'date +%s.%N > " + str(stamps) + "/$BATCHYARD_RUN_ID']}"
    await define_execution(store, "stamp", ExecutionSpec(driver="local", payload_template=template))
    async with open_runtime(settings, "renderer") as runtime:
        shutdown = await start_renderer(runtime)
        try:
            yield stamps
        finally:
            await shutdown()


def scheduled_at(event: RecordedEvent) -> datetime:
    return datetime.fromisoformat(str(event.data["scheduled_at"]))


async def staged_tick(store: EventStore, job_id: uuid.UUID, ahead_s: float) -> RecordedEvent:
    """The first tick of the job that was requested at least `ahead_s` before its time."""

    async def found() -> RecordedEvent | None:
        requests = [e for e in await tick_events(store, job_id) if e.type == "RunRequested"]
        return next((e for e in requests if scheduled_at(e) - e.time >= timedelta(seconds=ahead_s)), None)

    staged: RecordedEvent = await eventually(found, timeout_s=15)
    return staged


@asynccontextmanager
async def a_staged_run(
    settings: Settings, store: EventStore
) -> AsyncIterator[tuple[uuid.UUID, RecordedEvent, list[RecordedEvent]]]:
    """A job every 4 s and a dispatcher replica, once a tick of the job is staged and rendered: the job,
    the tick's request and its run's events so far."""
    job_id = await create_job(store, execution="stamp", schedule=EVERY_4_S)
    async with dispatcher(settings, STAGED):
        request = await staged_tick(store, job_id, LEAD_S - 0.5)
        rendered = await wait_for(store, request.stream_id, lambda types: "RunRendered" in types)
        yield job_id, request, rendered


async def test_a_tick_is_requested_and_rendered_ahead_and_its_command_starts_on_time_not_before(
    settings: Settings, store: EventStore, renderer: Path
) -> None:
    async with a_staged_run(settings, store) as (_, request, _):
        events = await wait_for(store, request.stream_id, lambda types: "RunSucceeded" in types)
    tick = scheduled_at(request)
    by_type = {e.type: e for e in events}
    assert request.data["start_at"] is not None and datetime.fromisoformat(request.data["start_at"]) == tick
    assert by_type["RunRendered"].time < tick
    assert tick <= by_type["RunStarted"].time < tick + timedelta(seconds=1)
    began = float((renderer / str(request.data["run_id"])).read_text())
    assert began >= tick.timestamp(), "the command ran before its tick"


async def test_a_staged_run_is_withdrawn_without_starting_when_its_job_is_paused_before_its_tick(
    settings: Settings, store: EventStore, renderer: Path
) -> None:
    async with a_staged_run(settings, store) as (job_id, request, _):
        assert datetime.now(UTC) < scheduled_at(request), "the tick came before the test could pause"
        job_stream = streams.stream_id(streams.JOB, job_id)
        await store.append(job_stream, [JobPaused(job_id=job_id)], expected_version=1, meta=USER)
        events = await wait_for(store, request.stream_id, lambda types: "RunStopped" in types)
    types = [e.type for e in events]
    assert "RunStarted" not in types
    assert "the job was paused" in events[-1].data["reason"]
    assert not (renderer / str(request.data["run_id"])).exists(), "the withdrawn run's command ran"


async def test_a_rescheduled_job_withdraws_its_staged_tick_and_fires_the_new_schedule_from_the_change(
    settings: Settings, store: EventStore, renderer: Path
) -> None:
    async with a_staged_run(settings, store) as (job_id, request, _):
        spec = JobSpec.model_validate(
            {"name": "tick", "execution": "stamp", "schedule": {"cron": "* * * * * *"}}
        )
        job_stream = streams.stream_id(streams.JOB, job_id)
        update = JobUpdated(job_id=job_id, spec=spec, changed=["schedule"])
        [changed] = await store.append(job_stream, [update], expected_version=1, meta=USER)
        withdrawn = await wait_for(store, request.stream_id, lambda types: "RunStopped" in types)

        async def new_tick_before_the_withdrawn_one() -> RecordedEvent | None:
            ticks = [e for e in await tick_events(store, job_id) if e.stream_id != request.stream_id]
            return next((e for e in ticks if changed.time < scheduled_at(e) < scheduled_at(request)), None)

        assert await eventually(new_tick_before_the_withdrawn_one)
    assert "schedule changed" in withdrawn[-1].data["reason"]
    assert "RunStarted" not in [e.type for e in withdrawn]


async def test_a_stop_requested_for_a_staged_run_ends_it_at_once_without_starting(
    settings: Settings, store: EventStore, renderer: Path
) -> None:
    async with a_staged_run(settings, store) as (_, request, rendered):
        run_id = uuid.UUID(str(request.data["run_id"]))
        await store.append(
            request.stream_id, [RunStopRequested(run_id=run_id)], expected_version=len(rendered), meta=USER
        )
        events = await wait_for(store, request.stream_id, lambda types: "RunStopped" in types)
    assert "RunStarted" not in [e.type for e in events]
    assert events[-1].time < scheduled_at(request), "the stop waited for the tick"
    assert events[-1].data["stopped_by"] == "alice"


async def test_a_replica_shutting_down_hands_its_staged_runs_to_another_that_starts_them(
    settings: Settings, store: EventStore, renderer: Path
) -> None:
    lead = STAGED.model_copy(update={"schedule_lead_s": 3.0})
    job_id = await create_job(store, execution="stamp", schedule={"cron": "*/6 * * * * *"})
    async with AsyncExitStack() as stack:
        replicas: list[DispatcherService] = []
        for name in ("a", "b"):
            runtime = await stack.enter_async_context(
                open_runtime(settings.model_copy(update={"instance": name}), "dispatcher")
            )
            replicas.append(DispatcherService(runtime, lead))

        async def shut_down_running() -> None:
            for running in replicas:
                await running.shutdown()

        stack.push_async_callback(shut_down_running)
        for starting in replicas:
            await starting.start()
        request = await staged_tick(store, job_id, 2.0)
        await wait_for(store, request.stream_id, lambda types: "RunRendered" in types)

        async def holder() -> DispatcherService | None:
            return next((r for r in replicas if request.stream_id in r.dispatcher.active), None)

        holding = await eventually(holder)
        other = next(r for r in replicas if r is not holding)
        replicas.remove(holding)
        await holding.shutdown()
        events = await wait_for(store, request.stream_id, lambda types: "RunSucceeded" in types)
    started = next(e for e in events if e.type == "RunStarted")
    assert started.data["dispatcher"] == other.identity
    assert scheduled_at(request) <= started.time < scheduled_at(request) + timedelta(seconds=1)
