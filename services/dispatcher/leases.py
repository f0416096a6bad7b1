"""Dispatcher leases in PostgreSQL: the heartbeat that says "my runs are still watched".

A run belongs to the dispatcher named in its `RunStarted` or latest `RunAdopted`. While that dispatcher
renews its lease, nobody else touches the run; once the lease expires (or, on the same host, once its
process is gone), any dispatcher may take the run over: one on Docker or Nomad, which keep the work
alive, is adopted and followed on; a local one ends as `RunLost`. Each process is its own dispatcher
identity, so a restarted service never mistakes its predecessor's runs, whose processes it does not
hold, for its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

import asyncpg

from shared.domain.run_lifecycle import TERMINAL_EVENT_TYPES

SCHEMA_LOCK_KEY = 0x0BA7C4_0050


@dataclass(frozen=True)
class Lease:
    dispatcher: str
    host: str
    pid: int


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Leases:
    def __init__(self, pool: asyncpg.Pool, lease: Lease, ttl_s: float) -> None:
        self.pool = pool
        self.lease = lease
        self.ttl_s = ttl_s

    async def migrate(self) -> None:
        sql = resources.files("services.dispatcher").joinpath("schema.sql").read_text()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            await conn.execute(sql)

    async def renew(self) -> bool:
        """Extend this dispatcher's lease; False when it had expired and been swept meanwhile (then its
        runs may already be recorded as lost, and the caller must stop them)."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "UPDATE dispatcher_leases SET expires_at = now() + make_interval(secs => $2) "
                "WHERE dispatcher = $1",
                self.lease.dispatcher,
                self.ttl_s,
            )
            if status != "UPDATE 0":
                return True
            await conn.execute(
                "INSERT INTO dispatcher_leases (dispatcher, host, pid, expires_at) "
                "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
                self.lease.dispatcher,
                self.lease.host,
                self.lease.pid,
                self.ttl_s,
            )
            return False

    async def release(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM dispatcher_leases WHERE dispatcher = $1", self.lease.dispatcher)

    async def expired(self) -> list[Lease]:
        """Leases past their expiry, and those of dead dispatcher processes on this host right away."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT dispatcher, host, pid, expires_at < now() AS expired FROM dispatcher_leases "
                "WHERE dispatcher <> $1 AND (expires_at < now() OR host = $2)",
                self.lease.dispatcher,
                self.lease.host,
            )
        return [
            Lease(row["dispatcher"], row["host"], row["pid"])
            for row in rows
            if row["expired"] or not pid_alive(row["pid"])
        ]

    async def lapse(self) -> None:
        """Leave on purpose with runs still going (handed over, not stopped): the lease stays, already
        expired, so the next sweep of any dispatcher adopts those runs at once."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE dispatcher_leases SET expires_at = now() WHERE dispatcher = $1", self.lease.dispatcher
            )

    async def unfinished_runs(self, dispatcher: str) -> list[str]:
        """Runs this dispatcher owns and that have not ended: it started them (`RunStarted`) or adopted
        them (`RunAdopted`), and no later adoption moved them on."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT s.stream_id FROM events s
                   WHERE s.type IN ('RunStarted', 'RunAdopted') AND s.data->>'dispatcher' = $1
                     AND NOT EXISTS (
                         SELECT 1 FROM events t
                         WHERE t.stream_id = s.stream_id
                           AND (t.type = ANY($2::text[])
                                OR (t.type = 'RunAdopted' AND t.stream_version > s.stream_version)))
                   ORDER BY s.position""",
                dispatcher,
                sorted(TERMINAL_EVENT_TYPES),
            )
        return [row["stream_id"] for row in rows]

    async def forget(self, dispatcher: str) -> None:
        """Drop an expired lease whose runs are all ended; a lease renewed meanwhile stays."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM dispatcher_leases WHERE dispatcher = $1 AND (expires_at < now() OR host = $2)",
                dispatcher,
                self.lease.host,
            )
