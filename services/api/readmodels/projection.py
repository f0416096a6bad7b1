"""The one writer of the read models. Deterministic: every value comes from the event (its data, time,
version, position, actor), never from the clock, so replay rebuilds exactly what the live projector did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from contracts.envelope import RecordedEvent
from contracts.events import (
    DimensionDefined,
    DimensionRedefined,
    DimensionRemoved,
    ExecutionDefined,
    ExecutionRedefined,
    ExecutionRemoved,
    JobCreated,
    JobDeleted,
    JobPaused,
    JobResumed,
    JobUpdated,
    RunAdopted,
    RunFailed,
    RunLogArchived,
    RunLost,
    RunQueued,
    RunRejected,
    RunRendered,
    RunRequested,
    RunRetryScheduled,
    RunSkipped,
    RunStarted,
    RunStepEnded,
    RunStepStarted,
    RunStopped,
    RunStopRequested,
    RunSucceeded,
    RunTimedOut,
    StateLoaded,
)
from services.api.readmodels.schema import LIVE_SCHEMA, TRACKING_NAME, quote

Handler = Callable[[asyncpg.Connection, RecordedEvent, Any], Awaitable[None]]


class ReadModelProjection:
    """Projects every stream type into the tables of one schema (the live `rm`, or a replay copy)."""

    def __init__(self, schema: str = LIVE_SCHEMA, name: str = TRACKING_NAME) -> None:
        self.name = name
        self.s = quote(schema)
        self._handlers: dict[str, Handler] = {
            ExecutionDefined.event_type(): self._definition_defined("executions"),
            ExecutionRedefined.event_type(): self._definition_redefined("executions"),
            ExecutionRemoved.event_type(): self._definition_removed("executions"),
            DimensionDefined.event_type(): self._definition_defined("dimensions"),
            DimensionRedefined.event_type(): self._definition_redefined("dimensions"),
            DimensionRemoved.event_type(): self._definition_removed("dimensions"),
            StateLoaded.event_type(): self._state_loaded,
            JobCreated.event_type(): self._job_created,
            JobUpdated.event_type(): self._job_updated,
            JobPaused.event_type(): self._job_paused,
            JobResumed.event_type(): self._job_resumed,
            JobDeleted.event_type(): self._job_deleted,
            RunRequested.event_type(): self._run_requested,
            RunRendered.event_type(): self._run_rendered,
            RunStepStarted.event_type(): self._run_step_started,
            RunStepEnded.event_type(): self._run_step_ended,
            RunRejected.event_type(): self._run_ended("rejected"),
            RunStarted.event_type(): self._run_started,
            RunAdopted.event_type(): self._run_adopted,
            RunStopRequested.event_type(): self._run_stop_requested,
            RunSucceeded.event_type(): self._run_ended("succeeded"),
            RunFailed.event_type(): self._run_ended("failed"),
            RunTimedOut.event_type(): self._run_ended("timed_out"),
            RunStopped.event_type(): self._run_ended("stopped"),
            RunLost.event_type(): self._run_ended("lost"),
            RunRetryScheduled.event_type(): self._run_retry_scheduled,
            RunQueued.event_type(): self._run_queued,
            RunSkipped.event_type(): self._run_skipped,
            RunLogArchived.event_type(): self._run_log_archived,
        }

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        handler = self._handlers.get(event.type)
        if handler is not None:
            await handler(conn, event, event.payload())

    def _definition_defined(self, table: str) -> Handler:
        async def handle(conn: asyncpg.Connection, event: RecordedEvent, payload: Any) -> None:
            await conn.execute(
                f"INSERT INTO {self.s}.{table} (name, spec, version, defined_at, updated_at) "
                "VALUES ($1, $2::jsonb, $3, $4, $4) ON CONFLICT (name) DO UPDATE SET "
                "spec = excluded.spec, version = excluded.version, defined_at = excluded.defined_at, "
                "updated_at = excluded.updated_at",
                payload.name,
                payload.spec.model_dump(mode="json"),
                event.stream_version,
                event.time,
            )

        return handle

    def _definition_redefined(self, table: str) -> Handler:
        async def handle(conn: asyncpg.Connection, event: RecordedEvent, payload: Any) -> None:
            await conn.execute(
                f"UPDATE {self.s}.{table} SET spec = $2::jsonb, version = $3, updated_at = $4 "
                "WHERE name = $1",
                payload.name,
                payload.spec.model_dump(mode="json"),
                event.stream_version,
                event.time,
            )

        return handle

    def _definition_removed(self, table: str) -> Handler:
        async def handle(conn: asyncpg.Connection, event: RecordedEvent, payload: Any) -> None:
            await conn.execute(f"DELETE FROM {self.s}.{table} WHERE name = $1", payload.name)

        return handle

    async def _state_loaded(
        self, conn: asyncpg.Connection, event: RecordedEvent, payload: StateLoaded
    ) -> None:
        await conn.execute(
            f"INSERT INTO {self.s}.state (id, digest, loaded_at, loaded_by, version) "
            "VALUES (1, $1, $2, $3, $4) "
            "ON CONFLICT (id) DO UPDATE SET digest = excluded.digest, loaded_at = excluded.loaded_at, "
            "loaded_by = excluded.loaded_by, version = excluded.version",
            payload.digest,
            event.time,
            event.actor,
            event.stream_version,
        )

    async def _job_created(self, conn: asyncpg.Connection, event: RecordedEvent, payload: JobCreated) -> None:
        spec = payload.spec.model_dump(mode="json")
        await conn.execute(
            f"""INSERT INTO {self.s}.jobs (id, name, execution, dimensions, params, schedule, enabled,
                    pause_reason, version, created_position, created_at, created_by, updated_at,
                    overlap, retry, keep_runs)
                VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7, NULL, $8, $9, $10, $11, $10,
                    $12::jsonb, $13::jsonb, $14)
                ON CONFLICT (id) DO NOTHING""",
            payload.job_id,
            spec["name"],
            spec["execution"],
            spec["dimensions"],
            spec["params"],
            spec["schedule"],
            spec["enabled"],
            event.stream_version,
            event.position,
            event.time,
            event.actor,
            spec["overlap"],
            spec["retry"],
            spec["keep_runs"],
        )

    async def _job_updated(self, conn: asyncpg.Connection, event: RecordedEvent, payload: JobUpdated) -> None:
        spec = payload.spec.model_dump(mode="json")
        await conn.execute(
            f"""UPDATE {self.s}.jobs SET name = $2, execution = $3, dimensions = $4::jsonb,
                    params = $5::jsonb, schedule = $6::jsonb, enabled = $7,
                    pause_reason = CASE WHEN $7 THEN NULL ELSE pause_reason END,
                    version = $8, updated_at = $9, overlap = $10::jsonb, retry = $11::jsonb,
                    keep_runs = $12
                WHERE id = $1""",
            payload.job_id,
            spec["name"],
            spec["execution"],
            spec["dimensions"],
            spec["params"],
            spec["schedule"],
            spec["enabled"],
            event.stream_version,
            event.time,
            spec["overlap"],
            spec["retry"],
            spec["keep_runs"],
        )

    async def _job_paused(self, conn: asyncpg.Connection, event: RecordedEvent, payload: JobPaused) -> None:
        await conn.execute(
            f"UPDATE {self.s}.jobs SET enabled = false, pause_reason = $2, version = $3, updated_at = $4 "
            "WHERE id = $1",
            payload.job_id,
            payload.reason,
            event.stream_version,
            event.time,
        )

    async def _job_resumed(self, conn: asyncpg.Connection, event: RecordedEvent, payload: JobResumed) -> None:
        await conn.execute(
            f"UPDATE {self.s}.jobs SET enabled = true, pause_reason = NULL, version = $2, updated_at = $3 "
            "WHERE id = $1",
            payload.job_id,
            event.stream_version,
            event.time,
        )

    async def _job_deleted(self, conn: asyncpg.Connection, event: RecordedEvent, payload: JobDeleted) -> None:
        await conn.execute(f"DELETE FROM {self.s}.jobs WHERE id = $1", payload.job_id)

    async def _run_requested(
        self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunRequested
    ) -> None:
        """A queued run keeps its row (and its place in the history) when it is finally requested."""
        await conn.execute(
            f"""INSERT INTO {self.s}.runs (id, job_id, job_version, execution, trigger, overrides, status,
                    requested_at, requested_by, version, requested_position, attempt, first_run_id,
                    scheduled_at, start_at)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, 'requested', $7, $8, $9, $10, $11, $12, $13, $14)
                ON CONFLICT (id) DO UPDATE SET status = 'requested', job_version = excluded.job_version,
                    execution = excluded.execution, version = excluded.version""",
            payload.run_id,
            payload.job_id,
            payload.job_version,
            payload.execution,
            payload.trigger,
            payload.overrides,
            event.time,
            event.actor,
            event.stream_version,
            event.position,
            payload.attempt,
            payload.first_run_id,
            payload.scheduled_at,
            payload.start_at,
        )

    async def _run_queued(self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunQueued) -> None:
        await conn.execute(
            f"""INSERT INTO {self.s}.runs (id, job_id, execution, trigger, overrides, status, requested_at,
                    requested_by, version, requested_position, scheduled_at)
                SELECT $1, $2, j.execution, $3, $4::jsonb, 'queued', $5, $6, $7, $8, $9
                FROM {self.s}.jobs j WHERE j.id = $2
                ON CONFLICT (id) DO NOTHING""",
            payload.run_id,
            payload.job_id,
            payload.trigger,
            payload.overrides,
            event.time,
            event.actor,
            event.stream_version,
            event.position,
            payload.scheduled_at,
        )

    async def _run_skipped(self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunSkipped) -> None:
        await conn.execute(
            f"""INSERT INTO {self.s}.runs (id, job_id, execution, trigger, overrides, status, reason,
                    requested_at, requested_by, ended_at, version, requested_position, scheduled_at)
                SELECT $1, $2, j.execution, $3, '{{}}'::jsonb, 'skipped', $4, $5, $6, $5, $7, $8, $9
                FROM {self.s}.jobs j WHERE j.id = $2
                ON CONFLICT (id) DO NOTHING""",
            payload.run_id,
            payload.job_id,
            payload.trigger,
            payload.reason,
            event.time,
            event.actor,
            event.stream_version,
            event.position,
            payload.scheduled_at,
        )
        await self._retain(conn, payload.job_id)

    async def _retain(self, conn: asyncpg.Connection, job_id: Any) -> None:
        """Keep the job's newest `keep_runs` finished runs in the history; the events stay (decision 0163)."""
        if job_id is None:
            return
        await conn.execute(
            f"""DELETE FROM {self.s}.runs r USING {self.s}.jobs j
                WHERE j.id = $1 AND j.keep_runs IS NOT NULL AND r.job_id = $1 AND r.ended_at IS NOT NULL
                  AND r.id NOT IN (SELECT k.id FROM {self.s}.runs k
                                   WHERE k.job_id = $1 AND k.ended_at IS NOT NULL
                                   ORDER BY k.requested_position DESC LIMIT j.keep_runs)""",
            job_id,
        )

    def _run_status(self, status: str) -> Handler:
        async def handle(conn: asyncpg.Connection, event: RecordedEvent, payload: Any) -> None:
            await conn.execute(
                f"UPDATE {self.s}.runs SET status = $2, version = $3 WHERE id = $1",
                payload.run_id,
                status,
                event.stream_version,
            )

        return handle

    async def _run_rendered(
        self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunRendered
    ) -> None:
        """A pipeline's steps are listed as pending from the start, so a reader sees what is to come."""
        names = [step.get("name") for step in payload.payload.get("steps") or [] if isinstance(step, dict)]
        steps = [{"name": name, "status": "pending"} for name in names if isinstance(name, str)]
        await conn.execute(
            f"UPDATE {self.s}.runs SET status = 'rendered', steps = $2::jsonb, version = $3 WHERE id = $1",
            payload.run_id,
            steps,
            event.stream_version,
        )

    async def _run_step_started(
        self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunStepStarted
    ) -> None:
        step = {"name": payload.step, "status": "running", "started_at": payload.started_at.isoformat()}
        await self._set_step(conn, event, payload.run_id, payload.index, step)

    async def _run_step_ended(
        self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunStepEnded
    ) -> None:
        step = {
            "name": payload.step,
            "status": payload.outcome,
            "exit_code": payload.exit_code,
            "signal": payload.signal,
            "started_at": payload.started_at.isoformat() if payload.started_at else None,
            "ended_at": payload.ended_at.isoformat(),
        }
        await self._set_step(conn, event, payload.run_id, payload.index, step)

    async def _set_step(
        self, conn: asyncpg.Connection, event: RecordedEvent, run_id: object, index: int, step: dict[str, Any]
    ) -> None:
        await conn.execute(
            f"UPDATE {self.s}.runs SET steps = jsonb_set(steps, ARRAY[$2::text], $3::jsonb, true), "
            "version = $4 WHERE id = $1",
            run_id,
            str(index),
            step,
            event.stream_version,
        )

    def _run_ended(self, status: str) -> Handler:
        async def handle(conn: asyncpg.Connection, event: RecordedEvent, payload: Any) -> None:
            exit_code = 0 if isinstance(payload, RunSucceeded) else getattr(payload, "exit_code", None)
            if isinstance(payload, RunTimedOut):
                reason: str | None = f"timed out after {payload.timeout_s:g} s"
            else:
                reason = getattr(payload, "reason", None)
            job_id = await conn.fetchval(
                f"UPDATE {self.s}.runs SET status = $2, exit_code = $3, reason = $4, ended_at = $5, "
                "version = $6, stopped_by = $7 WHERE id = $1 RETURNING job_id",
                payload.run_id,
                status,
                exit_code,
                reason,
                event.time,
                event.stream_version,
                getattr(payload, "stopped_by", None),
            )
            await self._retain(conn, job_id)

        return handle

    async def _run_started(self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunStarted) -> None:
        await conn.execute(
            f"UPDATE {self.s}.runs SET status = 'running', started_at = $2, version = $3 WHERE id = $1",
            payload.run_id,
            event.time,
            event.stream_version,
        )

    async def _run_adopted(self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunAdopted) -> None:
        """Another dispatcher follows the run now; for readers only the version moves."""
        await conn.execute(
            f"UPDATE {self.s}.runs SET version = $2 WHERE id = $1", payload.run_id, event.stream_version
        )

    async def _run_stop_requested(
        self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunStopRequested
    ) -> None:
        await conn.execute(
            f"UPDATE {self.s}.runs SET stop_requested_at = $2, stop_requested_by = $3, version = $4 "
            "WHERE id = $1",
            payload.run_id,
            event.time,
            event.actor,
            event.stream_version,
        )

    async def _run_retry_scheduled(
        self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunRetryScheduled
    ) -> None:
        await conn.execute(
            f"UPDATE {self.s}.runs SET next_run_id = $2, version = $3 WHERE id = $1",
            payload.run_id,
            payload.next_run_id,
            event.stream_version,
        )

    async def _run_log_archived(
        self, conn: asyncpg.Connection, event: RecordedEvent, payload: RunLogArchived
    ) -> None:
        log = {"bytes": payload.bytes, "sha256": payload.sha256, "location": payload.location}
        await conn.execute(
            f"UPDATE {self.s}.runs SET log = $2::jsonb, version = $3 WHERE id = $1",
            payload.run_id,
            log,
            event.stream_version,
        )
