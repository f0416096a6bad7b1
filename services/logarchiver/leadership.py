"""One active archiver per installation: replicas stand by on a PostgreSQL advisory lock.

A single consumer sees each run's chunks in stream order, so the log is written sequentially and
never pulled twice; the others take over within a second or two when the active one dies (its session
ends and the lock with it). Correctness does not depend on the lock: writes are idempotent and the
archived event is appended at an expected version, so a short overlap during a takeover is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

STANDBY_POLL_S = 1.0
LEASE_CHECK_S = 2.0


async def while_leader(dsn: str, name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` only while this process holds the lock `name`; stand by otherwise, until cancelled."""
    while True:
        try:
            connection = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("%s: cannot reach the database to stand for leader: %s", name, exc)
            await asyncio.sleep(STANDBY_POLL_S)
            continue
        try:
            if await connection.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name):
                log.info("%s: active", name)
                await _work_while_connected(connection, work)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("%s: lost the lock's database session, standing by: %s", name, exc)
        finally:
            with contextlib.suppress(Exception):
                await connection.close()
        await asyncio.sleep(STANDBY_POLL_S)


async def _work_while_connected(connection: asyncpg.Connection, work: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.ensure_future(work())
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=LEASE_CHECK_S)
            if not done:
                await connection.fetchval("SELECT 1")
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
    if isinstance(results[0], Exception):
        log.error("active work stopped with an error; standing for leader again", exc_info=results[0])
