"""Retries and queued runs: what follows a run's end, decided by every replica, recorded once.

On `RunFailed`, `RunTimedOut` or `RunLost` of a job's run, the job's retry settings decide whether
another attempt follows; `RunRetryScheduled` is appended on the ended run at the version read, so one
replica records it. When it is due, `RunRequested` for the next attempt is appended at version 0 of
the attempt's deterministic stream (`retry_run_id`), so one replica requests it. Pending retries are
rebuilt from the store on start, so a replica that dies takes nothing with it.
See docs/decisions/0161-retries-and-queues-from-the-store.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime

from contracts import streams
from contracts.envelope import RecordedEvent
from contracts.events import RunRequested, RunRetryScheduled
from contracts.schedules import RetrySpec
from services.dispatcher.job_index import JobIndex
from services.dispatcher.schedules import Triggers, utcnow
from shared.domain.retry import RunOutcome, next_retry, retry_key, retry_run_id
from shared.domain.run_lifecycle import TERMINAL_EVENT_TYPES, refusal, run_state
from shared.eventstore.errors import ConcurrencyError

log = logging.getLogger(__name__)

OUTCOMES: dict[str, RunOutcome] = {"RunFailed": "failed", "RunTimedOut": "timed_out", "RunLost": "lost"}
FOLLOWED_TYPES = (*sorted(TERMINAL_EVENT_TYPES), RunRetryScheduled.event_type())


class RunFollowUps:
    def __init__(self, triggers: Triggers, index: JobIndex) -> None:
        self.triggers = triggers
        self.store = triggers.store
        self.index = index
        self._pending: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def handle(self, event: RecordedEvent) -> None:
        if event.type == RunRetryScheduled.event_type():
            self._schedule(event)
            return
        if event.type not in TERMINAL_EVENT_TYPES:
            return
        outcome = OUTCOMES.get(event.type)
        needs_queue = any(j.spec.overlap.policy == "queue" for j in self.index.jobs.values())
        if outcome is None and not needs_queue:
            return
        history = await self.store.read_stream(event.stream_id)
        request = next((e.payload() for e in history if e.type == RunRequested.event_type()), None)
        if not isinstance(request, RunRequested) or request.job_id is None:
            return
        job = self.index.jobs.get(request.job_id)
        if job is None:
            return
        if outcome is not None:
            await self._retry(event, history, request, outcome, job.spec.retry)
        if job.spec.overlap.policy == "queue":
            await self.triggers.dequeue(job)

    async def _retry(
        self,
        ended: RecordedEvent,
        history: list[RecordedEvent],
        request: RunRequested,
        outcome: RunOutcome,
        spec: RetrySpec,
    ) -> None:
        first_run = request.first_run_id or request.run_id
        delay = next_retry(spec, request.attempt, outcome, retry_key(first_run, request.attempt))
        if delay is None:
            return
        scheduled = RunRetryScheduled(
            run_id=request.run_id,
            next_run_id=retry_run_id(first_run, request.attempt + 1),
            attempt=request.attempt + 1,
            due_at=ended.time + delay,
        )
        state = run_state(history)
        if refusal(state, scheduled) is not None:
            return
        meta = self.triggers.meta(ended.correlation_id, str(ended.id))
        with contextlib.suppress(ConcurrencyError):
            await self.store.append(ended.stream_id, [scheduled], expected_version=state.version, meta=meta)
            log.info("run %s: attempt %d due at %s", request.run_id, scheduled.attempt, scheduled.due_at)

    def _schedule(self, event: RecordedEvent) -> None:
        scheduled = RunRetryScheduled.model_validate(event.data)
        if scheduled.next_run_id in self._pending:
            return
        task = asyncio.create_task(
            self._request_when_due(event, scheduled), name=f"retry-{scheduled.next_run_id}"
        )
        self._pending[scheduled.next_run_id] = task
        task.add_done_callback(lambda _: self._pending.pop(scheduled.next_run_id, None))

    async def _request_when_due(self, event: RecordedEvent, scheduled: RunRetryScheduled) -> None:
        next_stream = streams.stream_id(streams.RUN, scheduled.next_run_id)
        if await self.store.stream_version(next_stream):
            return
        await _sleep_until(scheduled.due_at)
        history = await self.store.read_stream(event.stream_id)
        original = next((e.payload() for e in history if e.type == RunRequested.event_type()), None)
        if not isinstance(original, RunRequested):
            return
        request = original.model_copy(
            update={
                "run_id": scheduled.next_run_id,
                "trigger": "retry",
                "attempt": scheduled.attempt,
                "first_run_id": original.first_run_id or original.run_id,
                "forced": False,
                "start_at": None,
            }
        )
        if await self.triggers.claim(
            scheduled.next_run_id, request, self.triggers.meta(event.correlation_id, str(event.id))
        ):
            log.info("run %s: attempt %d requested", scheduled.next_run_id, scheduled.attempt)

    async def stop(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max((moment - utcnow()).total_seconds(), 0.0))
