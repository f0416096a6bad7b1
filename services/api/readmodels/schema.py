"""Tables of the read models, created in a named schema so replay can build a second copy beside them."""

from __future__ import annotations

import asyncpg

LIVE_SCHEMA = "rm"
TRACKING_NAME = "api-readmodels"
DDL_LOCK_KEY = 0x0BA7C4_0030

# Each table with the columns that identify a row; replay compares tables row by row on these.
TABLES: dict[str, str] = {
    "executions": "name",
    "dimensions": "name",
    "jobs": "id",
    "runs": "id",
    "state": "id",
}

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.executions (
    name        text PRIMARY KEY,
    spec        jsonb       NOT NULL,
    version     integer     NOT NULL,
    defined_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.dimensions (
    name        text PRIMARY KEY,
    spec        jsonb       NOT NULL,
    version     integer     NOT NULL,
    defined_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.jobs (
    id               uuid PRIMARY KEY,
    name             text        NOT NULL,
    execution        text        NOT NULL,
    dimensions       jsonb       NOT NULL,
    params           jsonb       NOT NULL,
    schedule         jsonb,
    overlap          jsonb       NOT NULL,
    retry            jsonb       NOT NULL,
    keep_runs        integer,
    enabled          boolean     NOT NULL,
    pause_reason     text,
    version          integer     NOT NULL,
    created_position bigint      NOT NULL,
    created_at       timestamptz NOT NULL,
    created_by       text        NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created_position ON {s}.jobs (created_position);
CREATE INDEX IF NOT EXISTS jobs_execution ON {s}.jobs (execution);
CREATE INDEX IF NOT EXISTS jobs_dimensions ON {s}.jobs USING gin (dimensions jsonb_path_ops);
CREATE TABLE IF NOT EXISTS {s}.runs (
    id                 uuid PRIMARY KEY,
    job_id             uuid,
    job_version        integer,
    execution          text        NOT NULL,
    trigger            text        NOT NULL,
    overrides          jsonb       NOT NULL,
    status             text        NOT NULL,
    exit_code          integer,
    reason             text,
    requested_at       timestamptz NOT NULL,
    requested_by       text        NOT NULL,
    started_at         timestamptz,
    ended_at           timestamptz,
    stop_requested_at  timestamptz,
    next_run_id        uuid,
    attempt            integer     NOT NULL DEFAULT 1,
    first_run_id       uuid,
    scheduled_at       timestamptz,
    log                jsonb,
    version            integer     NOT NULL,
    requested_position bigint      NOT NULL
);
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS stop_requested_by text;
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS stopped_by text;
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS steps jsonb NOT NULL DEFAULT '[]';
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS start_at timestamptz;
CREATE INDEX IF NOT EXISTS runs_requested_position ON {s}.runs (requested_position);
CREATE INDEX IF NOT EXISTS runs_job ON {s}.runs (job_id, requested_position);
CREATE TABLE IF NOT EXISTS {s}.state (
    id          smallint PRIMARY KEY CHECK (id = 1),
    digest      text        NOT NULL,
    loaded_at   timestamptz NOT NULL,
    loaded_by   text        NOT NULL,
    version     integer     NOT NULL
);
"""


def quote(schema: str) -> str:
    if not schema.replace("_", "").isalnum():
        raise ValueError(f"not a plain schema name: {schema!r}")
    return f'"{schema}"'


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    """Idempotent, and serialised so API replicas starting together do not race on the catalog."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK_KEY)
        await conn.execute(_DDL.format(s=quote(schema)))


async def drop_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
