"""Advisory-lock keys for leader election, one per role and name.

A fixed key per role would let one relay (or one projection) block every other one sharing the database:
two installations with different bus prefixes, or two different projections, must elect independently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from shared.bus.cancellation import raise_if_cancelling

log = logging.getLogger(__name__)


def leader_lock_key(role: str, name: str) -> int:
    """A stable signed 64-bit key for `pg_try_advisory_lock`, the same in every process and version."""
    digest = hashlib.sha256(f"batchyard:{role}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def lead_when_elected(
    dsn: str,
    key: int,
    lead: Callable[[asyncpg.Connection], Awaitable[None]],
    *,
    role: str,
    retry_s: float = 1.0,
) -> None:
    """Stand for election forever: whoever holds the session lock on `key` runs `lead(connection)`.

    The lock lives on a dedicated connection, so it vanishes with the process or its connection and a
    standby takes over within `retry_s`. Any failure while leading gives the lock up and starts over,
    so a transient database or NATS error never kills the task for good.
    """
    while True:
        raise_if_cancelling()
        leader: asyncpg.Connection | None = None
        try:
            leader = await asyncpg.connect(dsn)
            if await leader.fetchval("SELECT pg_try_advisory_lock($1)", key):
                log.info("%s is active", role)
                await lead(leader)
        except Exception:
            log.exception("%s stopped; standing for election again", role)
        finally:
            if leader is not None:
                with contextlib.suppress(Exception):
                    await leader.close()
        await asyncio.sleep(retry_s)
