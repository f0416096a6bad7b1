"""Wiring of the scheduler, retries and queued runs inside a dispatcher replica.

Job events are folded first (a full catch-up from the store), then every scheduled job's loop starts,
then the replica keeps following the store for job changes and for run ends. Schedules handed to Nomad
(`handover`) hear of every job change and of every change to executions and dimensions, since those
change what the job renders.
"""

from __future__ import annotations

import asyncio
import contextlib

from contracts.envelope import RecordedEvent
from contracts.events import (
    DimensionDefined,
    DimensionRedefined,
    DimensionRemoved,
    ExecutionDefined,
    ExecutionRedefined,
    ExecutionRemoved,
)
from services.dispatcher.job_index import JOB_EVENT_TYPES, JobIndex
from services.dispatcher.nomad_schedules import NomadSchedules
from services.dispatcher.retries import FOLLOWED_TYPES, RunFollowUps
from services.dispatcher.schedules import Scheduler
from services.dispatcher.store_tail import StoreTail
from shared.service import Runtime

DEFINITION_EVENT_TYPES = tuple(
    cls.event_type()
    for cls in (
        ExecutionDefined,
        ExecutionRedefined,
        ExecutionRemoved,
        DimensionDefined,
        DimensionRedefined,
        DimensionRemoved,
    )
)


class Scheduling:
    def __init__(self, runtime: Runtime, actor: str, poll_s: float, lead_s: float = 0.0) -> None:
        self.runtime = runtime
        self.index = JobIndex()
        self.scheduler = Scheduler(runtime.store, runtime.pool, self.index, actor, lead_s)
        self.follow_ups = RunFollowUps(self.scheduler.triggers, self.index)
        self.jobs_tail = StoreTail(
            runtime.store, (*JOB_EVENT_TYPES, *DEFINITION_EVENT_TYPES), self._job_event, poll_s=poll_s
        )
        self.runs_tail = StoreTail(runtime.store, FOLLOWED_TYPES, self.follow_ups.handle, poll_s=poll_s)
        self.handover: NomadSchedules | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loading = True

    async def _job_event(self, event: RecordedEvent) -> None:
        if event.type in DEFINITION_EVENT_TYPES:
            if self.handover is not None and not self._loading:
                self.handover.changed(None)
            return
        job_id = self.index.apply(event)
        if job_id is not None and not self._loading:
            self.scheduler.job_changed(job_id)
            if self.handover is not None:
                self.handover.changed(job_id)

    async def start(self) -> None:
        await self.jobs_tail.catch_up()
        self._loading = False
        for job_id in list(self.index.jobs):
            self.scheduler.job_changed(job_id)
        self._tasks = [
            self.runtime.spawn(self.jobs_tail.follow(), "scheduler-jobs"),
            self.runtime.spawn(self.runs_tail.follow(), "scheduler-runs"),
        ]
        if self.handover is not None:
            self._tasks.append(self.runtime.spawn(self.handover.run(), "scheduler-nomad-periodic"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.scheduler.stop()
        await self.follow_ups.stop()
