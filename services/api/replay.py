"""`batchyard replay`: rebuild every read model from position 0 and compare it with the live one.

The live projector keeps moving while replay runs, so the comparison is made at one position: the live
tables and their tracking position are read in a single REPEATABLE READ snapshot (the projector writes
both in one transaction, so the snapshot is consistent), and the rebuild stops at exactly that position.
The rebuild goes into a fresh schema beside the live one, uses the same projection code, and is dropped
afterwards; the live read models are never written.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.api.readmodels.projection import ReadModelProjection
from services.api.readmodels.schema import (
    LIVE_SCHEMA,
    TABLES,
    TRACKING_NAME,
    create_tables,
    drop_tables,
    quote,
)
from shared.eventstore.store import EventStore, create_pool, migrate
from shared.settings import Settings
from shared.tracking import load_position

PAGE = 1000
Rows = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class RowDifference:
    key: str
    live: dict[str, Any] | None
    replayed: dict[str, Any] | None

    def describe(self) -> str:
        if self.live is None:
            return f"{self.key}: missing from the live read model"
        if self.replayed is None:
            return f"{self.key}: in the live read model but not produced by replay"
        columns = sorted(
            c for c in self.live.keys() | self.replayed.keys() if self.live.get(c) != self.replayed.get(c)
        )
        changes = ", ".join(
            f"{c} live={self.live.get(c)!r} replayed={self.replayed.get(c)!r}" for c in columns
        )
        return f"{self.key}: {changes}"


@dataclass
class ReplayReport:
    position: int
    events: int
    head: int
    rows: dict[str, int] = field(default_factory=dict)
    differences: dict[str, list[RowDifference]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not any(self.differences.values())

    def render(self) -> str:
        lines = [
            f"replayed {self.events} events up to position {self.position}, where the live read models are"
            f" (store head: {self.head})"
        ]
        for table in TABLES:
            found = self.differences.get(table, [])
            verdict = "identical" if not found else f"{len(found)} difference(s)"
            lines.append(f"  {table:<11} {self.rows.get(table, 0):>7} rows  {verdict}")
            lines += [f"    - {d.describe()}" for d in found]
        lines.append(
            "read models match the event store" if self.identical else "READ MODELS DIFFER from replay"
        )
        return "\n".join(lines)


async def _dump(conn: asyncpg.Connection, schema: str, table: str) -> Rows:
    key = TABLES[table]
    rows = await conn.fetch(f"SELECT {key}::text AS key, to_jsonb(t) AS row FROM {quote(schema)}.{table} t")
    return {r["key"]: r["row"] for r in rows}


async def _snapshot_live(pool: asyncpg.Pool) -> tuple[int, dict[str, Rows]]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        position = await load_position(conn, TRACKING_NAME)
        return position, {table: await _dump(conn, LIVE_SCHEMA, table) for table in TABLES}


async def _rebuild(store: EventStore, schema: str, up_to: int) -> int:
    projection = ReadModelProjection(schema, name=f"replay:{schema}")
    after = count = 0
    while True:
        page = await store.read_all(after=after, up_to=up_to, limit=PAGE)
        if not page:
            return count
        async with store.pool.acquire() as conn, conn.transaction():
            for event in page:
                await projection.apply(conn, event)
        count += len(page)
        after = page[-1].position


def _compare(live: Rows, replayed: Rows) -> list[RowDifference]:
    return [
        RowDifference(key, live.get(key), replayed.get(key))
        for key in sorted(live.keys() | replayed.keys())
        if live.get(key) != replayed.get(key)
    ]


async def replay(settings: Settings) -> ReplayReport:
    pool = await create_pool(settings.pg_dsn, size=2)
    store = EventStore(pool)
    schema = f"rm_replay_{uuid.uuid4().hex[:12]}"
    try:
        await migrate(pool)
        async with pool.acquire() as conn:
            await create_tables(conn, LIVE_SCHEMA)
        position, live = await _snapshot_live(pool)
        async with pool.acquire() as conn:
            await create_tables(conn, schema)
        try:
            events = await _rebuild(store, schema, position)
            report = ReplayReport(position, events, await store.head_position())
            async with pool.acquire() as conn:
                for table in TABLES:
                    replayed = await _dump(conn, schema, table)
                    report.rows[table] = len(live[table])
                    report.differences[table] = _compare(live[table], replayed)
        finally:
            async with pool.acquire() as conn:
                await drop_tables(conn, schema)
        return report
    finally:
        await store.close()
        await pool.close()


def main() -> int:
    """Exit 0 when the rebuilt read models equal the live ones, 1 when they differ."""
    report = asyncio.run(replay(Settings()))
    print(report.render())
    sys.stdout.flush()
    return 0 if report.identical else 1


if __name__ == "__main__":
    sys.exit(main())
