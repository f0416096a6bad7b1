"""Reads of the live read models, shaped as the API's views."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence

import asyncpg

from services.api.domain.definitions import JobRef
from services.api.domain.jobs import Catalog
from services.api.models import (
    BadCursor,
    DimensionView,
    ExecutionView,
    JobListQuery,
    JobView,
    RunListQuery,
    RunView,
)
from services.api.readmodels.job_status import with_status
from services.api.readmodels.schema import LIVE_SCHEMA, quote
from services.api.secrets import masked_dimension, masked_execution, masked_job, masked_run

S = quote(LIVE_SCHEMA)


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"p": position}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position = value["p"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise BadCursor("not a cursor this API handed out") from None
    if not isinstance(position, int) or position < 0:
        raise BadCursor("not a cursor this API handed out")
    return position


def parse_dimension_filters(filters: Sequence[str]) -> dict[str, str] | None:
    """`customer:acme` → {"customer": "acme"}; the first colon splits, so values may contain colons.
    None when two filters want different values of one dimension, which no job can match."""
    wanted: dict[str, str] = {}
    for item in filters:
        name, _, value = item.partition(":")
        if wanted.setdefault(name, value) != value:
            return None
    return wanted


async def get_execution(conn: asyncpg.Connection, name: str) -> ExecutionView | None:
    row = await conn.fetchrow(f"SELECT * FROM {S}.executions WHERE name = $1", name)
    return masked_execution(ExecutionView.model_validate(dict(row))) if row else None


async def list_executions(conn: asyncpg.Connection) -> list[ExecutionView]:
    rows = await conn.fetch(f"SELECT * FROM {S}.executions ORDER BY name")
    return [masked_execution(ExecutionView.model_validate(dict(r))) for r in rows]


async def get_dimension(conn: asyncpg.Connection, name: str) -> DimensionView | None:
    row = await conn.fetchrow(f"SELECT * FROM {S}.dimensions WHERE name = $1", name)
    return masked_dimension(DimensionView.model_validate(dict(row))) if row else None


async def list_dimensions(conn: asyncpg.Connection) -> list[DimensionView]:
    rows = await conn.fetch(f"SELECT * FROM {S}.dimensions ORDER BY name")
    return [masked_dimension(DimensionView.model_validate(dict(r))) for r in rows]


async def definition_names(conn: asyncpg.Connection, table: str) -> list[str]:
    return [r["name"] for r in await conn.fetch(f"SELECT name FROM {S}.{table}")]


async def catalog(conn: asyncpg.Connection) -> Catalog:
    rows = await conn.fetch(f"SELECT name, spec->>'driver' AS driver FROM {S}.executions")
    dimensions = {
        r["name"]: frozenset(r["spec"]["values"])
        for r in await conn.fetch(f"SELECT name, spec FROM {S}.dimensions")
    }
    drivers = {r["name"]: r["driver"] for r in rows if r["driver"]}
    return Catalog(frozenset(r["name"] for r in rows), dimensions, drivers)


async def job_refs(conn: asyncpg.Connection) -> list[JobRef]:
    rows = await conn.fetch(f"SELECT id, execution, dimensions FROM {S}.jobs")
    return [JobRef(r["id"], r["execution"], r["dimensions"]) for r in rows]


_JOB_COLUMNS = (
    "id, name, execution, dimensions, params, schedule, overlap, retry, keep_runs, enabled, pause_reason, "
    "version, created_at, created_by, updated_at"
)


async def get_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> JobView | None:
    row = await conn.fetchrow(f"SELECT {_JOB_COLUMNS} FROM {S}.jobs WHERE id = $1", job_id)
    return await with_status(conn, masked_job(JobView.model_validate(dict(row)))) if row else None


async def list_jobs(conn: asyncpg.Connection, query: JobListQuery) -> tuple[list[JobView], str | None]:
    after = decode_cursor(query.cursor) if query.cursor else 0
    enabled = None if query.state is None else query.state == "enabled"
    dimensions = parse_dimension_filters(query.dimension)
    if dimensions is None:
        return [], None
    rows = await conn.fetch(
        f"""SELECT {_JOB_COLUMNS}, created_position FROM {S}.jobs
            WHERE created_position > $1
              AND ($2::text IS NULL OR execution = $2)
              AND ($3::boolean IS NULL OR enabled = $3)
              AND dimensions @> $4::jsonb
            ORDER BY created_position LIMIT $5""",
        after,
        query.execution,
        enabled,
        dimensions,
        query.limit + 1,
    )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    jobs = [
        await with_status(
            conn, masked_job(JobView.model_validate({k: v for k, v in r.items() if k != "created_position"}))
        )
        for r in rows
    ]
    return jobs, encode_cursor(rows[-1]["created_position"]) if more else None


_RUN_COLUMNS = (
    "id, job_id, status, exit_code, reason, requested_at, started_at, ended_at, job_version, execution, "
    "trigger, overrides, requested_by, stop_requested_at, stop_requested_by, stopped_by, next_run_id, log, "
    "steps, attempt, first_run_id, scheduled_at, start_at"
)


async def get_run(conn: asyncpg.Connection, run_id: uuid.UUID) -> RunView | None:
    row = await conn.fetchrow(f"SELECT {_RUN_COLUMNS} FROM {S}.runs WHERE id = $1", run_id)
    return masked_run(RunView.model_validate(dict(row))) if row else None


async def list_runs(conn: asyncpg.Connection, query: RunListQuery) -> tuple[list[RunView], str | None]:
    """Newest first: the cursor holds the position of the last run handed out."""
    before = decode_cursor(query.cursor) if query.cursor else None
    rows = await conn.fetch(
        f"""SELECT {_RUN_COLUMNS}, requested_position FROM {S}.runs
            WHERE ($1::bigint IS NULL OR requested_position < $1)
              AND ($2::uuid IS NULL OR job_id = $2)
              AND ($3::text IS NULL OR status = $3)
            ORDER BY requested_position DESC LIMIT $4""",
        before,
        query.job_id,
        query.status,
        query.limit + 1,
    )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    runs = [
        masked_run(RunView.model_validate({k: v for k, v in r.items() if k != "requested_position"}))
        for r in rows
    ]
    return runs, encode_cursor(rows[-1]["requested_position"]) if more else None


async def select_jobs(
    conn: asyncpg.Connection, dimensions: dict[str, str], execution: str | None, enabled: bool | None
) -> list[tuple[uuid.UUID, str]]:
    """Every live job matching, oldest first: the same selection as `list_jobs`, without paging."""
    rows = await conn.fetch(
        f"""SELECT id, name FROM {S}.jobs
            WHERE ($1::text IS NULL OR execution = $1)
              AND ($2::boolean IS NULL OR enabled = $2)
              AND dimensions @> $3::jsonb
            ORDER BY created_position""",
        execution,
        enabled,
        dimensions,
    )
    return [(r["id"], r["name"]) for r in rows]
