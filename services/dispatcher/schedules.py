"""The scheduler: every dispatcher replica fires every scheduled job's ticks; the store keeps one.

A tick's run id is derived from the job and the scheduled time (`tick_run_id`), and whatever the tick
becomes (`RunRequested`, `RunSkipped` or `RunQueued`) is appended to that run's stream at version 0,
so however many replicas fire a tick, one append wins and the others get a concurrency error, which
means "already fired". No leader election, no lease: a replica that dies leaves the others firing.

Each job runs a loop: plan the ticks since the last one handled (`plan_missed_ticks`), record the
skipped ones as ranges on the job's schedule stream, fire the ones to run (overlap policy decided from
the job's active runs in the store), then sleep until the next tick is due (its jitter included).
See docs/decisions/0160-scheduler-on-every-replica.md.

A tick is staged ahead of its time when its overlap policy lets it start (decision 0175): its request,
carrying `start_at`, is appended up to `lead_s` before the tick, so rendering and preparing the run are
done by the time it is due and only its start is left for the tick itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice

import asyncpg

from contracts import streams
from contracts.base import Event
from contracts.envelope import EventMeta
from contracts.events import RunQueued, RunRequested, RunSkipped, RunStopRequested, TicksSkipped
from services.dispatcher.job_index import IndexedJob, JobIndex
from shared.domain.missed import SkippedTicks, plan_missed_ticks, skipped_while_paused
from shared.domain.policies import (
    Enqueue,
    OverlapDecision,
    Skip,
    Start,
    StopThenStart,
    decide_overlap,
    next_to_dequeue,
)
from shared.domain.run_lifecycle import refusal, run_state
from shared.domain.schedule import CronSchedule, due_at, fire_times_after, staging_time, tick_run_id
from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.job_runs import job_runs
from shared.eventstore.store import NO_STREAM, EventStore

log = logging.getLogger(__name__)

ERROR_BACKOFF_S = 1.0
# The most ticks of a skipped range that are counted; beyond it `TicksSkipped.count` is left out.
COUNT_LIMIT = 100_000

# A tick staged for the future before the job's schedule last took effect is withdrawn by the
# dispatcher at its time (`staged_run_withdrawal`), so it does not count as handled.
_LAST_FIRED = """
SELECT max((data->>'scheduled_at')::timestamptz) FROM events
WHERE type IN ('RunRequested', 'RunSkipped', 'RunQueued') AND data->>'job_id' = $1
  AND data->>'trigger' = 'schedule'
  AND ((data->>'scheduled_at')::timestamptz <= now() OR recorded_at >= $2)
"""


def _count(ticks: Iterator[datetime]) -> int | None:
    counted = sum(1 for _ in islice(ticks, COUNT_LIMIT + 1))
    return counted if counted <= COUNT_LIMIT else None


def utcnow() -> datetime:
    return datetime.now(UTC)


def run_request(job: IndexedJob, run_id: uuid.UUID, **fields: object) -> RunRequested:
    """A run of the job as it is configured now: the request snapshots the configuration."""
    spec = job.spec
    return RunRequested.model_validate(
        {
            "run_id": run_id,
            "job_id": job.job_id,
            "job_version": job.version,
            "execution": spec.execution,
            "dimensions": spec.dimensions,
            "params": spec.params,
            **fields,
        }
    )


class Triggers:
    """Turns a trigger of a job into what its overlap policy makes of it, once across replicas."""

    def __init__(self, store: EventStore, pool: asyncpg.Pool, actor: str) -> None:
        self.store = store
        self.pool = pool
        self.actor = actor

    def meta(self, correlation_id: str, causation_id: str | None = None) -> EventMeta:
        return EventMeta(actor=self.actor, correlation_id=correlation_id, causation_id=causation_id)

    async def claim(self, run_id: uuid.UUID, event: Event, meta: EventMeta) -> bool:
        """Append the first event of a run stream; False when another replica already did."""
        try:
            await self.store.append(
                streams.stream_id(streams.RUN, run_id), [event], expected_version=NO_STREAM, meta=meta
            )
        except ConcurrencyError:
            return False
        return True

    async def _overlap(self, job: IndexedJob, run_id: uuid.UUID) -> OverlapDecision | None:
        """What the job's overlap policy makes of the tick's run; None when the policy never looks at the
        job's runs (`allow` without a limit)."""
        overlap = job.spec.overlap
        if overlap.policy == "allow" and overlap.concurrency_limit is None:
            return None
        runs = await job_runs(self.pool, job.job_id)
        # Another replica may have claimed this very tick a moment ago: it is not an overlap.
        active = [r for r in runs.active if r != run_id]
        queued = [r for r in runs.queued if r != run_id]
        return decide_overlap(overlap, active, queued)

    async def stage(self, job: IndexedJob, run_id: uuid.UUID, scheduled_at: datetime, due: datetime) -> bool:
        """Request the tick's run now, to start at `due`, if its overlap policy would start it now;
        False leaves the tick to be fired (and its policy decided) at its time. Whichever replica's
        request is kept, the tick is handled."""
        decision = await self._overlap(job, run_id)
        if decision is not None and not isinstance(decision, Start):
            return False
        request = run_request(job, run_id, trigger="schedule", scheduled_at=scheduled_at, start_at=due)
        if await self.claim(run_id, request, self.meta(f"tick-{run_id}")):
            log.debug("tick %s of job %s staged to start at %s", scheduled_at, job.job_id, due)
        return True

    async def fire(self, job: IndexedJob, run_id: uuid.UUID, scheduled_at: datetime) -> None:
        meta = self.meta(f"tick-{run_id}")
        decision = await self._overlap(job, run_id)
        if isinstance(decision, Skip):
            skipped = RunSkipped(
                run_id=run_id,
                job_id=job.job_id,
                trigger="schedule",
                scheduled_at=scheduled_at,
                code=decision.code,
                reason=decision.reason,
            )
            if await self.claim(run_id, skipped, meta):
                log.info("tick %s of job %s skipped: %s", scheduled_at, job.job_id, decision.reason)
            return
        if isinstance(decision, Enqueue):
            queued_event = RunQueued(
                run_id=run_id, job_id=job.job_id, trigger="schedule", scheduled_at=scheduled_at
            )
            if await self.claim(run_id, queued_event, meta):
                await self.dequeue(job)
            return
        request = run_request(job, run_id, trigger="schedule", scheduled_at=scheduled_at)
        if not await self.claim(run_id, request, meta) or not isinstance(decision, StopThenStart):
            return
        # The tick is claimed first, so a replica that lost the race never stops anything; the new
        # run starts while the old ones stop (decision 0072 leaves that sequencing to us).
        for victim in decision.stop:
            await self.request_stop(victim, f"replaced by run {run_id}", meta)

    async def request_stop(self, run_id: uuid.UUID, why: str, meta: EventMeta) -> None:
        stream_id = streams.stream_id(streams.RUN, run_id)
        while True:
            state = run_state(await self.store.read_stream(stream_id))
            event = RunStopRequested(run_id=run_id)
            if refusal(state, event) is not None:
                return
            try:
                await self.store.append(stream_id, [event], expected_version=state.version, meta=meta)
            except ConcurrencyError:
                continue
            log.info("stop of %s requested: %s", run_id, why)
            return

    async def dequeue(self, job: IndexedJob) -> None:
        """Start the waiting run of a `queue` job if the limit leaves room; at version 1 of its stream,
        so one replica does it."""
        runs = await job_runs(self.pool, job.job_id)
        waiting = next_to_dequeue(job.spec.overlap, runs.active, runs.queued)
        if waiting is None:
            return
        stream_id = streams.stream_id(streams.RUN, waiting)
        events = await self.store.read_stream(stream_id)
        if len(events) != 1 or not isinstance(queued := events[0].payload(), RunQueued):
            return
        request = run_request(
            job,
            waiting,
            trigger=queued.trigger,
            scheduled_at=queued.scheduled_at,
            overrides=queued.overrides,
        )
        meta = self.meta(events[0].correlation_id, str(events[0].id))
        with contextlib.suppress(ConcurrencyError):
            await self.store.append(stream_id, [request], expected_version=1, meta=meta)


async def sleep_until(instant: datetime) -> None:
    await asyncio.sleep(max((instant - utcnow()).total_seconds(), 0.0))


class Scheduler:
    def __init__(
        self, store: EventStore, pool: asyncpg.Pool, index: JobIndex, actor: str, lead_s: float = 0.0
    ) -> None:
        self.store = store
        self.pool = pool
        self.index = index
        self.lead_s = lead_s
        self.triggers = Triggers(store, pool, actor)
        self._loops: dict[uuid.UUID, asyncio.Task[None]] = {}

    def job_changed(self, job_id: uuid.UUID) -> None:
        """(Re)start or end the job's loop after its configuration changed."""
        loop = self._loops.pop(job_id, None)
        if loop is not None:
            loop.cancel()
        job = self.index.jobs.get(job_id)
        if job is not None and job.scheduled:
            self._loops[job_id] = asyncio.create_task(self._run(job), name=f"schedule-{job_id}")

    async def stop(self) -> None:
        loops = list(self._loops.values())
        self._loops.clear()
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    async def _run(self, job: IndexedJob) -> None:
        while True:
            try:
                await self._follow(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduling job %s failed; starting over", job.job_id)
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def _follow(self, job: IndexedJob) -> None:
        spec = job.spec.schedule
        assert spec is not None
        schedule = CronSchedule.from_spec(spec)
        handled = await self._handled_through(job, schedule)
        while True:
            plan = plan_missed_ticks(spec, handled_through=handled, now=utcnow())
            await self.record_skipped(job, schedule, list(plan.skipped))
            for span in plan.run:
                for tick in span.ticks(schedule):
                    await self.triggers.fire(job, tick_run_id(job.job_id, tick), tick)
            handled = plan.handled_through
            upcoming = next(fire_times_after(schedule, handled))
            due = due_at(job.job_id, upcoming, spec.jitter_s)
            stage_at = staging_time(handled, due, self.lead_s)
            if stage_at is not None:
                await sleep_until(stage_at)
                if await self.triggers.stage(job, tick_run_id(job.job_id, upcoming), upcoming, due):
                    handled = upcoming
                    continue
            await sleep_until(due)

    async def _handled_through(self, job: IndexedJob, schedule: CronSchedule) -> datetime:
        """The last tick some replica already handled, or when the schedule took effect if later.
        After a resume the ticks of the pause are recorded as skipped, never caught up."""
        async with self.pool.acquire() as conn:
            fired = await conn.fetchval(_LAST_FIRED, str(job.job_id), job.since)
        skipped = await self._skipped_through(job.job_id)
        done = max((t for t in (fired, skipped) if t is not None), default=None)
        if job.resumed and job.paused_since is not None:
            paused_after = max(done, job.paused_since) if done is not None else job.paused_since
            if paused_after < job.since:
                paused = skipped_while_paused(schedule, paused_after, job.since)
                await self.record_skipped(job, schedule, [paused] if paused else [])
        return max(done, job.since) if done is not None else job.since

    async def _skipped_through(self, job_id: uuid.UUID) -> datetime | None:
        events = await self.store.read_stream(streams.stream_id(streams.SCHEDULE, job_id))
        payloads = [e.payload() for e in events]
        throughs = [p.through for p in payloads if isinstance(p, TicksSkipped)]
        return max(throughs, default=None)

    async def record_skipped(
        self, job: IndexedJob, schedule: CronSchedule, skipped: list[SkippedTicks]
    ) -> None:
        """Append each skipped range once across replicas: ranges are clipped to what the job's schedule
        stream already records, and appended at the version read."""
        if not skipped:
            return
        stream_id = streams.stream_id(streams.SCHEDULE, job.job_id)
        while True:
            recorded = [e.payload() for e in await self.store.read_stream(stream_id)]
            through = max((p.through for p in recorded if isinstance(p, TicksSkipped)), default=None)
            events: list[Event] = []
            for item in skipped:
                after = item.span.after if through is None else max(item.span.after, through)
                if after >= item.span.through:
                    continue
                span = type(item.span)(after, item.span.through)
                first, last = span.first(schedule), span.last(schedule)
                if first is None or last is None:
                    continue
                events.append(
                    TicksSkipped(
                        job_id=job.job_id,
                        after=span.after,
                        through=span.through,
                        first=first,
                        last=last,
                        count=_count(span.ticks(schedule)),
                        reason=item.reason,
                    )
                )
            if not events:
                return
            meta = self.triggers.meta(f"schedule-{job.job_id}")
            try:
                await self.store.append(stream_id, events, expected_version=len(recorded), meta=meta)
            except ConcurrencyError:
                continue
            for event in events:
                log.info("job %s: ticks skipped %s", job.job_id, event)
            return
